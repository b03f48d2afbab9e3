"""What can go wrong while fetching model weights, as types.

    FetchError                      any fetch failure (a VdError: exit 1, one sentence)
    ├── SourceError                 one source could not deliver the file
    │   ├── TransientError          worth another try at the same source (backoff, then retry)
    │   │   ├── Unreachable         no connection at all: refused, connect timeout, dead proxy
    │   │   ├── ConnectionLost      the connection broke or stalled mid-transfer
    │   │   ├── ServerBusy          408, 425, 429 or 5xx (may carry Retry-After)
    │   │   ├── Incomplete          the body ended short of the expected size
    │   │   └── RangeRestart        the resume range was refused or answered wrongly: retry now
    │   ├── AccessDenied            401 / 403, or a local file that cannot be read
    │   ├── NotFound                404 / 410, or a local file that does not exist
    │   ├── ChecksumMismatch        the bytes arrived but their sha256 is wrong
    │   └── WrongContent            an HTML page, a wrong size, an odd status, a bad URL
    ├── DownloadError               every source failed; `.failures` says how each one did
    └── NotEnoughSpace              the disk cannot hold the file; raised before writing

A `SourceError` is raised where the failure happens; `FileDownload` retries a `TransientError`
and, once the tries are spent or the error is not transient, moves to the next source. HTTP
statuses and httpx exceptions are mapped here, once (`for_status`, `for_httpx`).
"""

from __future__ import annotations

from typing import Optional

from vd.errors import VdError


class FetchError(VdError):
    """A model-weights download failed."""


class SourceError(FetchError):
    """One source could not deliver the file; `str()` says what it answered."""

    def gave_up(self, attempts: int) -> SourceError:
        """Mark a transient failure as final after `attempts` tries (the message says so)."""
        self.args = (f"{self} (gave up after {attempts} attempts)",)
        return self


class TransientError(SourceError):
    """A failure worth another try at the same source.

    `now`: retry at once, without backoff (the request itself was wrong, not the server busy);
    `delay`: the wait the server asked for (Retry-After), in seconds."""

    def __init__(self, message: str, *, now: bool = False, delay: Optional[float] = None):
        super().__init__(message)
        self.now = now
        self.delay = delay


class Unreachable(TransientError):
    """No connection could be made (refused, connect timeout, proxy failure): fewer retries."""


class ConnectionLost(TransientError):
    """The connection broke or timed out after it was made."""


class ServerBusy(TransientError):
    """The server answered 408, 425, 429 or a 5xx."""


class Incomplete(TransientError):
    """The body ended before the expected number of bytes."""


class RangeRestart(TransientError):
    """The resume request was refused or answered with another range; the partial file was
    truncated and the source is asked again at once."""

    def __init__(self, message: str):
        super().__init__(message, now=True)


class AccessDenied(SourceError):
    """401 / 403 (`status` set), or a local file without read permission (`status` None)."""

    def __init__(self, message: str, status: Optional[int] = None):
        super().__init__(message)
        self.status = status


class NotFound(SourceError):
    """The source does not have the file (404, 410, or a missing local file)."""


class ChecksumMismatch(SourceError):
    """The file arrived whole but its sha256 differs from the registry's."""


class WrongContent(SourceError):
    """The source answered with something that is not the file: an HTML page, a different size,
    an unexpected HTTP status, or a URL the client cannot follow."""


class DownloadError(FetchError):
    """Every source failed for a file (exit 1); the message lists what each source answered.

    `failures`: (source label, the SourceError it ended with), in source order."""

    def __init__(self, message: str, failures: Optional[list[tuple[str, SourceError]]] = None):
        super().__init__(message)
        self.failures = list(failures or [])


class NotEnoughSpace(FetchError):
    """The models directory's disk cannot hold the download; raised before writing anything."""


# --------------------------------------------------------------------------- mapping
def for_status(
    status: int, *, source: str, sent_token: bool, needs_token: bool, retry_after: Optional[str] = None
) -> Optional[SourceError]:
    """The failure an HTTP status means, or None for 200 / 206.

    `source` labels the server in a busy message; `needs_token` (an `hf` source) and not
    `sent_token` add "no HF_TOKEN set" to an access denial."""
    if status in (200, 206):
        return None
    if status in (401, 403):
        why = "access denied" + ("; no HF_TOKEN set" if needs_token and not sent_token else "")
        return AccessDenied(f"HTTP {status} ({why})", status=status)
    if status in (404, 410):
        return NotFound(f"HTTP {status} (not found)")
    if status in (408, 425, 429) or status >= 500:
        return ServerBusy(f"HTTP {status} from {source}", delay=_seconds(retry_after))
    return WrongContent(f"HTTP {status}")


def for_httpx(exc: Exception) -> Optional[SourceError]:
    """The failure an httpx exception means, or None when it is not a transport failure."""
    import httpx

    name = type(exc).__name__
    if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.ProxyError)):
        return Unreachable(f"{name}: {exc or 'cannot connect'}")
    if isinstance(exc, (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)):
        return ConnectionLost(f"{name}: {exc or 'connection problem'}")
    if isinstance(exc, (httpx.UnsupportedProtocol, httpx.InvalidURL)):
        return WrongContent(str(exc))
    if isinstance(exc, httpx.TooManyRedirects):
        return WrongContent("too many redirects")
    return None


def _seconds(value: Optional[str]) -> Optional[float]:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
