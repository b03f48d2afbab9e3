"""The weights manifest: models, their files (size, sha256) and ordered download sources.

The built-in registry is `vd/assets/weights.json`; a user manifest (`--manifest FILE` or
`$VD_MANIFEST`) has the same format and its models replace built-in ones of the same name.

    {
      "format": "vd-weights/1",
      "models": {
        "moge": {
          "description": "...",
          "license": "MIT",                 # the licence's name, shown by `vd fetch --list`
          "commercial": true,               # whether the weights allow commercial use (optional:
                                            # absent or null = unknown, which --licence commercial refuses)
          "files": [
            {"name": "model.pt", "size": 1234, "sha256": "<64 hex>" | null,
             "sources": [
               "https://mirror.example/moge/model.pt",                         # plain URL
               {"url": "{HF_ENDPOINT}/org/repo/resolve/main/model.pt", "auth": "hf"},
               {"hf": "org/repo", "path": "model.pt", "revision": "main", "gated": false},
               {"modelscope": "org/repo", "path": "model.pt", "revision": "master"},
               "file:///srv/weights/model.pt"                                  # local copy
             ]}
          ]
        }
      }
    }

`size`/`sha256` may be null when not published; the first verified download records the
hash in a `<file>.sha256` sidecar next to the file (sha256sum format).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional
from urllib.parse import urlsplit

from vd import settings
from vd.errors import InputError

FORMAT = "vd-weights/1"
DEFAULT_HF_ENDPOINT = "https://huggingface.co"
DEFAULT_MODELSCOPE_ENDPOINT = "https://modelscope.cn"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def hf_endpoint() -> str:
    return (settings.hf_endpoint() or DEFAULT_HF_ENDPOINT).rstrip("/")


def modelscope_endpoint() -> str:
    return (settings.modelscope_endpoint() or DEFAULT_MODELSCOPE_ENDPOINT).rstrip("/")


@dataclass(frozen=True)
class Source:
    """One place a file can come from. `url` is resolved against the current environment."""

    kind: str  # "url" | "hf" | "modelscope" | "file"
    template: str  # URL with {HF_ENDPOINT}/{MODELSCOPE_ENDPOINT} placeholders
    auth: Optional[str] = None  # "hf": send HF_TOKEN as a Bearer token (only to this source)
    repo: Optional[str] = None  # hub repo id for "hf"/"modelscope" sources
    path: Optional[str] = None  # path inside the repo
    revision: Optional[str] = None
    gated: bool = False

    @property
    def url(self) -> str:
        return self.template.replace("{HF_ENDPOINT}", hf_endpoint()).replace(
            "{MODELSCOPE_ENDPOINT}", modelscope_endpoint()
        )

    @property
    def label(self) -> str:
        if self.kind == "hf":
            return f"Hugging Face {self.repo}"
        if self.kind == "modelscope":
            return f"ModelScope {self.repo}"
        if self.kind == "file":
            return f"local file {self.url[len('file://') :]}"

        return urlsplit(self.url).netloc or self.url


@dataclass(frozen=True)
class FileSpec:
    name: str
    size: Optional[int]
    sha256: Optional[str]
    sources: tuple[Source, ...]
    approx_size: Optional[int] = None

    @property
    def expected_bytes(self) -> Optional[int]:
        """Exact size when published, else the approximate one (for display and disk checks)."""
        return self.size if self.size is not None else self.approx_size


@dataclass(frozen=True)
class ModelSpec:
    name: str
    files: tuple[FileSpec, ...]
    description: str = ""
    license: str = ""
    commercial: Optional[bool] = None  # whether the weights allow commercial use; None: not stated
    homepage: str = ""
    origin: str = "built-in"  # "built-in" or the manifest path

    def file(self, name: str) -> FileSpec:
        for f in self.files:
            if f.name == name:
                return f
        raise KeyError(name)


@dataclass
class Manifest:
    models: dict[str, ModelSpec] = field(default_factory=dict)

    def names(self) -> list[str]:
        return sorted(self.models)


def builtin_path() -> Path:
    return Path(__file__).resolve().parent.parent / "assets" / "weights.json"


def _bad(where: str, what: str) -> InputError:
    return InputError(f"invalid weights manifest {where}: {what}")


def _parse_source(raw, where: str) -> Source:
    if isinstance(raw, str):
        raw = {"url": raw}
    if not isinstance(raw, dict):
        raise _bad(where, "a source must be a URL string or an object")
    if "hf" in raw:
        repo, path, rev = raw["hf"], raw.get("path"), raw.get("revision") or "main"
        if not isinstance(repo, str) or "/" not in repo or not isinstance(path, str) or not path:
            raise _bad(where, 'an "hf" source needs "hf": "org/name" and "path"')
        return Source(
            "hf",
            "{HF_ENDPOINT}/" + f"{repo}/resolve/{rev}/{path}",
            auth="hf",
            repo=repo,
            path=path,
            revision=rev,
            gated=bool(raw.get("gated", False)),
        )
    if "modelscope" in raw:
        repo, path, rev = raw["modelscope"], raw.get("path"), raw.get("revision") or "master"
        if not isinstance(repo, str) or "/" not in repo or not isinstance(path, str) or not path:
            raise _bad(where, 'a "modelscope" source needs "modelscope": "org/name" and "path"')
        return Source(
            "modelscope",
            "{MODELSCOPE_ENDPOINT}/" + f"models/{repo}/resolve/{rev}/{path}",
            repo=repo,
            path=path,
            revision=rev,
        )
    url = raw.get("url")
    if not isinstance(url, str) or not url:
        raise _bad(where, 'a source object needs "url", "hf" or "modelscope"')
    auth = raw.get("auth")
    if auth not in (None, "hf"):
        raise _bad(where, f'unknown "auth" {auth!r} (only "hf" is supported)')
    if url.startswith("/"):
        url = "file://" + url
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in ("http", "https", "file") and not url.startswith("{"):
        raise _bad(where, f"unsupported URL {url!r} (use http://, https:// or file://)")
    return Source("file" if scheme == "file" else "url", url, auth=auth)


def _parse_int(v, where: str, key: str) -> Optional[int]:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise _bad(where, f'"{key}" must be a non-negative integer or null')
    return v


def parse(data, origin: str) -> Manifest:
    """Validate manifest JSON (already decoded) and return a Manifest; InputError when malformed."""
    if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
        raise _bad(origin, 'expected a JSON object with a "models" object')
    fmt = data.get("format", FORMAT)
    if fmt != FORMAT:
        raise _bad(origin, f'unsupported "format" {fmt!r} (expected {FORMAT!r})')
    models: dict[str, ModelSpec] = {}
    for mname, m in data["models"].items():
        where = f"{origin} (model {mname!r})"
        if not _NAME.match(mname):
            raise _bad(where, "model names use letters, digits, '.', '_' and '-'")
        if not isinstance(m, dict) or not isinstance(m.get("files"), list) or not m["files"]:
            raise _bad(where, 'each model needs a non-empty "files" list')
        files = []
        seen = set()
        for f in m["files"]:
            if not isinstance(f, dict) or not isinstance(f.get("name"), str):
                raise _bad(where, 'each file needs a "name"')
            fname = f["name"]
            fwhere = f"{origin} (file {mname}/{fname})"
            if not _NAME.match(fname) or fname.endswith((".incomplete", ".lock", ".sha256")):
                raise _bad(fwhere, "file names are plain names without '/' or reserved suffixes")
            if fname in seen:
                raise _bad(fwhere, "duplicate file name")
            seen.add(fname)
            sha = f.get("sha256")
            if sha is not None:
                if not isinstance(sha, str) or not _HEX64.match(sha.lower()):
                    raise _bad(fwhere, '"sha256" must be 64 hex digits or null')
                sha = sha.lower()
            srcs = f.get("sources")
            if not isinstance(srcs, list) or not srcs:
                raise _bad(fwhere, 'each file needs a non-empty "sources" list')
            files.append(
                FileSpec(
                    name=fname,
                    size=_parse_int(f.get("size"), fwhere, "size"),
                    sha256=sha,
                    sources=tuple(_parse_source(s, fwhere) for s in srcs),
                    approx_size=_parse_int(f.get("approx_size"), fwhere, "approx_size"),
                )
            )
        commercial = m.get("commercial")
        if commercial is not None and not isinstance(commercial, bool):
            raise _bad(where, '"commercial" must be true, false or null')
        models[mname] = ModelSpec(
            name=mname,
            files=tuple(files),
            description=str(m.get("description", "")),
            license=str(m.get("license", "")),
            commercial=commercial,
            homepage=str(m.get("homepage", "")),
            origin=origin,
        )
    return Manifest(models)


def load_file(path: Path, origin: Optional[str] = None) -> Manifest:
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(f"weights manifest not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read weights manifest {path}: {e}") from e
    except json.JSONDecodeError as e:
        raise InputError(f"weights manifest {path} is not valid JSON (line {e.lineno}: {e.msg})") from e
    return parse(data, origin or str(path))


def load(manifest: Optional[Path | str] = None) -> Manifest:
    """The built-in registry merged with the user manifest (argument, else $VD_MANIFEST)."""
    merged = load_file(builtin_path(), origin="built-in")
    user = manifest if manifest is not None else settings.manifest()
    if user:
        merged.models.update(load_file(Path(user)).models)
    return merged
