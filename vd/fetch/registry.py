"""Model weights for the stages: what exists, where it lives, and how to get it.

The API stages use:

    require(model, *, auto_fetch=None) -> dict[str, Path]   # file name -> local path
    weights_id(model) -> str                                # identity for cache keys
    known_models() -> list[str]
    fetch_flag(flag) -> bool | None                         # the `--fetch` CLI option -> auto_fetch

`require` never downloads unless asked (`auto_fetch=True`, or VD_AUTO_FETCH=1 when
`auto_fetch` is None); a missing model raises MissingWeightsError (exit 3) whose message
names the exact `vd fetch <model>` command.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

from vd import console, settings
from vd.errors import MissingWeightsError, UsageError
from vd.fetch.download import (
    DownloadError,
    FileDownload,
    Reporter,
    check_disk,
    ensure_writable_dir,
    hub_cache_candidates,
    partials,
    read_sidecar,
    sha256_file,
    write_sidecar,
)
from vd.fetch.manifest import FileSpec, Manifest, ModelSpec, load
from vd.fetch.net import describe_proxies, make_client, normalise_proxy
from vd.paths import models_dir as _md
from vd.paths import offline as env_offline
from vd.units import format_size

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- registry access
def manifest(path: Optional[Path | str] = None) -> Manifest:
    """The built-in registry merged with `path` (else $VD_MANIFEST)."""
    return load(path)


def known_models(manifest_path: Optional[Path | str] = None) -> list[str]:
    return manifest(manifest_path).names()


def model_spec(model: str, manifest_path: Optional[Path | str] = None) -> ModelSpec:
    man = manifest(manifest_path)
    if model not in man.models:
        raise UsageError(f"unknown model {model!r}; known models: {', '.join(man.names())}")
    return man.models[model]


def models_dir() -> Path:
    return _md()


def model_dir(model: str) -> Path:
    return models_dir() / model


def locks_dir() -> Path:
    return models_dir() / ".locks"


def fetch_command(model: str | Iterable[str]) -> str:
    names = [model] if isinstance(model, str) else list(model)
    return "vd fetch " + " ".join(names)


def auto_fetch_env() -> bool:
    return settings.auto_fetch()


def fetch_flag(flag: bool) -> Optional[bool]:
    """Map a command's `--fetch` option to `require(auto_fetch=...)`: True, or None (env decides)."""
    return True if flag else None


# --------------------------------------------------------------------------- state on disk
@dataclass
class FileState:
    model: str
    name: str
    path: Path
    state: str  # "present" | "partial" | "missing" | "wrong-size"
    size: Optional[int]  # registry size (exact) or None
    expected_bytes: Optional[int]  # exact or approximate size for display
    on_disk: int = 0  # bytes of the installed file, or of the largest partial
    sha256: Optional[str] = None  # published, or recorded locally
    sha256_from: str = "published"  # "published" | "recorded" | "unknown"

    def as_dict(self) -> dict:
        return {
            "model": self.model,
            "file": self.name,
            "path": str(self.path),
            "state": self.state,
            "size": self.size,
            "expected_bytes": self.expected_bytes,
            "on_disk": self.on_disk,
            "sha256": self.sha256,
            "sha256_from": self.sha256_from,
        }


def file_state(model: str, spec: FileSpec) -> FileState:
    d = model_dir(model)
    path = d / spec.name
    st = FileState(model, spec.name, path, "missing", spec.size, spec.expected_bytes)
    if spec.sha256:
        st.sha256 = spec.sha256
    try:
        size = path.stat().st_size
    except OSError:
        size = None
    if size is not None:
        st.on_disk = size
        st.state = "present" if spec.size is None or size == spec.size else "wrong-size"
        if not spec.sha256:
            rec = read_sidecar(path)
            st.sha256, st.sha256_from = (rec, "recorded") if rec else (None, "unknown")
        return st
    if not spec.sha256:
        st.sha256_from = "unknown"
    if d.is_dir():
        parts = partials(d, spec.name)
        if parts:
            st.state = "partial"
            st.on_disk = parts[0].stat().st_size
    return st


def status(models: Optional[Iterable[str]] = None, manifest_path: Optional[Path | str] = None) -> list[dict]:
    """One dict per model: name, description, state, files (FileState dicts), sizes, licence ("license" text,
    "commercial": true/false/None for unknown)."""
    man = manifest(manifest_path)
    names = _check_names(models, man)
    rows = []
    for name in names:
        spec = man.models[name]
        files = [file_state(name, f) for f in spec.files]
        states = {f.state for f in files}
        if states == {"present"}:
            state = "present"
        elif states == {"missing"}:
            state = "missing"
        else:
            state = "partial"
        sizes = [f.expected_bytes for f in files]
        rows.append(
            {
                "model": name,
                "description": spec.description,
                "state": state,
                "size": sum(s or 0 for s in sizes),
                "size_exact": all(f.size is not None for f in files),
                "path": str(model_dir(name)),
                "origin": spec.origin,
                "license": spec.license,
                "commercial": spec.commercial,
                "files": [f.as_dict() for f in files],
            }
        )
    return rows


def _check_names(models: Optional[Iterable[str]], man: Manifest) -> list[str]:
    names = list(dict.fromkeys(models)) if models else man.names()
    unknown = [m for m in names if m not in man.models]
    if unknown:
        what = "unknown model" if len(unknown) == 1 else "unknown models"
        raise UsageError(f"{what} {', '.join(repr(u) for u in unknown)}; known models: {', '.join(man.names())}")
    return names


# --------------------------------------------------------------------------- reporting
class ConsoleReporter(Reporter):
    """Rich progress bars on stderr (bytes, speed, ETA, resumed-from); plain lines without a TTY."""

    def __init__(self):
        self.console = console
        self.progress = console.progress(transient=False, bytes_mode=True)
        self.task = None
        self.t0 = 0.0
        self.label = ""
        self.count = 0
        self.total = None

    def __enter__(self):
        try:
            self.progress.__enter__()
        except Exception:  # rich.errors.LiveError: a stage's own bar is live; go without bars
            from rich.progress import Progress

            self.progress = Progress(disable=True)
            self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)

    def start(self, label, total, resumed_from=0):
        self.finish()
        self.label, self.total, self.count, self.t0 = label, total, 0, time.monotonic()
        self.task = self.progress.add_task(label, total=total, completed=resumed_from)

    def advance(self, n):
        self.count += n
        if self.task is not None:
            self.progress.advance(self.task, n)

    def restart(self, reason):
        self.note(f"{self.label}: {reason}")
        if self.task is not None:
            self.progress.update(self.task, completed=0)

    def finish(self):
        if self.task is None:
            return
        dt = max(time.monotonic() - self.t0, 1e-6)
        if not self.console.bars_enabled() and self.count > (8 << 20):
            log.info(f"{self.label}: {format_size(self.count)} in {dt:.1f} s ({format_size(self.count / dt)}/s)")
        self.progress.stop_task(self.task)
        self.task = None

    def note(self, message):
        log.info(message)


# --------------------------------------------------------------------------- fetching
@dataclass
class FetchResult:
    model: str
    file: str
    path: Path
    action: str  # present | downloaded | linked | copied | missing
    sha256: Optional[str] = None
    source: str = ""
    resumed_from: int = 0
    bytes: int = 0

    def as_dict(self) -> dict:
        return {
            "model": self.model,
            "file": self.file,
            "path": str(self.path),
            "action": self.action,
            "sha256": self.sha256,
            "source": self.source,
            "resumed_from": self.resumed_from,
            "bytes": self.bytes,
        }


@dataclass
class FetchReport:
    results: list[FetchResult] = field(default_factory=list)
    missing: list[FetchResult] = field(default_factory=list)


def fetch(
    models: Optional[Iterable[str]] = None,
    *,
    offline: Optional[bool] = None,
    proxy: Optional[str] = None,
    manifest_path: Optional[Path | str] = None,
    reporter: Optional[Reporter] = None,
    force: bool = False,
) -> FetchReport:
    """Make every file of `models` (default: all) present and verified in the models directory.

    Offline, nothing touches the network: files are taken from a Hugging Face cache when
    possible and the rest is reported in `FetchReport.missing` (no exception). `force`
    downloads again files that are present (the old copy is replaced only once the new verifies).
    """

    man = manifest(manifest_path)
    names = _check_names(models, man)
    offline = env_offline() if offline is None else offline
    if proxy and not offline:
        normalise_proxy(proxy)  # a bad --proxy is a usage error before anything starts
    root = models_dir()
    todo: list[tuple[str, FileSpec]] = []
    for name in names:
        for f in man.models[name].files:
            todo.append((name, f))
    report = FetchReport()
    pending = [(m, f) for m, f in todo if force or file_state(m, f).state != "present"]
    if pending and not offline:
        ensure_writable_dir(root)
        need = 0
        for m, f in pending:
            if not force and hub_cache_candidates(f):
                continue
            parts = partials(model_dir(m), f.name) if model_dir(m).is_dir() else []
            have = parts[0].stat().st_size if parts else 0
            need += max(0, (f.expected_bytes or 0) - have)
        check_disk(root, need, f"{len(pending)} file(s) of {', '.join(dict.fromkeys(m for m, _ in pending))}")

    client = None

    def client_factory():
        nonlocal client
        if client is None:
            client = make_client(proxy)
        return _Unclosable(client)

    try:
        for m, f in todo:
            label = f"{m}/{f.name}"
            dl = FileDownload(
                f,
                model_dir(m),
                locks=locks_dir(),
                label=label,
                client_factory=client_factory,
                offline=offline,
                reporter=reporter,
                fetch_command=fetch_command(m),
                force=force and not offline,
            )
            try:
                got = dl.run()
            except MissingWeightsError:
                report.missing.append(FetchResult(m, f.name, model_dir(m) / f.name, "missing"))
                continue
            except DownloadError as e:
                via = describe_proxies(proxy)
                if via != "direct":
                    raise DownloadError(f"{e} (proxies: {via})", e.failures) from None
                raise
            report.results.append(
                FetchResult(m, f.name, got.path, got.action, got.sha256, got.source, got.resumed_from, got.bytes)
            )
    finally:
        if client is not None:
            client.close()
    return report


class _Unclosable:
    """Share one client across files: FileDownload closes what it gets, so hide `close`."""

    def __init__(self, client):
        self._c = client

    def stream(self, *a, **kw):
        return self._c.stream(*a, **kw)

    def close(self):
        pass


def verify(
    models: Optional[Iterable[str]] = None,
    manifest_path: Optional[Path | str] = None,
    reporter: Optional[Reporter] = None,
) -> list[dict]:
    """Re-hash installed files; each row's `result` is ok | mismatch | recorded | missing | wrong-size."""
    man = manifest(manifest_path)
    rows = []
    for name in _check_names(models, man):
        for f in man.models[name].files:
            st = file_state(name, f)
            row = {"model": name, "file": f.name, "path": str(st.path), "expected": f.sha256 or st.sha256}
            if st.state in ("missing", "partial"):
                row["result"] = "missing"
            elif st.state == "wrong-size":
                row["result"] = "wrong-size"
            else:
                digest = sha256_file(st.path, reporter, f"verifying {name}/{f.name}")
                row["sha256"] = digest
                # a hash recorded on download is the reference even when the file changed since: never rewritten here
                recorded = None if f.sha256 else read_sidecar(st.path, any_age=True)
                row["expected"] = f.sha256 or recorded
                if f.sha256:
                    row["result"] = "ok" if digest == f.sha256 else "mismatch"
                elif recorded:
                    row["result"] = "ok" if digest == recorded else "mismatch"
                else:
                    write_sidecar(st.path, digest)
                    row["result"] = "recorded"
            rows.append(row)
    return rows


# --------------------------------------------------------------------------- the stage API
def require(model: str, *, auto_fetch: Optional[bool] = None) -> dict[str, Path]:
    """Local paths of every file of `model` (file name -> Path), or MissingWeightsError (exit 3).

    Files already in a Hugging Face hub cache are verified and linked in (no network). With
    `auto_fetch=True` (or VD_AUTO_FETCH=1 when None) missing files are downloaded first.
    """

    spec = model_spec(model)
    if auto_fetch is None:
        auto_fetch = auto_fetch_env()
    missing = [f for f in spec.files if file_state(model, f).state != "present"]
    if missing and auto_fetch and not env_offline():
        with ConsoleReporter() as rep:
            log.info(f"fetching model weights for {model} (--fetch / VD_AUTO_FETCH)")
            fetch([model], reporter=rep)
        missing = [f for f in spec.files if file_state(model, f).state != "present"]
    elif missing and any(hub_cache_candidates(f) for f in missing):
        # no download: a verified copy in a Hugging Face cache is still fine
        report = fetch([model], offline=True)
        missing = [f for f in spec.files if f.name in {r.file for r in report.missing}]
    if missing:
        names = ", ".join(f.name for f in missing)
        size = sum(f.expected_bytes or 0 for f in missing)
        why = " and the network is off (VD_OFFLINE=1)" if auto_fetch and env_offline() else ""
        raise MissingWeightsError(
            f"model weights for {model!r} are missing ({names}, about {format_size(size)}, "
            f"in {model_dir(model)}){why}; run: {fetch_command(model)}"
        )
    return {f.name: model_dir(model) / f.name for f in spec.files}


def weights_id(model: str) -> str:
    """Stable identity of the installed weights for cache keys: `name:file=sha256[:16],...`.

    Uses the published sha256; for files without one, the hash recorded on download (computed
    and recorded now if the file was placed by hand). MissingWeightsError if such a file is missing.
    """
    spec = model_spec(model)
    parts = []
    for f in sorted(spec.files, key=lambda f: f.name):
        digest = f.sha256
        if digest is None:
            st = file_state(model, f)
            if st.state != "present":
                raise MissingWeightsError(
                    f"model weights for {model!r} are missing ({f.name} in {model_dir(model)}); "
                    f"run: {fetch_command(model)}"
                )
            digest = st.sha256
            if digest is None:
                digest = sha256_file(st.path)
                try:
                    write_sidecar(st.path, digest)
                except OSError:
                    pass
        parts.append(f"{f.name}={digest[:16]}")
    return f"{model}:" + ",".join(parts)


def require_all(models: Iterable[str], *, auto_fetch: Optional[bool] = None) -> dict[str, dict[str, Path]]:
    """`require` for several models, reporting every missing one in one error."""
    out, missing = {}, []
    for m in models:
        try:
            out[m] = require(m, auto_fetch=auto_fetch)
        except MissingWeightsError as e:
            missing.append(m)
            only = e
    if len(missing) == 1:
        raise only
    if missing:
        raise MissingWeightsError(f"model weights missing for {', '.join(missing)}; run: {fetch_command(missing)}")
    return out
