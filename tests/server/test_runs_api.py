"""Runs through the REST API: start/resume, exactly-once records, history reads, console,
summary/config, states, crash marking, filters, authorization (both databases)."""

from __future__ import annotations

import gzip
import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from satchel.server.deps import AppContext
from satchel.services import runs
from tests.conftest import Users

API = "/api/v1"
BASE = f"{API}/teams/kappa/projects/p/runs"


@pytest.fixture
def world(client: TestClient, users: Users) -> dict[str, dict[str, str]]:
    alice, vic, eve = (users.create(n) for n in ("alice", "vic", "eve"))
    assert client.post(f"{API}/teams", json={"name": "kappa"}, headers=alice).status_code == 201
    assert client.post(f"{API}/teams/kappa/projects", json={"name": "p"},
                       headers=alice).status_code == 201
    assert client.post(f"{API}/teams/kappa/projects", json={"name": "secret",
                       "visibility": "team"}, headers=alice).status_code == 201
    r = client.post(f"{API}/teams/kappa/members", json={"username": "vic", "role": "viewer"},
                    headers=alice)
    assert r.status_code in (200, 201), r.text
    return {"alice": alice, "vic": vic, "eve": eve}


def _start(client: TestClient, h: dict[str, str], **body: Any) -> dict[str, Any]:
    r = client.post(BASE, json=body, headers=h)
    assert r.status_code == 201, r.text
    out: dict[str, Any] = r.json()
    return out


def _send(client: TestClient, h: dict[str, str], run_id: str, start: int,
          records: list[Any], *, gz: bool = False) -> Any:
    data = json.dumps({"start": start, "records": records}).encode()
    headers = dict(h, **{"Content-Type": "application/json"})
    if gz:
        data = gzip.compress(data)
        headers["Content-Encoding"] = "gzip"
    return client.post(f"{BASE}/{run_id}/records", content=data, headers=headers)


def _history(client: TestClient, h: dict[str, str], run_id: str, *keys: str,
             **params: Any) -> dict[str, Any]:
    r = client.get(f"{BASE}/{run_id}/history", params={"keys": list(keys), **params},
                   headers=h)
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()["keys"]
    return out


def test_records_apply_exactly_once_across_replays_overlaps_and_gaps(
        client: TestClient, world: dict[str, dict[str, str]]) -> None:
    h = world["alice"]
    run = _start(client, h, run_id="r1", config={"lr": 0.1})["run"]
    assert run["state"] == "running" and run["record_hwm"] == 0
    rows = [["h", i, 1_700_000_000 + i, {"loss": 1.0 / (i + 1), "acc": i}] for i in range(10)]
    r = _send(client, h, "r1", 0, rows[:6])
    assert r.json() == {"hwm": 6, "applied": 6, "duplicates": 0, "rejected": [],
                        "state": "running"}
    # the same batch again (the SDK did not see the answer): nothing new
    assert _send(client, h, "r1", 0, rows[:6]).json()["applied"] == 0
    # overlapping batch: only records 6..9 count
    r = _send(client, h, "r1", 4, rows[4:10], gz=True).json()
    assert (r["hwm"], r["applied"], r["duplicates"]) == (10, 4, 2)
    # a gap is refused with the number to resume from
    r = _send(client, h, "r1", 12, rows[:1])
    assert r.status_code == 409 and r.json()["error"]["code"] == "record_gap"
    assert r.json()["error"]["details"]["hwm"] == 10
    series = _history(client, h, "r1", "loss", "acc", "nope")
    assert series["acc"] == {"steps": list(range(10)), "values": [float(i) for i in range(10)]}
    assert series["loss"]["values"] == [1.0 / (i + 1) for i in range(10)]
    assert series["nope"] == {"steps": [], "values": []}
    shown = client.get(f"{BASE}/r1", headers=h).json()
    assert shown["summary"] == {"loss": 0.1, "acc": 9}
    assert (shown["history_rows"], shown["last_step"], shown["record_hwm"]) == (10, 9, 10)


def test_summary_config_console_finish_and_value_kinds(
        client: TestClient, world: dict[str, dict[str, str]]) -> None:
    h = world["alice"]
    _start(client, h, run_id="r2", config={"lr": 0.1, "layers": 2})
    t = 1_700_000_000.5
    records = [
        ["h", 0, t, {"loss": math.inf, "label": "cat", "img": {"_type": "image", "path": "x"}}],
        ["h", 1, t, {"loss": 0.5, "flag": True, "skip": None}],
        ["o", "stdout", t, "epoch 1"],
        ["o", "stderr", t, "warning: slow"],
        ["s", {"best": 0.5, "loss": "overridden"}],
        ["c", {"layers": 4}],
        ["bogus", 1],
        ["h", -1, t, {"x": 1}],
        ["x", 0, t + 10],
    ]
    r = _send(client, h, "r2", 0, json.loads(json.dumps(records, allow_nan=True)))
    body = r.json()
    assert body["hwm"] == 9 and body["state"] == "finished"
    assert [x["record"] for x in body["rejected"]] == [6, 7]
    series = _history(client, h, "r2", "loss", "label", "img", "flag", "skip")
    assert series["loss"]["values"] == ["Infinity", 0.5]
    assert series["label"] == {"steps": [0], "values": ["cat"]}
    assert series["img"]["values"] == [{"_type": "image", "path": "x"}]
    assert series["flag"]["values"] == [1.0] and series["skip"]["values"] == []
    run = client.get(f"{BASE}/r2", headers=h).json()
    assert run["config"] == {"lr": 0.1, "layers": 4}
    assert run["summary"]["best"] == 0.5 and run["summary"]["loss"] == "overridden"
    assert run["summary"]["label"] == "cat"
    assert (run["state"], run["exit_code"]) == ("finished", 0)
    assert run["finished_at"].startswith(datetime.fromtimestamp(t + 10, UTC).isoformat()[:19])
    logs = client.get(f"{BASE}/r2/logs", headers=h).json()
    assert [(x["line_no"], x["stream"], x["text"]) for x in logs["lines"]] == [
        (0, "stdout", "epoch 1"), (1, "stderr", "warning: slow")]
    assert client.get(f"{BASE}/r2/logs", params={"offset": -1}, headers=h).json()[
        "lines"][0]["text"] == "warning: slow"
    keys = client.get(f"{BASE}/r2/history/keys", headers=h).json()["keys"]
    assert keys["loss"] == 2 and keys["_timestamp"] == 2
    # a failing exit code -> failed
    _start(client, h, run_id="r3")
    assert _send(client, h, "r3", 0, [["x", 3, t]]).json()["state"] == "failed"


def test_history_sampling_ranges_and_last_write_wins(
        client: TestClient, world: dict[str, dict[str, str]]) -> None:
    h = world["alice"]
    _start(client, h, run_id="r4")
    n = 1000
    batch = [["h", i, 1.0, {"y": float(i)}] for i in range(n)]
    _send(client, h, "r4", 0, batch[:500])
    _send(client, h, "r4", 500, batch[500:])
    s = _history(client, h, "r4", "y", samples=11)["y"]
    assert s["steps"][0] == 0 and s["steps"][-1] == n - 1 and len(s["steps"]) == 11
    s = _history(client, h, "r4", "y", min_step=10, max_step=12)["y"]
    assert s == {"steps": [10, 11, 12], "values": [10.0, 11.0, 12.0]}
    # step 5 logged again (e.g. after a resume): the later value wins
    _send(client, h, "r4", n, [["h", 5, 1.0, {"y": -5.0}]])
    s = _history(client, h, "r4", "y")["y"]
    assert len(s["steps"]) == n and s["values"][5] == -5.0


def test_resume_never_reuse_and_validation(
        client: TestClient, world: dict[str, dict[str, str]]) -> None:
    h = world["alice"]
    _start(client, h, run_id="r5", config={"a": 1})
    _send(client, h, "r5", 0, [["h", 0, 1.0, {"y": 1}], ["x", 0, 2.0]])
    r = client.post(BASE, json={"run_id": "r5"}, headers=h)
    assert r.status_code == 409 and r.json()["error"]["code"] == "already_exists"
    resumed = _start(client, h, run_id="r5", resume="allow", config={"b": 2})
    assert resumed["created"] is False
    run = resumed["run"]
    assert (run["state"], run["record_hwm"], run["last_step"], run["resumed"]) == \
        ("running", 2, 0, 1)
    assert run["config"] == {"a": 1, "b": 2}
    # "attach" (the SDK re-creating a run it numbered) takes the run as it is
    _send(client, h, "r5", 2, [["x", 0, 3.0]])
    attached = _start(client, h, run_id="r5", resume="attach")
    assert attached["created"] is False
    assert (attached["run"]["state"], attached["run"]["resumed"]) == ("finished", 1)
    assert _start(client, h, run_id="fresh", resume="attach")["created"] is True
    r = client.post(BASE, json={"run_id": "zz", "resume": "must"}, headers=h)
    assert r.status_code == 404
    for bad in ({"run_id": "Bad Id"}, {"resume": "sometimes"}, {"tags": [""]},
                {"config": {"x": float("nan")}}):
        r = client.post(BASE, content=json.dumps(bad, allow_nan=True), headers=dict(
            h, **{"Content-Type": "application/json"}))
        assert r.status_code in (400, 422), (bad, r.text)
        assert "error" in r.json()
    generated = _start(client, h)["run"]["run_id"]
    assert len(generated) == 8 and generated.isalnum()
    for body in (b"not json", b'{"start": -1, "records": []}', b'{"records": []}',
                 b'{"start": 0, "records": {}}'):
        r = client.post(f"{BASE}/r5/records", content=body, headers=h)
        assert r.status_code == 400, (body, r.text)
        assert r.json()["error"]["code"] == "invalid_input"
    r = client.post(f"{BASE}/r5/records", content=b"\x1f\x8bgarbage",
                    headers=dict(h, **{"Content-Encoding": "gzip"}))
    assert r.status_code == 400 and "gzip" in r.json()["error"]["message"]


def test_list_filters_order_and_update(client: TestClient,
                                       world: dict[str, dict[str, str]]) -> None:
    h = world["alice"]
    _start(client, h, run_id="a1", tags=["base", "x"], group="g1", job_type="train")
    _start(client, h, run_id="a2", tags=["x"], group="g2", job_type="eval")
    _start(client, h, run_id="a3", group="g1")
    _send(client, h, "a3", 0, [["x", 1, 1.0]])
    ids = lambda **p: [r["run_id"] for r in client.get(  # noqa: E731
        BASE, params=p, headers=h).json()["runs"]]
    assert ids(order="run_id") == ["a1", "a2", "a3"]
    assert ids(order="-run_id") == ["a3", "a2", "a1"]
    assert ids(tag="x", order="run_id") == ["a1", "a2"]
    assert ids(tag=["x", "base"]) == ["a1"]
    assert ids(group="g1", order="run_id") == ["a1", "a3"]
    assert ids(state="failed") == ["a3"]
    assert ids(job_type="eval") == ["a2"]
    page = client.get(BASE, params={"limit": 1, "order": "run_id"}, headers=h).json()
    assert page["total"] == 3 and [r["run_id"] for r in page["runs"]] == ["a1"]
    assert client.get(BASE, params={"order": "bogus"}, headers=h).status_code == 400
    assert client.get(BASE, params={"state": "sleeping"}, headers=h).status_code == 400
    r = client.patch(f"{BASE}/a1", json={"name": "baseline", "tags": ["y"]}, headers=h)
    assert r.status_code == 200 and r.json()["name"] == "baseline" and r.json()["tags"] == ["y"]


def test_authorization(client: TestClient, world: dict[str, dict[str, str]]) -> None:
    alice, vic, eve = world["alice"], world["vic"], world["eve"]
    _start(client, alice, run_id="r6")
    _send(client, alice, "r6", 0, [["h", 0, 1.0, {"y": 1}]])
    # viewer and outsider can read an instance-visible project, not write it
    for who in (vic, eve):
        assert client.get(f"{BASE}/r6", headers=who).status_code == 200
        assert _history(client, who, "r6", "y")["y"]["values"] == [1.0]
        assert client.post(BASE, json={}, headers=who).status_code == 403
        assert _send(client, who, "r6", 1, [["h", 1, 1.0, {"y": 2}]]).status_code == 403
    # a team-visible project does not exist for outsiders
    secret = f"{API}/teams/kappa/projects/secret/runs"
    assert client.post(secret, json={"run_id": "s1"}, headers=alice).status_code == 201
    assert client.get(f"{secret}/s1", headers=eve).status_code == 404
    assert client.get(secret, headers=eve).status_code == 404
    assert client.get(f"{secret}/s1", headers=vic).status_code == 200
    assert client.get(f"{BASE}/r6", headers={}).status_code == 401


def test_crash_detection_and_revival(client: TestClient, world: dict[str, dict[str, str]],
                                     ctx: AppContext) -> None:
    h = world["alice"]
    _start(client, h, run_id="c1")
    _start(client, h, run_id="c2")
    _send(client, h, "c2", 0, [["x", 0, 1.0]])
    later = datetime.now(UTC) + timedelta(seconds=120)
    with ctx.db.session() as s:
        assert runs.mark_crashed(s, now=later, timeout_seconds=300) == 0
        assert runs.mark_crashed(s, now=later, timeout_seconds=60) == 1  # only the running one
    assert client.get(f"{BASE}/c1", headers=h).json()["state"] == "crashed"
    assert client.get(f"{BASE}/c2", headers=h).json()["state"] == "finished"
    # the process was only cut off: its next heartbeat revives the run
    r = client.post(f"{BASE}/c1/heartbeat", headers=h)
    assert r.status_code == 200 and r.json()["state"] == "running"


def test_soft_delete_and_restore(client: TestClient, world: dict[str, dict[str, str]]) -> None:
    h = world["alice"]
    _start(client, h, run_id="d1")
    _send(client, h, "d1", 0, [["h", 0, 1.0, {"y": 1}]])
    assert client.delete(f"{BASE}/d1", headers=world["vic"]).status_code == 403
    r = client.delete(f"{BASE}/d1", headers=h)
    assert r.status_code == 200
    assert client.get(f"{BASE}/d1", headers=h).status_code == 404
    assert "d1" not in [x["run_id"] for x in client.get(BASE, headers=h).json()["runs"]]
    assert _send(client, h, "d1", 1, [["h", 1, 1.0, {"y": 2}]]).status_code == 404
    # the id stays taken, even by resume
    r = client.post(BASE, json={"run_id": "d1", "resume": "allow"}, headers=h)
    assert r.status_code == 409
    assert client.post(f"{BASE}/d1/restore", headers=h).status_code == 200
    assert client.post(f"{BASE}/d1/restore", headers=h).status_code == 404  # not deleted now
    assert _history(client, h, "d1", "y")["y"]["values"] == [1.0]
