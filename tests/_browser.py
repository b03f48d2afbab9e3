"""A headless Chromium driven over the DevTools protocol on a pipe (no websocket library, no
Playwright): open a page, wait until it says it is ready, take a screenshot. Not a test module.

    with Browser(find_browser(), 256, 192) as b:
        rgb = b.screenshot(Path("scene.html").resolve().as_uri())   # [H,W,3] uint8

WebGL runs on SwiftShader (software), so no GPU is needed. Every read and write on the pipe is bounded
by a timeout: a browser that does not answer raises TimeoutError naming its version, and one that does
not speak the protocol at all (no answer to Browser.getVersion within `handshake` seconds) skips the
test that asked for it, with its version in the reason.
"""

from __future__ import annotations

import base64
import io
import json
import os
import select
import shutil
import subprocess
import tempfile
import time

import numpy as np
import pytest

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


def find_browser() -> str | None:
    """$VD_BROWSER, else the first Chromium-like browser on PATH."""
    if os.environ.get("VD_BROWSER"):
        return shutil.which(os.environ["VD_BROWSER"])
    return next((p for p in map(shutil.which, CANDIDATES) if p), None)


def browser_version(exe: str) -> str:
    """`exe --version` (e.g. "Chromium 156.0.7800.0 built on Debian ..."), or why it is unknown; never hangs."""
    try:
        r = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError) as e:
        return f"{exe} (version unknown: {type(e).__name__})"
    return (r.stdout.strip() or r.stderr.strip() or f"{exe} (version unknown)").splitlines()[0]


class Browser:
    def __init__(self, exe: str, width: int, height: int, timeout: float = 60.0, handshake: float = 20.0):
        self.width, self.height, self.timeout = width, height, timeout
        self.version = browser_version(exe)
        self.profile = tempfile.mkdtemp(prefix="vd-chromium-")
        self._log = tempfile.TemporaryFile()
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()

        def wire_fds():  # the protocol pipe: the browser reads fd 3 and writes fd 4 (kept: pass_fds)
            os.dup2(to_chrome_r, 3)
            os.dup2(from_chrome_w, 4)

        args = [exe, "--headless", "--remote-debugging-pipe", "--no-sandbox", "--no-first-run", "--no-default-browser-check",
                "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist", "--hide-scrollbars",
                "--force-device-scale-factor=1", f"--window-size={width},{height}", f"--user-data-dir={self.profile}",
                "about:blank"]
        self.proc = subprocess.Popen(args, preexec_fn=wire_fds, pass_fds=(3, 4, to_chrome_r, from_chrome_w),
                                     stdout=subprocess.DEVNULL, stderr=self._log)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        os.set_blocking(self._to_chrome, False)
        self._buf = b""
        self._id = 0
        self.session = None
        try:
            self.call("Browser.getVersion", session=False, timeout=handshake)
        except (TimeoutError, RuntimeError) as e:
            self.close(polite=False)
            pytest.skip(f"{self.version} does not speak the DevTools protocol on a pipe ({e}); the HTML viewer is not "
                        "checked (set VD_BROWSER to another Chromium)")

    # ----------------------------------------------------------------------------- protocol
    def _log_tail(self) -> str:
        try:
            self._log.seek(0)
            lines = self._log.read().decode(errors="replace").strip().splitlines()
        except (OSError, ValueError):
            return ""
        return f"; its last words: {lines[-1][:200]!r}" if lines else ""

    def _wait(self, fd: int, write: bool, deadline: float, method: str) -> None:
        left = deadline - time.monotonic()
        ready = select.select([], [fd], [], max(left, 0))[1] if write else select.select([fd], [], [], max(left, 0))[0]
        if not ready:
            raise TimeoutError(f"{self.version} did not answer {method} within {self._limit:g} s{self._log_tail()}")

    def _read_message(self, deadline: float, method: str) -> dict:
        while b"\0" not in self._buf:
            self._wait(self._from_chrome, False, deadline, method)
            chunk = os.read(self._from_chrome, 1 << 20)
            if not chunk:
                raise RuntimeError(f"{self.version} closed its DevTools pipe{self._log_tail()}")
            self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def call(self, method: str, params: dict | None = None, *, session: bool = True,
             timeout: float | None = None) -> dict:
        """Send one command and wait for its reply: at most `timeout` seconds (default: the browser's)."""
        self._limit = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + self._limit
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if session and self.session:
            msg["sessionId"] = self.session
        data = memoryview(json.dumps(msg).encode() + b"\0")
        while data:
            self._wait(self._to_chrome, True, deadline, method)
            try:
                data = data[os.write(self._to_chrome, data):]
            except BlockingIOError:
                continue
            except BrokenPipeError:
                raise RuntimeError(f"{self.version} closed its DevTools pipe{self._log_tail()}") from None
        while True:
            reply = self._read_message(deadline, method)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def _attach(self) -> None:
        targets = self.call("Target.getTargets", session=False)["targetInfos"]
        page = next(t for t in targets if t["type"] == "page")
        self.session = self.call("Target.attachToTarget", {"targetId": page["targetId"], "flatten": True}, session=False)["sessionId"]
        self.call("Emulation.setDeviceMetricsOverride", {"width": self.width, "height": self.height, "deviceScaleFactor": 1, "mobile": False})

    def evaluate(self, expression: str, timeout: float | None = None):
        return self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True},
                         timeout=timeout)["result"].get("value")

    # ----------------------------------------------------------------------------- use
    def open(self, url: str, ready: str = "document.body && document.body.dataset.ready === '1'") -> None:
        """Navigate and wait until `ready` is true (a page title starting "error:" fails at once)."""
        if self.session is None:
            self._attach()
        end = time.monotonic() + self.timeout
        self.call("Page.navigate", {"url": url})
        title = ""
        while time.monotonic() < end:
            title = self.evaluate("document.title", timeout=max(end - time.monotonic(), 1.0)) or ""
            if title.startswith("error:"):
                raise RuntimeError(f"the page failed: {title}")
            if self.evaluate(ready, timeout=max(end - time.monotonic(), 1.0)):
                return
            time.sleep(0.2)
        raise TimeoutError(f"the page was not ready within {self.timeout:g} s (title {title!r})")

    def screenshot(self, url: str | None = None) -> np.ndarray:
        """[H,W,3] uint8 of the viewport (after opening `url`, when given)."""
        from PIL import Image

        if url is not None:
            self.open(url)
        data = self.call("Page.captureScreenshot", {"format": "png"})["data"]
        return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB"))

    def canvas_pixels(self, selector: str = "canvas") -> np.ndarray:
        """[H,W,3] uint8 of a canvas's pixels (its drawing buffer, read by the page: no compositor frame needed)."""
        from PIL import Image

        url = self.evaluate(f"document.querySelector({json.dumps(selector)}).toDataURL('image/png')")
        return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB"))

    def close(self, polite: bool = True) -> None:
        if polite and self.proc.poll() is None:
            try:
                self.call("Browser.close", session=False, timeout=5)
            except Exception:  # noqa: BLE001 - closing anyway
                pass
        try:
            os.close(self._to_chrome)  # end of the pipe: a browser that ignored Browser.close exits too
        except OSError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._from_chrome,):
            try:
                os.close(fd)
            except OSError:
                pass
        self._log.close()
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
