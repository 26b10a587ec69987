"""Artifact lineage through the REST API on local buckets: the producing run, consuming runs,
cross-project and cross-team use, and who may record and see what (services/lineage.py)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from satchel.config import Settings
from satchel.db.models import Run
from satchel.server.deps import AppContext
from tests.conftest import ADMIN_KEY, Users
from tests.errorshape import assert_error

API = "/api/v1"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
H = dict[str, str]


@pytest.fixture
def settings(settings: Settings, tmp_path: Path) -> Settings:
    return settings.model_copy(update={"supported_file_stores": f"file://{tmp_path / 'omega'}"})


def _arts(team: str, project: str) -> str:
    return f"{API}/teams/{team}/projects/{project}/artifacts"


def _runs(team: str, project: str) -> str:
    return f"{API}/teams/{team}/projects/{project}/runs"


def _log(client: TestClient, h: H, team: str, project: str, name: str,
         files: dict[str, bytes], *, run: str | None = None) -> dict[str, Any]:
    """Log a version (upload + commit when something changed); returns the version."""
    body: dict[str, Any] = {"type": "dataset", "entries": [
        {"path": p, "size": len(b), "sha256": hashlib.sha256(b).hexdigest()}
        for p, b in files.items()]}
    if run is not None:
        body["run_id"] = run
    r = client.post(f"{_arts(team, project)}/{name}/versions", headers=h, json=body)
    assert r.status_code == 201, r.text
    out = r.json()
    if not out["created"]:
        return dict(out["version"])
    assert out["version"]["producing_run"] == run  # the pending version holds it already
    by_sha = {hashlib.sha256(b).hexdigest(): b for b in files.values()}
    for u in out["uploads"]:
        assert client.put(u["url"], content=by_sha[u["sha256"]],
                          headers=u["headers"]).status_code == 200
    r = client.post(f"{_arts(team, project)}/{name}/pending/{out['version']['id']}/commit",
                    headers=h, json={})
    assert r.status_code == 200, r.text
    return dict(r.json())


def _run(client: TestClient, h: H, team: str, project: str, run_id: str) -> None:
    r = client.post(_runs(team, project), headers=h, json={"run_id": run_id})
    assert r.status_code == 201, r.text


def _use(client: TestClient, h: H, team: str, project: str, run_id: str, artifact: str
         ) -> Any:
    return client.post(f"{_runs(team, project)}/{run_id}/artifacts/use", headers=h,
                       json={"artifact": artifact})


def _lineage(client: TestClient, h: H, team: str, project: str, ref: str, **params: Any
             ) -> dict[str, Any]:
    name, version = ref.split(":")
    r = client.get(f"{_arts(team, project)}/{name}/versions/{version}/lineage", headers=h,
                   params=params)
    assert r.status_code == 200, r.text
    return dict(r.json())


def _run_artifacts(client: TestClient, h: H, team: str, project: str, run_id: str
                   ) -> dict[str, Any]:
    r = client.get(f"{_runs(team, project)}/{run_id}/artifacts", headers=h)
    assert r.status_code == 200, r.text
    return dict(r.json())


def _names(items: list[dict[str, Any]]) -> list[str]:
    return [f"{a['team']}/{a['project']}/{a['name']}:{a['version']}" for a in items]


def _consumers(lin: dict[str, Any]) -> list[str]:
    return [f"{c['team']}/{c['project']}/{c['run_id']}" for c in lin["consumers"]]


@pytest.fixture
def world(client: TestClient, users: Users, tmp_path: Path) -> dict[str, H]:
    """kappa (instance bucket): alice admin, vic viewer; projects p, q (instance-visible) and
    hidden (team-visible). omega (its own bucket): bob, project p (instance-visible).
    eve: team zeta with projects z (instance-visible) and secret (team-visible)."""
    alice, bob, vic, eve = (users.create(n) for n in ("alice", "bob", "vic", "eve"))
    assert client.post(f"{API}/teams", json={"name": "kappa"}, headers=alice).status_code == 201
    r = client.post(f"{API}/teams", headers=bob, json={
        "name": "omega", "storage": {"type": "external", "bucket": f"file://{tmp_path / 'omega'}",
                                     "path": "sat"}})
    assert r.status_code == 201, r.text
    assert client.post(f"{API}/teams", json={"name": "zeta"}, headers=eve).status_code == 201
    for h, team, project, visibility in (
            (alice, "kappa", "p", "instance"), (alice, "kappa", "q", "instance"),
            (alice, "kappa", "hidden", "team"), (bob, "omega", "p", "instance"),
            (eve, "zeta", "z", "instance"), (eve, "zeta", "secret", "team")):
        r = client.post(f"{API}/teams/{team}/projects", headers=h,
                        json={"name": project, "visibility": visibility})
        assert r.status_code == 201, r.text
    r = client.post(f"{API}/teams/kappa/members", json={"username": "vic", "role": "viewer"},
                    headers=alice)
    assert r.status_code in (200, 201), r.text
    return {"alice": alice, "bob": bob, "vic": vic, "eve": eve}


def test_producer_is_recorded_and_an_unchanged_relog_counts_as_a_use(
        client: TestClient, world: dict[str, H]) -> None:
    a = world["alice"]
    _run(client, a, "kappa", "p", "r1")
    _run(client, a, "kappa", "p", "r2")
    v0 = _log(client, a, "kappa", "p", "ds", {"f.txt": b"one"}, run="r1")
    assert (v0["version"], v0["producing_run"]) == ("v0", "r1")
    # The commit kept it; every view of the version shows it.
    got = client.get(f"{_arts('kappa', 'p')}/ds/versions/v0", headers=a).json()["version"]
    assert got["producing_run"] == "r1"
    listed = client.get(f"{_arts('kappa', 'p')}/ds/versions", headers=a).json()
    assert [v["producing_run"] for v in listed] == ["r1"]
    # Logged outside a run: no producer.
    other = _log(client, a, "kappa", "p", "notes", {"n": b"n"})
    assert other["producing_run"] is None
    assert _lineage(client, a, "kappa", "p", "notes:v0")["producer"] is None

    # r2 logs the same files: no new version, v0 keeps its producer, r2 becomes a user.
    again = _log(client, a, "kappa", "p", "ds", {"f.txt": b"one"}, run="r2")
    assert (again["version"], again["producing_run"]) == ("v0", "r1")
    # r1 logging them again is not a use of its own output.
    _log(client, a, "kappa", "p", "ds", {"f.txt": b"one"}, run="r1")
    lin = _lineage(client, a, "kappa", "p", "ds:latest")
    assert lin["producer"] == {"team": "kappa", "project": "p", "run_id": "r1"}
    assert (_consumers(lin), lin["total"], lin["hidden_consumers"]) == (["kappa/p/r2"], 1, 0)

    r1 = _run_artifacts(client, a, "kappa", "p", "r1")
    assert (_names(r1["logged"]), r1["used"], r1["hidden"]) == (["kappa/p/ds:v0"], [], 0)
    assert r1["logged"][0]["used_at"] is None
    r2 = _run_artifacts(client, a, "kappa", "p", "r2")
    assert (r2["logged"], _names(r2["used"])) == ([], ["kappa/p/ds:v0"])

    # A changed manifest from r2: v1 is r2's.
    v1 = _log(client, a, "kappa", "p", "ds", {"f.txt": b"two"}, run="r2")
    assert (v1["version"], v1["producing_run"]) == ("v1", "r2")
    assert _names(_run_artifacts(client, a, "kappa", "p", "r2")["logged"]) == ["kappa/p/ds:v1"]
    # A soft-deleted version leaves the run's lists; restored, it is back.
    assert client.delete(f"{_arts('kappa', 'p')}/ds/versions/v1", headers=a).status_code == 200
    assert _run_artifacts(client, a, "kappa", "p", "r2")["logged"] == []
    assert client.post(f"{_arts('kappa', 'p')}/ds/versions/v1/restore",
                       headers=a).status_code == 200
    assert _names(_run_artifacts(client, a, "kappa", "p", "r2")["logged"]) == ["kappa/p/ds:v1"]


def test_producing_run_must_be_a_writable_run_of_the_same_project(
        client: TestClient, world: dict[str, H]) -> None:
    a = world["alice"]
    _run(client, a, "kappa", "q", "rq")
    body = {"type": "dataset", "entries": [], "run_id": "nosuch"}
    err = assert_error(client.post(f"{_arts('kappa', 'p')}/ds/versions", headers=a, json=body),
                       404, "not_found")
    assert "nosuch" in err["message"]
    # A run of another project is not a run of this one.
    body["run_id"] = "rq"
    assert_error(client.post(f"{_arts('kappa', 'p')}/ds/versions", headers=a, json=body),
                 404, "not_found")
    # Nothing was created by the refused calls.
    assert client.get(_arts("kappa", "p"), headers=a).json() == []
    # A viewer cannot log at all, with or without a run.
    _run(client, a, "kappa", "p", "r1")
    body["run_id"] = "r1"
    assert_error(client.post(f"{_arts('kappa', 'p')}/ds/versions", headers=world["vic"],
                             json=body), 403, "permission_denied")


def test_use_is_recorded_once_across_projects_and_audited(
        client: TestClient, world: dict[str, H]) -> None:
    a = world["alice"]
    _run(client, a, "kappa", "p", "maker")
    _log(client, a, "kappa", "p", "ds", {"f": b"data"}, run="maker")
    _run(client, a, "kappa", "q", "trainer")
    first = _use(client, a, "kappa", "q", "trainer", "kappa/p/ds:latest")
    assert first.status_code == 200, first.text
    v = first.json()
    assert (v["team"], v["project"], v["name"], v["version"], v["producing_run"]) == \
        ("kappa", "p", "ds", "v0", "maker")
    # The same use again, by version number and by the default alias: still one use.
    for ref in ("kappa/p/ds:v0", "kappa/p/ds"):
        r = _use(client, a, "kappa", "q", "trainer", ref)
        assert r.status_code == 200 and r.json()["used_at"] == v["used_at"], r.text
    lin = _lineage(client, a, "kappa", "p", "ds:v0")
    assert (_consumers(lin), lin["total"]) == (["kappa/q/trainer"], 1)
    used = _run_artifacts(client, a, "kappa", "q", "trainer")
    assert (_names(used["used"]), used["logged"]) == (["kappa/p/ds:v0"], [])
    # Every call is audited with the run it was for.
    events = client.get(f"{API}/admin/audit", params={"action": "artifact_use"},
                        headers=ADMIN).json()
    assert len(events) == 3
    assert {(e["username"], e["team"], e["project"], e["object_key"]) for e in events} == \
        {("alice", "kappa", "p", "ds:v0 run=kappa/q/trainer")}
    # Mistakes answer the one error shape.
    for artifact, status, code in (("ds", 400, "invalid_input"),
                                   ("kappa/p/ds:", 400, "invalid_input"),
                                   ("kappa/p/nosuch", 404, "not_found"),
                                   ("kappa/p/ds:v9", 404, "not_found"),
                                   ("kappa/nosuch/ds", 404, "not_found")):
        assert_error(_use(client, a, "kappa", "q", "trainer", artifact), status, code)
    assert_error(_use(client, a, "kappa", "q", "nosuch", "kappa/p/ds"), 404, "not_found")


def test_who_may_record_a_use(client: TestClient, world: dict[str, H]) -> None:
    a, bob, vic, eve = world["alice"], world["bob"], world["vic"], world["eve"]
    _log(client, a, "kappa", "p", "ds", {"f": b"kappa"})
    _log(client, a, "kappa", "hidden", "secret", {"f": b"hush"})
    _log(client, bob, "omega", "p", "m", {"f": b"omega"})
    _run(client, a, "kappa", "p", "r1")
    # A viewer reads the run and the artifact, but cannot record on the run.
    err = assert_error(_use(client, vic, "kappa", "p", "r1", "kappa/p/ds"), 403,
                       "permission_denied")
    assert err["details"]["needed_role"] == "member"
    _run(client, eve, "zeta", "z", "ez")
    # An outsider cannot use an artifact of a team-visible project (its existence is hidden).
    assert_error(_use(client, eve, "zeta", "z", "ez", "kappa/hidden/secret"), 404, "not_found")
    # The team-bucket rule: omega's project is instance-visible, but its files are for
    # omega's members only, so using them is too (as downloading them is).
    err = assert_error(_use(client, eve, "zeta", "z", "ez", "omega/p/m"), 403,
                       "permission_denied")
    assert err["details"]["rule"] == "team_bucket_members_only"
    assert_error(client.post(f"{_arts('omega', 'p')}/m/versions/latest/download", headers=eve),
                 403, "permission_denied")
    # ... even for an instance admin who is not a member of omega.
    assert client.post(f"{API}/teams", json={"name": "root"}, headers=ADMIN).status_code == 201
    assert client.post(f"{API}/teams/root/projects", json={"name": "r"},
                       headers=ADMIN).status_code == 201
    _run(client, ADMIN, "root", "r", "adm")
    assert_error(_use(client, ADMIN, "root", "r", "adm", "omega/p/m"), 403,
                 "permission_denied")
    # An instance-bucket artifact of another team is usable by anyone who can read it.
    r = _use(client, eve, "zeta", "z", "ez", "kappa/p/ds")
    assert r.status_code == 200, r.text
    # Nothing was recorded for the refused calls.
    assert _consumers(_lineage(client, a, "kappa", "p", "ds:v0")) == ["zeta/z/ez"]
    assert _lineage(client, bob, "omega", "p", "m:v0")["total"] == 0


def test_lineage_names_only_readable_runs_and_pages(
        client: TestClient, world: dict[str, H]) -> None:
    a, bob, eve = world["alice"], world["bob"], world["eve"]
    _log(client, a, "kappa", "p", "ds", {"f": b"kappa"})
    for h, team, project, run_id in ((a, "kappa", "q", "r1"), (eve, "zeta", "z", "e1"),
                                     (eve, "zeta", "secret", "e2"), (bob, "omega", "p", "b1"),
                                     (a, "kappa", "hidden", "r2")):
        _run(client, h, team, project, run_id)
        assert _use(client, h, team, project, run_id, "kappa/p/ds").status_code == 200
    everyone = ["kappa/q/r1", "zeta/z/e1", "zeta/secret/e2", "omega/p/b1", "kappa/hidden/r2"]
    # Alice cannot read zeta/secret: counted, not named.
    lin = _lineage(client, a, "kappa", "p", "ds:v0")
    assert _consumers(lin) == [c for c in everyone if c != "zeta/secret/e2"]
    assert (lin["total"], lin["hidden_consumers"]) == (4, 1)
    # Eve cannot read kappa/hidden, but sees her own secret project.
    lin = _lineage(client, eve, "kappa", "p", "ds:v0")
    assert _consumers(lin) == [c for c in everyone if c != "kappa/hidden/r2"]
    assert (lin["total"], lin["hidden_consumers"]) == (4, 1)
    # An instance admin reads every project.
    lin = _lineage(client, ADMIN, "kappa", "p", "ds:v0")
    assert (_consumers(lin), lin["hidden_consumers"]) == (everyone, 0)
    # Pages over what the caller may see.
    lin = _lineage(client, a, "kappa", "p", "ds:v0", limit=2, offset=1)
    assert (_consumers(lin), lin["total"]) == (["zeta/z/e1", "omega/p/b1"], 4)
    # A deleted project's runs are neither named nor counted (until it is restored).
    assert client.delete(f"{API}/teams/zeta/projects/z", headers=eve).status_code == 200
    lin = _lineage(client, a, "kappa", "p", "ds:v0")
    assert (len(lin["consumers"]), lin["total"], lin["hidden_consumers"]) == (3, 3, 1)


def test_run_artifacts_hide_versions_the_caller_may_not_read(
        client: TestClient, world: dict[str, H]) -> None:
    a, bob, eve = world["alice"], world["bob"], world["eve"]
    _log(client, a, "kappa", "p", "ds", {"f": b"kappa"})
    _run(client, bob, "omega", "p", "b1")
    _log(client, bob, "omega", "p", "m", {"f": b"omega"}, run="b1")
    assert _use(client, bob, "omega", "p", "b1", "kappa/p/ds").status_code == 200
    mine = _run_artifacts(client, bob, "omega", "p", "b1")
    assert (_names(mine["logged"]), _names(mine["used"]), mine["hidden"]) == \
        (["omega/p/m:v0"], ["kappa/p/ds:v0"], 0)
    # Eve may read omega's run (instance-visible project) and kappa's artifact, but not the
    # version in omega's own bucket.
    theirs = _run_artifacts(client, eve, "omega", "p", "b1")
    assert (theirs["logged"], _names(theirs["used"]), theirs["hidden"]) == \
        ([], ["kappa/p/ds:v0"], 1)
    assert_error(client.get(f"{_arts('omega', 'p')}/m/versions/v0/lineage", headers=eve),
                 403, "permission_denied")
    assert_error(client.get(f"{_runs('omega', 'p')}/nosuch/artifacts", headers=bob),
                 404, "not_found")


def test_resumed_upload_takes_the_latest_calls_run(client: TestClient,
                                                   world: dict[str, H]) -> None:
    a = world["alice"]
    _run(client, a, "kappa", "p", "r1")
    _run(client, a, "kappa", "p", "r2")
    body: dict[str, Any] = {"type": "dataset", "run_id": "r1", "entries": [
        {"path": "f", "size": 1, "sha256": hashlib.sha256(b"f").hexdigest()}]}
    first = client.post(f"{_arts('kappa', 'p')}/ds/versions", headers=a, json=body).json()
    assert first["version"]["producing_run"] == "r1"
    pending = first["version"]["id"]
    body.update(run_id="r2", resume={"pending_id": pending})
    again = client.post(f"{_arts('kappa', 'p')}/ds/versions", headers=a, json=body).json()
    assert (again["resumed"], again["version"]["id"]) == (True, pending)
    assert again["version"]["producing_run"] == "r2"
    u = again["uploads"][0]
    assert client.put(u["url"], content=b"f", headers=u["headers"]).status_code == 200
    r = client.post(f"{_arts('kappa', 'p')}/ds/pending/{pending}/commit", headers=a, json={})
    assert r.status_code == 200 and r.json()["producing_run"] == "r2"


def test_soft_deleted_runs_drop_out_of_lineage(client: TestClient, world: dict[str, H],
                                               ctx: AppContext) -> None:
    a = world["alice"]
    _run(client, a, "kappa", "p", "maker")
    _run(client, a, "kappa", "q", "user")
    _log(client, a, "kappa", "p", "ds", {"f": b"x"}, run="maker")
    assert _use(client, a, "kappa", "q", "user", "kappa/p/ds").status_code == 200
    with ctx.db.session() as db:  # runs have no delete route yet: soft-delete the rows
        db.execute(update(Run).values(deleted_at=datetime.now(UTC)))
    lin = _lineage(client, a, "kappa", "p", "ds:v0")
    assert (lin["producer"], lin["consumers"], lin["total"], lin["hidden_consumers"]) == \
        (None, [], 0, 0)
    got = client.get(f"{_arts('kappa', 'p')}/ds/versions/v0", headers=a).json()["version"]
    assert got["producing_run"] is None
    # The rows stay: restored, the lineage is back.
    with ctx.db.session() as db:
        db.execute(update(Run).values(deleted_at=None))
    lin = _lineage(client, a, "kappa", "p", "ds:v0")
    assert (lin["producer"]["run_id"], _consumers(lin)) == ("maker", ["kappa/q/user"])
