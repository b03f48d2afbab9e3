"""Loopback servers for the fetch tests and bench: an HTTP file server with failure knobs and
a minimal SOCKS5 proxy. Both run in daemon threads on 127.0.0.1 with an ephemeral port.

    with HTTPTestServer() as srv:
        route = srv.add("/m/file.bin", data=b"...", drop_after=1000)   # knobs: see Route
        url = srv.url("/m/file.bin")
        ...
        route.requests      # one dict of request headers per request (lower-case keys)

    with Socks5Server() as proxy:
        os.environ["ALL_PROXY"] = proxy.url        # socks5://127.0.0.1:PORT
        ...
        proxy.connections  # [(host, port), ...] the proxy was asked to reach
"""

from __future__ import annotations

import select
import socket
import socketserver
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Optional


@dataclass
class Route:
    data: Optional[bytes] = None        # body bytes, or ...
    file: Optional[Path] = None         # ... a file served with sendfile (for big bench files)
    ignore_range: bool = False          # answer 200 + the whole body even to Range requests
    drop_after: Optional[int] = None    # close the connection after this many body bytes ...
    drop_times: int = 1                 # ... on this many requests (the first ones)
    fail: int = 0                       # answer `fail_status` to the first `fail` requests
    fail_status: int = 503
    status: Optional[int] = None        # always answer this status (404, 401, 403, ...)
    html: bool = False                  # answer 200 with an HTML error page instead of the file
    content_type: str = "application/octet-stream"
    rate: Optional[float] = None        # throttle the body to about this many bytes per second
    no_length: bool = False             # omit Content-Length (close-delimited body)
    bearer: Optional[str] = None        # require "Authorization: Bearer <bearer>", else 401
    requests: list = field(default_factory=list)
    _drops: int = 0

    @property
    def size(self) -> int:
        return len(self.data) if self.data is not None else self.file.stat().st_size


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, *args):  # keep test output clean
        pass

    def do_HEAD(self):
        self._serve(head=True)

    def do_GET(self):
        self._serve(head=False)

    def _small(self, status: int, body: bytes, ctype="text/plain", extra=None):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _serve(self, head: bool):
        path = self.path.split("?", 1)[0]
        route = self.server.routes.get(path)
        self.server.log.append((self.command, path, {k.lower(): v for k, v in self.headers.items()}))
        if route is None:
            return self._small(404, b"not found")
        with self.server.lock:
            n = len(route.requests)
            route.requests.append({k.lower(): v for k, v in self.headers.items()})
        if route.bearer is not None and self.headers.get("Authorization") != f"Bearer {route.bearer}":
            return self._small(401, b"unauthorized")
        if n < route.fail:
            return self._small(route.fail_status, b"try again later")
        if route.status is not None:
            return self._small(route.status, f"status {route.status}".encode())
        if route.html:
            page = b"<!DOCTYPE html><html><body><h1>Rate limited</h1><p>Please log in.</p></body></html>"
            return self._small(200, page, ctype="text/html; charset=utf-8")

        size = route.size
        start, end, status = 0, size - 1, 200
        rng = self.headers.get("Range")
        if rng and not route.ignore_range and rng.startswith("bytes="):
            a, _, b = rng[len("bytes="):].partition("-")
            start = int(a) if a else 0
            end = int(b) if b else size - 1
            if start >= size:
                return self._small(416, b"", extra={"Content-Range": f"bytes */{size}"})
            end = min(end, size - 1)
            status = 206
        length = end - start + 1
        self.send_response(status)
        self.send_header("Content-Type", route.content_type)
        if not route.no_length:
            self.send_header("Content-Length", str(length))
        else:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.send_header("Accept-Ranges", "none" if route.ignore_range else "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if head:
            return
        limit = length
        drop = False
        with self.server.lock:
            if route.drop_after is not None and route._drops < route.drop_times:
                route._drops += 1
                drop = True
                limit = max(0, min(length, route.drop_after))
        self._send_body(route, start, limit)
        if drop:
            self.wfile.flush()
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.close_connection = True

    def _send_body(self, route: Route, start: int, count: int):
        chunk = 64 * 1024
        if route.file is not None and route.rate is None:
            self.wfile.flush()
            with open(route.file, "rb") as f:
                sent = 0
                while sent < count:
                    n = self.connection.sendfile(f, offset=start + sent, count=count - sent)
                    if not n:
                        break
                    sent += n
            return
        t0 = time.monotonic()
        sent = 0
        f = open(route.file, "rb") if route.file is not None else None
        try:
            while sent < count:
                n = min(chunk, count - sent)
                if f is not None:
                    f.seek(start + sent)
                    buf = f.read(n)
                else:
                    buf = route.data[start + sent:start + sent + n]
                self.wfile.write(buf)
                sent += n
                if route.rate:
                    ahead = sent / route.rate - (time.monotonic() - t0)
                    if ahead > 0:
                        time.sleep(ahead)
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            if f is not None:
                f.close()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr):
        super().__init__(addr, _Handler)
        self.routes: dict[str, Route] = {}
        self.log: list = []
        self.lock = threading.Lock()

    def handle_error(self, request, client_address):  # client went away: not a test failure
        pass


class HTTPTestServer:
    """A threaded HTTP/1.1 server on 127.0.0.1 whose routes misbehave on demand."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self._srv = _Server((host, port))
        self.host, self.port = self._srv.server_address[:2]
        self._thread: Optional[threading.Thread] = None

    @property
    def routes(self) -> dict:
        return self._srv.routes

    @property
    def log(self) -> list:
        return self._srv.log

    def add(self, path: str, **knobs) -> Route:
        route = Route(**knobs)
        self._srv.routes[path] = route
        return route

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    def start(self) -> HTTPTestServer:
        self._thread = threading.Thread(target=self._srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._srv.shutdown()
        self._srv.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


# --------------------------------------------------------------------------- SOCKS5
class _SocksHandler(socketserver.BaseRequestHandler):
    server: _SocksServer

    def _recv(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            got = self.request.recv(n - len(buf))
            if not got:
                raise ConnectionError("client closed")
            buf += got
        return buf

    def handle(self):
        s = self.request
        try:
            ver, nmethods = self._recv(2)
            if ver != 5:
                return
            methods = self._recv(nmethods)
            if 0 not in methods:
                s.sendall(b"\x05\xff")
                return
            s.sendall(b"\x05\x00")
            ver, cmd, _rsv, atyp = self._recv(4)
            if atyp == 1:
                host = socket.inet_ntoa(self._recv(4))
            elif atyp == 3:
                host = self._recv(self._recv(1)[0]).decode()
            elif atyp == 4:
                host = socket.inet_ntop(socket.AF_INET6, self._recv(16))
            else:
                s.sendall(b"\x05\x08\x00\x01" + b"\x00" * 6)
                return
            port = struct.unpack("!H", self._recv(2))[0]
            if cmd != 1:
                s.sendall(b"\x05\x07\x00\x01" + b"\x00" * 6)
                return
            self.server.connections.append((host, port))
            try:
                up = socket.create_connection((host, port), timeout=10)
            except OSError:
                s.sendall(b"\x05\x05\x00\x01" + b"\x00" * 6)
                return
            bound = up.getsockname()
            s.sendall(b"\x05\x00\x00\x01" + socket.inet_aton(bound[0]) + struct.pack("!H", bound[1]))
            self._relay(s, up)
        except (ConnectionError, OSError, ValueError):
            return

    @staticmethod
    def _relay(a: socket.socket, b: socket.socket):
        a.setblocking(True)
        b.settimeout(None)
        try:
            socks = [a, b]
            while True:
                r, _, _ = select.select(socks, [], [], 30)
                if not r:
                    return
                for src in r:
                    data = src.recv(256 * 1024)
                    if not data:
                        return
                    (b if src is a else a).sendall(data)
        finally:
            b.close()


class _SocksServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr):
        super().__init__(addr, _SocksHandler)
        self.connections: list = []


class Socks5Server:
    """A no-auth SOCKS5 proxy (CONNECT, IPv4/IPv6/domain addresses) on 127.0.0.1."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self._srv = _SocksServer((host, port))
        self.host, self.port = self._srv.server_address[:2]

    @property
    def connections(self) -> list:
        return self._srv.connections

    def url(self, scheme: str = "socks5") -> str:
        return f"{scheme}://{self.host}:{self.port}"

    def __enter__(self):
        threading.Thread(target=self._srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self._srv.shutdown()
        self._srv.server_close()


def serve_forever_cli() -> None:  # pragma: no cover - manual debugging helper
    """`python tests/netservers.py FILE`: serve FILE at /FILE-NAME until interrupted."""
    import sys

    p = Path(sys.argv[1])
    with HTTPTestServer() as srv:
        srv.add("/" + p.name, file=p)
        print(srv.url("/" + p.name), flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":  # pragma: no cover
    serve_forever_cli()
