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

import os
import threading
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit, urlunsplit

import xxhash

from vd.cache import records
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


def from_env() -> "Remote | None":
    return from_url(os.environ.get(ENV, ""))


def from_url(url: str | None) -> "Remote | None":
    url = (url or "").strip()
    return Remote(url) if url and url not in FAILED else None


class Remote:
    """One remote cache; methods raise RemoteError when the backend fails."""

    def __init__(self, url: str):
        self.url = url
        self.label = redact(url)
        self._fs = None
        self._base = ""
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ plumbing
    def _open(self):
        with self._lock:
            if self._fs is None:
                try:
                    import fsspec

                    self._fs, self._base = fsspec.core.url_to_fs(self.url)
                except ImportError as e:
                    raise RemoteError(f"the remote cache {self.label} needs fsspec and its backend ({e.name}); "
                                      f"{pip_install('cluster')}") from e
                except Exception as e:
                    raise RemoteError(f"cannot open the remote cache {self.label} ({type(e).__name__})") from e
        return self._fs

    def _path(self, rel: str) -> str:
        return f"{self._base.rstrip('/')}/{rel}"

    def _call(self, what: str, fn, *args):
        fs = self._open()
        try:
            return fn(fs, *args)
        except FileNotFoundError:
            raise
        except Exception as e:  # network, permission, bad bucket, ...: the remote is unusable
            raise RemoteError(f"the remote cache {self.label} failed to {what} ({type(e).__name__})") from e

    # ------------------------------------------------------------------ records
    def get_entry(self, key: str) -> dict | None:
        try:
            data = self._call("read a record", lambda fs: fs.cat_file(self._path(records.record_relpath(key))))
        except FileNotFoundError:
            return None
        got = records.decode(data)
        return got[1] if got and got[0] == key else None

    def put_entry(self, key: str, entry: dict) -> None:
        self._write("write a record", records.record_relpath(key), records.encode(key, entry))

    def _write(self, what: str, rel: str, data: bytes) -> None:
        target = self._path(rel)

        def write(fs):
            fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
            fs.pipe_file(target, data)

        try:
            self._call(what, write)
        except FileNotFoundError as e:
            raise RemoteError(f"the remote cache {self.label} failed to {what} (its folder is missing)") from e

    def iter_entries(self) -> Iterator[tuple[str, dict]]:
        def find(fs):
            try:
                return fs.find(self._path(records.RECORDS))
            except FileNotFoundError:
                return []

        for p in sorted(self._call("list records", find)):
            if not p.endswith(".json"):
                continue
            try:
                got = records.decode(self._call("read a record", lambda fs: fs.cat_file(p)))
            except FileNotFoundError:
                continue
            if got is not None:
                yield got

    # ------------------------------------------------------------------ objects
    def _object_rel(self, digest: str) -> str:
        return f"objects/{digest[:2]}/{digest[2:]}"

    def fetch_object(self, digest: str) -> bytes | None:
        """The verified bytes of object `digest`; None when missing, truncated or corrupt."""
        try:
            data = self._call("read an object", lambda fs: fs.cat_file(self._path(self._object_rel(digest))))
        except FileNotFoundError:
            return None
        return data if xxhash.xxh3_128_hexdigest(data) == digest else None

    def has_object(self, digest: str, size: int) -> bool:
        try:
            info = self._call("look up an object", lambda fs: fs.info(self._path(self._object_rel(digest))))
        except FileNotFoundError:
            return False
        return int(info.get("size") or -1) == size

    def put_object(self, digest: str, path: Path) -> None:
        self._write("write an object", self._object_rel(digest), Path(path).read_bytes())
