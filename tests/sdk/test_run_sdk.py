"""The run SDK against a real server over HTTP (in a thread): logging semantics, summary,
config, resume, offline spool + sync, disabled mode, and the sender's exactly-once replay."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

import satchel
from satchel.config import RunSettings
from satchel.errors import InvalidInput, NotFound
from satchel.sdk.client import Client
from satchel.sdk.sender import Sender
from satchel.sdk.spool import Spool
from satchel.server.app import create_app
from satchel.server.deps import AppContext
from tests.conftest import ADMIN_KEY
from tests.live import free_port, serve_in_thread

API = "/api/v1"


@pytest.fixture
def live(client: TestClient, ctx: AppContext, settings: Any) -> Iterator[str]:
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    assert client.post(f"{API}/teams", json={"name": "kappa"}, headers=admin).status_code == 201
    assert client.post(f"{API}/teams/kappa/projects", json={"name": "p"},
                       headers=admin).status_code == 201
    with serve_in_thread(create_app(settings, context=ctx), free_port()) as url:
        yield url


@pytest.fixture
def rs(tmp_path: Path) -> RunSettings:
    return RunSettings(run_dir=tmp_path / "runs", send_interval_seconds=0.05,
                       finish_timeout_seconds=60, heartbeat_seconds=1)


def _get(url: str, path: str, **params: Any) -> Any:
    r = httpx.get(f"{url}{API}/teams/kappa/projects/p/runs{path}", params=params,
                  headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert r.status_code == 200, r.text
    return r.json()


def test_log_semantics_summary_config_and_finish(live: str, rs: RunSettings) -> None:
    run = satchel.init("kappa/p", config={"lr": 0.1}, name="first", tags=["t"],
                       host=live, api_key=ADMIN_KEY, settings=rs)
    for i in range(5):
        run.log({"loss": 1.0 / (i + 1), "epoch": i})          # one row per call
    run.log({"a": 1}, step=10)                                  # accumulates at step 10
    run.log({"b": 2}, step=10)
    run.log({"a": 3}, step=11)                                  # commits step 10
    run.log({"ignored": 1}, step=3)                             # steps never go back
    run.log({"c": 4}, commit=False)
    run.log({"d": float("nan")})                                # commits step 11 with a, c, d
    run.config["batch"] = 32
    run.config.layers = 4
    run.summary["best"] = 0.9
    assert run.summary["loss"] == pytest.approx(0.2) and run.summary["best"] == 0.9
    with pytest.raises(InvalidInput):
        run.log({"x": object()})
    with pytest.raises(InvalidInput):
        run.log([1, 2])  # type: ignore[arg-type]
    run.finish()
    run.finish()  # idempotent
    shown = _get(live, f"/{run.id}")
    assert (shown["state"], shown["exit_code"], shown["name"]) == ("finished", 0, "first")
    assert shown["config"] == {"lr": 0.1, "batch": 32, "layers": 4}
    assert shown["summary"]["best"] == 0.9 and shown["summary"]["epoch"] == 4
    hist = _get(live, f"/{run.id}/history", keys=["loss", "a", "b", "c", "d", "ignored"])["keys"]
    assert hist["loss"]["steps"] == [0, 1, 2, 3, 4]
    assert hist["a"] == {"steps": [10, 11], "values": [1.0, 3.0]}
    assert hist["b"] == {"steps": [10], "values": [2.0]}
    assert hist["c"]["steps"] == [11] and hist["d"]["values"] == ["NaN"]
    assert hist["ignored"]["steps"] == []
    assert shown["last_step"] == 11 and shown["history_rows"] == 7


def test_context_manager_failure_module_api_and_resume(live: str, rs: RunSettings) -> None:
    with pytest.raises(RuntimeError), satchel.init(
            "kappa/p", id="boom", host=live, api_key=ADMIN_KEY, settings=rs) as run:
        run.log({"x": 1})
        raise RuntimeError("training diverged")
    assert _get(live, "/boom")["state"] == "failed"
    satchel.init("kappa/p", id="mod", host=live, api_key=ADMIN_KEY, settings=rs)
    satchel.log({"y": 1})
    satchel.log({"y": 2})
    satchel.finish()
    with pytest.raises(InvalidInput):
        satchel.log({"y": 3})
    # resume continues the steps and the record numbers
    run = satchel.init("kappa/p", id="mod", resume="must", host=live, api_key=ADMIN_KEY,
                       settings=rs)
    assert run.step == 2 and run.summary["y"] == 2
    run.log({"y": 3})
    run.finish()
    assert _get(live, "/mod/history", keys=["y"])["keys"]["y"] == {
        "steps": [0, 1, 2], "values": [1.0, 2.0, 3.0]}
    assert _get(live, "/mod")["resumed"] == 1
    with pytest.raises(NotFound):
        satchel.init("kappa/p", id="nope", resume="must", host=live, api_key=ADMIN_KEY,
                     settings=rs)
    for bad in ({"project": "noslash"}, {"project": "kappa/p", "mode": "fast"},
                {"project": "kappa/p", "resume": "allow"}):
        with pytest.raises(InvalidInput):
            satchel.init(**bad, host=live, api_key=ADMIN_KEY, settings=rs)  # type: ignore[arg-type]


def test_disabled_mode_writes_nothing(tmp_path: Path, rs: RunSettings) -> None:
    run = satchel.init("kappa/p", mode="disabled", settings=rs)
    run.log({"x": 1})
    run.summary["a"] = 1
    run.finish()
    assert run.dir is None and not (tmp_path / "runs").exists()


def test_offline_then_sync_twice_is_idempotent(live: str, rs: RunSettings) -> None:
    run = satchel.init("kappa/p", mode="offline", host=live, settings=rs)
    for i in range(2000):
        run.log({"x": i, "y": -i})
    run.finish()
    assert run.dir is not None and (run.dir / "records.jsonl").exists()
    with httpx.Client() as http:  # the server has never heard of it
        r = http.get(f"{live}{API}/teams/kappa/projects/p/runs/{run.id}",
                     headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        assert r.status_code == 404
    for _ in range(2):
        spool = Spool.open(run.dir)
        with Client(host=live, api_key=ADMIN_KEY) as c:
            sent = Sender(c, spool, rs).sync()
        spool.close()
    assert sent == 0  # the second sync had nothing left to send
    hist = _get(live, f"/{run.id}/history", keys=["x"])["keys"]["x"]
    assert hist["steps"] == list(range(2000)) and hist["values"] == [float(i) for i in
                                                                     range(2000)]
    shown = _get(live, f"/{run.id}")
    assert shown["state"] == "finished" and shown["history_rows"] == 2000


def test_sender_replays_a_lost_answer_without_duplicates(live: str, rs: RunSettings) -> None:
    """The server applied a batch but the SDK never saw the answer: sending the same records
    again (from an older sent.json) must not duplicate anything."""
    run = satchel.init("kappa/p", mode="offline", host=live, settings=rs)
    for i in range(300):
        run.log({"x": i})
    run.finish()
    assert run.dir is not None
    for _ in range(2):
        spool = Spool.open(run.dir)
        with Client(host=live, api_key=ADMIN_KEY) as c:
            Sender(c, spool, rs).sync()
        spool.close()
        (run.dir / "sent.json").write_text(json.dumps({"hwm": 0, "offset": 0}))  # "lost"
    keys = _get(live, f"/{run.id}/history/keys")["keys"]
    assert keys["x"] == 300


def test_big_run_end_to_end(live: str, rs: RunSettings) -> None:
    """100 keys x 2,000 steps through the background sender, read back exactly."""
    run = satchel.init("kappa/p", host=live, api_key=ADMIN_KEY, settings=rs)
    for step in range(2000):
        run.log({f"k{j}": step * 0.5 + j for j in range(100)})
    run.finish()
    keys = _get(live, f"/{run.id}/history/keys")["keys"]
    assert all(keys[f"k{j}"] == 2000 for j in range(100))
    series = _get(live, f"/{run.id}/history", keys=["k7"])["keys"]["k7"]
    assert series["values"] == [s * 0.5 + 7 for s in range(2000)]


def test_concurrent_senders_of_one_spool_apply_each_record_once(live: str,
                                                                rs: RunSettings) -> None:
    """Two processes syncing the same spool at once (e.g. `satchel sync` while the run still
    sends): the run row lock makes every record count exactly once."""
    import threading

    run = satchel.init("kappa/p", mode="offline", host=live, settings=rs)
    for i in range(3000):
        run.log({"x": i})
    run.finish()
    assert run.dir is not None
    small = rs.model_copy(update={"batch_max_records": 97})
    errors: list[BaseException] = []

    def sync() -> None:
        spool = Spool.open(run.dir)  # type: ignore[arg-type]
        try:
            with Client(host=live, api_key=ADMIN_KEY) as c:
                Sender(c, spool, small).sync()
        except BaseException as exc:
            errors.append(exc)
        finally:
            spool.close()

    threads = [threading.Thread(target=sync) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert _get(live, f"/{run.id}/history/keys")["keys"]["x"] == 3000
    hist = _get(live, f"/{run.id}/history", keys=["x"])["keys"]["x"]
    assert hist["steps"] == list(range(3000))
    shown = _get(live, f"/{run.id}")
    assert (shown["state"], shown["resumed"], shown["record_hwm"]) == ("finished", 0, 3001)
