"""The DevTools-pipe harness (tests/_browser.py) never hangs: fake browsers that stay silent, answer only the
handshake, or exit at once make it skip or fail within its timeouts, naming the browser's version."""

from __future__ import annotations

import stat
import sys
import time
from pathlib import Path

import pytest
from _browser import Browser

VERSION = "Chromium 150.0.7000.0 built on a test"

# a fake browser in Python: `--version` prints VERSION; otherwise it answers Browser.getVersion on fd 3/4 when
# FAKE_MODE=handshake (and then nothing), stays silent with FAKE_MODE=silent, or exits with FAKE_MODE=exit
FAKE = f'''#!{sys.executable}
import json, os, sys, time
if "--version" in sys.argv:
    print({VERSION!r}); sys.exit(0)
mode = os.path.basename(sys.argv[0]).split("-")[-1]
if mode == "exit":
    print("fatal: no display", file=sys.stderr); sys.exit(1)
buf = b""
while True:
    chunk = os.read(3, 1 << 16)
    if not chunk:
        sys.exit(0)
    buf += chunk
    while b"\\0" in buf:
        msg, buf = buf.split(b"\\0", 1)
        msg = json.loads(msg)
        if mode == "handshake" and msg["method"] == "Browser.getVersion":
            os.write(4, json.dumps({{"id": msg["id"], "result": {{"product": "fake"}}}}).encode() + b"\\0")
'''


def _fake(tmp_path: Path, mode: str) -> str:
    exe = tmp_path / f"fake-browser-{mode}"
    exe.write_text(FAKE)
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return str(exe)


@pytest.mark.parametrize("mode", ["silent", "exit"])
def test_a_browser_that_does_not_speak_the_protocol_skips_in_seconds_naming_its_version(tmp_path, mode):
    t = time.monotonic()
    with pytest.raises(pytest.skip.Exception) as info:
        Browser(_fake(tmp_path, mode), 32, 32, handshake=3)
    assert time.monotonic() - t < 20
    assert VERSION in str(info.value) and "DevTools" in str(info.value)
    if mode == "exit":
        assert "no display" in str(info.value)


def test_every_read_is_bounded_by_the_timeout(tmp_path):
    page = tmp_path / "p.html"
    page.write_text("<html></html>")
    with Browser(_fake(tmp_path, "handshake"), 32, 32, timeout=2, handshake=10) as b:
        t = time.monotonic()
        with pytest.raises(TimeoutError) as info:
            b.open(page.as_uri())
        assert time.monotonic() - t < 10
        assert VERSION in str(info.value)
        with pytest.raises(TimeoutError):
            b.call("Runtime.evaluate", {"expression": "1"}, timeout=0.5)
