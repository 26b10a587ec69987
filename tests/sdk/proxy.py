"""A counting HTTP proxy in front of a real S3 server (SeaweedFS), for transfer tests.

The team's storage address points at the proxy, so presigned URLs (signed for the proxy's
host:port) and the server's own S3 calls go through it. The proxy forwards every request
unchanged (the Host header too, which SigV4 signs), records what it forwarded, and can *hold*
requests a test picks: a held request waits until :meth:`CountingProxy.release` and is then
answered 503 without being forwarded. Holding is how a test stops an upload at an exact point
before killing the uploading process, without timing assumptions.
"""

from __future__ import annotations

import http.client
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"}


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    status: int = 0
    body_bytes: int = 0

    @property
    def part_number(self) -> int | None:
        return int(self.query["partNumber"][0]) if "partNumber" in self.query else None

    @property
    def upload_id(self) -> str | None:
        return self.query["uploadId"][0] if "uploadId" in self.query else None

    @property
    def object_sha(self) -> str | None:
        """The SHA-256 of an artifact object this request addresses, if it does."""
        marker = "/artifacts/sha256/"
        if marker not in self.path:
            return None
        return self.path.rsplit("/", 1)[-1]


@dataclass
class CountingProxy:
    upstream_port: int
    port: int = 0
    forwarded: list[Seen] = field(default_factory=list)
    held: list[Seen] = field(default_factory=list)
    hold: Callable[[Seen], bool] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _released: threading.Event = field(default_factory=threading.Event)

    def release(self) -> None:
        """Answer every held request (503, not forwarded) and stop holding."""
        self.hold = None
        self._released.set()

    def reset(self) -> None:
        with self._lock:
            self.forwarded.clear()
            self.held.clear()

    def uploads(self) -> list[Seen]:
        """Forwarded, successful PUTs of artifact objects and parts (what reached the bucket)."""
        with self._lock:
            return [s for s in self.forwarded
                    if s.method == "PUT" and s.object_sha and 200 <= s.status < 300]

    def _should_hold(self, seen: Seen) -> bool:
        with self._lock:
            hold = self.hold
            if hold is not None and not self._released.is_set() and hold(seen):
                self.held.append(seen)
                return True
        return False

    def _record(self, seen: Seen) -> None:
        with self._lock:
            self.forwarded.append(seen)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self._forward()

    do_PUT = do_POST = do_HEAD = do_DELETE = do_OPTIONS = do_GET

    def _forward(self) -> None:
        proxy = self.server.proxy
        parts = urlsplit(self.path)
        seen = Seen(self.command, parts.path, parse_qs(parts.query))
        if proxy._should_hold(seen):
            proxy._released.wait()
            self.close_connection = True
            try:  # the client was usually killed meanwhile
                self.send_response_only(503)
                self.send_header("Content-Length", "0")
                self.send_header("Connection", "close")
                self.end_headers()
            except OSError:
                pass
            return
        upstream = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=120)
        try:
            upstream.putrequest(self.command, self.path, skip_host=True,
                                skip_accept_encoding=True)
            chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
            for name, value in self.headers.items():
                if name.lower() not in HOP_BY_HOP:
                    upstream.putheader(name, value)
            if chunked:
                upstream.putheader("Transfer-Encoding", "chunked")
            upstream.endheaders()
            seen.body_bytes = self._copy_body(upstream, chunked)
            resp = upstream.getresponse()
            data = resp.read()
            self.send_response_only(resp.status, resp.reason)
            for name, value in resp.getheaders():
                if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                    self.send_header(name, value)
            length = resp.getheader("Content-Length") if self.command == "HEAD" else None
            self.send_header("Content-Length", length or str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
            seen.status = resp.status
            proxy._record(seen)
        except (OSError, http.client.HTTPException):
            self.close_connection = True  # the client went away mid-request (killed)
        finally:
            upstream.close()

    def _copy_body(self, upstream: http.client.HTTPConnection, chunked: bool) -> int:
        total = 0
        if chunked:
            while True:
                line = self.rfile.readline()
                upstream.send(line)
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while True:  # trailers, then the final empty line
                        trailer = self.rfile.readline()
                        upstream.send(trailer)
                        if trailer in (b"\r\n", b"\n", b""):
                            return total
                chunk = self.rfile.read(size + 2)
                upstream.send(chunk)
                total += size
        left = int(self.headers.get("Content-Length") or 0)
        while left:
            block = self.rfile.read(min(left, 1 << 20))
            if not block:
                raise ConnectionError("client closed the connection mid-body")
            upstream.send(block)
            left -= len(block)
            total += len(block)
        return total


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    proxy: CountingProxy


@contextmanager
def counting_proxy(upstream_port: int) -> Iterator[CountingProxy]:
    server = _Server(("127.0.0.1", 0), _Handler)
    proxy = CountingProxy(upstream_port, port=server.server_address[1])
    server.proxy = proxy
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        proxy.release()
        server.shutdown()
        server.server_close()
        thread.join(10)
