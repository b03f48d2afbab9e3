"""Which model weights a licence policy allows, and what the weights a scene used are licensed under.

    policy(option)                 # --licence, else $VD_LICENCE, else "any"; UsageError for another word
    check(models, policy)          # UsageError (exit 2): one sentence naming the permissive alternative
    refusal(model)                 # that sentence, or None when the model may be used commercially
    licences_of(models)            # {"<model>": {"license": ..., "commercial": ...}} for summary.json

Every registry entry says whether its weights allow commercial use (`"commercial": true|false`,
`vd.fetch.manifest.ModelSpec.commercial`; None when a user manifest does not say). Policy
"commercial" refuses weights that do not allow it, unknown ones included (vd cannot tell). What to
use instead is `COMMERCIAL_ALTERNATIVES`, by registry model; standard library only at import.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional

from vd import settings
from vd.errors import UsageError
from vd.params import LICENCES

ANY, COMMERCIAL = LICENCES  # "any", "commercial"


@dataclass(frozen=True)
class Alternative:
    """A permissively licensed replacement: the option that picks it, what it is, what to fetch."""

    option: str
    what: str
    fetch: tuple[str, ...]

    def sentence(self) -> str:
        return f"use {self.option} ({self.what}): vd fetch {' '.join(self.fetch)}"


FLUX2_KLEIN = Alternative(
    "--inpaint-backend flux2-klein", "FLUX.2 [klein] 4B, Apache-2.0", ("flux2-klein", "flux2-klein-text")
)

# the permissive replacement of each non-commercial registry model (tests check every built-in one has one)
COMMERCIAL_ALTERNATIVES: dict[str, Alternative] = {
    "flux-fill": FLUX2_KLEIN,
    "flux-prompt": FLUX2_KLEIN,
    "flux-ae": FLUX2_KLEIN,
    "flux-fill-q8": FLUX2_KLEIN,
    "flux-fill-q5k": FLUX2_KLEIN,
    "flux-fill-q4k": FLUX2_KLEIN,
}


def policy(option: Optional[str] = None) -> str:
    """The licence policy in force: the `--licence` option, else $VD_LICENCE, else "any"."""
    if option is not None:
        value, where = option.strip().lower(), "--licence"
    else:
        env = settings.licence()
        if env is None:
            return ANY
        value, where = env, "VD_LICENCE"
    if value not in LICENCES:
        raise UsageError(f"{where} must be one of {', '.join(LICENCES)}, got {value!r}")
    return value


def _spec(model: str, manifest_path=None):
    from vd.fetch.registry import manifest

    return manifest(manifest_path).models.get(model)


def refusal(model: str, manifest_path=None) -> Optional[str]:
    """Why `--licence commercial` refuses `model` (one sentence), or None when its weights allow commercial use."""
    spec = _spec(model, manifest_path)
    commercial = spec.commercial if spec is not None else None
    if commercial:
        return None
    alt = COMMERCIAL_ALTERNATIVES.get(model)
    instead = alt.sentence() if alt else "use weights whose licence allows commercial use, or --licence any"
    if commercial is None:
        where = spec.origin if spec is not None else "the registry"
        return (
            f"--licence commercial refuses {model} (its entry in {where} does not say whether its licence "
            f"allows commercial use); {instead}"
        )
    text = spec.license or "licence not stated"
    return f"--licence commercial refuses {model} ({text}: no commercial use); {instead}"


def check(models: Iterable[str], policy: str, manifest_path=None) -> None:
    """UsageError (exit 2) with one sentence when `policy` refuses any of `models` (the first refused one is named)."""
    if policy != COMMERCIAL:
        return
    for model in models:
        why = refusal(model, manifest_path)
        if why is not None:
            raise UsageError(why)


def allows(model: str, policy: str, manifest_path=None) -> bool:
    return policy != COMMERCIAL or refusal(model, manifest_path) is None


def licences_of(models: Iterable[str], manifest_path=None) -> dict[str, dict]:
    """`{"<model>": {"license": text, "commercial": true|false|null}}` for summary.json, in the order given."""
    out: dict[str, dict] = {}
    for model in dict.fromkeys(models):
        spec = _spec(model, manifest_path)
        out[model] = {
            "license": spec.license if spec is not None else None,
            "commercial": spec.commercial if spec is not None else None,
        }
    return out


__all__ = [
    "Alternative",
    "COMMERCIAL_ALTERNATIVES",
    "FLUX2_KLEIN",
    "allows",
    "check",
    "licences_of",
    "policy",
    "refusal",
]
