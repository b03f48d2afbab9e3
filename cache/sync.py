"""`vd cache push` / `pull`: move records between the local cache and the remote tier.

The scopes are prune's: a stage, an image, records not used for some time; none means all.
Pushes upload objects before the record; pulls verify every object like any remote hit, and
report the records whose remote objects are missing or corrupt instead of skipping them quietly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vd.cache.remote import RemoteError
from vd.cache.store import Cache, Record, now
from vd.errors import CacheError, UsageError


@dataclass
class PullResult:
    pulled: list[Record] = field(default_factory=list)
    damaged: list[Record] = field(default_factory=list)  # remote records whose objects are missing or corrupt


def _in_scope(r: Record, stage: str | None, image: Any, older_than_s: float | None, t: float) -> bool:
    return r.matches(stage=stage, image=image) and (older_than_s is None or t - r.last_used >= older_than_s)


def push(cache: Cache, *, stage=None, image=None, older_than_s=None, dry_run=False) -> list[tuple[Record, int]]:
    """Upload the local records in scope that the remote lacks; [(record, bytes sent, or that
    would be sent with dry_run)]."""
    tier = _need_remote(cache)
    t = now()
    done = []
    planned: set[str] = set()  # objects a dry run already counted (records share objects)
    try:
        for r in cache.records():
            if not _in_scope(r, stage, image, older_than_s, t) or tier.has_entry(r.key):
                continue
            entry = cache.entry(r.key) or {}
            if dry_run:
                missing = {d: n for d, n in tier.missing(entry).items() if d not in planned}
                planned.update(missing)
                done.append((r, sum(missing.values())))
            else:
                done.append((r, tier.upload(r.key, entry)))
    except RemoteError as e:
        raise CacheError(str(e)) from e
    return done


def pull(cache: Cache, *, stage=None, image=None, older_than_s=None, dry_run=False) -> PullResult:
    """Download the remote records in scope that the local cache lacks (objects verified)."""
    tier = _need_remote(cache)
    t = now()
    result = PullResult()
    try:
        for key, entry in tier.entries():
            r = Record.from_entry(cache, key, entry)
            if not _in_scope(r, stage, image, older_than_s, t) or key in cache:
                continue
            if not dry_run:
                if tier.damaged(entry):
                    result.damaged.append(r)
                    continue
                r = cache.adopt(key, entry)
            result.pulled.append(r)
    except RemoteError as e:
        raise CacheError(str(e)) from e
    return result


def _need_remote(cache: Cache):
    if cache.tier is None or cache.tier.remote is None:
        raise UsageError("no remote cache: set VD_CACHE_REMOTE or pass --cache-remote URL")
    return cache.tier
