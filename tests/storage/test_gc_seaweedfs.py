"""Issue 5 acceptance: garbage collection running concurrently with clients, on SeaweedFS.

A collector thread loops with grace 0 and retention 0 (the most aggressive settings: anything
not referenced by a live or pending version is freed at once) while client threads log new
versions through the SDK and a real server over HTTP, sharing objects with versions deleted
a moment ago, and delete and restore versions. After every commit and restore, and at the
end, each live version is downloaded straight from the bucket through its presigned URLs and
verified against its SHA-256: no live object may ever be lost. After a final quiescent run the
bucket's ``artifacts/sha256/`` objects are exactly those live versions reference.
"""

from __future__ import annotations

import hashlib
import random
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from satchel import Api, Artifact
from satchel.db.models import ArtifactCollection, ArtifactEntry, ArtifactVersion, Project
from satchel.errors import ArtifactIncomplete
from satchel.server.app import create_app
from satchel.server.deps import AppContext
from satchel.services import gc
from tests.conftest import ADMIN_KEY
from tests.live import free_port, serve_in_thread
from tests.storage.servers.seaweedfs import SeaweedFS
from tests.storage.test_scopes_seaweedfs import _keys

API = "/api/v1"
CLIENTS = 3
OPERATIONS = 24  # per client
POOL = [secrets.token_bytes(random.Random(i).randint(1, 3000)) for i in range(30)]


@pytest.fixture
def live(client: TestClient, ctx: AppContext, seaweedfs: SeaweedFS) -> Iterator[dict[str, str]]:
    prefix = f"gc-{secrets.token_hex(4)}"
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    r = client.put(f"{API}/admin/storage", headers=admin, json={
        "address": seaweedfs.address("bucket-a", "bucket-a"), "path": prefix})
    assert r.status_code == 200, r.text
    r = client.post(f"{API}/users", json={"username": "kay", "create_api_key": True},
                    headers=admin)
    key = r.json()["api_key"]
    kay = {"Authorization": f"Bearer {key}"}
    assert client.post(f"{API}/teams", json={"name": "kappa"}, headers=kay).status_code == 201
    assert client.post(f"{API}/teams/kappa/projects", json={"name": "p"},
                       headers=kay).status_code == 201
    with serve_in_thread(create_app(ctx.settings, context=ctx), free_port()) as url:
        yield {"url": url, "key": key, "prefix": f"{prefix}/teams/kappa/artifacts/sha256/"}


def _verify(api: Api, name: str, version: str, files: dict[str, bytes]) -> None:
    """Download every file of a version from the bucket; bytes and SHA-256 must match."""
    got = api.client.artifact_download("kappa", "p", name, version)
    assert got["version"]["version"] == version
    seen = {}
    for e in got["entries"]:
        data = httpx.get(e["url"], headers=e["headers"]).raise_for_status().content
        assert hashlib.sha256(data).hexdigest() == e["sha256"], f"{name}:{version} {e['path']}"
        seen[e["path"]] = data
    assert seen == files, f"{name}:{version}"


class Client(threading.Thread):
    """Logs, deletes and restores versions of its own collections."""

    def __init__(self, n: int, live: dict[str, str], root: Path) -> None:
        super().__init__(name=f"client-{n}")
        self.n, self.live, self.root = n, live, root
        self.rng = random.Random(1000 + n)
        self.versions: dict[tuple[str, str], dict[str, bytes]] = {}  # (name, vN) -> files
        self.deleted: set[tuple[str, str]] = set()
        self.counts = {"log": 0, "delete": 0, "restore": 0, "restore_refused": 0}
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with Api(self.live["url"], self.live["key"], workers=4) as api:
                for i in range(OPERATIONS):
                    self.step(api, i)
        except BaseException as exc:  # reported by the test
            self.error = exc

    def step(self, api: Api, i: int) -> None:
        live = [k for k in self.versions if k not in self.deleted]
        op = self.rng.random()
        if op < 0.45 or not self.versions:
            name = f"c{self.n}-{self.rng.randint(0, 1)}"
            files = {f"f{j}": self.rng.choice(POOL) for j in range(self.rng.randint(1, 3))}
            if self.deleted and self.rng.random() < 0.6:
                # Bytes of a deleted version, which the collector may be freeing right now.
                old = self.versions[self.rng.choice(sorted(self.deleted))]
                files.update({f"old-{p}": data for p, data in old.items()})
            folder = self.root / f"{self.n}-{i}"
            folder.mkdir()
            art = Artifact(name, "dataset")
            for path, data in files.items():
                (folder / path).write_bytes(data)
                art.add_file(folder / path, name=path)
            logged = api.log_artifact(art, "kappa/p")  # must never fail
            key = (name, logged.version)
            self.versions[key] = files
            self.deleted.discard(key)
            self.counts["log"] += 1
            _verify(api, name, logged.version, files)
        elif op < 0.8 and live:
            name, version = self.rng.choice(sorted(live))
            api.client.delete_artifact_version("kappa", "p", name, version)
            self.deleted.add((name, version))
            self.counts["delete"] += 1
        elif self.deleted:
            name, version = self.rng.choice(sorted(self.deleted))
            try:
                api.client.restore_artifact_version("kappa", "p", name, version)
            except ArtifactIncomplete:  # retention 0: the collector may have freed it already
                self.counts["restore_refused"] += 1
                return
            self.deleted.discard((name, version))
            self.counts["restore"] += 1
            _verify(api, name, version, self.versions[(name, version)])


def _live_hashes(ctx: AppContext) -> set[str]:
    with ctx.db.session() as s:
        rows = s.scalars(
            select(ArtifactEntry.sha256)
            .join(ArtifactVersion, ArtifactVersion.id == ArtifactEntry.version_id)
            .join(ArtifactCollection, ArtifactCollection.id == ArtifactVersion.collection_id)
            .join(Project, Project.id == ArtifactCollection.project_id)
            .where(ArtifactVersion.state == "committed", ArtifactVersion.deleted_at.is_(None),
                   ArtifactCollection.deleted_at.is_(None), Project.deleted_at.is_(None)))
        return {h for h in rows if h}


def test_gc_concurrent_with_clients_never_loses_a_live_object(
        live: dict[str, str], ctx: AppContext, seaweedfs: SeaweedFS, tmp_path: Path) -> None:
    stop = threading.Event()
    reports: list[gc.GcReport] = []
    gc_failures: list[BaseException] = []

    def collector() -> None:
        try:
            while not stop.is_set():
                reports.append(gc.collect(ctx.db, ctx.storage, grace_seconds=0,
                                          retention_seconds=0))
        except BaseException as exc:
            gc_failures.append(exc)

    gc_thread = threading.Thread(target=collector, name="collector")
    clients = [Client(n, live, tmp_path) for n in range(CLIENTS)]
    gc_thread.start()
    for c in clients:
        c.start()
    for c in clients:
        c.join()
    stop.set()
    gc_thread.join()
    for c in clients:
        assert c.error is None, f"{c.name}: {c.error!r}"
    assert not gc_failures, gc_failures
    assert all(r.errors == [] for r in reports), [r.errors for r in reports if r.errors]
    # The run exercised what it claims to: concurrent runs freed objects while clients
    # deleted, re-logged shared bytes and restored.
    assert len(reports) >= 3
    assert sum(r.objects_freed for r in reports) > 0
    totals = {k: sum(c.counts[k] for c in clients) for k in clients[0].counts}
    assert totals["log"] > 10 and totals["delete"] > 3, totals
    assert totals["restore"] + totals["restore_refused"] > 0, totals

    # Quiescent: one more run frees everything deleted; the bucket holds exactly what live
    # versions reference, and every live version is intact.
    final = gc.collect(ctx.db, ctx.storage, grace_seconds=0, retention_seconds=0)
    assert final.errors == [] and final.rows_missing_object == 0
    expected = {hashlib.sha256(data).hexdigest()
                for c in clients for key, files in c.versions.items() if key not in c.deleted
                for data in files.values()}
    assert _live_hashes(ctx) == expected
    in_bucket = {k.rsplit("/", 1)[1] for k in _keys(seaweedfs, "bucket-a")
                 if k.startswith(live["prefix"])}
    assert in_bucket == expected
    with Api(live["url"], live["key"]) as api:
        for c in clients:
            for (name, version), files in c.versions.items():
                if (name, version) not in c.deleted:
                    _verify(api, name, version, files)
