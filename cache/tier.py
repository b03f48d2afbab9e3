"""The remote tier of a local cache: records fetched from and uploaded to a `Remote`, leases on
keys in flight, and one policy for a remote that fails (one warning, then local only).

Objects move between two ObjectStores (the local folder and the remote's) through
`objectstore.transfer`, which verifies what it copies: a corrupt object is never stored locally
nor uploaded.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import AbstractSet, Callable, Iterator, Optional

from vd.cache import lease
from vd.cache import remote as remote_mod
from vd.cache.objectstore import LocalObjects, transfer
from vd.cache.remote import Remote, RemoteError
from vd.errors import CacheError

log = logging.getLogger(__name__)


class RemoteTier:
    """`remote` seen from the local object store `local`; `remote` is None once it failed."""

    def __init__(self, remote: Remote, local: LocalObjects):
        self.remote: Optional[Remote] = remote
        self.local = local
        self.bad: set[str] = set()  # digests found missing or corrupt in the remote: re-upload them
        self.warned: set[str] = set()  # keys whose damaged remote copy was already reported

    @property
    def alive(self) -> bool:
        return self.remote is not None

    def _live(self) -> Remote:
        if self.remote is None:
            raise RemoteError("the remote cache failed earlier in this run")
        return self.remote

    def failed(self, error: RemoteError) -> None:
        """Stop using the remote (in this process, for every cache) and say so once."""
        if self.remote is not None:
            remote_mod.FAILED.add(self.remote.url)
        log.warning(f"{error}; working with the local cache only")
        self.remote = None

    # ------------------------------------------------------------------ download
    def damaged(self, entry: dict) -> list[str]:
        """Names of the entry's artifacts whose remote objects are missing or corrupt, and that
        are not already in the local store (RemoteError when the remote fails)."""
        bad = []
        for name, a in entry.get("artifacts", {}).items():
            d = a["hash"]
            if d in self.bad:
                bad.append(name)
                continue
            if self.local.check(d, a["size"]) is not None:  # already here, intact
                continue
            if not transfer(self._live().objects, self.local, d):
                self.bad.add(d)
                bad.append(name)
        return bad

    def fetch(self, key: str, *, warn: bool = True) -> Optional[dict]:
        """The remote entry of `key` once its objects are verified and stored locally; None when
        the remote lacks it, its objects are damaged (warned about once per key) or it fails."""
        if self.remote is None:
            return None
        try:
            entry = self.remote.get_entry(key)
            if entry is None:
                return None
            bad = self.damaged(entry)
        except RemoteError as e:
            self.failed(e)
            return None
        if bad:
            if warn and key not in self.warned:
                self.warned.add(key)
                stage = entry.get("stage", "?")
                log.warning(f"remote cache object of {stage} ({', '.join(bad)}) is missing or corrupt; recomputing")
            return None
        return entry

    # ------------------------------------------------------------------ upload
    def missing(self, entry: dict, force: AbstractSet[str] = frozenset()) -> dict[str, int]:
        """digest -> size of the entry's objects that an upload would send (RemoteError)."""
        out = {}
        for a in entry.get("artifacts", {}).values():
            d = a["hash"]
            if d in out:
                continue
            if d in force or d in self.bad or not self._live().objects.has(d, a["size"]):
                out[d] = a["size"]
        return out

    def upload(self, key: str, entry: dict) -> int:
        """Upload the entry's objects the remote lacks, then its record; returns the bytes sent
        (RemoteError when the remote fails, CacheError when a local object is damaged: nothing
        corrupt is uploaded, and the record is not)."""
        remote = self._live()
        sent = 0
        for d, size in self.missing(entry).items():
            if not transfer(self.local, remote.objects, d):
                stage = entry.get("stage", "?")
                raise CacheError(
                    f"a cached object of {stage} ({key[:12]}) is corrupt or missing here, so it was not "
                    "uploaded; run `vd cache verify --repair`"
                )
            self.bad.discard(d)
            sent += size
        remote.put_entry(key, entry)
        return sent

    def push(self, key: str, entry: dict) -> None:
        """Upload after a local computation; a failing remote is warned about and dropped."""
        if self.remote is None:
            return
        try:
            self.upload(key, entry)
        except RemoteError as e:
            self.failed(e)
        except CacheError as e:  # the local result stands; only its copy in the remote is missing
            log.warning(str(e))

    def entries(self) -> Iterator[tuple[str, dict]]:
        """Every record of the remote (RemoteError when it fails)."""
        return self._live().iter_entries()

    def has_entry(self, key: str) -> bool:
        return self._live().get_entry(key) is not None

    # ------------------------------------------------------------------ leases
    def await_other(self, key: str, on_wait: Callable[[str], None], poll_s: float = lease.POLL_S) -> Optional[dict]:
        """While another machine holds a live lease on `key`, poll the remote for its record;
        `on_wait(host)` is called once when waiting starts. Returns the fetched entry or None."""
        told = False
        while self.remote is not None:
            try:
                other = lease.live_other(self.remote, key)
            except RemoteError as e:
                self.failed(e)
                return None
            if other is None:  # no lease, or its holder just finished: one last look
                return self.fetch(key) if told else None
            entry = self.fetch(key)
            if entry is not None:
                return entry
            if not told:
                on_wait(other.get("host", "another machine"))
                told = True
            time.sleep(poll_s)
        return None

    @contextlib.contextmanager
    def holding(self, key: str):
        """Hold the remote lease of `key` while computing it."""
        held = None
        if self.remote is not None:
            held = lease.Lease(self.remote, key)
            try:
                held.start()
            except RemoteError as e:
                self.failed(e)
                held = None
        try:
            yield
        finally:
            if held is not None:
                held.stop()
