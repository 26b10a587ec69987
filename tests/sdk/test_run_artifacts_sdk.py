"""``run.log_artifact`` / ``run.use_artifact`` and lineage through the SDK against a real
server over HTTP (in a thread), on the instance's local bucket."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

import satchel
from satchel.config import RunSettings, Settings
from satchel.errors import InvalidInput, NotFound
from satchel.sdk.artifact import Api, Artifact, RunRef
from satchel.server.app import create_app
from satchel.server.deps import AppContext
from tests.conftest import ADMIN_KEY
from tests.live import free_port, serve_in_thread

API = "/api/v1"


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def settings(settings: Settings, port: int) -> Settings:
    # Presigned URLs of the local bucket point at the live server.
    return settings.model_copy(update={"base_url": f"http://127.0.0.1:{port}"})


@pytest.fixture
def ada(client: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """ada's API key: admin of team kappa with projects p and q."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    r = client.post(f"{API}/users", json={"username": "ada", "create_api_key": True},
                    headers=admin)
    key = str(r.json()["api_key"])
    h = {"Authorization": f"Bearer {key}"}
    assert client.post(f"{API}/teams", json={"name": "kappa"}, headers=h).status_code == 201
    for project in ("p", "q"):
        assert client.post(f"{API}/teams/kappa/projects", json={"name": project},
                           headers=h).status_code == 201
    return key


@pytest.fixture
def live(ada: str, settings: Settings, ctx: AppContext, port: int) -> Iterator[str]:
    with serve_in_thread(create_app(settings, context=ctx), port) as url:
        yield url


@pytest.fixture
def rs(tmp_path: Path) -> RunSettings:
    return RunSettings(run_dir=tmp_path / "runs", send_interval_seconds=0.05,
                       finish_timeout_seconds=60, heartbeat_seconds=1,
                       system_metrics_seconds=0, console_capture=False)


def _dataset(root: Path, content: bytes) -> Artifact:
    root.mkdir(parents=True, exist_ok=True)
    (root / "train.csv").write_bytes(content)
    (root / "sub").mkdir(exist_ok=True)
    (root / "sub" / "labels.txt").write_bytes(b"cat\ndog\n")
    art = Artifact("ds", "dataset", metadata={"rows": 2})
    art.add_dir(root)
    return art


def test_log_from_one_run_use_from_another_and_read_lineage(
        live: str, ada: str, rs: RunSettings, tmp_path: Path) -> None:
    with satchel.init("kappa/p", host=live, api_key=ada, settings=rs) as producer:
        v0 = producer.log_artifact(_dataset(tmp_path / "data", b"a,b\n1,2\n"), aliases=["best"])
        assert v0 is not None
        assert (v0.version, v0.producing_run, v0.uploaded) == ("v0", producer.id, 2)
        assert v0.aliases == ["best", "latest"]
    with satchel.init("kappa/q", host=live, api_key=ada, settings=rs) as consumer:
        used = consumer.use_artifact("kappa/p/ds:best")
        assert (used.team, used.project, used.version) == ("kappa", "p", "v0")
        assert used.producing_run == producer.id
        out = used.download(root=tmp_path / "out")
        assert (out / "train.csv").read_bytes() == b"a,b\n1,2\n"
        assert (out / "sub" / "labels.txt").read_bytes() == b"cat\ndog\n"
        consumer.use_artifact("kappa/p/ds:v0")  # the same version again: still one use
    # A run logging the same files creates no version; it is recorded as a user of v0.
    with satchel.init("kappa/p", host=live, api_key=ada, settings=rs) as again:
        same = again.log_artifact(_dataset(tmp_path / "data", b"a,b\n1,2\n"))
        assert same is not None
        assert (same.version, same.producing_run, same.uploaded) == ("v0", producer.id, 0)

    with Api(live, ada) as api:
        lineage = api.artifact("kappa/p/ds:latest").lineage()
        assert lineage.producer == RunRef("kappa", "p", producer.id)
        assert [c.path for c in lineage.consumers] == [f"kappa/q/{consumer.id}",
                                                       f"kappa/p/{again.id}"]
        assert all(c.used_at is not None for c in lineage.consumers)
        assert lineage.hidden_consumers == 0
        logged = api.run(f"kappa/p/{producer.id}").logged_artifacts()
        assert [(a.name, a.version, a.producing_run) for a in logged] == [
            ("ds", "v0", producer.id)]
        assert api.run(f"kappa/p/{producer.id}").used_artifacts() == []
        used_by = api.run(f"kappa/q/{consumer.id}").used_artifacts()
        assert [(a.team, a.project, a.name, a.version) for a in used_by] == [
            ("kappa", "p", "ds", "v0")]
        # Logged outside a run: no producer.
        plain = Artifact("notes", "text")
        plain.add_reference("https://example.invalid/notes.txt")
        assert api.log_artifact(plain, "kappa/p").producing_run is None


def test_modes_and_mistakes(live: str, ada: str, rs: RunSettings, tmp_path: Path) -> None:
    art = _dataset(tmp_path / "data", b"x")
    offline = satchel.init("kappa/p", mode="offline", settings=rs)
    with pytest.raises(InvalidInput, match="needs an online run"):
        offline.log_artifact(art)
    with pytest.raises(InvalidInput, match="needs an online run"):
        offline.use_artifact("kappa/p/ds")
    offline.finish()
    disabled = satchel.init("kappa/p", mode="disabled", settings=rs)
    assert disabled.log_artifact(art) is None  # a no-op, like the disabled run's other calls
    with pytest.raises(InvalidInput, match=r"satchel\.Api\(\)\.artifact"):
        disabled.use_artifact("kappa/p/ds")
    disabled.finish()

    run = satchel.init("kappa/p", host=live, api_key=ada, settings=rs)
    with pytest.raises(NotFound):
        run.use_artifact("kappa/p/nosuch:latest")
    with pytest.raises(InvalidInput):
        run.use_artifact("just-a-name")
    run.finish()
    with pytest.raises(InvalidInput, match="finished"):
        run.use_artifact("kappa/p/ds")
    with Api(live, ada) as api:
        assert api.client.run_artifacts("kappa", "p", run.id) == {
            "logged": [], "used": [], "hidden": 0}


def test_use_before_the_sender_created_the_run(
        ada: str, settings: Settings, ctx: AppContext, port: int, rs: RunSettings,
        tmp_path: Path) -> None:
    """init could not reach the server: the first artifact call creates the run itself."""
    url = f"http://127.0.0.1:{port}"
    run = satchel.init("kappa/q", host=url, api_key=ada, settings=rs)  # nothing listens yet
    assert run._sender is not None
    run._sender.stop()  # hold the sender back, so the artifact call must create the run
    assert run._spool is not None and not run._spool.info.created
    with serve_in_thread(create_app(settings, context=ctx), port):
        with Api(url, ada) as api:
            api.log_artifact(_dataset(tmp_path / "data", b"y"), "kappa/p")
        used = run.use_artifact("kappa/p/ds")
        assert used.version == "v0"
        run._sender._stop.clear()
        run._sender.start()
        run.log({"loss": 1.0})
        run.finish()
        r = httpx.get(f"{url}{API}/teams/kappa/projects/q/runs/{run.id}",
                      headers={"Authorization": f"Bearer {ada}"})
        assert (r.json()["state"], r.json()["history_rows"]) == ("finished", 1)
        with Api(url, ada) as api:
            consumers = api.artifact("kappa/p/ds:v0").lineage().consumers
            assert [c.path for c in consumers] == [f"kappa/q/{run.id}"]
