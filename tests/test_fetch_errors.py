"""Each kind of fetch failure is typed where it happens and drives the fall-through to the next
source; the advice at the end of the message follows the types, not the wording of the failures.
Against servers on 127.0.0.1 (tests/netservers.py)."""

from __future__ import annotations

import hashlib
import os
import socket
import sys
from pathlib import Path

import pytest

from vd.fetch import errors as fe
from vd.fetch.download import FileDownload
from vd.fetch.manifest import FileSpec, Source

sys.path.insert(0, str(Path(__file__).resolve().parent))
from netservers import HTTPTestServer  # noqa: E402

DATA = os.urandom(120_000)
SHA = hashlib.sha256(DATA).hexdigest()


@pytest.fixture(autouse=True)
def _quick_retries(monkeypatch):
    monkeypatch.setenv("VD_FETCH_RETRIES", "1")
    monkeypatch.setenv("VD_FETCH_BACKOFF", "0.01")
    monkeypatch.setenv("VD_FETCH_TIMEOUT", "10")
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_TOKEN_PATH", "/nonexistent/vd-test-token")


@pytest.fixture
def srv():
    with HTTPTestServer() as s:
        yield s


def dead_url() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()                                                     # nothing listens there now
    return f"http://127.0.0.1:{port}/w.bin"


def download(tmp_path, *sources: Source, size=len(DATA), sha=SHA):
    spec = FileSpec("w.bin", size, sha, tuple(sources))
    return FileDownload(spec, tmp_path / "models", locks=tmp_path / "locks", label="tiny/w.bin",
                        use_hub_cache=False).run()


def url(u: str, **kw) -> Source:
    return Source("file" if u.startswith("file://") else "url", u, **kw)


def served(srv, **route) -> Source:
    """A source on `srv` that answers as the Route knobs say."""
    srv.add("/bad", **route)
    return url(srv.url("/bad"))


# each failing source: how to set it up, and the type it must end with
KINDS = {
    "404": (lambda srv, tmp: served(srv, status=404), fe.NotFound),
    "410": (lambda srv, tmp: served(srv, status=410), fe.NotFound),
    "401": (lambda srv, tmp: served(srv, status=401), fe.AccessDenied),
    "403": (lambda srv, tmp: served(srv, status=403), fe.AccessDenied),
    "503": (lambda srv, tmp: served(srv, data=DATA, fail=99), fe.ServerBusy),
    "refused": (lambda srv, tmp: url(dead_url()), fe.Unreachable),
    "dropped": (lambda srv, tmp: served(srv, data=DATA, drop_after=100, drop_times=99),
                fe.ConnectionLost),
    "sha256": (lambda srv, tmp: served(srv, data=bytes(reversed(DATA))),
               fe.ChecksumMismatch),
    "html": (lambda srv, tmp: served(srv, html=True), fe.WrongContent),
    "size": (lambda srv, tmp: served(srv, data=DATA[:999]), fe.WrongContent),
    "418": (lambda srv, tmp: served(srv, status=418), fe.WrongContent),
    "file missing": (lambda srv, tmp: url(f"file://{tmp}/nowhere.bin"), fe.NotFound),
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_each_failure_kind_is_typed_and_falls_through(kind, srv, tmp_path):
    make, expected = KINDS[kind]
    bad = make(srv, tmp_path)
    with pytest.raises(fe.DownloadError) as e:
        download(tmp_path, bad)
    ((label, failure),) = e.value.failures
    assert type(failure) is expected, (kind, failure)
    assert label == bad.label and str(failure) in str(e.value)
    assert not (tmp_path / "models" / "w.bin").exists()

    good = srv.add("/good", data=DATA)
    got = download(tmp_path, bad, url(srv.url("/good")))
    assert got.action == "downloaded" and got.path.read_bytes() == DATA
    assert len(good.requests) >= 1


def test_transient_failures_are_retried_then_marked_as_given_up(srv, tmp_path):
    route = srv.add("/x", data=DATA, fail=99, fail_status=502)
    with pytest.raises(fe.DownloadError) as e:
        download(tmp_path, url(srv.url("/x")))
    ((_, failure),) = e.value.failures
    assert isinstance(failure, fe.TransientError)
    assert len(route.requests) == 2                               # one try + VD_FETCH_RETRIES=1
    assert "HTTP 502" in str(failure) and "gave up after 2 attempts" in str(failure)


def test_permanent_failures_are_not_retried(srv, tmp_path):
    route = srv.add("/x", status=404)
    with pytest.raises(fe.DownloadError):
        download(tmp_path, url(srv.url("/x")))
    assert len(route.requests) == 1


def test_unreachable_advice_only_when_every_source_was_unreachable(srv, tmp_path):
    with pytest.raises(fe.DownloadError) as e:
        download(tmp_path, url(dead_url()), url(dead_url()))
    assert "no source could be reached" in str(e.value)

    srv.add("/x", status=404)
    with pytest.raises(fe.DownloadError) as e:
        download(tmp_path, url(dead_url()), url(srv.url("/x")))
    assert "no source could be reached" not in str(e.value)


def test_gated_advice_follows_an_access_denial_not_the_digits_401(srv, tmp_path):
    gated = Source("hf", srv.url("/hf/w.bin"), auth="hf", repo="org/repo", path="w.bin", gated=True)
    srv.add("/hf/w.bin", status=404)
    srv.add("/short", data=DATA[:401])                            # "served 401 bytes, expected ..."
    with pytest.raises(fe.DownloadError) as e:
        download(tmp_path, gated, url(srv.url("/short")))
    assert "served 401 bytes" in str(e.value)
    assert "accept its licence" not in str(e.value)

    srv.add("/hf2/w.bin", status=401)
    gated = Source("hf", srv.url("/hf2/w.bin"), auth="hf", repo="org/repo", path="w.bin", gated=True)
    with pytest.raises(fe.DownloadError) as e:
        download(tmp_path, gated)
    assert "HTTP 401 (access denied; no HF_TOKEN set)" in str(e.value)
    assert "accept its licence at https://huggingface.co/org/repo" in str(e.value)


@pytest.mark.parametrize("status, kind", [(200, None), (206, None), (401, fe.AccessDenied), (403, fe.AccessDenied),
                                          (404, fe.NotFound), (410, fe.NotFound), (408, fe.ServerBusy),
                                          (429, fe.ServerBusy), (500, fe.ServerBusy), (599, fe.ServerBusy),
                                          (302, fe.WrongContent), (418, fe.WrongContent)])
def test_status_mapping(status, kind):
    got = fe.for_status(status, source="s", sent_token=False, needs_token=False, retry_after="7")
    assert (got is None) if kind is None else (type(got) is kind)
    if kind is fe.ServerBusy:
        assert got.delay == 7.0


def test_httpx_mapping():
    import httpx

    req = httpx.Request("GET", "http://x/")
    assert type(fe.for_httpx(httpx.ConnectError("no", request=req))) is fe.Unreachable
    assert type(fe.for_httpx(httpx.ConnectTimeout("slow", request=req))) is fe.Unreachable
    assert type(fe.for_httpx(httpx.ReadTimeout("slow", request=req))) is fe.ConnectionLost
    assert type(fe.for_httpx(httpx.RemoteProtocolError("cut", request=req))) is fe.ConnectionLost
    assert type(fe.for_httpx(httpx.UnsupportedProtocol("ftp"))) is fe.WrongContent
    assert fe.for_httpx(httpx.DecodingError("gzip", request=req)) is None
