"""The per-team artifact lock shared by logging and the garbage collector (services/locks.py).

The race it closes: ``create_version`` sees a hash's object row and tells the client "no
upload needed" while, before that request commits, the collector deletes the row and the
bytes (on PostgreSQL the collector cannot see the uncommitted pending version that references
them). The interleaving is forced with hooks and events, never with sleeps: the collector is
started from inside ``create_version`` right after that check, and the request goes on only
once the collector has either finished or is seen waiting for the lock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from satchel.db.models import ArtifactObject, ArtifactVersion, Team
from satchel.server.deps import AppContext
from satchel.services import artifacts, gc, locks
from tests.conftest import TEST_DB, Users
from tests.errorshape import assert_error
from tests.server.test_artifacts_local import _base, _download, _log
from tests.server.test_gc_local import _bucket_hashes, _delete, _store, alice, sha

__all__ = ["alice"]

RETENTION = 7 * 86_400.0
GRACE = 3_600.0


def _team_id(ctx: AppContext, name: str) -> int:
    with ctx.db.session() as s:
        tid = s.scalar(select(Team.id).where(Team.name == name))
        assert tid is not None
        return int(tid)


def test_the_lock_excludes_a_second_holder_until_commit(
        ctx: AppContext, alice: dict[str, str], users: Users, client: TestClient) -> None:
    bob = users.create("bob")
    assert client.post("/api/v1/teams", json={"name": "omega"}, headers=bob).status_code == 201
    kappa, omega = _team_id(ctx, "kappa"), _team_id(ctx, "omega")
    with ctx.db.session() as holder:
        locks.lock_team(holder, kappa)
        with ctx.db.session() as other:
            assert not locks.try_lock_team(other, kappa)
            other.rollback()
        if TEST_DB == "postgresql":  # per team there; SQLite has one writer for everything
            with ctx.db.session() as other:
                assert locks.try_lock_team(other, omega)
    with ctx.db.session() as other:  # released at commit
        assert locks.try_lock_team(other, kappa)


def _freeable_object(client: TestClient, ctx: AppContext, h: dict[str, str]) -> str:
    """A hash whose only version was deleted long ago: the collector may free it."""
    _log(client, h, "kappa", "old", {"a": b"alpha"})
    _delete(client, h, "old", "v0")
    long_ago = datetime.now(UTC) - timedelta(seconds=10 * RETENTION)
    with ctx.db.session() as s:
        s.execute(update(ArtifactVersion).values(deleted_at=long_ago))
        s.execute(update(ArtifactObject).values(created_at=long_ago))
    return sha(b"alpha")


def _gc_delete_phase(ctx: AppContext, team_id: int, hashes: list[str]) -> gc.TeamReport:
    """What the collector does with hashes its scan found unreferenced."""
    now = datetime.now(UTC)
    cutoff, young = now - timedelta(seconds=RETENTION), now - timedelta(seconds=GRACE)
    tr = gc.TeamReport("kappa")
    gone = gc._delete_rows(ctx.db, team_id, hashes, cutoff, young)
    tr.skipped_now_live += len(hashes) - len(gone)
    tr.objects_freed = len(gc._delete_objects(ctx.db, _store(ctx), team_id, gone, cutoff, tr))
    return tr


@pytest.mark.parametrize("locked", [
    True,
    pytest.param(False, marks=pytest.mark.skipif(
        TEST_DB != "postgresql", reason="SQLite's single writer serializes the two anyway: "
        "create_version's first insert takes the write lock the collector's delete needs")),
])
def test_collector_racing_create_version(
        client: TestClient, ctx: AppContext, alice: dict[str, str],
        monkeypatch: pytest.MonkeyPatch, locked: bool) -> None:
    h = _freeable_object(client, ctx, alice)
    team_id = _team_id(ctx, "kappa")
    if not locked:  # show that the race is real without the lock (so this test can fail)
        monkeypatch.setattr(artifacts, "lock_team", lambda *_: None)
        monkeypatch.setattr(locks, "lock_team", lambda *_: None)
    progressed = threading.Event()  # the collector finished, or is waiting for the lock
    waited: list[bool] = []
    real_lock: Callable[[Session, int], None] = locks.lock_team

    def collector_lock(s: Session, tid: int) -> None:
        if locks.try_lock_team(s, tid):
            return
        waited.append(True)
        progressed.set()
        real_lock(s, tid)

    result: dict[str, Any] = {}

    def collector() -> None:
        try:
            result["report"] = _gc_delete_phase(ctx, team_id, [h])
        finally:
            progressed.set()

    real_missing = artifacts._missing_objects
    thread = threading.Thread(target=collector)

    def missing_then_collect(db: Session, project: Any, wanted: dict[str, int]
                             ) -> dict[str, int]:
        out = real_missing(db, project, wanted)
        if h in wanted and h not in out and not thread.is_alive() and "report" not in result:
            # create_version has decided "no upload needed" and has not committed yet.
            monkeypatch.setattr(locks, "lock_team", collector_lock)
            thread.start()
            assert progressed.wait(120)
        return out

    monkeypatch.setattr(artifacts, "_missing_objects", missing_then_collect)
    r = client.post(f"{_base('kappa')}/new/versions", headers=alice, json={
        "type": "dataset", "entries": [{"path": "a", "size": 5, "sha256": h}]})
    assert r.status_code == 201, r.text
    assert r.json()["uploads"] == []  # the row existed when create_version looked
    thread.join()
    commit = client.post(f"{_base('kappa')}/new/pending/{r.json()['version']['id']}/commit",
                         headers=alice, json={"aliases": []})
    if not locked:
        # The collector freed the row and the bytes under the client's feet: the commit finds
        # them gone (the client was told not to upload).
        assert result["report"].objects_freed == 1
        assert_error(commit, 409, "artifact_incomplete")
        return
    assert waited == [True]  # the collector had to wait for create_version's transaction
    assert result["report"].objects_freed == 0 and result["report"].skipped_now_live == 1
    assert commit.status_code == 200, commit.text
    assert _download(client, alice, "kappa", "new:v0") == {"a": b"alpha"}
    assert h in _bucket_hashes(ctx)
