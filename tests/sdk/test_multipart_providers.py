"""Big files through the SDK on GCS (fake-gcs-server behind its signature-checking proxy) and
Azure (Azurite): an artifact file and a run file above the multipart threshold go up as parts
(a GCS resumable session of fixed-size chunks sent in order; an Azure block list in
parallel), the server completes them, the commit checks them, and the downloads are
byte-identical. The threshold is lowered (the server runs in this process); the part size is
the SDK's default, which the store's limits clamp (GCS takes exactly 8 MiB chunks).
S3 (SeaweedFS): tests/sdk/test_resume_seaweedfs.py and tests/sdk/test_run_media.py."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

import satchel
from satchel import Api, Artifact
from satchel.config import RunSettings, Settings
from satchel.sdk.client import Client
from satchel.sdk.run_files_read import download_files
from satchel.sdk.transfer import TransferClient, TransferConfig
from satchel.server.app import create_app
from satchel.server.deps import AppContext
from satchel.services import multipart
from satchel.storage.address import parse_address
from tests.conftest import ADMIN_KEY
from tests.live import free_port, serve_in_thread
from tests.storage.servers.azurite import AzuriteServer
from tests.storage.servers.fakegcs import FakeGcsServer

API = "/api/v1"
MiB = 1024 * 1024
SIZE = 17 * MiB + 5  # three 8 MiB GCS chunks; above the lowered threshold everywhere


@pytest.fixture(params=["gcs", "azure"])
def address(request: pytest.FixtureRequest) -> str:
    if request.param == "gcs":
        gcs: FakeGcsServer = request.getfixturevalue("fake_gcs")
        return gcs.address(gcs.create_bucket())
    azure: AzuriteServer = request.getfixturevalue("azurite")
    return azure.address(azure.create_container())


@pytest.fixture
def live(client: TestClient, ctx: AppContext, settings: Settings, address: str,
         monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, str]]:
    monkeypatch.setattr(multipart, "MULTIPART_THRESHOLD", 10 * MiB)
    # Saved directly, not through PUT /admin/storage: its doctor checks CORS for the server's
    # origin, which can only fail against fake-gcs behind its proxy (tests/storage/
    # test_doctor.py says why and checks the doctor on both providers).
    addr = parse_address(address).with_path(f"big-{secrets.token_hex(4)}")
    with ctx.db.session() as s:
        ctx.storage.save_instance_address(s, addr)
    ctx.storage.open(addr)
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    r = client.post(f"{API}/users", json={"username": "bea", "create_api_key": True},
                    headers=admin)
    key: str = r.json()["api_key"]
    h = {"Authorization": f"Bearer {key}"}
    assert client.post(f"{API}/teams", json={"name": "kappa"}, headers=h).status_code == 201
    assert client.post(f"{API}/teams/kappa/projects", json={"name": "p"},
                       headers=h).status_code == 201
    with serve_in_thread(create_app(settings, context=ctx), free_port()) as url:
        yield url, key


def test_big_artifact_and_run_files_go_up_in_parts(live: tuple[str, str],
                                                   tmp_path: Path) -> None:
    url, key = live
    data = secrets.token_bytes(SIZE)
    src = tmp_path / "src"
    src.mkdir()
    (src / "weights.bin").write_bytes(data)
    (src / "config.json").write_text("{}")

    with Api(url, key, cache_dir=tmp_path / "cache") as api:
        art = Artifact("model", "model")
        art.add_dir(src)
        logged = api.log_artifact(art, "kappa/p")
        assert logged.uploaded == 2
    # Downloaded as parallel ranged GETs (threshold lowered), SHA-256 checked as they arrive.
    ranged = TransferClient(TransferConfig(range_threshold=4 * MiB, range_size=4 * MiB))
    with Api(url, key, cache_dir=tmp_path / "cache2", transfer=ranged) as api:
        out = tmp_path / "out"
        api.artifact("kappa/p/model:v0").download(out)
    assert (out / "weights.bin").read_bytes() == data

    rs = RunSettings(run_dir=tmp_path / "runs", send_interval_seconds=0.05,
                     finish_timeout_seconds=120, heartbeat_seconds=1, console_capture=False,
                     system_metrics_seconds=0)
    run = satchel.init("kappa/p", host=url, api_key=key, settings=rs)
    run.save(src / "weights.bin")
    run.finish()
    with Client(host=url, api_key=key) as c, TransferClient() as t:
        got = download_files(c, t, "kappa", "p", run.id, tmp_path / "dl")
    assert [p.name for p in got] == ["weights.bin"]
    assert hashlib.sha256(got[0].read_bytes()).hexdigest() == hashlib.sha256(data).hexdigest()
