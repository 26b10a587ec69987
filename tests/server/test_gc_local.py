"""Artifact garbage collector and database lease on local buckets (issue 5, "Delete + GC").

Time is injected: the collector gets a clock; soft-delete times are set in the database where
a test needs them at a virtual instant. Nothing sleeps.
"""

from __future__ import annotations

import hashlib
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from satchel.db.models import ArtifactCollection, ArtifactObject, ArtifactVersion, Project, Team
from satchel.errors import Conflict, NotFound
from satchel.server.deps import AppContext
from satchel.services import gc, leases
from satchel.storage.scoped import ScopedStore
from tests.conftest import Users
from tests.server.test_artifacts_local import _base, _log

GRACE = 3_600.0
RETENTION = 7 * 86_400.0


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def alice(client: TestClient, users: Users) -> dict[str, str]:
    h = users.create("alice")
    assert client.post("/api/v1/teams", json={"name": "kappa"}, headers=h).status_code == 201
    assert client.post("/api/v1/teams/kappa/projects", json={"name": "p"},
                       headers=h).status_code == 201
    return h


def _store(ctx: AppContext, team: str = "kappa") -> ScopedStore:
    with ctx.db.session() as s:
        t = s.scalar(select(Team).where(Team.name == team))
        assert t is not None
        return ctx.storage.team_bucket(s, t).store


def _bucket_hashes(ctx: AppContext) -> set[str]:
    keys = (gc._sha_of(o.key) for o in _store(ctx).iter_objects(gc.OBJECT_PREFIX))
    return {k for k in keys if k is not None}


def _row_hashes(ctx: AppContext) -> set[str]:
    with ctx.db.session() as s:
        return set(s.scalars(select(ArtifactObject.sha256)))


def _collect(ctx: AppContext, at: datetime, **kw: Any) -> gc.GcReport:
    kw.setdefault("grace_seconds", GRACE)
    kw.setdefault("retention_seconds", RETENTION)
    return gc.collect(ctx.db, ctx.storage, clock=lambda: at, **kw)


def _delete(client: TestClient, h: dict[str, str], name: str, ref: str) -> None:
    r = client.delete(f"{_base('kappa')}/{name}/versions/{ref}", headers=h)
    assert r.status_code == 200, r.text


def _set_deleted_at(ctx: AppContext, version_id: int, when: datetime) -> None:
    with ctx.db.session() as s:
        s.execute(update(ArtifactVersion).where(ArtifactVersion.id == version_id)
                  .values(deleted_at=when))


# ---------------------------------------------------------------------------- lease


def test_lease_two_holders(ctx: AppContext) -> None:
    t0 = datetime(2030, 1, 1, tzinfo=UTC)
    assert leases.acquire(ctx.db, "job", "a", ttl_seconds=60, now=t0)
    assert not leases.acquire(ctx.db, "job", "b", ttl_seconds=60, now=t0 + timedelta(seconds=30))
    assert leases.holder_of(ctx.db, "job", now=t0) == "a"
    # The holder renews; the other still cannot take it before the new expiry.
    assert leases.renew(ctx.db, "job", "a", ttl_seconds=60, now=t0 + timedelta(seconds=50))
    assert not leases.acquire(ctx.db, "job", "b", ttl_seconds=60, now=t0 + timedelta(seconds=100))
    # Expired: b takes it; a can neither renew nor take it back.
    assert leases.acquire(ctx.db, "job", "b", ttl_seconds=60, now=t0 + timedelta(seconds=111))
    assert not leases.renew(ctx.db, "job", "a", ttl_seconds=60, now=t0 + timedelta(seconds=112))
    assert not leases.acquire(ctx.db, "job", "a", ttl_seconds=60, now=t0 + timedelta(seconds=112))
    # Release by a non-holder does nothing; by the holder frees it.
    leases.release(ctx.db, "job", "a")
    assert leases.holder_of(ctx.db, "job", now=t0 + timedelta(seconds=113)) == "b"
    leases.release(ctx.db, "job", "b")
    assert leases.acquire(ctx.db, "job", "a", ttl_seconds=60, now=t0 + timedelta(seconds=114))
    # Leases are per name.
    assert leases.acquire(ctx.db, "other", "b", ttl_seconds=60, now=t0 + timedelta(seconds=114))


def test_lease_excludes_a_second_collector(ctx: AppContext, alice: dict[str, str]) -> None:
    now = datetime.now(UTC)
    assert leases.acquire(ctx.db, gc.LEASE_NAME, "replica-1", ttl_seconds=600, now=now)
    with pytest.raises(Conflict):
        _collect(ctx, now, holder="replica-2")
    # Once replica-1's lease has expired, replica-2 collects (and releases after).
    report = _collect(ctx, now + timedelta(seconds=601), holder="replica-2")
    assert [t.team for t in report.teams] == ["kappa"]
    assert leases.holder_of(ctx.db, gc.LEASE_NAME, now=now + timedelta(seconds=602)) is None


# ---------------------------------------------------------------------------- collector


def test_deleted_version_freed_after_retention_only(
        client: TestClient, ctx: AppContext, alice: dict[str, str]) -> None:
    _log(client, alice, "kappa", "ds", {"a": b"alpha", "b": b"bravo"})
    _log(client, alice, "kappa", "ds", {"a": b"alpha", "c": b"charlie"})
    _delete(client, alice, "ds", "v0")
    start = datetime.now(UTC)
    everything = {sha(b"alpha"), sha(b"bravo"), sha(b"charlie")}
    assert _bucket_hashes(ctx) == everything
    # Past the grace period but inside the retention window: restorable, nothing freed.
    report = _collect(ctx, start + timedelta(seconds=GRACE + 60))
    assert (report.objects_freed, report.bytes_freed) == (0, 0)
    assert _bucket_hashes(ctx) == everything
    # Dry run past the retention window: reports, changes nothing.
    late = start + timedelta(seconds=RETENTION + 60)
    dry = _collect(ctx, late, dry_run=True)
    assert (dry.objects_freed, dry.bytes_freed) == (1, len(b"bravo"))
    assert _bucket_hashes(ctx) == everything and _row_hashes(ctx) == everything
    # For real: only v0's unique object goes; "alpha" is shared with the live v1.
    report = _collect(ctx, late)
    assert (report.objects_freed, report.bytes_freed, report.errors) == (1, len(b"bravo"), [])
    assert _bucket_hashes(ctx) == _row_hashes(ctx) == {sha(b"alpha"), sha(b"charlie")}
    # v0 lost an object, so it can no longer be restored (it would come back broken).
    r = client.post(f"{_base('kappa')}/ds/versions/v0/restore", headers=alice)
    assert r.status_code == 409, r.text
    assert r.json()["error"]["code"] == "artifact_incomplete"
    # v1 still downloads intact.
    r = client.post(f"{_base('kappa')}/ds/versions/v1/download", headers=alice)
    assert {e["path"]: client.get(e["url"]).content for e in r.json()["entries"]} == {
        "a": b"alpha", "c": b"charlie"}
    # Logging the freed bytes again uploads them again.
    _, sent = _log(client, alice, "kappa", "ds2", {"b": b"bravo"})
    assert sent == 1 and sha(b"bravo") in _bucket_hashes(ctx)


def test_restored_version_keeps_its_objects(
        client: TestClient, ctx: AppContext, alice: dict[str, str]) -> None:
    _log(client, alice, "kappa", "ds", {"b": b"bravo"})
    _log(client, alice, "kappa", "ds", {"c": b"charlie"})
    _delete(client, alice, "ds", "v0")
    r = client.post(f"{_base('kappa')}/ds/versions/v0/restore", headers=alice)
    assert r.status_code == 200, r.text
    report = _collect(ctx, datetime.now(UTC) + timedelta(seconds=10 * RETENTION))
    assert report.objects_freed == 0
    assert _bucket_hashes(ctx) == {sha(b"bravo"), sha(b"charlie")}


def test_pending_upload_is_never_freed(
        client: TestClient, ctx: AppContext, alice: dict[str, str]) -> None:
    """A pending version pins its objects, even one already known (no upload needed)."""
    _log(client, alice, "kappa", "ds", {"b": b"bravo"})
    _delete(client, alice, "ds", "v0")
    # A second collection starts logging the same bytes: dedup says "no upload needed".
    pending, sent = _log(client, alice, "kappa", "other", {"b": b"bravo"}, upload=False)
    assert sent == 0 and pending["state"] == "pending"
    report = _collect(ctx, datetime.now(UTC) + timedelta(seconds=10 * RETENTION))
    assert report.objects_freed == 0 and _bucket_hashes(ctx) == {sha(b"bravo")}
    r = client.post(f"{_base('kappa')}/other/pending/{pending['id']}/commit", headers=alice,
                    json={"aliases": []})
    assert r.status_code == 200, r.text


def test_orphans_both_ways_and_multipart(
        client: TestClient, ctx: AppContext, alice: dict[str, str]) -> None:
    _log(client, alice, "kappa", "ds", {"a": b"alpha", "b": b"bravo"})
    store = _store(ctx)
    orphan = b"nobody logged me"
    store.put_bytes(gc._key(sha(orphan)), orphan)
    store.put_bytes("artifacts/sha256/not-a-hash", b"x")  # not ours to judge: left alone
    # A row whose object vanished from the bucket.
    store.delete_many([gc._key(sha(b"bravo"))])
    upload = store.create_multipart(gc._key(sha(b"big")))
    now = datetime.now(UTC)

    inside = _collect(ctx, now)  # everything is inside the grace period
    (t,) = inside.teams
    assert (t.orphan_objects_freed, t.orphan_objects_kept, t.multipart_aborted) == (0, 1, 0)
    assert t.rows_missing_object == [sha(b"bravo")]
    assert sha(orphan) in _bucket_hashes(ctx)

    later = now + timedelta(seconds=GRACE + 60)
    dry = _collect(ctx, later, dry_run=True)
    assert (dry.teams[0].orphan_objects_freed, dry.teams[0].orphan_bytes_freed,
            dry.multipart_aborted) == (1, len(orphan), 1)
    assert sha(orphan) in _bucket_hashes(ctx)
    assert [u.upload_id for u in store.list_multipart_uploads(gc.OBJECT_PREFIX)] == [
        upload.upload_id]

    report = _collect(ctx, later)
    (t,) = report.teams
    assert (t.orphan_objects_freed, t.orphan_bytes_freed, t.multipart_aborted) == (
        1, len(orphan), 1)
    assert t.rows_missing_object == [sha(b"bravo")]  # reported, row kept
    assert _bucket_hashes(ctx) == {sha(b"alpha")}
    assert sha(b"bravo") in _row_hashes(ctx)
    assert store.head("artifacts/sha256/not-a-hash") is not None
    assert list(store.list_multipart_uploads(gc.OBJECT_PREFIX)) == []


def test_one_team_only(client: TestClient, ctx: AppContext, alice: dict[str, str],
                       users: Users) -> None:
    bob = users.create("bob")
    assert client.post("/api/v1/teams", json={"name": "omega"}, headers=bob).status_code == 201
    _log(client, alice, "kappa", "ds", {"b": b"bravo"})
    _delete(client, alice, "ds", "v0")
    late = datetime.now(UTC) + timedelta(seconds=2 * RETENTION)
    report = _collect(ctx, late, team="omega")
    assert [t.team for t in report.teams] == ["omega"] and report.objects_freed == 0
    with pytest.raises(NotFound):
        _collect(ctx, late, team="nope")
    assert _collect(ctx, late, team="kappa").objects_freed == 1


@pytest.mark.parametrize("table", [ArtifactCollection, Project])
def test_deleted_collection_or_project_counts_as_deleted(
        client: TestClient, ctx: AppContext, alice: dict[str, str], table: Any) -> None:
    """A version of a soft-deleted collection or project keeps its objects for the retention
    window after that deletion, then they are freed."""
    _log(client, alice, "kappa", "ds", {"b": b"bravo"})
    now = datetime.now(UTC)
    with ctx.db.session() as s:
        s.execute(update(table).values(deleted_at=now))
    assert _collect(ctx, now + timedelta(seconds=RETENTION - 60)).objects_freed == 0
    assert _bucket_hashes(ctx) == {sha(b"bravo")}
    assert _collect(ctx, now + timedelta(seconds=RETENTION + 60)).objects_freed == 1
    assert _bucket_hashes(ctx) == set()


# ---------------------------------------------------------------------------- randomized


@pytest.mark.parametrize("seed", [1, 2])
def test_randomized_gc_never_frees_live_objects(
        client: TestClient, ctx: AppContext, alice: dict[str, str], seed: int) -> None:
    rng = random.Random(seed)
    pool = [f"content {i}".encode() * (i + 1) for i in range(10)]
    names = ["c0", "c1", "c2"]
    start = datetime.now(UTC)
    offset = 0.0
    # id -> (name, ref, hashes, deleted_at or None)
    versions: dict[int, tuple[str, str, set[str], datetime | None]] = {}
    orphans: set[str] = set()

    def now() -> datetime:
        return start + timedelta(seconds=offset)

    def must_keep(at: datetime) -> set[str]:
        cutoff = at - timedelta(seconds=RETENTION)
        return {h for _, _, hs, d in versions.values() if d is None or d >= cutoff for h in hs}

    gcs = freed = restores = 0
    for _ in range(100):
        offset += rng.uniform(0, RETENTION / 3)
        op = rng.random()
        live = [i for i, v in versions.items() if v[3] is None]
        restorable = [i for i, v in versions.items()
                      if v[3] is not None and now() - v[3] < timedelta(seconds=RETENTION)]
        if op < 0.35 or not versions:
            name = rng.choice(names)
            files = {f"f{j}": rng.choice(pool) for j in range(rng.randint(1, 4))}
            v, _ = _log(client, alice, "kappa", name, files)
            if v["id"] not in versions:
                versions[v["id"]] = (name, v["version"], {sha(b) for b in files.values()}, None)
        elif op < 0.55 and live:
            vid = rng.choice(live)
            name, ref, hs, _ = versions[vid]
            _delete(client, alice, name, ref)
            _set_deleted_at(ctx, vid, now())
            versions[vid] = (name, ref, hs, now())
        elif op < 0.65 and restorable:
            vid = rng.choice(restorable)
            name, ref, hs, _ = versions[vid]
            r = client.post(f"{_base('kappa')}/{name}/versions/{ref}/restore", headers=alice)
            assert r.status_code == 200, r.text
            versions[vid] = (name, ref, hs, None)
            restores += 1
        elif op < 0.7:
            data = rng.randbytes(16)
            _store(ctx).put_bytes(gc._key(sha(data)), data)
            orphans.add(sha(data))
        else:
            keep = must_keep(now())
            report = _collect(ctx, now(), dry_run=rng.random() < 0.2)
            gcs += 1
            freed += 0 if report.dry_run else report.objects_freed
            assert report.errors == []
            missing = keep - _bucket_hashes(ctx)
            assert not missing, f"GC freed live objects {sorted(missing)}"
            assert keep <= _row_hashes(ctx)
    assert gcs > 10 and freed > 0 and restores > 0  # the seeds exercise every path
    offset += RETENTION + GRACE + 1
    report = _collect(ctx, now())
    assert report.errors == []
    expected = {h for _, _, hs, d in versions.values() if d is None for h in hs}
    assert _bucket_hashes(ctx) == expected
    assert _row_hashes(ctx) == expected
    assert not orphans & _bucket_hashes(ctx)
