"""Remote leases: a key in flight on one machine is not computed again on another.

Before computing a key the remote lacks, a machine writes `leases/<key>.json` (owner, expiry)
to the remote and renews it from a background thread while it computes; the record upload ends
the computation and the lease is removed. Another machine that finds a live lease of someone
else polls the remote for the record instead of computing, and takes over when the lease
expires (its owner died). Object stores have no atomic create, so two machines starting within
the same instant may both compute: the cost is duplicate work, never a wrong result.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import threading
import time

from vd.cache.remote import Remote, RemoteError

TTL_S = 60.0
POLL_S = 1.0


def _rel(key: str) -> str:
    return f"leases/{key[:2]}/{key}.json"


def read(remote: Remote, key: str) -> dict | None:
    try:
        data = remote.read("read a lease", _rel(key))
    except FileNotFoundError:
        return None
    try:
        doc = json.loads(data)
        return doc if isinstance(doc, dict) and "owner" in doc and "expires" in doc else None
    except ValueError:
        return None


def _write(remote: Remote, key: str, owner: str, ttl: float) -> None:
    doc = {"owner": owner, "expires": time.time() + ttl, "host": socket.gethostname()}
    remote.write("write a lease", _rel(key), json.dumps(doc).encode())


def _remove(remote: Remote, key: str) -> None:
    try:
        remote.remove("remove a lease", _rel(key))
    except RemoteError:
        pass


def live_other(remote: Remote, key: str) -> dict | None:
    """The lease of `key` when it is live (not expired); None otherwise."""
    lease = read(remote, key)
    if lease is None or lease["expires"] < time.time():
        return None
    return lease


class Lease:
    """The lease of `key`, written at start() and renewed every ttl/3 seconds until stop()."""

    def __init__(self, remote: Remote, key: str, ttl: float = TTL_S):
        self.remote, self.key, self.ttl = remote, key, ttl
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        _write(self.remote, self.key, self.owner, self.ttl)  # RemoteError when the remote fails
        self._thread = threading.Thread(target=self._renew, name=f"vd-lease-{self.key[:8]}", daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                _write(self.remote, self.key, self.owner, self.ttl)
            except RemoteError:
                return

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            current = read(self.remote, self.key)
        except RemoteError:
            return
        if current is not None and current.get("owner") == self.owner:
            _remove(self.remote, self.key)
