"""The runs reading API (``Api().runs``, ``Api().run``) against a real server over HTTP (in a
thread) with the local bucket served by the same server: listing and filters with paging,
history as rows/pandas/arrow, scan_history, logs (tail, follow), files, export + download,
``satchel sync`` of an offline spool (both databases)."""

from __future__ import annotations

import hashlib
import json
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

import satchel
from satchel import Api
from satchel.config import RunSettings, Settings
from satchel.errors import InvalidInput, NotFound
from satchel.sdk import runs_api
from satchel.sdk.sync import find_spools, sync_spool
from satchel.server.app import create_app
from satchel.server.deps import AppContext
from satchel.services import export as export_service
from tests.conftest import ADMIN_KEY
from tests.live import free_port, serve_in_thread

API = "/api/v1"
T0 = 1_700_000_000.0
HEADERS = {"Authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def settings(settings: Settings, port: int) -> Settings:
    # Local-bucket URLs must point at the live server; exports are driven by the tests.
    return settings.model_copy(update={"base_url": f"http://127.0.0.1:{port}",
                                       "export_interval_seconds": 0})


@pytest.fixture
def live(client: TestClient, ctx: AppContext, settings: Settings, port: int) -> Iterator[str]:
    assert client.post(f"{API}/teams", json={"name": "kappa"}, headers=HEADERS).status_code == 201
    assert client.post(f"{API}/teams/kappa/projects", json={"name": "p"},
                       headers=HEADERS).status_code == 201
    with serve_in_thread(create_app(settings, context=ctx), port) as url:
        yield url


@pytest.fixture
def rs(tmp_path: Path) -> RunSettings:
    return RunSettings(run_dir=tmp_path / "runs", send_interval_seconds=0.05,
                       finish_timeout_seconds=60, heartbeat_seconds=1,
                       system_metrics_seconds=0, console_capture=False)


@pytest.fixture
def api(live: str) -> Iterator[Api]:
    with Api(live, ADMIN_KEY, cache_dir=None) as a:
        yield a


def _post(url: str, path: str, body: Any) -> Any:
    r = httpx.post(f"{url}{API}/teams/kappa/projects/p/runs{path}",
                   content=json.dumps(body, allow_nan=True).encode(),
                   headers={**HEADERS, "Content-Type": "application/json"}, timeout=60)
    assert r.status_code in (200, 201), r.text
    return r.json()


def _detailed_run(url: str, run_id: str = "d1") -> None:
    """A run written through the REST API with exact values: NaN/inf, gaps, strings, JSON,
    system samples and console lines."""
    _post(url, "", {"run_id": run_id, "config": {"lr": 0.5}, "tags": ["x"]})
    records: list[Any] = []
    for i in range(25):
        row: dict[str, Any] = {"loss": math.nan if i == 3 else math.inf if i == 4 else 1 / (i + 1)}
        if i % 2 == 0:
            row["acc"] = i / 100
        if i < 3:
            row["label"] = f"s{i}"
        if i == 10:
            row["img"] = {"_type": "image", "path": "media/a.png", "h": math.nan}
        if i == 11:
            row["only_nan"] = math.nan
        records.append(["h", i, T0 + i, row])
    records += [["m", T0 + 15 * k, {"cpu": float(k)}] for k in range(4)]
    records += [["o", "stdout" if n % 2 == 0 else "stderr", T0 + n, f"line {n}"]
                for n in range(5)]
    records.append(["x", 0, T0 + 100])
    _post(url, f"/{run_id}/records", {"start": 0, "records": records})


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)


def _same_rows(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> bool:
    return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))


def test_runs_listing_filters_paging_and_fields(live: str, api: Api, rs: RunSettings) -> None:
    specs = [("a1", ["prod", "cv"], "g1", "train", 0), ("a2", ["prod"], "g1", "eval", 0),
             ("a3", ["cv"], "g2", "train", 1), ("b4", [], "", "train", 0),
             ("b5", ["prod"], "g2", "train", 0)]
    for run_id, tags, group, job_type, code in specs:
        run = satchel.init("kappa/p", id=run_id, name=f"name-{run_id}", tags=tags, group=group,
                           job_type=job_type, config={"seed": run_id}, host=live,
                           api_key=ADMIN_KEY, settings=rs)
        run.log({"loss": 1.0})
        run.finish(exit_code=code)
    everything = api.runs("kappa/p", per_page=2)
    assert len(everything) == 5
    assert [r.id for r in everything] == ["b5", "b4", "a3", "a2", "a1"]  # newest first
    assert [r.id for r in api.runs("kappa/p", order="name", per_page=1)] == [
        "a1", "a2", "a3", "b4", "b5"]
    assert sorted(r.id for r in api.runs("kappa/p", {"state": "failed"})) == ["a3"]
    assert sorted(r.id for r in api.runs("kappa/p", {"state": ["failed", "finished"]})) == [
        "a1", "a2", "a3", "b4", "b5"]
    assert sorted(r.id for r in api.runs("kappa/p", {"tags": ["prod", "cv"]})) == ["a1"]
    assert sorted(r.id for r in api.runs("kappa/p", {"tags": "prod"})) == ["a1", "a2", "b5"]
    assert sorted(r.id for r in api.runs("kappa/p", {"group": "g2", "job_type": "train"})) == [
        "a3", "b5"]
    assert sorted(r.id for r in api.runs("kappa/p", {"name": "name-b"})) == ["b4", "b5"]
    with pytest.raises(InvalidInput, match="unknown run filter"):
        api.runs("kappa/p", {"colour": "red"})
    with pytest.raises(InvalidInput):
        list(api.runs("kappa/p", {"state": "sleeping"}))
    with pytest.raises(InvalidInput):
        api.runs("kappa")

    run = api.run("kappa/p/a3")
    assert (run.id, run.name, run.state, run.exit_code) == ("a3", "name-a3", "failed", 1)
    assert run.config == {"seed": "a3"} and run.summary == {"loss": 1.0}
    assert run.tags == ["cv"] and run.group == "g2" and run.job_type == "train"
    assert run.created_at is not None and run.created_at.tzinfo is not None
    assert run.finished_at is not None and run.last_step == 0 and run.history_rows == 1
    assert run.path == "kappa/p/a3" and repr(run) == "<ApiRun kappa/p/a3 (failed)>"
    with pytest.raises(NotFound):
        api.run("kappa/p/nosuch")


def test_history_as_rows_pandas_arrow_and_scan(live: str, api: Api, tmp_path: Path) -> None:
    _detailed_run(live)
    run = api.run("kappa/p/d1")
    assert run.history_keys() == {"_timestamp": 25, "acc": 13, "img": 1, "label": 3,
                                  "loss": 25, "only_nan": 1}

    rows = run.history(format="rows")
    assert len(rows) == 25 and [r["_step"] for r in rows] == list(range(25))
    assert rows[0] == {"_step": 0, "_timestamp": T0, "loss": 1.0, "acc": 0.0, "label": "s0"}
    assert math.isnan(rows[3]["loss"]) and rows[4]["loss"] == math.inf
    assert "acc" not in rows[1]
    assert rows[10]["img"] == {"_type": "image", "path": "media/a.png", "h": "NaN"}
    assert math.isnan(rows[11]["only_nan"])  # only "NaN" strings: taken as a number

    frame = run.history(["loss", "acc", "label"])  # pandas by default
    assert list(frame.columns) == ["_step", "loss", "acc", "label"]
    assert frame["_step"].tolist() == list(range(25))
    assert str(frame["loss"].dtype) == "float64" and math.isnan(frame["loss"][3])
    assert frame["loss"][4] == math.inf and math.isnan(frame["acc"][1])
    assert frame["label"].tolist()[:4] == ["s0", "s1", "s2", None]

    # arrow: exactly the Parquet export's schema and values.
    table = run.history(format="arrow")
    exported = run.export(download=tmp_path / "exp")
    assert exported.written is True and exported.run_id == "d1"
    parquet = pq.read_table(exported.file("history").local_path)
    assert table.schema.equals(parquet.schema.remove_metadata(), check_metadata=True)
    assert _same_rows(table.to_pylist(), parquet.to_pylist())
    system = run.history(format="arrow", stream="system")
    sys_parquet = pq.read_table(exported.file("system").local_path)
    assert system.schema.field("_time").type == pa.timestamp("ms", tz="UTC")
    assert system.to_pylist() == sys_parquet.to_pylist()
    assert [r["cpu"] for r in run.history(format="rows", stream="system")] == [0.0, 1.0, 2.0,
                                                                               3.0]

    thin = run.history(["loss"], samples=5, format="rows")
    assert [r["_step"] for r in thin] == [0, 6, 12, 18, 24]
    window = run.history(["acc"], format="rows", min_step=5, max_step=9)
    assert [r["_step"] for r in window] == [6, 8]

    for page_size in (1, 7, 1000):
        assert _same_rows(list(run.scan_history(page_size=page_size)), rows)
    only_label = list(run.scan_history(["label"], page_size=2))
    assert only_label == [{"_step": i, "label": f"s{i}"} for i in range(3)]
    with pytest.raises(InvalidInput):
        run.history(format="excel")


def test_json_cells_match_the_server_export() -> None:
    for value in ["cat", {"a": [1, math.nan, {"b": -math.inf}]}, [], "é ✓", True, None]:
        assert runs_api.json_cell(value) == export_service.json_cell(value)


def test_pandas_missing_is_a_clear_error(live: str, api: Api,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    _detailed_run(live)
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(InvalidInput, match=r"satchel\[pandas\]"):
        api.run("kappa/p/d1").history()
    assert len(api.run("kappa/p/d1").history(format="rows")) == 25


def test_logs_tail_and_follow(live: str, api: Api) -> None:
    _detailed_run(live)
    run = api.run("kappa/p/d1")
    lines = run.logs()
    assert [(x.line_no, x.stream, x.text) for x in lines] == [
        (n, "stdout" if n % 2 == 0 else "stderr", f"line {n}") for n in range(5)]
    assert [x.text for x in run.logs(tail=2)] == ["line 3", "line 4"]
    assert [x.text for x in runs_api.follow_logs(run)] == [f"line {n}" for n in range(5)]

    # A running run: follow waits (the injected sleep) and prints what arrives meanwhile.
    _post(live, "", {"run_id": "f1"})
    _post(live, "/f1/records", {"start": 0, "records": [["o", "stdout", T0, "first"]]})
    following = api.run("kappa/p/f1")
    arrivals = iter([
        [["o", "stdout", T0, "second"], ["o", "stderr", T0, "third"]],
        [],
        [["x", 0, T0 + 1]],
    ])
    sent = [1]

    def sleep(_: float) -> None:
        batch = next(arrivals)
        _post(live, "/f1/records", {"start": sent[0], "records": batch})
        sent[0] += len(batch)

    got = [x.text for x in runs_api.follow_logs(following, offset=-5, sleep=sleep)]
    assert got == ["first", "second", "third"]
    assert following.state == "finished"


def test_files_and_export_from_the_sdk(live: str, api: Api, rs: RunSettings,
                                       tmp_path: Path) -> None:
    src = tmp_path / "notes.txt"
    src.write_text("hello run")
    run = satchel.init("kappa/p", id="withfiles", host=live, api_key=ADMIN_KEY, settings=rs)
    run.save(src)
    run.log({"x": 1})
    run.finish()
    read = api.run("kappa/p/withfiles")
    assert [(f.path, f.kind, f.size) for f in read.files()] == [("notes.txt", "file", 9)]
    got = read.download_files(tmp_path / "dl")
    assert [p.read_text() for p in got] == ["hello run"]

    first = read.export()
    assert first.written and [f.path for f in first.files] == [
        "export/history.parquet", "export/system.parquet", "export/console.parquet"]
    assert all(f.local_path is None for f in first.files)
    # The exports are files of the run too (kind "export"), downloadable like the others.
    assert [(f.path, f.kind) for f in read.files()] == [
        ("export/console.parquet", "export"), ("export/history.parquet", "export"),
        ("export/system.parquet", "export"), ("notes.txt", "file")]
    [console] = read.download_files(tmp_path / "dl2", ["export/console.parquet"])
    assert hashlib.sha256(console.read_bytes()).hexdigest() == first.file("console").sha256
    again = read.export(download=tmp_path / "again")
    assert again.written is False
    assert [f.sha256 for f in again.files] == [f.sha256 for f in first.files]
    local = again.file("history").local_path
    assert local is not None and pq.read_table(local).column("x").to_pylist() == [1.0]

    proj = runs_api.export_project(api, "kappa/p", download=tmp_path / "proj")
    assert (proj.written, proj.current, proj.failed) == (0, 1, [])
    assert (tmp_path / "proj" / "withfiles" / "console.parquet").is_file()


def test_sync_offline_spool_twice_sends_once(live: str, api: Api, rs: RunSettings,
                                             tmp_path: Path) -> None:
    run = satchel.init("kappa/p", id="off1", mode="offline", host=live, settings=rs)
    for i in range(300):
        run.log({"x": i})
    run.finish()
    assert run.dir is not None
    with pytest.raises(NotFound):
        api.run("kappa/p/off1")
    assert find_spools(rs.run_dir) == [run.dir] and find_spools(run.dir) == [run.dir]
    progress: list[tuple[int, int]] = []
    first = sync_spool(run.dir, api_key=ADMIN_KEY, settings=rs,
                       progress=lambda a, b: progress.append((a, b)))
    assert (first.records_sent, first.already_sent, first.run) == (301, False, "kappa/p/off1")
    assert progress and progress[-1] == (301, 301)
    second = sync_spool(run.dir, api_key=ADMIN_KEY, settings=rs)
    assert (second.records_sent, second.already_sent) == (0, True)
    synced = api.run("kappa/p/off1")
    assert (synced.state, synced.history_rows) == ("finished", 300)
    assert [r["x"] for r in synced.history(["x"], format="rows")] == [float(i) for i in
                                                                      range(300)]
    with pytest.raises(InvalidInput, match="not a Satchel run directory"):
        find_spools(tmp_path)
