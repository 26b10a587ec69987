"""Nothing lost, nothing twice, crashes noticed (issue 6 acceptance).

* The crash detection job (services/run_monitor.py) with an injected clock: which runs it
  marks, when it starts marking, one replica at a time under the lease, and the app lifespan
  that starts and stops it.
* Real processes: a ``satchel server`` subprocess (restarted on the same port with the same
  SATCHEL_HOME and database) and a training script as a child process. The server is
  SIGKILLed while the child logs 100k points; the server is down for a child's whole run; the
  child is SIGKILLed. Every point must be stored exactly once (the per-key counts of
  ``history/keys`` include duplicates, so exact counts prove there are none), and the killed
  run must end up ``crashed``.

The database is the one SATCHEL_TEST_DB selects (a SQLite file in the server's home, or a
freshly created PostgreSQL database). Waits poll the server with generous deadlines (hang
guards): nothing asserts how fast anything happens.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from satchel.auth.tokens import generate_api_key
from satchel.config import Settings
from satchel.db.models import Run
from satchel.server.app import create_app
from satchel.server.deps import AppContext
from satchel.services import leases
from satchel.services.background import PeriodicJob
from satchel.services.run_monitor import LEASE_NAME, RunMonitor
from tests.cli.proc import (
    START_DEADLINE_SECONDS,
    clean_env,
    fresh_postgres_database,
    satchel_command,
)
from tests.live import free_port

API = "/api/v1"
TEST_DB = os.environ.get("SATCHEL_TEST_DB", "sqlite")
T0 = datetime(2031, 5, 1, 12, 0, tzinfo=UTC)
# Hang guards, not timing checks.
DEADLINE_SECONDS = 240
HTTP_TIMEOUT = 60

T = TypeVar("T")


def _wait(what: str, probe: Callable[[], T | None], deadline: float = DEADLINE_SECONDS) -> T:
    end = time.monotonic() + deadline
    while True:
        value = probe()
        if value is not None:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.1)


# ======================================================================= the monitor job


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # The app the `client` fixture runs has no monitor of its own: the tests build theirs.
    return settings.model_copy(update={"run_monitor_interval_seconds": 0,
                                       "gc_interval_seconds": 0})


def _monitor_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"run_monitor_interval_seconds": 60,
                                       "run_heartbeat_timeout_seconds": 300})


def _state(client: TestClient, headers: dict[str, str], run_id: str) -> str:
    r = client.get(f"{API}/teams/mu/projects/p/runs/{run_id}", headers=headers)
    assert r.status_code == 200, r.text
    return str(r.json()["state"])


def _last_heard(ctx: AppContext, run_id: str, when: datetime) -> None:
    with ctx.db.session() as s:
        s.execute(update(Run).where(Run.run_id == run_id).values(heartbeat_at=when))


def test_monitor_marks_silent_running_runs_crashed(
        client: TestClient, ctx: AppContext, settings: Settings,
        admin_headers: dict[str, str]) -> None:
    h = admin_headers
    assert client.post(f"{API}/teams", json={"name": "mu"}, headers=h).status_code == 201
    assert client.post(f"{API}/teams/mu/projects", json={"name": "p"},
                       headers=h).status_code == 201
    for run_id in ("alive", "silent", "done"):
        r = client.post(f"{API}/teams/mu/projects/p/runs", json={"run_id": run_id}, headers=h)
        assert r.status_code == 201, r.text
    r = client.post(f"{API}/teams/mu/projects/p/runs/done/records",
                    json={"start": 0, "records": [["x", 0, 1.0e9]]}, headers=h)
    assert r.status_code == 200, r.text

    clock = Clock(T0)
    monitor = RunMonitor(ctx.db, _monitor_settings(settings), clock=clock)
    _last_heard(ctx, "alive", T0 - timedelta(seconds=10))
    _last_heard(ctx, "silent", T0 - timedelta(seconds=10))
    _last_heard(ctx, "done", T0 - timedelta(seconds=10_000))

    clock.advance(299)  # "silent" has been quiet for 309 s, but the monitor has only been
    assert monitor.check() == 0  # up for 299 s: the silence may have been the server's
    assert _state(client, h, "silent") == "running"

    clock.advance(1)
    _last_heard(ctx, "alive", clock() - timedelta(seconds=299))
    assert monitor.check() == 1
    assert [_state(client, h, r) for r in ("alive", "silent", "done")] == [
        "running", "crashed", "finished"]
    assert monitor.check() == 0  # already marked

    clock.advance(2)  # now "alive" is past the timeout too
    assert monitor.check() == 1 and _state(client, h, "alive") == "crashed"

    # A crashed run whose process speaks again was only cut off: running again.
    r = client.post(f"{API}/teams/mu/projects/p/runs/silent/heartbeat", headers=h)
    assert r.status_code == 200 and r.json()["state"] == "running"


def test_one_replica_checks_at_a_time(ctx: AppContext, settings: Settings) -> None:
    s = _monitor_settings(settings)
    clock = Clock(T0)
    a = RunMonitor(ctx.db, s, clock=clock, holder="replica-a")
    b = RunMonitor(ctx.db, s, clock=clock, holder="replica-b")
    assert a.check() == 0
    assert b.check() is None  # a holds the lease
    clock.advance(60)
    assert a.check() == 0 and b.check() is None  # a renews it every round
    a.stop()  # releases: b takes over at once
    assert b.check() == 0 and a.check() is None
    # b dies without releasing: a takes over once b's lease (3 intervals) has expired.
    clock.advance(179)
    assert a.check() is None
    clock.advance(2)
    assert a.check() == 0
    assert leases.current(ctx.db, LEASE_NAME, now=clock())[0] == "replica-a"  # type: ignore[index]


def test_a_failing_round_does_not_stop_the_job() -> None:
    calls: list[int] = []
    second = threading.Event()

    def tick() -> float:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("database went away")
        second.set()
        return 3600.0

    job = PeriodicJob("test-job", tick, retry_seconds=0.01)
    job.start()
    try:
        assert second.wait(DEADLINE_SECONDS)
    finally:
        job.stop(timeout=DEADLINE_SECONDS)  # wakes the hour-long wait at once
    assert not job.alive and len(calls) == 2


def test_the_app_lifespan_starts_and_stops_the_monitor(ctx: AppContext,
                                                       settings: Settings) -> None:
    with TestClient(create_app(settings, context=ctx)) as c:
        assert c.app.state.run_monitor is None  # type: ignore[attr-defined]
    on = settings.model_copy(update={"run_monitor_interval_seconds": 3600})
    with TestClient(create_app(on, context=dataclasses.replace(ctx, settings=on))) as c:
        monitor = c.app.state.run_monitor  # type: ignore[attr-defined]
        assert isinstance(monitor, RunMonitor) and monitor.alive
        held = _wait("the monitor's first round", lambda: leases.current(
            ctx.db, LEASE_NAME, now=datetime.now(UTC)))
        assert held[0] == monitor.lease.holder
    assert not monitor.alive
    assert leases.current(ctx.db, LEASE_NAME, now=datetime.now(UTC)) is None  # released


# ======================================================================= real processes


CHILD = r'''
import json, sys, time
from pathlib import Path

import satchel
from satchel.config import RunSettings

a = json.loads(sys.argv[1])
rs = RunSettings(run_dir=Path(a["run_dir"]), send_interval_seconds=0.05, heartbeat_seconds=0.5,
                 finish_timeout_seconds=a["finish_timeout"], system_metrics_seconds=0.5)
run = satchel.init(a["project"], id=a["run_id"], host=a["url"], api_key=a["key"], settings=rs)
for step in range(a["steps"]):
    run.log({f"k{j}": step * 1000 + j + 0.25 for j in range(a["keys"])})
    if a["sleep"]:
        time.sleep(a["sleep"])
Path(a["marker"]).write_text("logged")
while a["hang"]:  # idle: only heartbeats show the run is alive
    time.sleep(1)
run.finish()
sender = run._sender
confirmed = sender is not None and sender.fatal is None and \
    sender.hwm == run._spool.info.base + run._spool.count
print("all records confirmed" if confirmed else "NOT all records confirmed")
sys.exit(0 if confirmed else 3)
'''


class Server:
    """``satchel server`` as a subprocess that can be killed and started again on the same
    port, home directory and database."""

    def __init__(self, root: Path, database_url: str | None, **env: str) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.key = generate_api_key()
        extra = {"SATCHEL_ADMIN_API_KEY": self.key, "SATCHEL_GC_INTERVAL_SECONDS": "0", **env}
        if database_url is not None:
            extra["SATCHEL_DATABASE_URL"] = database_url
        self.env = clean_env(root / "server", **extra)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = root / "server-output.txt"
        self.proc: subprocess.Popen[bytes] | None = None
        self.http = httpx.Client(base_url=self.url, timeout=HTTP_TIMEOUT,
                                 headers={"Authorization": f"Bearer {self.key}"})

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [*satchel_command(), "server", "--host", "127.0.0.1", "--port", str(self.port)],
                env=self.env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        proc = self.proc

        def ready() -> bool | None:
            if proc.poll() is not None:
                raise AssertionError(f"satchel server exited with {proc.returncode}:\n"
                                     + self.output()[-4000:])
            with suppress(httpx.TransportError):
                if self.http.get("/readyz").status_code == 200:
                    return True
            return None

        _wait("the server to start", ready, START_DEADLINE_SECONDS)

    def kill(self) -> None:
        """SIGKILL: no shutdown, transactions in flight are lost."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=60)

    def stop(self) -> None:
        """A clean shutdown (SIGINT, like Ctrl-C)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.kill()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def close(self) -> None:
        self.kill()
        self.http.close()

    def run(self, run_id: str) -> dict[str, Any] | None:
        """The run as the API shows it, or None while the server does not know it / is down."""
        try:
            r = self.http.get(f"{API}/teams/rho/projects/p/runs/{run_id}")
        except httpx.TransportError:
            return None
        if r.status_code == 404:
            return None
        assert r.status_code == 200, r.text
        return dict(r.json())

    def make_project(self) -> None:
        for path, name in ((f"{API}/teams", "rho"), (f"{API}/teams/rho/projects", "p")):
            r = self.http.post(path, json={"name": name})
            assert r.status_code == 201, r.text


@pytest.fixture
def server_database_url() -> Iterator[str | None]:
    """None: SQLite in the server's home; else a fresh PostgreSQL database."""
    if TEST_DB == "postgresql":
        with fresh_postgres_database() as url:
            yield url
    else:
        yield None


@pytest.fixture
def server_factory(tmp_path: Path, server_database_url: str | None
                   ) -> Iterator[Callable[..., Server]]:
    made: list[Server] = []

    def make(**env: str) -> Server:
        server = Server(tmp_path / f"server{len(made)}", server_database_url, **env)
        made.append(server)
        return server

    yield make
    for server in made:
        server.close()


class Child:
    """The training script: ``satchel.init`` + ``run.log`` in its own process."""

    def __init__(self, tmp_path: Path, server: Server, run_id: str, *, steps: int,
                 keys: int, sleep: float = 0.0, hang: bool = False,
                 finish_timeout: float = 600) -> None:
        root = tmp_path / f"child-{run_id}"
        root.mkdir()
        script = root / "train.py"
        script.write_text(CHILD)
        self.marker = root / "logged"
        self.output_path = root / "output.txt"
        args = {"project": "rho/p", "run_id": run_id, "url": server.url, "key": server.key,
                "run_dir": str(root / "runs"), "steps": steps, "keys": keys, "sleep": sleep,
                "hang": hang, "finish_timeout": finish_timeout, "marker": str(self.marker)}
        with open(self.output_path, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, str(script), json.dumps(args)], env=clean_env(root),
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)

    def output(self) -> str:
        return self.output_path.read_text(errors="replace")

    def wait(self) -> int:
        try:
            return self.proc.wait(timeout=DEADLINE_SECONDS)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError("the training script did not exit:\n"
                                 + self.output()[-4000:]) from None

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=60)


def _run_where(server: Server, run_id: str, **expected: Any) -> dict[str, Any] | None:
    run = server.run(run_id)
    return run if run is not None and all(run[k] == v for k, v in expected.items()) else None


def _value(step: int, key: int) -> float:
    return step * 1000 + key + 0.25


def _assert_stored_exactly_once(server: Server, run_id: str, *, steps: int, keys: int,
                                system: bool = False) -> None:
    base = f"{API}/teams/rho/projects/p/runs/{run_id}"
    shown = server.run(run_id)
    assert shown is not None
    assert (shown["state"], shown["exit_code"]) == ("finished", 0), shown
    assert (shown["history_rows"], shown["last_step"]) == (steps, steps - 1), shown
    counts = server.http.get(f"{base}/history/keys").json()["keys"]
    names = [f"k{j}" for j in range(keys)]
    assert counts == {**dict.fromkeys(names, steps), "_timestamp": steps}
    r = server.http.get(f"{base}/history", params={"keys": names})
    assert r.status_code == 200, r.text
    series = r.json()["keys"]
    for j, name in enumerate(names):
        assert series[name]["steps"] == list(range(steps)), name
        assert series[name]["values"] == [_value(s, j) for s in range(steps)], name
    if system:  # the run lived long enough for samples; they came through the outage too
        sampled = server.http.get(f"{base}/history/keys", params={"stream": "system"}).json()
        assert "cpu" in sampled["keys"]


@pytest.mark.slow
def test_server_killed_while_a_run_logs_100k_points(
        tmp_path: Path, server_factory: Callable[..., Server]) -> None:
    steps, keys = 1000, 100
    server = server_factory()
    server.start()
    server.make_project()
    child = Child(tmp_path, server, "sigkill1", steps=steps, keys=keys, sleep=0.003)
    try:
        def some_applied() -> int | None:
            run = server.run("sigkill1")
            return int(run["record_hwm"]) if run and run["record_hwm"] >= 50 else None

        hwm_before_kill = _wait("the first records to arrive", some_applied)
        server.kill()
        assert child.proc.poll() is None, child.output()  # still logging, or finishing
        assert hwm_before_kill < steps  # most of the run is not on the server yet
        time.sleep(1)  # down for a moment; the child keeps logging into its spool
        server.start()
        assert child.wait() == 0, child.output()
    finally:
        child.kill()
    assert "all records confirmed" in child.output()
    _assert_stored_exactly_once(server, "sigkill1", steps=steps, keys=keys, system=True)


@pytest.mark.slow
def test_server_down_for_the_whole_run(tmp_path: Path,
                                       server_factory: Callable[..., Server]) -> None:
    steps, keys = 1000, 100
    server = server_factory()
    server.start()
    server.make_project()
    server.stop()
    child = Child(tmp_path, server, "outage1", steps=steps, keys=keys)
    try:
        _wait("the child to log everything", lambda: child.marker.exists() or None)
        assert child.proc.poll() is None, child.output()  # finish() waits for the server
        server.start()
        assert child.wait() == 0, child.output()
    finally:
        child.kill()
    out = child.output()
    assert "cannot reach the server" in out and "all records confirmed" in out
    _assert_stored_exactly_once(server, "outage1", steps=steps, keys=keys)


@pytest.mark.slow
def test_killed_training_process_is_marked_crashed(
        tmp_path: Path, server_factory: Callable[..., Server]) -> None:
    timeout, interval = 5, 1  # 10 heartbeats per timeout: a busy machine does not fake a crash
    server = server_factory(SATCHEL_RUN_HEARTBEAT_TIMEOUT_SECONDS=str(timeout),
                            SATCHEL_RUN_MONITOR_INTERVAL_SECONDS=str(interval))
    server.start()
    server.make_project()
    child = Child(tmp_path, server, "victim1", steps=10, keys=3, hang=True)
    try:
        _wait("the run's records", lambda: _run_where(server, "victim1", history_rows=10))

        def alive_past_the_timeout() -> bool | None:
            # While the idle process heartbeats, the monitor leaves it alone, even once it
            # has lived longer than the timeout (and the monitor has had several rounds).
            run = server.run("victim1")
            assert run is not None and run["state"] == "running", run
            lived = (datetime.fromisoformat(run["heartbeat_at"])
                     - datetime.fromisoformat(run["created_at"]))
            return True if lived > timedelta(seconds=timeout + 3 * interval) else None

        _wait("the run to outlive the heartbeat timeout", alive_past_the_timeout)
        child.kill()  # SIGKILL: no finish record, no more heartbeats
    finally:
        child.kill()
    crashed = _wait("the run to be marked crashed",
                    lambda: _run_where(server, "victim1", state="crashed"))
    assert crashed["exit_code"] is None and crashed["finished_at"] is None
    assert crashed["history_rows"] == 10
