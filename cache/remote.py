"""The shared remote tier: another cache's objects/ and records/ behind an fsspec URL.

`VD_CACHE_REMOTE` (or `--cache-remote`) names it: `file:///shared/vd-cache`, `s3://bucket/vd`,
`gs://bucket/vd`, or anything else fsspec opens. Credentials and endpoints come only from the
backend's own environment and config (AWS_* / ~/.aws, GOOGLE_APPLICATION_CREDENTIALS,
FSSPEC_<PROTOCOL>_<OPTION> variables); vd never prints them: URLs are shown without user info.

Writers upload objects first and the record last, so a reader that finds a record finds its
objects. Readers verify every downloaded object's hash, like local reads. Any failure of the
backend other than a missing file means the remote is unusable: one warning, then local only.
"""

from __future__ import annotations

import threading
from typing import BinaryIO, Iterator
from urllib.parse import urlsplit, urlunsplit

from vd import settings
from vd.cache import records
from vd.cache.objectstore import hash_bytes
from vd.install import pip_install

ENV = "VD_CACHE_REMOTE"


class RemoteError(Exception):
    """The remote cannot be reached or used (not a missing file)."""


def redact(url: str) -> str:
    """`url` without user name, password or query (which may carry credentials)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<remote>"
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


# remotes that failed in this process: warned about once, then not tried again
FAILED: set[str] = set()


def from_env() -> Remote | None:
    return from_url(settings.cache_remote())


def from_url(url: str | None) -> Remote | None:
    url = (url or "").strip()
    return Remote(url) if url and url not in FAILED else None


class Remote:
    """One remote cache: its record files, any small file (leases), and its objects
    (`objects`, an ObjectStore). Methods raise RemoteError when the backend fails."""

    def __init__(self, url: str):
        self.url = url
        self.label = redact(url)
        self._fs = None
        self._base = ""
        self._lock = threading.Lock()
        self.objects = RemoteObjects(self)

    # ------------------------------------------------------------------ plumbing
    def _open(self):
        with self._lock:
            if self._fs is None:
                try:
                    import fsspec

                    self._fs, self._base = fsspec.core.url_to_fs(self.url)
                except ImportError as e:
                    raise RemoteError(
                        f"the remote cache {self.label} needs fsspec and its backend ({e.name}); "
                        f"{pip_install('cluster')}"
                    ) from e
                except Exception as e:
                    raise RemoteError(f"cannot open the remote cache {self.label} ({type(e).__name__})") from e
        return self._fs

    def _path(self, rel: str) -> str:
        return f"{self._base.rstrip('/')}/{rel}"

    def call(self, what: str, fn, rel: str):
        """`fn(fs, full path of rel)`; FileNotFoundError passes, any other failure is a RemoteError
        saying the remote failed to `what`."""
        fs = self._open()
        try:
            return fn(fs, self._path(rel))
        except FileNotFoundError:
            raise
        except Exception as e:  # network, permission, bad bucket, ...: the remote is unusable
            raise RemoteError(f"the remote cache {self.label} failed to {what} ({type(e).__name__})") from e

    def read(self, what: str, rel: str) -> bytes:
        """The bytes of file `rel` (FileNotFoundError when missing)."""
        return self.call(what, lambda fs, p: fs.cat_file(p), rel)

    def write(self, what: str, rel: str, data: bytes) -> None:
        def write(fs, target):
            fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
            fs.pipe_file(target, data)

        try:
            self.call(what, write, rel)
        except FileNotFoundError as e:
            raise RemoteError(f"the remote cache {self.label} failed to {what} (its folder is missing)") from e

    def remove(self, what: str, rel: str) -> None:
        """Delete file `rel` (nothing when it is missing)."""
        try:
            self.call(what, lambda fs, p: fs.rm_file(p), rel)
        except FileNotFoundError:
            pass

    def find(self, what: str, rel: str) -> list[str]:
        """Paths (relative to the remote's root) of the files under folder `rel`."""

        def find(fs, p):
            try:
                return fs.find(p)
            except FileNotFoundError:
                return []

        out = []
        for p in self.call(what, find, rel):
            p = str(p)
            i = p.rfind(f"/{rel}/")  # backends differ in how they spell the root; the folder is ours
            out.append(p[i + 1 :] if i >= 0 else p)
        return sorted(out)

    # ------------------------------------------------------------------ records
    def get_entry(self, key: str) -> dict | None:
        try:
            data = self.read("read a record", records.record_relpath(key))
        except FileNotFoundError:
            return None
        got = records.decode(data)
        return got[1] if got and got[0] == key else None

    def put_entry(self, key: str, entry: dict) -> None:
        self.write("write a record", records.record_relpath(key), records.encode(key, records.portable(entry)))

    def iter_entries(self) -> Iterator[tuple[str, dict]]:
        for rel in self.find("list records", records.RECORDS):
            if not rel.endswith(".json"):
                continue
            try:
                got = records.decode(self.read("read a record", rel))
            except FileNotFoundError:
                continue
            if got is not None:
                yield got


def object_relpath(digest: str) -> str:
    return f"objects/{digest[:2]}/{digest[2:]}"


class RemoteObjects:
    """The remote's objects/ folder as an ObjectStore (RemoteError when the backend fails)."""

    def __init__(self, remote: Remote):
        self.remote = remote
        self.label = remote.label

    def size(self, digest: str) -> int | None:
        try:
            info = self.remote.call("look up an object", lambda fs, p: fs.info(p), object_relpath(digest))
        except FileNotFoundError:
            return None
        size = info.get("size")
        return int(size) if size is not None else None

    def has(self, digest: str, size: int | None = None) -> bool:
        got = self.size(digest)
        return got is not None and (size is None or got == size)

    def get(self, digest: str) -> bytes | None:
        """The verified bytes of object `digest`; None when missing, truncated or corrupt."""
        try:
            data = self.remote.read("read an object", object_relpath(digest))
        except FileNotFoundError:
            return None
        return data if hash_bytes(data) == digest else None

    def open(self, digest: str) -> BinaryIO:
        return self.remote.call("read an object", lambda fs, p: fs.open(p, "rb"), object_relpath(digest))

    def put(self, data: bytes, digest: str | None = None) -> str:
        digest = digest or hash_bytes(data)
        self.remote.write("write an object", object_relpath(digest), bytes(data))
        return digest

    def delete(self, digest: str) -> None:
        self.remote.remove("delete an object", object_relpath(digest))

    def iterate(self) -> Iterator[tuple[str, int]]:
        for rel in self.remote.find("list objects", "objects"):
            parts = rel.split("/")
            if len(parts) == 3 and len(parts[1]) == 2 and len(parts[2]) == 30:
                yield parts[1] + parts[2], self.size(parts[1] + parts[2]) or 0
