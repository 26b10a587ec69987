"""Run metrics ingestion and history reads: Satchel against MLflow, on SQLite and PostgreSQL.

Run from the repository root (MLflow is the ``bench`` extra: ``pip install -e '.[bench]'``)::

    .venv/bin/python -m bench.bench_runs                        # both databases, ~5-11 min here
    .venv/bin/python -m bench.bench_runs --db sqlite --mlflow-steps 10000   # MLflow on 1M too

Per database kind, one fresh database for each side (PostgreSQL: ``CREATE DATABASE`` on
127.0.0.1:5432, dropped at the end; SQLite: a new file), both servers started as subprocesses
bound to 127.0.0.1 and stopped by their process group id:

* ``satchel server`` (one worker, the default) with a generated admin API key;
* ``mlflow server --workers 1`` (``--mlflow-workers``; its default of 4 made uvicorn kill and
  restart workers still importing on a loaded 2-core machine) with ``--backend-store-uri`` on the
  same database kind and the same driver (psycopg 3 for PostgreSQL), ``--default-artifact-root``
  a temp dir, telemetry off (``MLFLOW_DISABLE_TELEMETRY``, ``DO_NOT_TRACK``) and no job runner
  (``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false``: GenAI jobs, idle polling processes).

Then, rounds rotated (satchel, mlflow / mlflow, satchel / ...), each client in its OWN process
(started fresh, so its wall time runs from process start -- interpreter, imports -- to the
moment everything is confirmed by the server):

* (a) ``satchel``: ``satchel.init`` with the defaults, ``run.log({100 keys})`` ``--steps``
  times (10,000: 1M points), ``run.finish()``, which returns once the server confirmed every
  record. Afterwards (untimed) the server's per-key counts are checked: every point arrived
  exactly once. Then the run's Parquet export, which the server does after a run finished, is
  requested and timed (wall, server CPU) separately; the server's background export sweep is
  switched off (``SATCHEL_EXPORT_INTERVAL_SECONDS=0``) so that it does not land in the next
  round.
* (b) ``mlflow``: ``MlflowClient().create_run``, ``log_batch(run_id, metrics=[...1000
  Metric...])`` (10 steps of 100 keys per call) for ``--mlflow-steps`` steps (1,000 by default:
  100k points, because MLflow ingests ~3,000-5,000 points/s here: 1M takes 4-6 min per round),
  ``set_terminated``. ``log_batch`` is synchronous: when the last call returns the server has
  committed it. Counts are checked afterwards too.

Reported per round: points/s by wall clock from client process start, the same from
``init``/``create_run`` to the end (without interpreter start and imports), the time the
logging loop itself took (what a training loop waits for), the client's and the server's CPU
seconds (the server's whole process tree, read with psutil before and after), and the
Satchel/MLflow ratios (best against best, and the median of per-round ratios).

* (c) one key's 10k-step history: ``GET .../runs/{id}/history?keys=<key>`` on the last Satchel
  run, ``--history-requests`` times over one keep-alive connection; the server time comes from
  the ``Server-Timing: app;dur=<ms>`` header (server/middleware.py: request entering the app to
  the response headers leaving it, i.e. auth, query, decoding, JSON encoding), the client wall
  time includes HTTP and ``json.loads``. For reference MLflow's ``metrics/get-history`` for one
  10k-step key (logged for this purpose, untimed) is timed by the client the same way.

``--mlflow-python`` runs MLflow's server and client with another interpreter (a separate
virtualenv), for checkouts whose environment should not get MLflow's pins.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench._common import REPO, Sample, Series, compare, machine, table, write_result

API = "/api/v1"
TEAM, PROJECT = "bench", "runs"
PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
START_DEADLINE = 180.0
CLIENT_DEADLINE = 3600.0
MLFLOW_ENV = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}

# The clients run as separate processes; their scripts are self-contained (the MLflow one may
# run in another virtualenv). They print one JSON line with time.monotonic() readings, which on
# Linux is CLOCK_MONOTONIC, the same clock the parent reads before starting them.
SATCHEL_CLIENT = """
import json, random, sys, time
a = json.loads(sys.argv[1])
import satchel
t_imported = time.monotonic()
keys = [f"metric_{i:03d}" for i in range(a["keys"])]
rng = random.Random(a["seed"])
t_start = time.monotonic()
run = satchel.init(a["project"], host=a["url"], api_key=a["api_key"], dir=a["dir"],
                   name=a["name"])
for _ in range(a["steps"]):
    run.log({k: rng.random() for k in keys})
t_logged = time.monotonic()
run.finish()
t_done = time.monotonic()
print(json.dumps({"run_id": run.id, "t_imported": t_imported, "t_start": t_start,
                  "t_logged": t_logged, "t_done": t_done, "cpu": time.process_time(),
                  "version": satchel.__version__}), flush=True)
"""

MLFLOW_CLIENT = """
import json, random, sys, time
a = json.loads(sys.argv[1])
import mlflow
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
t_imported = time.monotonic()
keys = [f"metric_{i:03d}" for i in range(a["keys"])]
rng = random.Random(a["seed"])
t_start = time.monotonic()
client = MlflowClient(tracking_uri=a["url"])
run_id = client.create_run(a["experiment_id"], run_name=a["name"]).info.run_id
batch = []
for step in range(a["steps"]):
    ts = int(time.time() * 1000)
    batch.extend(Metric(k, rng.random(), ts, step) for k in keys)
    if len(batch) >= a["per_call"]:
        client.log_batch(run_id, metrics=batch)
        batch = []
if batch:
    client.log_batch(run_id, metrics=batch)
t_logged = time.monotonic()
client.set_terminated(run_id)
t_done = time.monotonic()
print(json.dumps({"run_id": run_id, "t_imported": t_imported, "t_start": t_start,
                  "t_logged": t_logged, "t_done": t_done, "cpu": time.process_time(),
                  "version": mlflow.__version__}), flush=True)
"""


# ---------------------------------------------------------------------- processes


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def tree_cpu(pid: int) -> float:
    """User + system CPU seconds of a process and all its live descendants."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            t = p.cpu_times()
            total += t.user + t.system
    return total


def private_env(root: Path, **extra: str) -> dict[str, str]:
    """This environment minus SATCHEL_*/MLFLOW_*, with HOME and config dirs under ``root``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SATCHEL_", "MLFLOW_"))}
    for name in ("user-home", "xdg", "config", "satchel-home"):
        (root / name).mkdir(parents=True, exist_ok=True)
    env.update(HOME=str(root / "user-home"), XDG_CONFIG_HOME=str(root / "xdg"),
               SATCHEL_CONFIG_DIR=str(root / "config"), SATCHEL_HOME=str(root / "satchel-home"),
               PYTHONUNBUFFERED="1", NO_COLOR="1", **MLFLOW_ENV)
    env.update(extra)
    return env


@dataclass
class Server:
    name: str
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextlib.contextmanager
def server_process(name: str, cmd: list[str], env: dict[str, str], root: Path, port: int,
                   ready_path: str) -> Iterator[Server]:
    """Start ``cmd`` in its own process group; wait for ``ready_path``; kill the group after."""
    log_path = root / f"{name}-server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, env=env, cwd=root, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    server = Server(name, f"http://127.0.0.1:{port}", proc, log_path)
    try:
        deadline = time.monotonic() + START_DEADLINE
        with httpx.Client(timeout=5) as http:
            while True:
                if proc.poll() is not None:
                    raise SystemExit(f"{name} server exited with {proc.returncode}:\n"
                                     + server.output()[-3000:])
                with contextlib.suppress(httpx.TransportError):
                    if http.get(server.url + ready_path).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise SystemExit(f"{name} server did not start:\n" + server.output()[-3000:])
                time.sleep(0.2)
        yield server
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)


@contextlib.contextmanager
def fresh_database(kind: str, work: Path, label: str, pg_admin_url: str) -> Iterator[str]:
    """A new, empty database URL (psycopg 3 driver for PostgreSQL); dropped afterwards."""
    if kind == "sqlite":
        path = work / f"{label}.db"
        yield f"sqlite:///{path}"
        return
    from sqlalchemy import create_engine, text

    name = f"satchel_bench_{label}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(pg_admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield pg_admin_url.rsplit("/", 1)[0] + f"/{name}"
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def run_client(python: str, script: str, params: dict[str, Any], env: dict[str, str],
               servers: dict[str, Server], active: str) -> dict[str, Any]:
    """One client process, timed from just before it starts; CPU of every server around it."""
    before = {n: tree_cpu(s.pid) for n, s in servers.items()}
    t0 = time.monotonic()
    proc = subprocess.run([python, "-c", script, json.dumps(params)], env=env, cwd=params["cwd"],
                          capture_output=True, text=True, timeout=CLIENT_DEADLINE, check=False)
    after = {n: tree_cpu(s.pid) for n, s in servers.items()}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"{active} client failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    out: dict[str, Any] = json.loads(lines[-1])
    if "not fully sent" in proc.stderr:
        raise SystemExit(f"{active} client did not get everything confirmed:\n{proc.stderr}")
    points = params["keys"] * params["steps"]
    return {
        "run_id": out["run_id"], "points": points, "client_version": out["version"],
        "process_wall_s": out["t_done"] - t0,
        "startup_s": out["t_imported"] - t0,
        "timed_wall_s": out["t_done"] - out["t_start"],
        "log_loop_s": out["t_logged"] - out["t_start"],
        "finish_s": out["t_done"] - out["t_logged"],
        "client_cpu_s": out["cpu"],
        "server_cpu_s": after[active] - before[active],
        "other_server_cpu_s": sum(after[n] - before[n] for n in servers if n != active),
        "stderr": proc.stderr[-500:],
    }


# ---------------------------------------------------------------------- the two systems


class SatchelSide:
    def __init__(self, server: Server, api_key: str, work: Path) -> None:
        self.server = server
        self.api_key = api_key
        self.work = work
        self.http = httpx.Client(base_url=server.url, timeout=120,
                                 headers={"Authorization": f"Bearer {api_key}"})
        for path, body in ((f"{API}/teams", {"name": TEAM}),
                           (f"{API}/teams/{TEAM}/projects", {"name": PROJECT})):
            r = self.http.post(path, json=body)
            if r.status_code != 201:
                raise SystemExit(f"satchel setup {path}: {r.status_code} {r.text}")

    def params(self, keys: int, steps: int, name: str, seed: int) -> dict[str, Any]:
        return {"project": f"{TEAM}/{PROJECT}", "url": self.server.url, "api_key": self.api_key,
                "dir": str(self.work / "spool"), "name": name, "keys": keys, "steps": steps,
                "seed": seed, "cwd": str(self.work)}

    def verify(self, run_id: str, keys: int, steps: int) -> None:
        base = f"{API}/teams/{TEAM}/projects/{PROJECT}/runs/{run_id}"
        run = self.http.get(base).json()
        counts = self.http.get(base + "/history/keys").json()["keys"]
        wrong = {k: n for k, n in counts.items() if k.startswith("metric_") and n != steps}
        if run.get("state") != "finished" or wrong or \
                sum(k.startswith("metric_") for k in counts) != keys:
            raise SystemExit(f"satchel run {run_id}: state {run.get('state')}, "
                             f"{len(counts)} keys, wrong counts {dict(list(wrong.items())[:5])}")

    def export(self, run_id: str) -> dict[str, Any]:
        """The Parquet export the server does after a run finished (on demand here, timed,
        instead of in the background sweep, which the bench switches off)."""
        cpu0, t0 = tree_cpu(self.server.pid), time.perf_counter()
        r = self.http.post(f"{API}/teams/{TEAM}/projects/{PROJECT}/runs/{run_id}/export",
                           json={})
        wall, cpu = time.perf_counter() - t0, tree_cpu(self.server.pid) - cpu0
        if r.status_code != 200:
            return {"error": f"{r.status_code} {r.text[:200]}"}
        files = r.json()["files"]
        return {"wall_s": wall, "server_cpu_s": cpu, "written": r.json()["written"],
                "files": len(files), "bytes": sum(f["size"] for f in files)}

    def history(self, run_id: str, key: str, requests: int, **params: Any) -> dict[str, Any]:
        return time_gets(self.http, f"{API}/teams/{TEAM}/projects/{PROJECT}/runs/{run_id}/history",
                         {"keys": key, **params}, requests, self.server.pid,
                         lambda body: len(body["keys"][key]["steps"]))

    def show_run(self, run_id: str, requests: int) -> dict[str, Any]:
        """The fixed cost of any run request (auth, project, run lookup), for comparison."""
        return time_gets(self.http, f"{API}/teams/{TEAM}/projects/{PROJECT}/runs/{run_id}", {},
                         requests, self.server.pid, lambda body: 0)

    def close(self) -> None:
        self.http.close()


class MlflowSide:
    def __init__(self, server: Server, work: Path) -> None:
        self.server = server
        self.work = work
        self.http = httpx.Client(base_url=server.url, timeout=300)
        r = self.http.post("/api/2.0/mlflow/experiments/create", json={"name": "bench-runs"})
        if r.status_code != 200:
            raise SystemExit(f"mlflow setup: {r.status_code} {r.text}")
        self.experiment_id = r.json()["experiment_id"]

    def params(self, keys: int, steps: int, name: str, seed: int, per_call: int
               ) -> dict[str, Any]:
        return {"url": self.server.url, "experiment_id": self.experiment_id, "name": name,
                "keys": keys, "steps": steps, "seed": seed, "per_call": per_call,
                "cwd": str(self.work)}

    def count(self, run_id: str, key: str) -> int:
        r = self.http.get("/api/2.0/mlflow/metrics/get-history",
                          params={"run_id": run_id, "metric_key": key})
        r.raise_for_status()
        return len(r.json().get("metrics", []))

    def verify(self, run_id: str, keys: int, steps: int) -> None:
        run = self.http.get("/api/2.0/mlflow/runs/get", params={"run_id": run_id}).json()["run"]
        names = [m["key"] for m in run["data"].get("metrics", [])]
        wrong = {k: n for k in names if (n := self.count(run_id, k)) != steps}
        if run["info"]["status"] != "FINISHED" or len(names) != keys or wrong:
            raise SystemExit(f"mlflow run {run_id}: {run['info']['status']}, {len(names)} keys, "
                             f"wrong counts {dict(list(wrong.items())[:5])}")

    def history(self, run_id: str, steps: int, requests: int) -> dict[str, Any]:
        """Log one extra key over ``steps`` steps (untimed, REST log-batch of 1,000), then time
        ``metrics/get-history`` for it from the client."""
        key = "history_probe"
        now = int(time.time() * 1000)
        rng = random.Random(7)
        for start in range(0, steps, 1000):
            metrics = [{"key": key, "value": rng.random(), "timestamp": now, "step": s}
                       for s in range(start, min(steps, start + 1000))]
            r = self.http.post("/api/2.0/mlflow/runs/log-batch",
                               json={"run_id": run_id, "metrics": metrics})
            r.raise_for_status()
        return time_gets(self.http, "/api/2.0/mlflow/metrics/get-history",
                         {"run_id": run_id, "metric_key": key}, requests, self.server.pid,
                         lambda body: len(body.get("metrics", [])))

    def close(self) -> None:
        self.http.close()


def time_gets(http: httpx.Client, path: str, params: dict[str, Any], requests: int, pid: int,
              count: Any) -> dict[str, Any]:
    """``requests`` GETs (after 5 untimed ones) over one keep-alive connection: client wall
    time (HTTP + json.loads), the server's ``Server-Timing`` if it sends one, and the server's
    CPU time per request (its process tree, psutil, around the whole loop)."""
    server_ms, wall_ms, points, size = [], [], 0, 0
    for _ in range(5):
        http.get(path, params=params).raise_for_status()
    cpu0 = tree_cpu(pid)
    for _ in range(requests):
        t0 = time.perf_counter()
        r = http.get(path, params=params)
        body = r.json()
        wall_ms.append((time.perf_counter() - t0) * 1000)
        if r.status_code != 200:
            raise SystemExit(f"GET {path}: {r.status_code} {r.text[:300]}")
        points, size = count(body), len(r.content)
        timing = r.headers.get("server-timing", "")
        if timing.startswith("app;dur="):
            server_ms.append(float(timing.split("=", 1)[1]))
    cpu_ms = (tree_cpu(pid) - cpu0) * 1000 / requests
    return {"points": points, "requests": requests, "size_bytes": size,
            "server_ms": _stats(server_ms), "client_wall_ms": _stats(wall_ms),
            "server_cpu_ms_per_request": cpu_ms}


def _stats(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    ordered = sorted(values)
    return {"median": statistics.median(ordered), "min": ordered[0],
            "p90": ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))],
            "max": ordered[-1]}


# ---------------------------------------------------------------------- one database kind


def bench_db(kind: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from satchel.auth.tokens import generate_api_key

    root = work / kind
    root.mkdir(parents=True)
    api_key = generate_api_key()
    s_port, m_port = free_port(), free_port()
    with contextlib.ExitStack() as stack:
        s_db = stack.enter_context(fresh_database(kind, root, "satchel", args.pg_admin_url))
        # The background Parquet export (a sweep every 60 s) would land in whatever round
        # runs next; the bench asks for the same export right after each Satchel round instead.
        s_env = private_env(root / "satchel-server", SATCHEL_DATABASE_URL=s_db,
                            SATCHEL_ADMIN_API_KEY=api_key, SATCHEL_EXPORT_INTERVAL_SECONDS="0")
        satchel_cmd = [str(Path(sys.executable).parent / "satchel"), "server", "--host",
                       "127.0.0.1", "--port", str(s_port)]
        t0 = time.monotonic()
        s_server = stack.enter_context(server_process(
            "satchel", satchel_cmd, s_env, root, s_port, "/readyz"))
        print(f"[{kind}] satchel server up (pid {s_server.pid}) in "
              f"{time.monotonic() - t0:.1f}s", flush=True)
        satchel = SatchelSide(s_server, api_key, root)
        stack.callback(satchel.close)
        servers = {"satchel": s_server}
        mlflow: MlflowSide | None = None
        if not args.skip_mlflow:
            m_db = stack.enter_context(fresh_database(kind, root, "mlflow", args.pg_admin_url))
            artifacts = root / "mlflow-artifacts"
            artifacts.mkdir()
            # No background job runner (GenAI jobs; 7 huey consumers that poll, ~0.13 core
            # when idle here): nothing in this workload uses it.
            m_env = private_env(root / "mlflow-server",
                                MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
            mlflow_bin = str(Path(args.mlflow_python).parent / "mlflow")
            mlflow_cmd = [mlflow_bin, "server", "--host", "127.0.0.1", "--port", str(m_port),
                          "--backend-store-uri", m_db, "--default-artifact-root",
                          artifacts.as_uri(), "--workers", str(args.mlflow_workers)]
            t0 = time.monotonic()
            m_server = stack.enter_context(server_process(
                "mlflow", mlflow_cmd, m_env, root, m_port, "/health"))
            print(f"[{kind}] mlflow server up (pid {m_server.pid}, "
                  f"{len(psutil.Process(m_server.pid).children(recursive=True))} child "
                  f"processes) in {time.monotonic() - t0:.1f}s", flush=True)
            mlflow = MlflowSide(m_server, root)
            stack.callback(mlflow.close)
            servers["mlflow"] = m_server

        c_env = private_env(root / "client")
        keys = args.keys

        def one(name: str, r: int, steps: int) -> dict[str, Any]:
            if name == "satchel":
                params = satchel.params(keys, steps, f"r{r}", seed=r)
                out = run_client(sys.executable, SATCHEL_CLIENT, params, c_env, servers, name)
                satchel.verify(out["run_id"], keys, steps)
                out["export"] = satchel.export(out["run_id"])
            else:
                assert mlflow is not None
                params = mlflow.params(keys, steps, f"r{r}", seed=r, per_call=args.per_call)
                out = run_client(args.mlflow_python, MLFLOW_CLIENT, params, c_env, servers,
                                 name)
                mlflow.verify(out["run_id"], keys, steps)
            return out

        # Warm-up, untimed: imports into the page cache, the servers' first requests.
        one("satchel", -1, 100)
        if mlflow is not None:
            one("mlflow", -1, 10)
        names = ["satchel", "mlflow"] if mlflow is not None else ["satchel"]
        steps_of = {"satchel": args.steps, "mlflow": args.mlflow_steps}
        rounds: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
        for r in range(args.rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            for name in order:
                out = one(name, r, steps_of[name])
                rounds[name].append(out)
                print(f"[{kind}] round {r + 1}/{args.rounds} {name:7s} "
                      f"{out['points']:>9,} points: {out['points'] / out['process_wall_s']:>9,.0f}"
                      f" points/s (process {out['process_wall_s']:.2f}s, loop "
                      f"{out['log_loop_s']:.2f}s, finish {out['finish_s']:.2f}s; server CPU "
                      f"{out['server_cpu_s']:.2f}s, client CPU {out['client_cpu_s']:.2f}s)"
                      + _export_note(out.get("export")), flush=True)

        history: dict[str, Any] = {}
        last = rounds["satchel"][-1]["run_id"]
        history["satchel one key"] = satchel.history(last, "metric_042", args.history_requests)
        history["satchel one key, samples=1000"] = satchel.history(
            last, "metric_042", args.history_requests, samples=1000)
        history["satchel GET run (baseline)"] = satchel.show_run(last, args.history_requests)
        if mlflow is not None:
            history["mlflow one key"] = mlflow.history(rounds["mlflow"][-1]["run_id"],
                                                       args.steps, args.history_requests)
        for label, h in history.items():
            srv = h.get("server_ms")
            print(f"[{kind}] {label}: {h['points']} points, client median "
                  f"{h['client_wall_ms']['median']:.1f} ms"
                  + (f", server median {srv['median']:.1f} ms" if srv else "")
                  + f", server CPU {h['server_cpu_ms_per_request']:.1f} ms/request", flush=True)
        series = {n: _series(n, rs) for n, rs in rounds.items()}
        result: dict[str, Any] = {
            "database": kind, "rounds": rounds, "history": history,
            "summary": {n: _summary(s, rounds[n]) for n, s in series.items()},
            "server_versions": _db_version(kind, s_db),
        }
        if mlflow is not None:
            result["ratios"] = {
                "satchel / mlflow, process wall": compare(series["satchel"], series["mlflow"]),
                "satchel / mlflow, init to end": compare(
                    _series("satchel", rounds["satchel"], timed=True),
                    _series("mlflow", rounds["mlflow"], timed=True)),
            }
        return result


def _export_note(export: dict[str, Any] | None) -> str:
    if export is None:
        return ""
    if "error" in export:
        return f"; export failed: {export['error']}"
    return (f"; then Parquet export {export['wall_s']:.2f}s, server CPU "
            f"{export['server_cpu_s']:.2f}s, {export['bytes'] / 2**20:.1f} MiB")


def _series(name: str, rounds: list[dict[str, Any]], *, timed: bool = False) -> Series:
    """Rates by wall clock (process or init-to-end) and per SERVER CPU-second."""
    wall = "timed_wall_s" if timed else "process_wall_s"
    return Series(name, [Sample(r["points"], r[wall], r["server_cpu_s"]) for r in rounds])


def _summary(series: Series, rounds: list[dict[str, Any]]) -> dict[str, Any]:
    def med(field: str) -> float:
        return float(statistics.median(r[field] for r in rounds))

    return {
        "points": rounds[0]["points"],
        "best_points_per_s": series.best(), "median_points_per_s": series.median(),
        "median_points_per_s_init_to_end": statistics.median(
            r["points"] / r["timed_wall_s"] for r in rounds),
        "median_points_per_s_log_loop": statistics.median(
            r["points"] / r["log_loop_s"] for r in rounds),
        "median_points_per_server_cpu_s": series.median(cpu=True),
        "median_server_cpu_s_per_million": statistics.median(
            r["server_cpu_s"] / r["points"] * 1e6 for r in rounds),
        "median_client_cpu_s_per_million": statistics.median(
            r["client_cpu_s"] / r["points"] * 1e6 for r in rounds),
        "median_startup_s": med("startup_s"), "median_finish_s": med("finish_s"),
        "median_export_server_cpu_s_per_million": _median_export(rounds, "server_cpu_s"),
        "median_export_wall_s_per_million": _median_export(rounds, "wall_s"),
    }


def _median_export(rounds: list[dict[str, Any]], field: str) -> float | None:
    values = [r["export"][field] / r["points"] * 1e6 for r in rounds
              if field in r.get("export", {})]
    return statistics.median(values) if values else None


def _db_version(kind: str, url: str) -> str:
    if kind == "sqlite":
        import sqlite3

        return f"SQLite {sqlite3.sqlite_version}"
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return str(conn.execute(text("select version()")).scalar()).split(" on ")[0]
    finally:
        engine.dispose()


# ---------------------------------------------------------------------- report


def report(result: dict[str, Any]) -> str:
    rows, ratio_rows, hist_rows = [], [], []
    for kind, data in result["databases"].items():
        for name, s in data["summary"].items():
            export = s["median_export_server_cpu_s_per_million"]
            rows.append([kind, name, s["points"], s["best_points_per_s"],
                         s["median_points_per_s"], s["median_points_per_s_init_to_end"],
                         s["median_points_per_s_log_loop"], s["median_server_cpu_s_per_million"],
                         "-" if export is None else export,
                         s["median_client_cpu_s_per_million"]])
        for label, r in data.get("ratios", {}).items():
            ratio_rows.append([kind, label, r["best_wall"], r["median_paired_wall"],
                               r["median_paired_cpu"]])
        for label, h in data["history"].items():
            srv = h.get("server_ms") or {}
            hist_rows.append([kind, label, h["points"], h["size_bytes"],
                              srv.get("median", "-"), srv.get("p90", "-"),
                              h["server_cpu_ms_per_request"],
                              h["client_wall_ms"]["median"], h["client_wall_ms"]["p90"]])
    return "\n\n".join([
        table(["db", "client", "points", "best pts/s", "median pts/s",
               "median pts/s init→end", "median pts/s log loop", "server CPU s/1M",
               "+ export CPU s/1M", "client CPU s/1M"], rows),
        table(["db", "ratio", "best vs best", "median of per-round ratios",
               "per server CPU-s (median paired)"], ratio_rows) if ratio_rows else "",
        table(["db", "request", "points", "bytes", "server ms median", "server ms p90",
               "server CPU ms", "client ms median", "client ms p90"], hist_rows),
    ])


def goals(result: dict[str, Any]) -> list[str]:
    lines = []
    for kind, data in result["databases"].items():
        s = data["summary"]["satchel"]["median_points_per_s"]
        lines.append(f"[{kind}] end to end {s:,.0f} points/s (median, process wall) >= 180,000: "
                     f"{'MET' if s >= 180_000 else 'NOT MET'}")
        if "ratios" in data:
            ratio = data["ratios"]["satchel / mlflow, process wall"]["median_paired_wall"]
            lines.append(f"[{kind}] satchel / mlflow {ratio:.1f}x (median of per-round ratios) "
                         f">= 30x: {'MET' if ratio >= 30 else 'NOT MET'}")
        srv = data["history"]["satchel one key"]["server_ms"]
        if srv:
            lines.append(f"[{kind}] one key's {data['history']['satchel one key']['points']}"
                         f"-step history {srv['median']:.1f} ms server time (median) < 50 ms: "
                         f"{'MET' if srv['median'] < 50 else 'NOT MET'}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per database (default 3)")
    parser.add_argument("--keys", type=int, default=100, help="keys per step (default 100)")
    parser.add_argument("--steps", type=int, default=10_000,
                        help="Satchel steps per round (default 10000: 1M points)")
    parser.add_argument("--mlflow-steps", type=int, default=1_000,
                        help="MLflow steps per round (default 1000: 100k points)")
    parser.add_argument("--per-call", type=int, default=1000,
                        help="metrics per MLflow log_batch call (default 1000, its maximum)")
    parser.add_argument("--history-requests", type=int, default=50)
    parser.add_argument("--mlflow-workers", type=int, default=1,
                        help="mlflow server --workers (default 1, like Satchel's server; "
                             "MLflow's own default of 4 restarts slow-starting workers in a loop "
                             "on a loaded 2-core machine)")
    parser.add_argument("--skip-mlflow", action="store_true")
    parser.add_argument("--mlflow-python", default=sys.executable,
                        help="interpreter with mlflow installed (default: this one)")
    parser.add_argument("--pg-admin-url", default=PG_ADMIN_URL,
                        help="where to CREATE/DROP the fresh databases (default: the "
                             "'postgres' maintenance database on 127.0.0.1:5432)")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--out", type=Path, help="JSON result file (default bench/results/)")
    args = parser.parse_args(argv)
    if args.keys * (args.per_call // max(args.keys, 1)) != args.per_call and not args.skip_mlflow:
        parser.error("--per-call must be a multiple of --keys (whole steps per call)")
    if not args.skip_mlflow:
        probe = subprocess.run([args.mlflow_python, "-c", "import mlflow"], capture_output=True,
                               check=False, env={**os.environ, **MLFLOW_ENV})
        if probe.returncode != 0:
            parser.error(f"{args.mlflow_python} cannot import mlflow: pip install -e '.[bench]' "
                         "(or pass --mlflow-python, or --skip-mlflow)")
    kinds = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    info = machine(["satchel", "fastapi", "starlette", "uvicorn", "sqlalchemy", "psycopg",
                    "httpx", "psutil"])
    info["mlflow_python"] = args.mlflow_python
    print(f"nproc={info['nproc']} load={info['loadavg_at_start']} db={','.join(kinds)} "
          f"rounds={args.rounds} satchel={args.keys}x{args.steps} "
          f"mlflow={'skip' if args.skip_mlflow else f'{args.keys}x{args.mlflow_steps}'}",
          flush=True)
    work = Path(tempfile.mkdtemp(prefix="satchel-bench-runs-", dir=args.workdir))
    started = time.perf_counter()
    try:
        databases = {kind: bench_db(kind, args, work) for kind in kinds}
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    info["client_versions"] = {name: rs[0]["client_version"] for data in databases.values()
                               for name, rs in data["rounds"].items()}
    result: dict[str, Any] = {"benchmark": "runs", "machine": info, "command": " ".join(sys.argv),
                              "args": {k: (str(v) if isinstance(v, Path) else v)
                                       for k, v in vars(args).items()},
                              "databases": databases, "elapsed_s": time.perf_counter() - started}
    print()
    print(report(result))
    print()
    result["goals"] = goals(result)
    print("\n".join(result["goals"]))
    path = write_result("runs", result, args.out)
    shown = path.relative_to(REPO) if path.is_relative_to(REPO) else path
    print(f"\nelapsed {result['elapsed_s']:.0f}s; wrote {shown}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
