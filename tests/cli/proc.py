"""Run the real ``satchel`` command the way a user does: separate processes, real HTTP.

Every process gets a private environment: a temp SATCHEL_HOME, SATCHEL_CONFIG_DIR,
XDG_CONFIG_HOME and HOME, and none of the caller's other SATCHEL_* variables, so nothing reads
or writes ~/.satchel or ~/.config. Servers bind 127.0.0.1 on a free port and are always killed.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text

from tests.live import free_port

API_KEY_RE = re.compile(r"sk_[A-Za-z0-9]{8}_[A-Za-z0-9]{32,128}")
PG_URL = os.environ.get("SATCHEL_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
# How long a server may take to come up before the test gives up (a hang guard, not a check).
START_DEADLINE_SECONDS = 180


def satchel_command() -> list[str]:
    """The installed ``satchel`` entry point next to this interpreter (what users run)."""
    script = Path(sys.executable).parent / "satchel"
    return [str(script)] if script.exists() else [sys.executable, "-m", "satchel"]


def clean_env(root: Path, **extra: str) -> dict[str, str]:
    """The caller's environment minus SATCHEL_*, with every config location under ``root``."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SATCHEL_", "GORILLA_"))}
    env.update(
        HOME=str(root / "user-home"),
        XDG_CONFIG_HOME=str(root / "xdg"),
        SATCHEL_CONFIG_DIR=str(root / "config"),
        SATCHEL_HOME=str(root / "satchel-home"),
        NO_COLOR="1",
        COLUMNS="200",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def run_cli(args: list[str], env: Mapping[str, str], *, stdin: str | None = None,
            ) -> subprocess.CompletedProcess[str]:
    """Run ``satchel ARGS`` in its own session (no controlling terminal: prompts read stdin)."""
    return subprocess.run(
        [*satchel_command(), *args], env=dict(env), input=stdin if stdin is not None else "",
        capture_output=True, text=True, timeout=120, start_new_session=True, check=False,
    )


@contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """A newly created, empty PostgreSQL database (dropped afterwards)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    name = f"satchel_cli_{worker}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield PG_URL.rsplit("/", 1)[0] + f"/{name}"
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


@dataclass
class ServerProcess:
    url: str
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes]
    root: Path
    startup: str = ""
    admin_password: str | None = None
    admin_key: str | None = None
    stopped: bool = field(default=False)

    def output(self) -> str:
        """Everything the process wrote to stdout and stderr so far."""
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        """Ask the server to shut down (SIGINT, like Ctrl-C); kill it if it does not."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)
        self.stopped = True
        return self.process.returncode


def _wait_until_serving(proc: subprocess.Popen[bytes], log_path: Path, url: str) -> None:
    deadline = time.monotonic() + START_DEADLINE_SECONDS
    with httpx.Client(timeout=5) as http:
        while True:
            if proc.poll() is not None:
                raise AssertionError(
                    f"satchel server exited with {proc.returncode} before serving:\n"
                    + log_path.read_text(errors="replace")[-4000:]
                )
            try:
                if http.get(f"{url}/readyz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(
                    "satchel server did not start:\n" + log_path.read_text(errors="replace")[-4000:]
                )
            time.sleep(0.1)


@contextmanager
def satchel_server(root: Path, *, database_url: str | None = None, **env_extra: str
                   ) -> Iterator[ServerProcess]:
    """``satchel server --port P`` as a subprocess; stdout+stderr captured to one file."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    extra = dict(env_extra)
    if database_url is not None:
        extra["SATCHEL_DATABASE_URL"] = database_url
    env = clean_env(root / "server", **extra)
    log_path = root / "server-output.txt"
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [*satchel_command(), "server", "--host", "127.0.0.1", "--port", str(port)],
            env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = ServerProcess(url=url, env=env, log_path=log_path, process=proc, root=root)
    try:
        _wait_until_serving(proc, log_path, url)
        server.startup = server.output()
        pw = re.search(r"^\s*password:\s*(\S+)\s*$", server.startup, re.M)
        key = re.search(r"^\s*API key:\s*(\S+)\s*$", server.startup, re.M)
        server.admin_password = pw.group(1) if pw else None
        server.admin_key = key.group(1) if key else None
        yield server
    finally:
        if proc.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def client_env(server: ServerProcess, root: Path, **extra: str) -> dict[str, str]:
    """A CLI user's environment: own config dir; the server's SATCHEL_HOME and database for
    ``satchel admin`` commands, which run against the database directly."""
    env = clean_env(root, **extra)
    env["SATCHEL_HOME"] = server.env["SATCHEL_HOME"]
    if "SATCHEL_DATABASE_URL" in server.env:
        env["SATCHEL_DATABASE_URL"] = server.env["SATCHEL_DATABASE_URL"]
    return env
