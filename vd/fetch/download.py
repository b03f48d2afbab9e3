"""Verified, resumable download of one file into the models directory.

For one `FileSpec` into `<models_dir>/<model>/<name>`:

1. Take a per-file lock (`vd.fsio.file_lock` on `<models_dir>/.locks/<model>--<name>.lock`); a second
   process waits, then finds the finished file and returns.
2. Reuse a copy already in a Hugging Face hub cache (HF_HUB_CACHE, $HF_HOME/hub,
   ~/.cache/huggingface/hub) or a ModelScope cache: verified, then hard-linked or copied.
3. Otherwise pick up the largest `<name>.<uuid8>.incomplete` left by an earlier run (renamed to
   this process's own unique name) and try the sources in order: `Range` resume, restart when
   the server answers 200 to a Range request, retries with exponential backoff on connection
   errors, timeouts and 5xx, next source on 401/403/404, on an HTML page or on a hash mismatch
   (each failure is a typed `vd.fetch.errors.SourceError`; its type decides retry or next source).
4. Check the free disk space before writing, hash while streaming (sha256, in a helper thread
   that also fdatasyncs every 256 MiB), fsync, and atomically rename into place only when size
   and hash match. Nothing unverified is ever installed.

Knobs (environment): VD_FETCH_RETRIES (5), VD_FETCH_BACKOFF (1.0 s, doubled per retry, capped
at 60 s), VD_FETCH_TIMEOUT (30 s), VD_FETCH_FSYNC (1).
"""

from __future__ import annotations

import hashlib
import os
import queue
import shutil
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional
from urllib.parse import unquote, urlsplit

from vd import settings
from vd.errors import MissingWeightsError, VdError, is_disk_full
from vd.fetch.errors import (
    AccessDenied,
    ChecksumMismatch,
    DownloadError,
    Incomplete,
    NotEnoughSpace,
    NotFound,
    RangeRestart,
    SourceError,
    TransientError,
    Unreachable,
    WrongContent,
    for_httpx,
    for_status,
)
from vd.fetch.manifest import FileSpec, Source
from vd.fetch.net import hf_token, make_client
from vd.fsio import atomic_write_bytes, file_lock
from vd.units import format_size

if TYPE_CHECKING:
    import httpx

CHUNK = 1 << 20  # 1 MiB reads and writes
DISK_MARGIN = 64 << 20  # keep this much free beyond the file itself
INCOMPLETE = ".incomplete"


# --------------------------------------------------------------------------- reporting
class Reporter:
    """Progress callbacks; the CLI supplies a rich implementation, the default is silent."""

    def start(self, label: str, total: Optional[int], resumed_from: int = 0) -> None: ...
    def advance(self, n: int) -> None: ...
    def restart(self, reason: str) -> None: ...
    def finish(self) -> None: ...
    def note(self, message: str) -> None: ...


@dataclass
class Fetched:
    """What happened to one file."""

    path: Path
    sha256: Optional[str]
    action: str  # "present" | "downloaded" | "linked" | "copied"
    source: str = ""
    resumed_from: int = 0
    bytes: int = 0


# --------------------------------------------------------------------------- settings
def retries() -> int:
    return settings.fetch_retries()


def _fsync_enabled() -> bool:
    """fsync before the rename (default); VD_FETCH_FSYNC=0 skips it (benchmarks, slow network disks)."""
    return settings.fetch_fsync()


def backoff_base() -> float:
    """Seconds before the first retry (doubled each time, capped at 60 s); VD_FETCH_BACKOFF."""
    return settings.fetch_backoff()


# --------------------------------------------------------------------------- helpers
def sha256_file(path: Path, reporter: Optional[Reporter] = None, label: str = "") -> str:
    h = hashlib.sha256()
    size = path.stat().st_size
    if reporter:
        reporter.start(label or f"verifying {path.name}", size)
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(CHUNK * 4)
        view = memoryview(buf)
        while True:
            n = f.readinto(buf)
            if not n:
                break
            h.update(view[:n])
            if reporter:
                reporter.advance(n)
    if reporter:
        reporter.finish()
    return h.hexdigest()


def sidecar_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def read_sidecar(path: Path, *, any_age: bool = False) -> Optional[str]:
    """The sha256 recorded for `path` (sha256sum format), if the record is newer than the file (or
    `any_age`: whatever was recorded, which is what a file changed since must still match)."""
    side = sidecar_path(path)
    try:
        if not any_age and side.stat().st_mtime_ns < path.stat().st_mtime_ns:
            return None
        text = side.read_text().split()
    except OSError:
        return None
    if text and len(text[0]) == 64:
        return text[0].lower()
    return None


def write_sidecar(path: Path, digest: str) -> None:
    atomic_write_bytes(sidecar_path(path), f"{digest}  {path.name}\n".encode(), deferred=False)


def ensure_writable_dir(path: Path) -> Path:
    """Create `path` if needed and make sure files can be created in it; one sentence if not."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".vd-write-test.{uuid.uuid4().hex[:8]}"
        probe.touch()
        probe.unlink()
    except OSError as e:
        if is_disk_full(e):
            raise NotEnoughSpace(models_disk_full(path)) from e
        raise VdError(
            f"the models directory {path} is not writable ({e.strerror or e}); set VD_MODELS_DIR to a writable folder"
        ) from e
    return path


def models_disk_full(folder: Path) -> str:
    return (
        f"no space left on the device holding the models folder {folder}; free some space "
        "(a partial download resumes) or set VD_MODELS_DIR to a folder on a bigger disk"
    )


def check_disk(path: Path, need: int, what: str) -> None:
    """Refuse with one sentence when the disk holding `path` has less than `need` bytes free."""
    if need <= 0:
        return
    free = shutil.disk_usage(path).free
    if free < need + DISK_MARGIN:
        raise NotEnoughSpace(
            f"not enough free disk space for {what}: need {format_size(need)} "
            f"plus a {format_size(DISK_MARGIN)} margin, but {path} has {format_size(free)} free; "
            "free some space or set VD_MODELS_DIR to a bigger disk"
        )


def partials(dest: Path, name: str) -> list[Path]:
    """Leftover `<name>.<id>.incomplete` files for `name` in `dest`, largest first."""
    found = []
    for p in dest.glob(f"{name}.*{INCOMPLETE}"):
        mid = p.name[len(name) + 1 : -len(INCOMPLETE)]
        if mid and "." not in mid:
            try:
                found.append((p.stat().st_size, p))
            except OSError:
                pass
    return [p for _, p in sorted(found, key=lambda t: -t[0])]


# --------------------------------------------------------------------------- hub cache
def hub_cache_dirs() -> list[Path]:
    """Hugging Face hub caches to look in: HF_HUB_CACHE, $HF_HOME/hub, ~/.cache/huggingface/hub."""
    dirs = []
    hub = settings.hf_hub_cache()
    if hub is not None:
        dirs.append(hub)
    dirs.append(settings.hf_home() / "hub")
    dirs.append(settings.xdg_cache_home() / "huggingface" / "hub")
    seen, out = set(), []
    for d in dirs:
        d = d.expanduser()
        if d not in seen:
            seen.add(d)
            out.append(d)
    return out


def hub_cache_candidates(spec: FileSpec) -> list[tuple[Source, Path]]:
    """Existing copies in a Hugging Face hub cache (the ref'd revision first), then in a ModelScope cache."""
    found = []
    for src in spec.sources:
        if src.kind != "hf" or not src.repo or not src.path:
            continue
        for cache in hub_cache_dirs():
            repo_dir = cache / ("models--" + src.repo.replace("/", "--"))
            snaps = repo_dir / "snapshots"
            if not snaps.is_dir():
                continue
            order = []
            try:
                ref = (repo_dir / "refs" / (src.revision or "main")).read_text().strip()
                order.append(snaps / ref)
            except OSError:
                pass
            order += sorted((p for p in snaps.iterdir() if p not in order), key=lambda p: p.name)
            for snap in order:
                f = snap / src.path
                if f.is_file():
                    found.append((src, f))
    for src in spec.sources:
        if src.kind != "modelscope" or not src.repo or not src.path:
            continue
        org, _, name = src.repo.partition("/")
        for cache in modelscope_cache_dirs():
            # modelscope >= 1.14 keeps models under hub/models/<org>/<name>; older ones hub/<org>/<name>
            for base in (
                cache / "models" / org / name,
                cache / org / name,
                cache / "models" / org / name.replace(".", "___"),
            ):
                f = base / src.path
                if f.is_file():
                    found.append((src, f))
                    break
    return found


def modelscope_cache_dirs() -> list[Path]:
    """ModelScope caches: $MODELSCOPE_CACHE/hub (or itself), else ~/.cache/modelscope/hub."""
    dirs = []
    root = settings.modelscope_cache()
    if root is not None:
        dirs += [root / "hub", root]
    dirs.append(Path.home() / ".cache" / "modelscope" / "hub")
    return dirs


# --------------------------------------------------------------------------- the downloader
class FileDownload:
    """Download one file of a model into `dest`; see the module docstring for the steps."""

    def __init__(
        self,
        spec: FileSpec,
        dest: Path,
        *,
        locks: Path,
        label: str,
        client_factory: Optional[Callable[[], httpx.Client]] = None,
        offline: bool = False,
        reporter: Optional[Reporter] = None,
        fetch_command: str = "vd fetch",
        use_hub_cache: bool = True,
        force: bool = False,
    ):
        self.spec = spec
        self.dest = dest
        self.final = dest / spec.name
        self.lock_path = locks / f"{label.replace('/', '--')}.lock"
        self.label = label
        self.client_factory = client_factory
        self.offline = offline
        self.reporter = reporter or Reporter()
        self.fetch_command = fetch_command
        self.use_hub_cache = use_hub_cache and not force
        self.force = force  # download again even if present; replaced only once verified
        self.tmp = dest / f"{spec.name}.{uuid.uuid4().hex[:8]}{INCOMPLETE}"
        self._client: Optional[httpx.Client] = None

    # ---- public
    def run(self) -> Fetched:
        if not self.force and (done := self._present()) is not None:
            return done
        if self.offline and not (self.use_hub_cache and hub_cache_candidates(self.spec)):
            raise MissingWeightsError(
                f"{self.label} is missing and the network is off (--offline / VD_OFFLINE=1); "
                f"run without it: {self.fetch_command}"
            )
        ensure_writable_dir(self.dest)
        waited = []

        def on_wait():
            waited.append(True)
            self.reporter.note(f"waiting for another process that is downloading {self.label}")

        with file_lock(self.lock_path, on_wait):
            if (not self.force or waited) and (done := self._present()) is not None:
                if waited:
                    self.reporter.note(f"{self.label} was installed by the other process")
                return done
            try:
                if self.use_hub_cache and (got := self._from_hub_cache()) is not None:
                    return got
                if self.offline:
                    raise MissingWeightsError(
                        f"{self.label} is missing and the network is off (--offline / VD_OFFLINE=1); "
                        f"run without it: {self.fetch_command}"
                    )
                return self._download()
            except OSError as e:
                if is_disk_full(e):
                    raise NotEnoughSpace(models_disk_full(self.dest)) from e
                raise
            finally:
                if self._client is not None:
                    self._client.close()

    # ---- steps
    def _present(self) -> Optional[Fetched]:
        try:
            st = self.final.stat()
        except OSError:
            return None
        if self.spec.size is not None and st.st_size != self.spec.size:
            return None
        return Fetched(self.final, self.spec.sha256 or read_sidecar(self.final), "present", bytes=st.st_size)

    def _from_hub_cache(self) -> Optional[Fetched]:
        for src, path in hub_cache_candidates(self.spec):
            try:
                size = path.stat().st_size
            except OSError:
                continue
            if self.spec.size is not None and size != self.spec.size:
                continue
            where = "Hugging Face cache" if src.kind == "hf" else "ModelScope cache"
            digest = sha256_file(path, self.reporter, f"verifying {self.label} ({where})")
            if self.spec.sha256 and digest != self.spec.sha256:
                self.reporter.note(f"ignoring {path}: its sha256 does not match the registry")
                continue
            real = path.resolve()
            try:
                os.link(real, self.tmp)
                action = "linked"
            except OSError:
                check_disk(self.dest, size, self.label)
                action = "copied"
                try:
                    shutil.copyfile(real, self.tmp)
                    if sha256_file(self.tmp) != digest:
                        self.tmp.unlink(missing_ok=True)
                        continue
                except BaseException:
                    self.tmp.unlink(missing_ok=True)
                    raise
            self._install(digest, chmod=action != "linked")  # a hard link shares the cache's inode
            self.reporter.note(f"{self.label}: reused {path} ({action})")
            return Fetched(self.final, digest, action, source=f"{where} {path}", bytes=size)
        return None

    def _download(self) -> Fetched:
        spec = self.spec
        # take over the largest partial file an earlier (or interrupted) run left behind
        offset = 0
        leftovers = partials(self.dest, spec.name)
        if leftovers:
            best, rest = leftovers[0], leftovers[1:]
            for p in rest:
                p.unlink(missing_ok=True)
            os.replace(best, self.tmp)
            offset = self.tmp.stat().st_size
            if spec.size is not None and offset > spec.size:
                self.tmp.unlink()
                offset = 0
        need = (spec.expected_bytes or 0) - offset
        check_disk(self.dest, need, self.label)

        failures: list[tuple[str, SourceError]] = []
        for i, src in enumerate(spec.sources):
            try:
                digest, resumed_from = self._from_source(src)
            except SourceError as e:
                failures.append((src.label, e))
                if i + 1 < len(spec.sources):
                    self.reporter.note(f"{self.label}: {src.label} failed ({e}); trying the next source")
                continue
            size = self.tmp.stat().st_size
            self._install(digest)
            return Fetched(self.final, digest, "downloaded", source=src.label, resumed_from=resumed_from, bytes=size)
        # a partial file stays for the next run to resume (it is removed when known to be wrong)
        try:
            if self.tmp.stat().st_size == 0:
                self.tmp.unlink()
        except OSError:
            pass
        raise DownloadError(
            f"could not download {self.label}: "
            + "; ".join(f"{label}: {e}" for label, e in failures)
            + _advice(spec, [e for _, e in failures]),
            failures,
        )

    def _from_source(self, src: Source) -> tuple[str, int]:
        """Bring `self.tmp` to the complete, verified file from `src`; returns (sha256, resumed_from)."""
        max_tries = retries()
        attempt = 0
        total_attempts = 0
        restarted_after_mismatch = False
        first_offset = None
        while True:
            offset = self.tmp.stat().st_size if self.tmp.exists() else 0
            if first_offset is None:
                first_offset = offset
            total_attempts += 1
            try:
                self._hasher = self._hash_prefix(offset)
                got = self._attempt(src, offset)
                digest = self._hasher.hexdigest()
                size = self.tmp.stat().st_size
                if self.spec.size is not None and size != self.spec.size:
                    raise Incomplete(f"got {size} bytes, expected {self.spec.size}")
                if self.spec.sha256 and digest != self.spec.sha256:
                    if first_offset and not restarted_after_mismatch:
                        # the resumed-from part may be stale: one clean try from zero
                        restarted_after_mismatch = True
                        self.reporter.restart("sha256 mismatch after resuming; starting over")
                        self._truncate()
                        first_offset = 0
                        continue
                    self.tmp.unlink(missing_ok=True)
                    raise ChecksumMismatch(f"sha256 mismatch (got {digest[:12]}…, expected {self.spec.sha256[:12]}…)")
                return digest, got
            except TransientError as e:
                progressed = self.tmp.exists() and self.tmp.stat().st_size > offset
                attempt = 0 if progressed else attempt + 1
                limit = min(max_tries, 2) if isinstance(e, Unreachable) else max_tries
                if attempt > limit or total_attempts > 20 * max(1, max_tries):
                    raise e.gave_up(total_attempts) from None
                if not e.now:
                    delay = min(60.0, backoff_base() * (2 ** max(0, attempt - 1)))
                    if e.delay is not None:
                        delay = min(60.0, max(delay, e.delay))
                    self.reporter.note(f"{self.label}: {e}; retrying in {delay:.1f} s")
                    time.sleep(delay)

    def _hash_prefix(self, offset: int):
        """sha256 state after the first `offset` bytes of the partial file (resume keeps one pass)."""
        h = hashlib.sha256()
        if offset:
            show = offset > (256 << 20)
            if show:
                self.reporter.start(f"{self.label}: hashing the partial download", offset)
            with open(self.tmp, "rb", buffering=0) as f:
                remaining = offset
                while remaining:
                    b = f.read(min(CHUNK * 4, remaining))
                    if not b:
                        break
                    h.update(b)
                    remaining -= len(b)
                    if show:
                        self.reporter.advance(len(b))
            if show:
                self.reporter.finish()
        return h

    def _truncate(self) -> None:
        with open(self.tmp, "wb"):
            pass
        self._hasher = hashlib.sha256()

    def _attempt(self, src: Source, offset: int) -> int:
        """One request; appends to self.tmp. Returns the offset it resumed from."""
        if src.kind == "file":
            return self._attempt_file(src, offset)
        import httpx

        if self._client is None:
            self._client = (self.client_factory or make_client)()
        headers = {}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        if src.auth == "hf":
            tok = hf_token()
            if tok:
                headers["Authorization"] = f"Bearer {tok}"
        try:
            with self._client.stream("GET", src.url, headers=headers) as r:
                status = r.status_code
                if status == 416 and offset:
                    if self.spec.size is not None and offset == self.spec.size:
                        return offset  # already complete; verification follows
                    self.reporter.restart("server refused the resume range; starting over")
                    self._truncate()
                    raise RangeRestart("HTTP 416 on resume")
                failure = for_status(
                    status,
                    source=src.label,
                    sent_token="Authorization" in headers,
                    needs_token=src.auth == "hf",
                    retry_after=r.headers.get("retry-after"),
                )
                if failure is not None:
                    raise failure
                ctype = r.headers.get("content-type", "").lower()
                if ctype.startswith(("text/html", "application/xhtml")):
                    raise WrongContent("served an HTML page instead of the file (an error or login page?)")
                resumed = offset
                if status == 206:
                    start, total = _content_range(r.headers.get("content-range", ""))
                    if start != offset:
                        self.reporter.restart("server answered a different range; starting over")
                        self._truncate()
                        raise RangeRestart("unexpected Content-Range")
                else:  # 200: whole body
                    total = _int(r.headers.get("content-length"))
                    if offset:
                        self.reporter.restart("server ignored the Range request; starting over")
                        self._truncate()
                        offset = resumed = 0
                if total is not None and self.spec.size is not None and total != self.spec.size:
                    raise WrongContent(f"served {total} bytes, expected {self.spec.size}")
                self._stream_into(r.iter_raw(), offset, total)
                return resumed
        except httpx.HTTPError as e:
            failure = for_httpx(e)
            if failure is None:
                raise
            raise failure from None

    def _attempt_file(self, src: Source, offset: int) -> int:
        path = Path(unquote(urlsplit(src.url).path))
        try:
            size = path.stat().st_size
            if self.spec.size is not None and size != self.spec.size:
                raise WrongContent(f"{path} has {size} bytes, expected {self.spec.size}")
            if offset > size:
                self._truncate()
                offset = 0
            f = open(path, "rb")
        except FileNotFoundError:
            raise NotFound("not found") from None
        except PermissionError:
            raise AccessDenied("permission denied") from None
        with f:
            f.seek(offset)
            self._stream_into(iter(lambda: f.read(CHUNK), b""), offset, size)
        return offset

    def _stream_into(self, chunks, offset: int, total: Optional[int]) -> None:
        """Append `chunks` to self.tmp as they arrive (no re-buffering: httpcore hands out up to
        1 MiB at a time); sha256 (and periodic fdatasync) run in a helper thread meanwhile.
        Bytes received before a dropped connection are already on disk, a valid prefix to resume from."""
        limit = self.spec.size
        note = f" (resumed from {format_size(offset)})" if offset else ""
        self.reporter.start(f"{self.label}{note}", total if total is not None else self.spec.expected_bytes, offset)
        pos = offset
        unreported = 0
        try:
            with open(self.tmp, "ab", buffering=0) as f:
                sync = _fsync_enabled()
                bg = _BackgroundHash(self._hasher, fd=f.fileno() if sync else None)
                try:
                    write = f.write
                    for chunk in chunks:
                        n = len(chunk)
                        if limit is not None and pos + n > limit:
                            bg.finish()
                            f.truncate(0)
                            self._hasher = hashlib.sha256()
                            raise WrongContent(f"served more than the expected {limit} bytes")
                        view = memoryview(chunk)
                        while view:
                            view = view[write(view) :]
                        bg.update(chunk)
                        pos += n
                        unreported += n
                        if unreported >= CHUNK:
                            self.reporter.advance(unreported)
                            unreported = 0
                finally:
                    bg.finish()  # before the file (and its fd) is closed
                if sync:
                    os.fsync(f.fileno())
        finally:
            if unreported:
                self.reporter.advance(unreported)
            self.reporter.finish()

    def _install(self, digest: str, chmod: bool = True) -> None:
        if chmod:
            os.chmod(self.tmp, 0o644)
        os.replace(self.tmp, self.final)
        if self.spec.sha256 is None:
            write_sidecar(self.final, digest)
        try:
            dfd = os.open(self.dest, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError:
            pass


class _BackgroundHash:
    """Feed a hashlib object from a helper thread (hashlib releases the GIL), bounded queue.

    With `fd`, the thread also fdatasync()s the file every `sync_every` bytes, so writeback
    overlaps the download and the final fsync before the rename has little left to flush.
    """

    def __init__(self, h, fd: Optional[int] = None, sync_every: int = 256 << 20):
        self.h = h
        self.fd = fd
        self.sync_every = sync_every
        self.unsynced = 0
        self.q: queue.Queue = queue.Queue(maxsize=8)
        self.done = False
        self.t = threading.Thread(target=self._run, name="vd-sha256", daemon=True)
        self.t.start()

    def _run(self) -> None:
        while True:
            b = self.q.get()
            if b is None:
                return
            self.h.update(b)
            if self.fd is not None:
                self.unsynced += len(b)
                if self.unsynced >= self.sync_every:
                    self.unsynced = 0
                    try:
                        os.fdatasync(self.fd)
                    except OSError:  # e.g. a filesystem without fdatasync: the final fsync remains
                        self.fd = None

    def update(self, data: bytes) -> None:
        self.q.put(data)

    def finish(self) -> None:
        if not self.done:
            self.done = True
            self.q.put(None)
            self.t.join()


def _advice(spec: FileSpec, failures: list[SourceError]) -> str:
    """What the user can do about `failures`, as clauses to append to the message ("" if nothing)."""
    hint = ""
    gated = next((s for s in spec.sources if s.gated), None)
    if gated is not None and any(isinstance(e, AccessDenied) and e.status for e in failures):
        hint = (
            f"; the Hugging Face repo is gated: accept its licence at "
            f"https://huggingface.co/{gated.repo} and set HF_TOKEN"
        )
    if failures and all(isinstance(e, Unreachable) for e in failures):
        hint += (
            "; no source could be reached: check the network, a proxy (--proxy, HTTPS_PROXY, ALL_PROXY) "
            "or a mirror (HF_ENDPOINT, VD_MODELSCOPE_ENDPOINT, --manifest)"
        )
    return hint


def _int(v) -> Optional[int]:
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


def _content_range(value: str) -> tuple[Optional[int], Optional[int]]:
    """('bytes 100-199/200') -> (100, 200); total None when '*'."""
    try:
        unit, rng = value.strip().split(" ", 1)
        span, total = rng.split("/", 1)
        start = int(span.split("-", 1)[0])
        return start, (None if total.strip() == "*" else int(total))
    except (ValueError, AttributeError):
        return None, None
