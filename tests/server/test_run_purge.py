"""Deleted runs purged by the garbage collector (services/run_purge.py), on local buckets and
both databases: nothing happens inside the retention window; after it, rows and files go, the
id stays taken, restore answers 409 run_purged; a run of a deleted project is purged the same
way; live runs' files and young unknown objects are never touched; dry runs change nothing.
The same on SeaweedFS: tests/storage/test_gc_seaweedfs.py."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from satchel.db.models import (
    ArtifactUsage,
    ConsoleLine,
    HistorySegment,
    Project,
    Run,
    RunFile,
    Team,
)
from satchel.server.deps import AppContext
from satchel.services import gc, multipart
from satchel.storage.scoped import ScopedStore
from tests.conftest import Users
from tests.errorshape import assert_error
from tests.server.test_run_files import _send as send_files

API = "/api/v1"
BASE = f"{API}/teams/kappa/projects/p/runs"
GRACE = 3_600.0
RETENTION = 7 * 86_400.0


@pytest.fixture
def alice(client: TestClient, users: Users) -> dict[str, str]:
    h = users.create("alice")
    assert client.post(f"{API}/teams", json={"name": "kappa"}, headers=h).status_code == 201
    for project in ("p", "q"):
        assert client.post(f"{API}/teams/kappa/projects", json={"name": project},
                           headers=h).status_code == 201
    return h


def _run(client: TestClient, h: dict[str, str], run_id: str, project: str = "p") -> None:
    """A run with history, console lines, a summary and two files in the bucket."""
    base = f"{API}/teams/kappa/projects/{project}/runs"
    assert client.post(base, json={"run_id": run_id}, headers=h).status_code == 201
    records = [["h", i, 1_700_000_000 + i, {"loss": 1.0 / (i + 1)}] for i in range(20)]
    records += [["o", "stdout", 1_700_000_100, f"line {i}"] for i in range(5)]
    r = client.post(f"{base}/{run_id}/records", headers=dict(h, **{
        "Content-Type": "application/json"}),
        content=json.dumps({"start": 0, "records": records}).encode())
    assert r.status_code == 200, r.text
    send_files(client, h, {"model.pt": run_id.encode() * 50, "notes.txt": b"hi " + run_id.encode()},
               base=f"{base}/{run_id}/files")


def _store(ctx: AppContext) -> ScopedStore:
    with ctx.db.session() as s:
        t = s.scalar(select(Team).where(Team.name == "kappa"))
        assert t is not None
        return ctx.storage.team_bucket(s, t).store


def _run_keys(ctx: AppContext) -> set[str]:
    return {o.key for o in _store(ctx).iter_objects("runs/")}


def _rows(ctx: AppContext, run_id: str) -> dict[str, int]:
    with ctx.db.session() as s:
        pk = s.scalar(select(Run.id).where(Run.run_id == run_id))
        return {m.__tablename__: int(s.scalar(select(func.count()).select_from(m)
                                              .where(m.run_id == pk)) or 0)
                for m in (HistorySegment, ConsoleLine, RunFile, ArtifactUsage)}


def _set_deleted(ctx: AppContext, run_id: str, when: datetime) -> None:
    with ctx.db.session() as s:
        s.execute(update(Run).where(Run.run_id == run_id).values(deleted_at=when))


def _collect(ctx: AppContext, at: datetime, **kw: Any) -> gc.GcReport:
    return gc.collect(ctx.db, ctx.storage, clock=lambda: at, grace_seconds=GRACE,
                      retention_seconds=RETENTION, **kw)


def test_deleted_run_is_purged_after_the_retention_window_only(
        client: TestClient, alice: dict[str, str], ctx: AppContext) -> None:
    h = alice
    for run_id in ("keep", "gone", "soon"):
        _run(client, h, run_id)
    for run_id in ("gone", "soon"):
        assert client.delete(f"{BASE}/{run_id}", headers=h).status_code == 200
    now = datetime.now(UTC)
    _set_deleted(ctx, "gone", now - timedelta(seconds=RETENTION + 60))
    _set_deleted(ctx, "soon", now - timedelta(seconds=RETENTION - 60))
    before = _run_keys(ctx)
    assert {k.split("/")[2] for k in before} == {"keep", "gone", "soon"}
    rows = _rows(ctx, "gone")
    assert rows["run_history_segments"] > 0
    assert (rows["run_console_lines"], rows["run_files"]) == (5, 2)

    dry = _collect(ctx, now, dry_run=True)
    assert (dry.runs_purged, dry.teams[0].run_objects_freed) == (1, 2)
    assert _run_keys(ctx) == before and _rows(ctx, "gone")["run_files"] == 2

    report = _collect(ctx, now)
    team = report.teams[0]
    assert team.error is None
    assert (team.runs_purged, team.run_objects_freed) == (1, 2)
    assert team.run_bytes_freed == len(b"gone" * 50) + len(b"hi gone")
    assert report.objects_freed >= 2 and report.bytes_freed >= team.run_bytes_freed
    assert _run_keys(ctx) == {k for k in before if k.split("/")[2] != "gone"}
    assert _rows(ctx, "gone") == {"run_history_segments": 0, "run_console_lines": 0,
                                  "run_files": 0, "artifact_usages": 0}
    assert _rows(ctx, "keep")["run_files"] == 2 and _rows(ctx, "soon")["run_console_lines"] == 5
    # The id stays taken; restoring says why it cannot.
    err = assert_error(client.post(f"{BASE}/gone/restore", headers=h), 409, "run_purged")
    assert "retention window" in err["message"] and err["details"]["run"] == "gone"
    assert client.post(BASE, json={"run_id": "gone"}, headers=h).status_code == 409
    # The run still inside the window comes back whole.
    assert client.post(f"{BASE}/soon/restore", headers=h).status_code == 200
    r = client.get(f"{BASE}/soon/history", params={"keys": ["loss"]}, headers=h)
    assert len(r.json()["keys"]["loss"]["values"]) == 20
    # A second collection finds nothing more to do.
    again = _collect(ctx, now).teams[0]
    assert (again.runs_purged, again.run_objects_freed) == (0, 0)


def test_runs_of_a_deleted_project_are_purged_and_stay_deleted(
        client: TestClient, alice: dict[str, str], ctx: AppContext) -> None:
    h = alice
    _run(client, h, "r1", project="q")
    _run(client, h, "r2", project="p")
    assert client.delete(f"{API}/teams/kappa/projects/q", headers=h).status_code == 200
    now = datetime.now(UTC)
    with ctx.db.session() as s:
        s.execute(update(Project).where(Project.name == "q")
                  .values(deleted_at=now - timedelta(seconds=RETENTION + 1)))
    report = _collect(ctx, now)
    assert report.runs_purged == 1
    assert {k.split("/")[1] for k in _run_keys(ctx)} == {"p"}
    with ctx.db.session() as s:
        run = s.scalar(select(Run).where(Run.run_id == "r1"))
        assert run is not None and run.purged_at is not None and run.deleted_at is not None
    # The project comes back (it has no artifacts); its purged run does not.
    assert client.post(f"{API}/teams/kappa/projects/q/restore", headers=h).status_code == 200
    runs = client.get(f"{API}/teams/kappa/projects/q/runs", headers=h).json()["runs"]
    assert runs == []
    assert_error(client.post(f"{API}/teams/kappa/projects/q/runs/r1/restore", headers=h),
                 409, "run_purged")


def test_unknown_run_prefixes_are_freed_after_the_grace_period_only(
        client: TestClient, alice: dict[str, str], ctx: AppContext, tmp_path: Path) -> None:
    h = alice
    _run(client, h, "live")
    store = _store(ctx)
    store.put_bytes("runs/p/stray/files/x.bin", b"x" * 10)
    now = datetime.now(UTC)
    young = _collect(ctx, now).teams[0]
    assert young.unknown_run_prefixes == ["p/stray"] and young.run_objects_freed == 0
    assert "runs/p/stray/files/x.bin" in _run_keys(ctx)
    later = _collect(ctx, now + timedelta(seconds=GRACE + 60)).teams[0]
    assert (later.run_objects_freed, later.run_bytes_freed) == (1, 10)
    keys = _run_keys(ctx)
    assert "runs/p/stray/files/x.bin" not in keys
    assert {k.split("/")[2] for k in keys} == {"live"}  # a live run is never touched


def test_a_run_restored_before_the_purge_is_not_purged(
        client: TestClient, alice: dict[str, str], ctx: AppContext) -> None:
    h = alice
    _run(client, h, "r1")
    assert client.delete(f"{BASE}/r1", headers=h).status_code == 200
    now = datetime.now(UTC)
    _set_deleted(ctx, "r1", now - timedelta(seconds=RETENTION + 60))
    # Restored between the scan and the purge: _purge_rows re-checks under the locks.
    with ctx.db.session() as s:
        pk = s.scalar(select(Run.id).where(Run.run_id == "r1"))
        team_id = s.scalar(select(Team.id).where(Team.name == "kappa"))
    assert pk is not None and team_id is not None
    assert client.post(f"{BASE}/r1/restore", headers=h).status_code == 200
    from satchel.services import run_purge

    assert not run_purge._purge_rows(ctx.db, team_id, pk, now - timedelta(seconds=RETENTION),
                                     now)
    assert _rows(ctx, "r1")["run_files"] == 2
    assert _collect(ctx, now).runs_purged == 0


def test_abandoned_run_file_uploads_are_aborted_after_the_grace_period(
        client: TestClient, alice: dict[str, str], ctx: AppContext,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(multipart, "MULTIPART_THRESHOLD", 100)
    monkeypatch.setattr(multipart, "PART_SIZE", 100)
    assert client.post(BASE, json={"run_id": "big"}, headers=alice).status_code == 201
    data = b"x" * 250
    r = client.post(f"{BASE}/big/files", headers=alice, json={"files": [
        {"path": "ckpt.bin", "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}]})
    assert r.status_code == 200, r.text
    (mp,) = r.json()["multipart"]
    store = _store(ctx)
    assert [u.upload_id for u in store.list_multipart_uploads("runs/")] == [mp["upload_id"]]
    now = datetime.now(UTC)
    assert _collect(ctx, now).teams[0].multipart_aborted == 0  # may still be uploading
    later = now + timedelta(seconds=GRACE + 60)
    assert _collect(ctx, later, dry_run=True).teams[0].multipart_aborted == 1
    assert len(list(store.list_multipart_uploads("runs/"))) == 1
    assert _collect(ctx, later).teams[0].multipart_aborted == 1
    assert list(store.list_multipart_uploads("runs/")) == []
    # The file's next registration starts a new upload.
    r = client.post(f"{BASE}/big/files", headers=alice, json={"files": [
        {"path": "ckpt.bin", "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}]})
    assert r.json()["multipart"][0]["upload_id"] != mp["upload_id"]
