"""`vd cache push` / `pull`: move records between the local cache and the remote tier.

The scopes are prune's: a stage, an image, records not used for some time; none means all.
Pushes upload objects before the record; pulls verify every object like any remote hit.
"""

from __future__ import annotations

from typing import Any

from vd.cache.remote import RemoteError
from vd.cache.store import Cache, Record, _now, _resolve_image
from vd.errors import CacheError, UsageError


def _in_scope(r: Record, stage: str | None, image: Any, older_than_s: float | None, now: float) -> bool:
    if stage is not None and r.stage != stage:
        return False
    if image is not None:
        want = _resolve_image(image)
        if r.image_resolved != want and r.image != str(image):
            return False
    return older_than_s is None or now - r.last_used >= older_than_s


def push(cache: Cache, *, stage=None, image=None, older_than_s=None, dry_run=False) -> list[tuple[Record, int]]:
    """Upload the local records in scope that the remote lacks; [(record, bytes sent)]."""
    _need_remote(cache)
    now = _now()
    done = []
    try:
        for r in cache.records():
            if not _in_scope(r, stage, image, older_than_s, now):
                continue
            if cache.remote.get_entry(r.key) is not None:
                continue
            done.append((r, 0 if dry_run else cache.upload(r)))
    except RemoteError as e:
        raise CacheError(str(e)) from e
    return done


def pull(cache: Cache, *, stage=None, image=None, older_than_s=None, dry_run=False) -> list[Record]:
    """Download the remote records in scope that the local cache lacks (objects verified)."""
    _need_remote(cache)
    now = _now()
    done = []
    try:
        for key, entry in cache.remote.iter_entries():
            r = cache._record(key, entry)
            if not _in_scope(r, stage, image, older_than_s, now) or key in cache:
                continue
            if not dry_run:
                r = cache._from_remote(key)
                if cache.remote is None:
                    raise CacheError("the remote cache failed during the pull")
                if r is None:
                    continue
            done.append(r)
    except RemoteError as e:
        raise CacheError(str(e)) from e
    return done


def _need_remote(cache: Cache) -> None:
    if cache.remote is None:
        raise UsageError("no remote cache: set VD_CACHE_REMOTE or pass --cache-remote URL")
