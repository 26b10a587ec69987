"""Deleted runs purged on a real SeaweedFS bucket with a sub-path: the purged run's files and
exports are gone from the bucket (checked by listing it with boto3, not through Satchel), the
neighbouring live run's are intact, and a deleted run still inside the retention window keeps
everything. Rules and database effects in detail: tests/server/test_run_purge.py."""

from __future__ import annotations

import hashlib
import json
import secrets
from datetime import UTC, datetime, timedelta

import httpx
from fastapi.testclient import TestClient
from sqlalchemy import update

from satchel.db.models import Run
from satchel.server.deps import AppContext
from satchel.services import gc
from tests.conftest import ADMIN_KEY
from tests.storage.servers.seaweedfs import SeaweedFS
from tests.storage.test_scopes_seaweedfs import _keys

API = "/api/v1"
RUNS = f"{API}/teams/kappa/projects/p/runs"
RETENTION = 7 * 86_400.0


def _run_with_files(client: TestClient, h: dict[str, str], run_id: str) -> None:
    assert client.post(RUNS, json={"run_id": run_id}, headers=h).status_code == 201
    records = [["h", i, 1_700_000_000 + i, {"loss": float(i)}] for i in range(10)]
    r = client.post(f"{RUNS}/{run_id}/records", headers=dict(h, **{
        "Content-Type": "application/json"}),
        content=json.dumps({"start": 0, "records": records}).encode())
    assert r.status_code == 200, r.text
    files = {"model.pt": secrets.token_bytes(3000), "media/images/a.png": b"\x89PNG" * 10}
    r = client.post(f"{RUNS}/{run_id}/files", headers=h, json={"files": [
        {"path": p, "size": len(b), "sha256": hashlib.sha256(b).hexdigest(), "kind": "file"}
        for p, b in files.items()]})
    assert r.status_code == 200, r.text
    for u in r.json()["uploads"]:  # straight to SeaweedFS with the presigned URL
        httpx.put(u["url"], content=files[u["path"]], headers=u["headers"]).raise_for_status()
    r = client.post(f"{RUNS}/{run_id}/files/commit", headers=h, json={"paths": list(files)})
    assert r.status_code == 200, r.text
    r = client.post(f"{RUNS}/{run_id}/export", headers=h)  # Parquet written by the server
    assert r.status_code in (200, 202), r.text


def test_purged_run_files_leave_the_bucket(client: TestClient, ctx: AppContext,
                                           seaweedfs: SeaweedFS) -> None:
    prefix = f"purge-{secrets.token_hex(4)}"
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    r = client.put(f"{API}/admin/storage", headers=admin, json={
        "address": seaweedfs.address("bucket-a", "bucket-a"), "path": prefix})
    assert r.status_code == 200, r.text
    r = client.post(f"{API}/users", json={"username": "kay", "create_api_key": True},
                    headers=admin)
    h = {"Authorization": f"Bearer {r.json()['api_key']}"}
    assert client.post(f"{API}/teams", json={"name": "kappa"}, headers=h).status_code == 201
    assert client.post(f"{API}/teams/kappa/projects", json={"name": "p"},
                       headers=h).status_code == 201
    for run_id in ("live", "gone", "recent"):
        _run_with_files(client, h, run_id)
    for run_id in ("gone", "recent"):
        assert client.delete(f"{RUNS}/{run_id}", headers=h).status_code == 200
    now = datetime.now(UTC)
    with ctx.db.session() as s:
        s.execute(update(Run).where(Run.run_id == "gone")
                  .values(deleted_at=now - timedelta(seconds=RETENTION + 5)))

    def under(run_id: str) -> set[str]:
        mine = f"{prefix}/teams/kappa/runs/p/{run_id}/"
        return {k for k in _keys(seaweedfs, "bucket-a") if k.startswith(mine)}

    before = {run_id: under(run_id) for run_id in ("live", "gone", "recent")}
    for run_id, keys in before.items():  # two files, plus the export's Parquet files
        assert any(k.endswith("/files/model.pt") for k in keys), (run_id, keys)
        assert any(k.endswith(".parquet") for k in keys), (run_id, keys)

    report = gc.collect(ctx.db, ctx.storage, clock=lambda: now, grace_seconds=3600,
                        retention_seconds=RETENTION)
    team = report.teams[0]
    assert team.error is None and team.runs_purged == 1
    assert team.run_objects_freed == len(before["gone"])
    assert under("gone") == set()
    assert under("live") == before["live"] and under("recent") == before["recent"]
    r = client.post(f"{RUNS}/gone/restore", headers=h)
    assert r.status_code == 409 and r.json()["error"]["code"] == "run_purged"
