"""The runs CLI the way a user meets it: a ``satchel server`` process, a training script in its
own process logging offline, then separate ``satchel`` processes: ``sync`` (twice: the data
arrives exactly once), ``run ls/show/logs``, the background Parquet export of the finished run,
``export run --download`` read with DuckDB, ``export project``, and one-line errors.
SQLite always; also PostgreSQL (a fresh database) when SATCHEL_TEST_DB=postgresql.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest

from tests.cli.proc import (
    ServerProcess,
    client_env,
    fresh_postgres_database,
    run_cli,
    satchel_command,
    satchel_server,
)

pytestmark = pytest.mark.slow

TEST_DB = os.environ.get("SATCHEL_TEST_DB", "sqlite")
DB_KINDS = ["sqlite", "postgresql"] if TEST_DB == "postgresql" else ["sqlite"]
HTTP_TIMEOUT = 60
# How long the background export may take to show up (a hang guard, not a speed check).
EXPORT_DEADLINE_SECONDS = 120
STEPS = 500

SCRIPT = textwrap.dedent("""
    import satchel
    run = satchel.init("kappa/p", id="off1", name="offline-one", mode="offline",
                       tags=["t1"], config={"lr": 0.01})
    for i in range(STEPS):
        run.log({"loss": 1.0 / (i + 1), "i": i})
    print("hello from the run")
    print("second line")
    run.finish()
""").replace("STEPS", str(STEPS))


@pytest.fixture(scope="module", params=DB_KINDS)
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp(f"runs-server-{request.param}")
    # A short export interval so the finished run is exported by the real server's job.
    extra = {"SATCHEL_EXPORT_INTERVAL_SECONDS": "1"}
    if request.param == "postgresql":
        with fresh_postgres_database() as url, \
                satchel_server(root, database_url=url, **extra) as srv:
            yield srv
    else:
        with satchel_server(root, **extra) as srv:
            yield srv


def _api(server: ServerProcess, method: str, path: str, **kwargs: Any) -> Any:
    r = httpx.request(method, f"{server.url}/api/v1{path}",
                      headers={"Authorization": f"Bearer {server.admin_key}"},
                      timeout=HTTP_TIMEOUT, **kwargs)
    assert r.status_code in (200, 201), r.text
    return r.json()


def _one_line_error(out: subprocess.CompletedProcess[str], text: str) -> None:
    assert out.returncode == 1, out
    assert text in out.stderr, out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_offline_run_sync_twice_list_logs_export(server: ServerProcess, tmp_path: Path
                                                 ) -> None:
    assert server.admin_key is not None
    _api(server, "POST", "/teams", json={"name": "kappa"})
    _api(server, "POST", "/teams/kappa/projects", json={"name": "p"})
    env = client_env(server, tmp_path, SATCHEL_HOST=server.url,
                     SATCHEL_API_KEY=server.admin_key)
    spools = tmp_path / "spools"

    # The training script: its own process, offline (the server is never contacted).
    script_env = dict(env, SATCHEL_RUN_DIR=str(spools), SATCHEL_SYSTEM_METRICS_SECONDS="0")
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=script_env, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "hello from the run" in done.stdout  # console capture tees: the user still sees it
    assert "satchel sync" in done.stderr
    [spool] = list(spools.iterdir())
    r = httpx.get(f"{server.url}/api/v1/teams/kappa/projects/p/runs/off1",
                  headers={"Authorization": f"Bearer {server.admin_key}"}, timeout=HTTP_TIMEOUT)
    assert r.status_code == 404

    out = run_cli(["sync", str(spool)], env)
    assert out.returncode == 0, out.stderr
    assert "Synced kappa/p/off1:" in out.stdout and "record(s)" in out.stdout
    out = run_cli(["sync", str(spool)], env)  # again: nothing is sent
    assert out.returncode == 0, out.stderr
    assert "kappa/p/off1: already sent, nothing to do" in out.stdout
    out = run_cli(["sync", str(spools)], env)  # the directory that holds the spools
    assert out.returncode == 0 and "already sent" in out.stdout, out.stderr

    run = _api(server, "GET", "/teams/kappa/projects/p/runs/off1")
    assert (run["state"], run["history_rows"], run["name"]) == ("finished", STEPS, "offline-one")
    hist = _api(server, "GET", "/teams/kappa/projects/p/runs/off1/history",
                params={"keys": ["i"]})["keys"]["i"]
    assert hist == {"steps": list(range(STEPS)), "values": [float(i) for i in range(STEPS)]}

    _one_line_error(run_cli(["sync", str(tmp_path / "nowhere")], env), "InvalidInput:")
    not_spool = tmp_path / "empty"
    not_spool.mkdir()
    _one_line_error(run_cli(["sync", str(not_spool)], env),
                    "is not a Satchel run directory")

    out = run_cli(["run", "ls", "kappa/p", "--json"], env)
    assert out.returncode == 0, out.stderr
    assert [(r["run_id"], r["state"], r["tags"]) for r in json.loads(out.stdout)] == [
        ("off1", "finished", ["t1"])]
    out = run_cli(["run", "ls", "kappa/p", "--state", "running", "--json"], env)
    assert json.loads(out.stdout) == []
    out = run_cli(["run", "ls", "kappa/p", "--tag", "t1"], env)
    assert out.returncode == 0 and "off1" in out.stdout and "1 of 1" in out.stdout
    _one_line_error(run_cli(["run", "ls", "kappa/p", "--state", "sleeping"], env),
                    "InvalidInput: unknown state")

    out = run_cli(["run", "show", "kappa/p/off1"], env)
    assert out.returncode == 0, out.stderr
    assert "finished" in out.stdout and '"lr": 0.01' in out.stdout
    assert f"{STEPS} row(s), last step {STEPS - 1}" in out.stdout
    out = run_cli(["run", "logs", "kappa/p/off1"], env)
    assert out.stdout.splitlines() == ["hello from the run", "second line"]
    out = run_cli(["run", "logs", "kappa/p/off1", "--tail", "1"], env)
    assert out.stdout.splitlines() == ["second line"]
    out = run_cli(["run", "logs", "kappa/p/off1", "--follow"], env)  # finished: returns
    assert out.returncode == 0 and out.stdout.splitlines() == ["hello from the run",
                                                               "second line"]
    _one_line_error(run_cli(["run", "show", "kappa/p/nosuch"], env),
                    "NotFound: run 'kappa/p/nosuch' does not exist")

    # The server's background job exports the finished run by itself.
    deadline = time.monotonic() + EXPORT_DEADLINE_SECONDS
    while True:
        files = _api(server, "GET", "/teams/kappa/projects/p/runs/off1/files",
                     params={"kind": "export"})["files"]
        if len(files) == 3:
            break
        assert time.monotonic() < deadline, "the background export did not run"
        time.sleep(0.2)
    out = run_cli(["export", "run", "kappa/p/off1", "--download", str(tmp_path / "dl")], env)
    assert out.returncode == 0, out.stderr
    assert "kappa/p/off1: already current" in out.stdout
    assert "teams/kappa/runs/p/off1/export/history.parquet" in out.stdout
    con = duckdb.connect()
    got = con.execute("SELECT count(*), sum(i), min(loss), max(_step) FROM read_parquet(?)",
                      [str(tmp_path / "dl" / "history.parquet")]).fetchone()
    assert got == (STEPS, float(sum(range(STEPS))), 1.0 / STEPS, STEPS - 1)
    assert con.execute("SELECT text FROM read_parquet(?) ORDER BY line_no",
                       [str(tmp_path / "dl" / "console.parquet")]).fetchall() == [
        ("hello from the run",), ("second line",)]

    out = run_cli(["export", "project", "kappa/p", "--force", "--json"], env)
    assert out.returncode == 0, out.stderr
    proj = json.loads(out.stdout)
    assert (proj["written"], proj["current"], proj["failed"]) == (1, 0, [])
    assert [f["path"] for f in proj["runs"][0]["files"]] == [
        "export/history.parquet", "export/system.parquet", "export/console.parquet"]
    _one_line_error(run_cli(["export", "run", "kappa/p/nosuch"], env), "NotFound:")
    _one_line_error(run_cli(["export", "project", "kappa"], env), "InvalidInput:")

    # soft delete and restore; no --yes and no terminal counts as "no"
    assert run_cli(["run", "rm", "kappa/p/off1"], env).returncode == 1
    out = run_cli(["run", "rm", "kappa/p/off1", "--yes"], env)
    assert out.returncode == 0 and "satchel run restore kappa/p/off1" in out.stdout, out.stderr
    _one_line_error(run_cli(["run", "show", "kappa/p/off1"], env), "NotFound:")
    out = run_cli(["run", "restore", "kappa/p/off1"], env)
    assert out.returncode == 0, out.stderr
    assert run_cli(["run", "show", "kappa/p/off1"], env).returncode == 0
    _one_line_error(run_cli(["run", "restore", "kappa/p/off1"], env), "NotFound:")


def _in_terminal(args: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run ``satchel ARGS`` with a pseudo-terminal as stdout/stderr (what a user sees)."""
    leader, follower = os.openpty()
    proc = subprocess.Popen([*satchel_command(), *args], env=env, stdin=subprocess.DEVNULL,
                            stdout=follower, stderr=follower, start_new_session=True)
    os.close(follower)
    chunks: list[bytes] = []
    try:
        while True:
            ready, _, _ = select.select([leader], [], [], 120)
            assert ready, "no output from the command for 120 s"
            try:
                data = os.read(leader, 65536)
            except OSError:  # EIO: the terminal closed with the process
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(leader)
        code = proc.wait(timeout=120)
    return code, b"".join(chunks).decode(errors="replace")


def test_sync_shows_a_progress_bar_on_a_terminal(server: ServerProcess, tmp_path: Path
                                                 ) -> None:
    assert server.admin_key is not None
    teams = [t["name"] for t in _api(server, "GET", "/teams")]
    if "kappa" not in teams:
        _api(server, "POST", "/teams", json={"name": "kappa"})
        _api(server, "POST", "/teams/kappa/projects", json={"name": "p"})
    env = client_env(server, tmp_path, SATCHEL_HOST=server.url,
                     SATCHEL_API_KEY=server.admin_key, TERM="xterm")
    spools = tmp_path / "spools"
    script = SCRIPT.replace('id="off1"', 'id="tty1"')
    done = subprocess.run([sys.executable, "-c", script],
                          env=dict(env, SATCHEL_RUN_DIR=str(spools),
                                   SATCHEL_SYSTEM_METRICS_SECONDS="0"),
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    code, shown = _in_terminal(["sync", str(spools)], env)
    assert code == 0, shown
    assert "━" in shown  # the bar (rich draws it only on a terminal)
    assert "Synced kappa/p/tty1:" in shown
    out = run_cli(["sync", str(spools)], env)  # piped: no bar, one line per spool
    assert out.stdout.strip() == (f"kappa/p/tty1: already sent, nothing to do "
                                  f"({next(spools.iterdir())})")
