"""Azurite (the Azure Blob emulator) for tests and benchmarks.

Starts only the blob service, ``node_modules/.bin/azurite-blob`` (installed from the repo's
package-lock.json by scripts/install.d/npm.sh), on 127.0.0.1 and a free port, in memory, and
stops it by its PID. Quirks (../../../shared/TESTING.md): ``--disableTelemetry``, and
``--skipApiVersionCheck`` because the Python SDK sends a newer API version than Azurite knows.

Azurite verifies SAS signatures, permissions and expiry, Content-MD5 on Put Blob, Put Block /
Put Block List, Blob Batch deletes and CORS preflights. CORS is per storage *account* in Azure
(Blob service properties), so :meth:`AzuriteServer.set_cors` changes it for every container.
"""

from __future__ import annotations

import atexit
import contextlib
import secrets
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import pytest

if TYPE_CHECKING:
    from azure.storage.blob import BlobServiceClient

REPO = Path(__file__).resolve().parents[3]
AZURITE_BLOB = REPO / "node_modules" / ".bin" / "azurite-blob"
# Azurite's built-in development account (public, documented emulator credentials).
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
START_TIMEOUT = 60.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class AzuriteServer:
    """A running Azurite blob service."""

    port: int
    process: subprocess.Popen[bytes] = field(repr=False)
    log_path: Path
    account: str = ACCOUNT
    key: str = ACCOUNT_KEY

    @property
    def blob_endpoint(self) -> str:
        """The blob service URL (path-style: the account is the first path segment)."""
        return f"http://127.0.0.1:{self.port}/{self.account}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def address(self, container: str, *, path: str | None = None, key: str | None = None) -> str:
        """A Satchel storage address for ``container`` on this server."""
        secret = quote(self.key if key is None else key, safe="")
        query = f"?endpoint={self.blob_endpoint}"
        if path:
            query += f"&path={quote(path, safe='/')}"
        return f"az://:{secret}@{self.account}/{container}{query}"

    def service_client(self) -> BlobServiceClient:
        from azure.storage.blob import BlobServiceClient

        return BlobServiceClient(self.blob_endpoint, credential={
            "account_name": self.account, "account_key": self.key})

    def create_container(self, name: str | None = None) -> str:
        """Create a container (a random name by default) and return its name."""
        from azure.core.exceptions import ResourceExistsError

        name = name or f"c{secrets.token_hex(8)}"
        with contextlib.suppress(ResourceExistsError):
            self.service_client().create_container(name)
        return name

    def set_cors(self, origins: Sequence[str], *, methods: Sequence[str] = ("GET", "PUT", "HEAD"),
                 exposed: Sequence[str] = ("ETag", "Content-Length", "Content-Disposition"),
                 max_age: int = 600) -> None:
        """Replace the account's CORS rules (Azure CORS is per account, not per container)."""
        from azure.storage.blob import CorsRule

        rule = CorsRule(list(origins), list(methods), allowed_headers=["*"],
                        exposed_headers=list(exposed), max_age_in_seconds=max_age)
        self.service_client().set_service_properties(cors=[rule])

    def clear_cors(self) -> None:
        self.service_client().set_service_properties(cors=[])

    def stop(self) -> None:
        """Stop the server by its own PID (idempotent)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def _ready(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
            conn.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            return b"HTTP/1.1" in conn.recv(64)
    except OSError:
        return False


def start_azurite(workdir: Path | None = None) -> AzuriteServer:
    """Start Azurite's blob service on a free 127.0.0.1 port and wait until it answers.

    For bench/ scripts too; call :meth:`AzuriteServer.stop` when done (also done at exit)."""
    if not AZURITE_BLOB.exists():
        raise RuntimeError(
            f"{AZURITE_BLOB} is missing; install the Node test dependencies with "
            "scripts/install-test-deps (runs npm ci)"
        )
    workdir = workdir or Path(tempfile.mkdtemp(prefix="azurite-"))
    log_path = workdir / "azurite.log"
    last_error = "no attempt"
    for _ in range(3):  # the free port can be taken between probing and binding
        port = _free_port()
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [str(AZURITE_BLOB), "--blobHost", "127.0.0.1", "--blobPort", str(port),
                 "--disableTelemetry", "--skipApiVersionCheck", "--inMemoryPersistence",
                 "--silent"],
                cwd=workdir, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        server = AzuriteServer(port=port, process=process, log_path=log_path)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and process.poll() is None:
            if _ready(port):
                atexit.register(server.stop)
                return server
            time.sleep(0.1)
        server.stop()
        last_error = log_path.read_text(errors="replace")[-2000:]
    raise RuntimeError(f"Azurite did not start on 127.0.0.1; its log ends with:\n{last_error}")


def stop_azurite(server: AzuriteServer) -> None:
    server.stop()


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzuriteServer]:
    """One Azurite blob service per test session (per xdist worker)."""
    server = start_azurite(tmp_path_factory.mktemp("azurite"))
    try:
        yield server
    finally:
        server.stop()
