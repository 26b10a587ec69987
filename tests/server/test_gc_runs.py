"""Garbage-collection runs: TTL expiry, stale pending versions, run history, the API (issue 5).

Time is injected (the collector's clock); timestamps a test needs in the past are written to
the database. Nothing sleeps.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from satchel.db.models import ArtifactObject, ArtifactVersion, AuditEvent, GcRun, Team
from satchel.errors import Conflict, NotFound
from satchel.server.deps import AppContext
from satchel.services import gc, gc_runs, leases
from tests.conftest import Users
from tests.errorshape import assert_error
from tests.server.test_artifacts_local import _base, _log
from tests.server.test_gc_local import _bucket_hashes, _delete, alice, sha

__all__ = ["alice"]  # the fixture, imported for its use here

API = "/api/v1"
POLICY = gc.Policy(grace_seconds=3_600, retention_seconds=7 * 86_400,
                   pending_expiry_seconds=2 * 86_400)


def _run(ctx: AppContext, at: datetime, **kw: Any) -> gc_runs.RunView:
    kw.setdefault("trigger", gc_runs.MANUAL)
    kw.setdefault("started_by", "tester")
    return gc_runs.run(ctx.db, ctx.storage, POLICY, clock=lambda: at, **kw)


def _versions(client: TestClient, h: dict[str, str], name: str, *, deleted: bool = False
              ) -> list[str]:
    r = client.get(f"{_base('kappa')}/{name}/versions", headers=h,
                   params={"deleted": str(deleted).lower()})
    assert r.status_code == 200, r.text
    return [v["version"] for v in r.json()]


def _latest(client: TestClient, h: dict[str, str], name: str) -> str | None:
    r = client.get(f"{_base('kappa')}/{name}/versions/latest", headers=h)
    return r.json()["version"]["version"] if r.status_code == 200 else None


def _rows(ctx: AppContext) -> list[GcRun]:
    with ctx.db.session() as s:
        return list(s.scalars(select(GcRun).order_by(GcRun.id)))


# ---------------------------------------------------------------------------- TTL expiry


def test_expired_versions_are_soft_deleted_at_the_next_run(
        client: TestClient, ctx: AppContext, alice: dict[str, str]) -> None:
    v0, _ = _log(client, alice, "kappa", "ds", {"a": b"alpha"})
    v1, _ = _log(client, alice, "kappa", "ds", {"b": b"bravo"})
    v2, _ = _log(client, alice, "kappa", "other", {"c": b"charlie"})
    now = datetime.now(UTC)
    with ctx.db.session() as s:
        s.execute(update(ArtifactVersion).where(ArtifactVersion.id == v1["id"])
                  .values(expires_at=now - timedelta(seconds=1)))
        s.execute(update(ArtifactVersion).where(ArtifactVersion.id == v2["id"])
                  .values(expires_at=now + timedelta(days=1)))
    assert _latest(client, alice, "ds") == "v1"

    dry = _run(ctx, now, dry_run=True)
    assert (dry.status, dry.versions_expired) == ("succeeded", 1)
    assert _versions(client, alice, "ds") == ["v0", "v1"]  # a dry run changes nothing

    done = _run(ctx, now)
    assert (done.status, done.versions_expired, done.objects_freed) == ("succeeded", 1, 0)
    assert done.report["teams"][0]["versions_expired"] == 1
    assert _versions(client, alice, "ds") == ["v0"]
    assert _versions(client, alice, "ds", deleted=True) == ["v1"]
    assert _latest(client, alice, "ds") == "v0"  # latest moved back
    assert _versions(client, alice, "other") == ["v0"]  # not expired yet
    with ctx.db.session() as s:
        assert s.scalar(select(ArtifactVersion.deleted_at)
                        .where(ArtifactVersion.id == v1["id"])) == now
        audit = s.scalars(select(AuditEvent.object_key)
                          .where(AuditEvent.action == "artifact_expire")).all()
    assert audit == ["ds:v1"]
    # Expired means soft-deleted: the bytes stay for the retention window, then go.
    mid = _run(ctx, now + timedelta(seconds=POLICY.retention_seconds - 60))
    assert (mid.objects_freed, mid.versions_expired) == (0, 1)  # "other" expired meanwhile
    late = _run(ctx, now + timedelta(seconds=POLICY.retention_seconds + 60))
    assert (late.objects_freed, late.bytes_freed, late.versions_expired) == (
        1, len(b"bravo"), 0)
    assert _bucket_hashes(ctx) == {sha(b"alpha"), sha(b"charlie")}
    assert v0["version"] == "v0"


def test_expiry_of_the_only_version_removes_latest(
        client: TestClient, ctx: AppContext, alice: dict[str, str]) -> None:
    v0, _ = _log(client, alice, "kappa", "ds", {"a": b"alpha"})
    now = datetime.now(UTC)
    with ctx.db.session() as s:
        s.execute(update(ArtifactVersion).where(ArtifactVersion.id == v0["id"])
                  .values(expires_at=now))  # expires_at <= now: expired
    assert _run(ctx, now).versions_expired == 1
    assert _latest(client, alice, "ds") is None


# ---------------------------------------------------------------------------- stale pending


def _start_upload(client: TestClient, h: dict[str, str], name: str, data: bytes
                  ) -> dict[str, Any]:
    """A pending version whose one object is uploaded, never committed."""
    r = client.post(f"{_base('kappa')}/{name}/versions", headers=h, json={
        "type": "dataset", "entries": [{"path": "f", "size": len(data), "sha256": sha(data)}]})
    assert r.status_code == 201, r.text
    (u,) = r.json()["uploads"]
    assert client.put(u["url"], content=data, headers=u["headers"]).status_code == 200
    version: dict[str, Any] = r.json()["version"]
    return version


def test_stale_pending_versions_are_dropped_and_their_uploads_freed(
        client: TestClient, ctx: AppContext, alice: dict[str, str]) -> None:
    pending = _start_upload(client, alice, "ds", b"abandoned upload")
    assert pending["state"] == "pending"
    start = datetime.fromisoformat(pending["created_at"])
    # Inside the pending expiry: kept, and its object too (it is live).
    inside = _run(ctx, start + timedelta(seconds=POLICY.pending_expiry_seconds - 60))
    assert (inside.pending_dropped, inside.objects_freed) == (0, 0)
    after = start + timedelta(seconds=POLICY.pending_expiry_seconds + 60)
    dry = _run(ctx, after, dry_run=True)
    # The dry run also reports the upload that dropping the version would orphan.
    assert (dry.pending_dropped, dry.objects_freed) == (1, 1)
    assert _bucket_hashes(ctx) == {sha(b"abandoned upload")}
    done = _run(ctx, after)
    assert (done.pending_dropped, done.objects_freed, done.bytes_freed) == (
        1, 1, len(b"abandoned upload"))
    assert done.report["teams"][0]["orphan_objects_freed"] == 1
    assert _bucket_hashes(ctx) == set()
    with ctx.db.session() as s:
        assert s.get(ArtifactVersion, pending["id"]) is None
    r = client.post(f"{_base('kappa')}/ds/pending/{pending['id']}/commit", headers=alice,
                    json={"aliases": []})
    assert_error(r, 404, "not_found")


# ---------------------------------------------------------------------------- history


def test_run_history_and_lease(ctx: AppContext, alice: dict[str, str]) -> None:
    now = datetime.now(UTC)
    first = _run(ctx, now, team="kappa")
    assert (first.trigger, first.team, first.started_by, first.status) == (
        "manual", "kappa", "tester", "succeeded")
    assert first.finished_at == now and first.report["holder"].startswith("manual@")
    # Unknown team: 404, nothing recorded.
    with pytest.raises(NotFound):
        _run(ctx, now, team="nope")
    # Another collector holds the lease: 409, nothing recorded.
    assert leases.acquire(ctx.db, gc.LEASE_NAME, "replica-2", ttl_seconds=60, now=now)
    with pytest.raises(Conflict) as info:
        _run(ctx, now + timedelta(seconds=1))
    assert info.value.details["holder"] == "replica-2"
    assert [r.id for r in _rows(ctx)] == [first.id]
    # Once that lease has expired, a run goes ahead.
    later = _run(ctx, now + timedelta(seconds=61), trigger=gc_runs.SCHEDULED,
                 started_by="scheduler")
    assert later.status == "succeeded"
    admin = _admin(ctx)
    assert [r.id for r in gc_runs.list_runs(ctx.db, admin)] == [later.id, first.id]
    assert gc_runs.get_run(ctx.db, admin, first.id).team == "kappa"


def _admin(ctx: AppContext) -> Any:
    from satchel.services.authz import Principal

    return Principal(user_id=1, username="admin", is_admin=True)


def test_a_crashed_run_reads_as_abandoned_once_its_lease_expired(
        ctx: AppContext, alice: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A process killed mid-run leaves a 'running' row and an unreleased lease."""
    now = datetime.now(UTC)

    def killed(*_: object, **__: object) -> None:
        raise SystemExit("killed")  # not an Exception: nothing is recorded, as with SIGKILL

    monkeypatch.setattr(gc, "run_with_lease", killed)
    monkeypatch.setattr(leases, "release", lambda *_: None)  # a dead process releases nothing
    with pytest.raises(SystemExit):
        _run(ctx, now)
    monkeypatch.undo()
    (row,) = _rows(ctx)
    assert row.status == "running"
    admin = _admin(ctx)
    # While the lease is still valid the run may be alive: shown as running.
    assert gc_runs.get_run(ctx.db, admin, row.id, clock=lambda: now).status == "running"
    assert gc_runs.status(ctx.db, admin, interval_seconds=0, first_due=None,
                          clock=lambda: now).running
    expired = now + timedelta(seconds=gc.LEASE_TTL_SECONDS + 1)
    view = gc_runs.get_run(ctx.db, admin, row.id, clock=lambda: expired)
    assert view.status == "failed" and view.error is not None
    assert view.error.startswith("abandoned")
    assert [v.status for v in gc_runs.list_runs(ctx.db, admin, clock=lambda: expired)] == [
        "failed"]
    # The next run (which holds the lease, so knows nobody else runs) writes it down.
    nxt = _run(ctx, expired)
    assert nxt.status == "succeeded"
    old = next(r for r in _rows(ctx) if r.id == row.id)
    assert (old.status, old.error) == ("failed", gc_runs.ABANDONED)


def test_team_errors_fail_the_run_and_are_scrubbed(
        client: TestClient, ctx: AppContext, alice: dict[str, str], users: Users,
        monkeypatch: pytest.MonkeyPatch) -> None:
    bob = users.create("bob")
    assert client.post("/api/v1/teams", json={"name": "omega"}, headers=bob).status_code == 201
    real = ctx.storage.team_bucket

    def broken(s: Any, team: Team) -> Any:
        if team.name == "kappa":
            raise RuntimeError("bucket refused: password=hunter2hunter2")
        return real(s, team)

    monkeypatch.setattr(ctx.storage, "team_bucket", broken)
    view = _run(ctx, datetime.now(UTC))
    assert view.status == "failed"
    teams = {t["team"]: t for t in view.report["teams"]}
    assert teams["omega"]["error"] is None  # the other team was still collected
    assert "hunter2" not in json.dumps(view.report) and "hunter2" not in (view.error or "")
    assert teams["kappa"]["error"].startswith("RuntimeError: bucket refused: password=****")
    assert view.error == f"kappa: {teams['kappa']['error']}"


def test_stop_request_interrupts_a_run(ctx: AppContext, alice: dict[str, str]) -> None:
    view = _run(ctx, datetime.now(UTC), should_stop=lambda: True)
    assert view.status == "failed" and view.error is not None
    assert view.error.startswith("interrupted")
    assert leases.holder_of(ctx.db, gc.LEASE_NAME, now=datetime.now(UTC)) is None


# ---------------------------------------------------------------------------- API


def test_api_run_list_get_status(client: TestClient, ctx: AppContext, alice: dict[str, str],
                                 admin_headers: dict[str, str]) -> None:
    _log(client, alice, "kappa", "ds", {"a": b"alpha"})
    _delete(client, alice, "ds", "v0")
    with ctx.db.session() as s:  # deleted and created long ago: past retention and grace
        old = datetime.now(UTC) - timedelta(days=365)
        s.execute(update(ArtifactVersion).values(deleted_at=old))
        s.execute(update(ArtifactObject).values(created_at=old))
    r = client.post(f"{API}/admin/gc", json={"dry_run": True}, headers=admin_headers)
    assert r.status_code == 200, r.text
    dry = r.json()
    assert (dry["dry_run"], dry["status"], dry["objects_freed"], dry["bytes_freed"]) == (
        True, "succeeded", 1, len(b"alpha"))
    assert _bucket_hashes(ctx) == {sha(b"alpha")}
    r = client.post(f"{API}/admin/gc", json={"team": "kappa"}, headers=admin_headers)
    assert r.status_code == 200, r.text
    real = r.json()
    assert (real["dry_run"], real["team"], real["objects_freed"], real["started_by"]) == (
        False, "kappa", 1, "admin")
    assert _bucket_hashes(ctx) == set()
    (team,) = real["report"]["teams"]
    assert team["team"] == "kappa" and team["rows_missing_object"] == []

    runs = client.get(f"{API}/admin/gc/runs", headers=admin_headers).json()
    assert [x["id"] for x in runs] == [real["id"], dry["id"]]
    assert [x["id"] for x in client.get(f"{API}/admin/gc/runs", params={"limit": 1},
                                        headers=admin_headers).json()] == [real["id"]]
    one = client.get(f"{API}/admin/gc/runs/{dry['id']}", headers=admin_headers).json()
    assert one == dry

    status = client.get(f"{API}/admin/gc/status", headers=admin_headers).json()
    scheduler = client.app.state.gc_scheduler  # type: ignore[attr-defined]
    assert (status["running"], status["lease_holder"], status["interval_seconds"]) == (
        False, None, ctx.settings.gc_interval_seconds)
    assert datetime.fromisoformat(status["next_run_at"]) == scheduler.first_due
    assert status["last_run"]["id"] == real["id"]

    # Not an instance admin: 403; unknown team: 404 and nothing recorded; lease busy: 409.
    assert_error(client.post(f"{API}/admin/gc", json={}, headers=alice), 403,
                 "permission_denied")
    assert_error(client.get(f"{API}/admin/gc/status", headers=alice), 403, "permission_denied")
    assert_error(client.post(f"{API}/admin/gc", json={"team": "nope"}, headers=admin_headers),
                 404, "not_found")
    assert leases.acquire(ctx.db, gc.LEASE_NAME, "replica-9", ttl_seconds=600,
                          now=datetime.now(UTC))
    err = assert_error(client.post(f"{API}/admin/gc", json={}, headers=admin_headers), 409,
                       "conflict")
    assert err["details"]["holder"] == "replica-9"
    status = client.get(f"{API}/admin/gc/status", headers=admin_headers).json()
    assert (status["running"], status["lease_holder"]) == (True, "replica-9")
    assert len(client.get(f"{API}/admin/gc/runs", headers=admin_headers).json()) == 2
