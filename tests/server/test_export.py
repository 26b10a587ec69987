"""Parquet export of runs into a real SeaweedFS bucket: the files equal the database, DuckDB
reads them, the background job exports finished runs (and again after new records), on-demand
export of a run and of a project, leases, permissions, audit (both databases)."""

from __future__ import annotations

import hashlib
import json
import math
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from satchel.config import Settings
from satchel.db.models import AuditEvent, Run, RunFile
from satchel.server.deps import AppContext
from satchel.services import export, export_job, history, leases, run_records, runs
from tests.conftest import ADMIN_KEY, Users
from tests.storage.servers.seaweedfs import SeaweedFS
from tests.storage.test_scopes_seaweedfs import _keys

API = "/api/v1"
BASE = f"{API}/teams/kappa/projects/p/runs"
T0 = 1_700_000_000.0
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # The test drives the background export itself (ExportScheduler.tick with a clock).
    return settings.model_copy(update={"export_interval_seconds": 0})


@pytest.fixture
def prefix() -> str:
    return f"export-{secrets.token_hex(4)}"


@pytest.fixture
def world(client: TestClient, users: Users, seaweedfs: SeaweedFS, prefix: str
          ) -> dict[str, dict[str, str]]:
    r = client.put(f"{API}/admin/storage", headers=ADMIN, json={
        "address": seaweedfs.address("bucket-a", "bucket-a"), "path": prefix})
    assert r.status_code == 200, r.text
    alice, vic = users.create("alice"), users.create("vic")
    assert client.post(f"{API}/teams", json={"name": "kappa"}, headers=alice).status_code == 201
    assert client.post(f"{API}/teams/kappa/projects", json={"name": "p"},
                       headers=alice).status_code == 201
    r = client.post(f"{API}/teams/kappa/members", json={"username": "vic", "role": "viewer"},
                    headers=alice)
    assert r.status_code in (200, 201), r.text
    return {"alice": alice, "vic": vic}


@pytest.fixture
def clock() -> Iterator[list[datetime]]:
    yield [datetime(2030, 1, 1, tzinfo=UTC)]


def _start(client: TestClient, h: dict[str, str], run_id: str, **body: Any) -> None:
    r = client.post(BASE, json={"run_id": run_id, **body}, headers=h)
    assert r.status_code == 201, r.text


def _send(client: TestClient, h: dict[str, str], run_id: str, start: int,
          records: list[Any]) -> dict[str, Any]:
    # allow_nan: the SDK sends NaN/Infinity tokens (Python's json accepts them).
    data = json.dumps({"start": start, "records": records}, allow_nan=True).encode()
    r = client.post(f"{BASE}/{run_id}/records", content=data,
                    headers={**h, "Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    assert out["rejected"] == [], out
    return out


def _history_records() -> list[Any]:
    """200 steps of varied values: gaps, NaN/±inf, bools, strings, JSON with nested NaN, a key
    that turns from numbers to strings, a key named like the index column."""
    records: list[Any] = []
    for i in range(200):
        row: dict[str, Any] = {"loss": 1.0 / (i + 1), "flag": i % 3 == 0,
                               "deep/key.name": i * 2}
        if i % 2 == 0:
            row["acc"] = i / 200
        row["nan_key"] = (math.nan if i % 50 == 0 else math.inf if i == 3
                          else -math.inf if i == 4 else i * 0.5)
        if i < 10:
            row["label"] = f"s{i} ✓"
        if i < 12:
            row["mixed"] = i if i < 5 else "n/a"
        if i % 100 == 0:
            row["img"] = {"_type": "image", "path": f"media/{i}.png", "w": math.nan}
        if i == 7:
            row["_step"] = 99
        records.append(["h", i, T0 + i, row])
    return records


def _other_records() -> list[Any]:
    records: list[Any] = []
    for k in range(10):
        sample: dict[str, Any] = {"cpu": k * 1.5, "mem": 100 + k}
        if k % 3 == 0:
            sample["gpu.0.temp"] = 40.0 + k
        records.append(["m", T0 + 15 * k, sample])
    lines = [("stdout", "epoch 1"), ("stderr", "warning: slow"), ("stdout", "héllo ✓"),
             ("stdout", ""), ("stderr", "done")]
    records += [["o", stream, T0 + n, text] for n, (stream, text) in enumerate(lines)]
    return records


def _download(url: str, dest: Path) -> bytes:
    r = httpx.get(url, timeout=60)
    assert r.status_code == 200, r.text
    dest.write_bytes(r.content)
    return r.content


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return bool(a == b) and type(a) is type(b)


def _deep(value: Any) -> Any:
    """What the export promises for a JSON cell: non-finite floats as the API's strings."""
    if isinstance(value, float):
        return history.jsonable(value)
    if isinstance(value, dict):
        return {k: _deep(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep(v) for v in value]
    return value


def _assert_equals_database(ctx: AppContext, run_id: str, table: pa.Table, stream: str,
                            index: str) -> None:
    """Every key and every step of the database is in the table with the exact value, and the
    table holds nothing else."""
    with ctx.db.session() as s:
        run = s.scalar(select(Run).where(Run.run_id == run_id))
        assert run is not None
        keys = sorted(history.keys(s, run, stream=stream))
        series = {x.key: x for x in history.read(s, run, keys, stream=stream)}
    rows = table.to_pylist()
    if stream == "system":
        steps = [int(r[index].timestamp() * 1000) for r in rows]
    else:
        steps = [r[index] for r in rows]
    assert steps == sorted({st for x in series.values() for st in x.steps})
    columns = {f.metadata[b"satchel.key"].decode(): f for f in table.schema if f.metadata}
    assert sorted(columns) == keys
    for key, x in series.items():
        field = columns[key]
        numeric = all(type(v) is float for v in x.values)
        assert field.type == (pa.float64() if numeric else pa.string()), key
        assert field.metadata[b"satchel.kind"] == (b"number" if numeric else b"json")
        expected = dict(zip(x.steps, x.values, strict=True))
        for step, row in zip(steps, rows, strict=True):
            cell = row[field.name]
            if step not in expected:
                assert cell is None, (key, step)
            elif numeric:
                assert _same(cell, expected[step]), (key, step, cell, expected[step])
            else:
                assert json.loads(cell) == _deep(expected[step]), (key, step, cell)


def test_export_equals_the_database_and_duckdb_queries_it(
        client: TestClient, ctx: AppContext, world: dict[str, dict[str, str]],
        seaweedfs: SeaweedFS, prefix: str, tmp_path: Path) -> None:
    h = world["alice"]
    _start(client, h, "r1", config={"lr": 0.1})
    recs = _history_records()
    _send(client, h, "r1", 0, recs[:120])
    _send(client, h, "r1", 120, recs[120:] + _other_records())
    # Step 199 logged again (a resumed run does this): the later value wins everywhere.
    hwm = _send(client, h, "r1", 200 + len(_other_records()),
                [["h", 199, T0 + 500, {"loss": 42.0}], ["x", 0, T0 + 600]])["hwm"]

    r = client.post(f"{BASE}/r1/export", headers=h)
    assert r.status_code == 200, r.text
    out = r.json()
    assert (out["run_id"], out["state"], out["written"], out["record_hwm"]) == (
        "r1", "finished", True, hwm)
    assert out["exported_at"] is not None
    by_path = {f["path"]: f for f in out["files"]}
    assert sorted(by_path) == ["export/console.parquet", "export/history.parquet",
                               "export/system.parquet"]
    for f in out["files"]:
        assert f["key"] == f"runs/p/r1/{f['path']}"
        assert f["bucket_key"] == f"{prefix}/teams/kappa/runs/p/r1/{f['path']}"
        assert f["method"] == "GET" and f["url"].startswith(seaweedfs.endpoint)
    assert {f"{prefix}/teams/kappa/runs/p/r1/{p}" for p in by_path} <= _keys(seaweedfs,
                                                                             "bucket-a")
    local: dict[str, Path] = {}
    for path, f in by_path.items():
        dest = tmp_path / path.split("/")[-1]
        data = _download(f["url"], dest)
        assert len(data) == f["size"] and hashlib.sha256(data).hexdigest() == f["sha256"]
        local[path] = dest

    hist = pq.read_table(local["export/history.parquet"])
    assert hist.num_rows == 200 == by_path["export/history.parquet"]["rows"]
    names = hist.column_names
    assert names[:2] == ["_step", "_timestamp"] and names[2:] == sorted(names[2:])
    assert hist.schema.field("_step").type == pa.int64()
    assert hist.schema.field("_timestamp").type == pa.float64()
    meta = hist.schema.metadata
    assert meta[b"satchel.run"] == b"kappa/p/r1" and meta[b"satchel.stream"] == b"history"
    assert meta[b"satchel.record_hwm"] == str(hwm).encode()
    _assert_equals_database(ctx, "r1", hist, "history", "_step")
    # The same facts, written out independently of the database reader:
    col = hist.to_pydict()
    assert col["_step"] == list(range(200))
    assert col["_timestamp"][:3] == [T0, T0 + 1, T0 + 2] and col["_timestamp"][199] == T0 + 500
    assert col["loss"][0] == 1.0 and col["loss"][199] == 42.0
    assert col["acc"][1] is None and col["acc"][2] == 0.01
    assert math.isnan(col["nan_key"][50]) and col["nan_key"][3] == math.inf
    assert col["nan_key"][4] == -math.inf and col["nan_key"][5] == 2.5
    assert col["flag"][:3] == [1.0, 0.0, 0.0]
    assert col["label"][0] == '"s0 ✓"' and col["label"][10] is None
    assert col["mixed"][:7] == ["0.0", "1.0", "2.0", "3.0", "4.0", '"n/a"', '"n/a"']
    assert json.loads(col["img"][100]) == {"_type": "image", "path": "media/100.png",
                                           "w": "NaN"}
    assert col["_step_logged"][7] == 99.0 and col["deep/key.name"][3] == 6.0
    assert hist.schema.field("label").type == pa.string()

    system = pq.read_table(local["export/system.parquet"])
    assert system.schema.field("_time").type == pa.timestamp("ms", tz="UTC")
    assert system.column_names == ["_time", "cpu", "gpu.0.temp", "mem"]
    _assert_equals_database(ctx, "r1", system, "system", "_time")
    assert system.column("_time")[3].as_py() == datetime.fromtimestamp(T0 + 45, UTC)
    assert system.column("gpu.0.temp").to_pylist()[:4] == [40.0, None, None, 43.0]

    console = pq.read_table(local["export/console.parquet"])
    assert console.schema == pa.schema([
        pa.field("line_no", pa.int64(), nullable=False),
        pa.field("stream", pa.string(), nullable=False),
        pa.field("time", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("text", pa.string(), nullable=False)]).with_metadata(console.schema.metadata)
    assert console.to_pydict()["text"] == ["epoch 1", "warning: slow", "héllo ✓", "", "done"]
    assert console.to_pydict()["stream"][:2] == ["stdout", "stderr"]
    assert console.column("time")[2].as_py() == datetime.fromtimestamp(T0 + 2, UTC)

    # DuckDB over the downloaded files (httpx in DuckDB needs the network; a local file).
    con = duckdb.connect()
    hp, sp = str(local["export/history.parquet"]), str(local["export/system.parquet"])
    got = con.execute(
        "SELECT count(*), count(acc), max(loss), sum(flag), "
        "count(*) FILTER (WHERE isnan(nan_key)), count(*) FILTER (WHERE isinf(nan_key)), "
        "max(\"deep/key.name\") FROM read_parquet(?)", [hp]).fetchone()
    assert got == (200, 100, 42.0, 67.0, 4, 2, 398.0)
    paths = con.execute("SELECT json_extract_string(img, '$.path') FROM read_parquet(?) "
                        "WHERE img IS NOT NULL ORDER BY _step", [hp]).fetchall()
    assert paths == [("media/0.png",), ("media/100.png",)]
    assert con.execute("SELECT _step FROM read_parquet(?) WHERE mixed = '\"n/a\"' "
                       "ORDER BY _step LIMIT 1", [hp]).fetchone() == (5,)
    assert con.execute("SELECT max(cpu), count(\"gpu.0.temp\") FROM read_parquet(?) "
                       "WHERE _time >= to_timestamp(?)", [sp, T0 + 30]).fetchone() == (13.5, 3)

    # The database records what was written, and every write and URL is audited.
    with ctx.db.session() as s:
        run = s.scalar(select(Run).where(Run.run_id == "r1"))
        assert run is not None and run.exported_at is not None
        rows = {f.path: f for f in s.scalars(select(RunFile).where(RunFile.run_id == run.id))}
        assert {p: (f.kind, f.state, f.size, f.sha256) for p, f in rows.items()} == {
            p: ("export", "committed", f["size"], f["sha256"]) for p, f in by_path.items()}
        audit = s.execute(select(AuditEvent.action, AuditEvent.method, AuditEvent.object_key,
                                 AuditEvent.username)).all()
    full = {f["bucket_key"] for f in out["files"]}
    assert {(k, u) for a, m, k, u in audit if a == "run_export" and m == "PUT"} == {
        (k, "alice") for k in full}
    assert {k for a, m, k, _ in audit if a == "run_export_presign" and m == "GET"} == full

    # Again without force: current, nothing written, the same files.
    again = client.post(f"{BASE}/r1/export", headers=h).json()
    assert again["written"] is False and again["exported_at"] == out["exported_at"]
    assert [f["sha256"] for f in again["files"]] == [f["sha256"] for f in out["files"]]
    assert all(f["rows"] is None for f in again["files"])
    # With force: written again, byte for byte the same (the export is deterministic).
    forced = client.post(f"{BASE}/r1/export", headers=h, json={"force": True}).json()
    assert forced["written"] is True
    assert [f["sha256"] for f in forced["files"]] == [f["sha256"] for f in out["files"]]


def test_a_run_without_data_exports_empty_tables(
        client: TestClient, world: dict[str, dict[str, str]], tmp_path: Path) -> None:
    h = world["alice"]
    _start(client, h, "empty")
    out = client.post(f"{BASE}/empty/export", headers=h).json()
    tables = {}
    for f in out["files"]:
        dest = tmp_path / f["path"].split("/")[-1]
        _download(f["url"], dest)
        tables[f["path"]] = pq.read_table(dest)
    assert tables["export/history.parquet"].column_names == ["_step", "_timestamp"]
    assert tables["export/system.parquet"].column_names == ["_time"]
    assert all(t.num_rows == 0 for t in tables.values())
    con = duckdb.connect()
    assert con.execute("SELECT count(*) FROM read_parquet(?)",
                       [str(tmp_path / "history.parquet")]).fetchone() == (0,)


def _pk(ctx: AppContext, run_id: str) -> int:
    with ctx.db.session() as s:
        pk = s.scalar(select(Run.id).where(Run.run_id == run_id))
        assert pk is not None
        return int(pk)


def _exported_at(ctx: AppContext, run_id: str) -> datetime | None:
    with ctx.db.session() as s:
        return s.scalar(select(Run.exported_at).where(Run.run_id == run_id))


def _scheduler(ctx: AppContext, clock: list[datetime]) -> export_job.ExportScheduler:
    settings = ctx.settings.model_copy(update={"export_interval_seconds": 60})
    return export_job.ExportScheduler(ctx.db, ctx.storage, settings, clock=lambda: clock[0],
                                      holder="test-exporter")


def test_background_job_exports_finished_runs_and_again_after_new_records(
        client: TestClient, ctx: AppContext, world: dict[str, dict[str, str]],
        clock: list[datetime], tmp_path: Path) -> None:
    h = world["alice"]
    _start(client, h, "done")
    _send(client, h, "done", 0, [["h", 0, T0, {"x": 1}], ["h", 1, T0, {"x": 2}],
                                 ["x", 0, T0 + 1]])
    _start(client, h, "live")
    _send(client, h, "live", 0, [["h", 0, T0, {"x": 1}]])
    _start(client, h, "failed")
    _send(client, h, "failed", 0, [["h", 0, T0, {"y": "boom"}], ["x", 3, T0 + 1]])
    job = _scheduler(ctx, clock)

    assert sorted(export_job.due_runs(ctx.db, limit=10)) == sorted(
        [_pk(ctx, "done"), _pk(ctx, "failed")])
    assert job.tick() == 60.0
    assert _exported_at(ctx, "done") is not None and _exported_at(ctx, "failed") is not None
    assert _exported_at(ctx, "live") is None  # a running run is not exported by the job
    assert export_job.due_runs(ctx.db, limit=10) == []
    assert job.sweep().exported == []  # nothing due: nothing written
    # This replica keeps the sweep's lease between ticks and gives it up when it stops.
    assert leases.current(ctx.db, export_job.LEASE_NAME, now=clock[0]) is not None
    job.stop()
    assert leases.current(ctx.db, export_job.LEASE_NAME, now=clock[0]) is None
    assert job.sweep().exported == []  # a stopped job exports nothing, even when runs are due
    job = _scheduler(ctx, clock)

    # A crashed run is exported too (it may never send its finish).
    with ctx.db.session() as s:
        assert runs.mark_crashed(s, now=datetime.now(UTC) + timedelta(hours=1),
                                 timeout_seconds=60) == 1
    assert job.sweep().exported == [_pk(ctx, "live")]

    # The run is resumed and logs more: due again; the new export holds the new step.
    first = _exported_at(ctx, "done")
    r = client.post(BASE, json={"run_id": "done", "resume": "must"}, headers=h)
    assert r.status_code == 201, r.text
    _send(client, h, "done", 3, [["h", 2, T0 + 5, {"x": 3}], ["x", 0, T0 + 6]])
    assert export_job.due_runs(ctx.db, limit=10) == [_pk(ctx, "done")]
    assert job.sweep().exported == [_pk(ctx, "done")]
    second = _exported_at(ctx, "done")
    assert first is not None and second is not None and second > first
    out = client.post(f"{BASE}/done/export", headers=h).json()
    assert out["written"] is False
    hist = next(f for f in out["files"] if f["path"] == "export/history.parquet")
    _download(hist["url"], tmp_path / "h.parquet")
    assert pq.read_table(tmp_path / "h.parquet").to_pydict()["x"] == [1.0, 2.0, 3.0]
    with ctx.db.session() as s:
        written = s.scalars(select(AuditEvent.username).where(
            AuditEvent.action == "run_export")).all()
    assert set(written) == {None}  # the job writes as the server, not as a user


def test_records_arriving_during_an_export_keep_the_run_due(
        client: TestClient, ctx: AppContext, world: dict[str, dict[str, str]],
        clock: list[datetime], monkeypatch: pytest.MonkeyPatch) -> None:
    h = world["alice"]
    _start(client, h, "racy")
    _send(client, h, "racy", 0, [["h", 0, T0, {"x": 1}], ["x", 0, T0 + 1]])
    real_build = export.build

    def build_then_records_arrive(db: Any, run: Run, project: Any) -> Any:
        built = real_build(db, run, project)
        # Another request applies a batch after the export read the data.
        with ctx.db.session() as s:
            other = s.get(Run, run.id)
            assert other is not None
            run_records.apply(s, other, other.record_hwm, [["h", 1, T0 + 2, {"x": 2}]])
        return built

    monkeypatch.setattr(export, "build", build_then_records_arrive)
    job = _scheduler(ctx, clock)
    assert job.sweep().exported == [_pk(ctx, "racy")]
    # The files were written, but they miss step 1: exported_at stays unset, still due.
    assert _exported_at(ctx, "racy") is None
    assert export_job.due_runs(ctx.db, limit=10) == [_pk(ctx, "racy")]
    monkeypatch.setattr(export, "build", real_build)
    assert job.sweep().exported == [_pk(ctx, "racy")]
    assert _exported_at(ctx, "racy") is not None
    assert export_job.due_runs(ctx.db, limit=10) == []


def test_leases_conflicts_backoff_and_permissions(
        client: TestClient, ctx: AppContext, world: dict[str, dict[str, str]],
        clock: list[datetime]) -> None:
    h, vic = world["alice"], world["vic"]
    for run_id in ("a", "b"):
        _start(client, h, run_id)
        _send(client, h, run_id, 0, [["h", 0, T0, {"x": 1}], ["x", 0, T0 + 1]])
    # A viewer may read the run but not export it; unknown runs and projects are 404.
    r = client.post(f"{BASE}/a/export", headers=vic)
    assert (r.status_code, r.json()["error"]["code"]) == (403, "permission_denied")
    r = client.post(f"{API}/teams/kappa/projects/p/export", headers=vic)
    assert (r.status_code, r.json()["error"]["code"]) == (403, "permission_denied")
    assert client.post(f"{BASE}/nosuch/export", headers=h).status_code == 404
    assert client.post(f"{API}/teams/kappa/projects/nosuch/export",
                       headers=h).status_code == 404

    # Another export holds run a's lease: 409 on demand, skipped (not failed) by the job.
    pk_a, pk_b = _pk(ctx, "a"), _pk(ctx, "b")
    assert leases.acquire(ctx.db, export.lease_name(pk_a), "someone-else", ttl_seconds=600,
                          now=clock[0])
    r = client.post(f"{BASE}/a/export", headers=h)
    assert (r.status_code, r.json()["error"]["code"]) == (409, "conflict")
    job = _scheduler(ctx, clock)
    sweep = job.sweep()
    assert (sweep.busy, sweep.exported, sweep.failed) == ([pk_a], [pk_b], {})
    proj = client.post(f"{API}/teams/kappa/projects/p/export", headers=h).json()
    assert [f["run_id"] for f in proj["failed"]] == ["a"]
    assert proj["failed"][0]["code"] == "conflict"
    assert [x["run_id"] for x in proj["runs"]] == ["b"]
    assert (proj["written"], proj["current"]) == (0, 1)
    leases.release(ctx.db, export.lease_name(pk_a), "someone-else")

    # A file of the user's own at an export path: a clear 409, and the job backs off.
    with ctx.db.session() as s:
        s.add(RunFile(run_id=pk_a, path="export/system.parquet", kind="file",
                      state="committed", size=1, sha256="0" * 64))
    r = client.post(f"{BASE}/a/export", headers=h)
    assert r.status_code == 409 and "reserved for exports" in r.json()["error"]["message"]
    sweep = job.sweep()
    assert list(sweep.failed) == [pk_a]
    assert job.sweep().failed == {}  # backing off: not tried again at once
    clock[0] += timedelta(seconds=61)
    assert list(job.sweep().failed) == [pk_a]  # tried again after the backoff
    with ctx.db.session() as s:
        row = s.scalar(select(RunFile).where(RunFile.run_id == pk_a,
                                             RunFile.path == "export/system.parquet"))
        assert row is not None
        s.delete(row)
    clock[0] += timedelta(seconds=121)
    assert job.sweep().exported == [pk_a]
    proj = client.post(f"{API}/teams/kappa/projects/p/export", headers=h,
                       json={"force": True}).json()
    assert (proj["written"], proj["current"], proj["failed"]) == (2, 0, [])
    assert all(len(x["files"]) == 3 for x in proj["runs"])


def test_exported_files_do_not_change_the_api_answers(
        client: TestClient, world: dict[str, dict[str, str]]) -> None:
    """An export is read-only for the run: state, counts and summary stay as they were."""
    h = world["alice"]
    _start(client, h, "ro")
    _send(client, h, "ro", 0, [["h", 0, T0, {"x": 1}], ["x", 0, T0 + 1]])
    before = client.get(f"{BASE}/ro", headers=h).json()
    assert client.post(f"{BASE}/ro/export", headers=h).status_code == 200
    after = client.get(f"{BASE}/ro", headers=h).json()
    assert before == after


def test_a_key_named_like_an_index_column_is_renamed_not_duplicated() -> None:
    taken = {"_step", "_step_logged"}
    assert export._column_name("_step", {"_step"}, taken) == "_step_logged_"
    assert export._column_name("loss", {"_step"}, taken) == "loss"


def test_a_finished_run_is_exported_at_once_not_at_the_next_sweep(
        ctx: AppContext, world: dict[str, dict[str, str]]) -> None:
    """With an hour between sweeps, a run's finish record wakes the export job: the export
    appears within seconds (the deadline only guards against a hang)."""
    import time

    from satchel.server.app import create_app
    from satchel.server.deps import AppContext as Ctx

    h = world["alice"]
    hourly = ctx.settings.model_copy(update={"export_interval_seconds": 3600,
                                             "gc_interval_seconds": 0,
                                             "run_monitor_interval_seconds": 0})
    other = Ctx(settings=hourly, db=ctx.db, instance_secret=ctx.instance_secret,
                storage=ctx.storage)
    with TestClient(create_app(hourly, context=other)) as c:
        assert c.app.state.export_scheduler is not None  # type: ignore[attr-defined]
        _start(c, h, "quick")
        _send(c, h, "quick", 0, [["h", 0, T0, {"x": 1}]])
        time.sleep(1.5)  # the job's first sweep (at start) is over; the next is an hour away
        assert _exported_at(ctx, "quick") is None  # running: not exported
        _send(c, h, "quick", 1, [["x", 0, T0 + 1]])
        deadline = time.monotonic() + 60
        while _exported_at(ctx, "quick") is None:
            assert time.monotonic() < deadline, "the finish did not wake the export job"
            time.sleep(0.1)
