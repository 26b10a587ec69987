"""Scopes on local buckets: who gets URLs, team storage fixed at creation, the audit log.

The same rules run against two real SeaweedFS buckets in tests/storage/test_scopes_seaweedfs.py;
local buckets (allow-listed file:// directories) keep these rule tests fast.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from satchel.config import Settings
from tests.conftest import Users

API = "/api/v1"


@pytest.fixture
def settings(settings: Settings, tmp_path: Path) -> Settings:
    allowed = f"file://{tmp_path / 'omega-bucket'},file://{tmp_path / 'shared-bucket'}"
    return settings.model_copy(update={"supported_file_stores": allowed})


def _put(client: TestClient, headers: dict[str, str], team: str, project: str, path: str,
         data: bytes) -> None:
    r = client.post(f"{API}/teams/{team}/projects/{project}/files/urls", headers=headers,
                    json={"files": [{"path": path, "method": "PUT", "size": len(data),
                                     "sha256": hashlib.sha256(data).hexdigest()}]})
    assert r.status_code == 200, r.text
    (url,) = r.json()
    assert client.put(url["url"], content=data, headers=url["headers"]).status_code == 200


def _get_url(client: TestClient, headers: dict[str, str], team: str, project: str, path: str):
    return client.post(f"{API}/teams/{team}/projects/{project}/files/urls", headers=headers,
                       json={"files": [{"path": path, "method": "GET"}]})


def test_kappa_omega_isolation_on_local_buckets(
    client: TestClient, users: Users, tmp_path: Path, admin_headers: dict[str, str]
) -> None:
    kappa_user = users.create("kay")
    omega_user = users.create("olga")
    assert client.post(f"{API}/teams", json={"name": "kappa"}, headers=kappa_user
                       ).status_code == 201
    r = client.post(f"{API}/teams", headers=omega_user, json={
        "name": "omega", "storage": {"type": "external",
                                     "bucket": f"file://{tmp_path / 'omega-bucket'}",
                                     "path": "satchel"}})
    assert r.status_code == 201, r.text
    assert r.json()["storage_type"] == "external"
    for headers, team in ((kappa_user, "kappa"), (omega_user, "omega")):
        assert client.post(f"{API}/teams/{team}/projects", json={"name": "demo"},
                           headers=headers).status_code == 201
    _put(client, kappa_user, "kappa", "demo", "weights.bin", b"kappa bytes")
    _put(client, omega_user, "omega", "demo", "weights.bin", b"omega bytes")

    # A member of Omega reads Kappa's instance-visible project.
    r = _get_url(client, omega_user, "kappa", "demo", "weights.bin")
    assert r.status_code == 200
    assert client.get(r.json()[0]["url"]).content == b"kappa bytes"
    # A member of Kappa gets 403 for Omega's file, and no URL is issued.
    r = _get_url(client, kappa_user, "omega", "demo", "weights.bin")
    assert r.status_code == 403
    assert r.json()["error"]["details"]["rule"] == "team_bucket_members_only"
    # Even an instance admin is not a member of Omega.
    assert _get_url(client, admin_headers, "omega", "demo", "weights.bin").status_code == 403

    # Omega's bucket holds only Omega's objects, all under its path.
    omega_files = sorted(p.relative_to(tmp_path / "omega-bucket").as_posix()
                         for p in (tmp_path / "omega-bucket").rglob("*")
                         if p.is_file() and ".satchel" not in p.parts)
    assert omega_files == ["satchel/teams/omega/projects/demo/files/weights.bin"]

    # Every URL issued is in the audit log with the user and method.
    events = client.get(f"{API}/admin/audit", params={"action": "presign"},
                        headers=admin_headers).json()
    seen = {(e["username"], e["team"], e["method"]) for e in events}
    assert {("kay", "kappa", "PUT"), ("olga", "omega", "PUT"), ("olga", "kappa", "GET")} <= seen
    assert ("kay", "omega", "GET") not in seen


def test_removed_member_loses_access_at_once(client: TestClient, users: Users, tmp_path: Path
                                             ) -> None:
    owner = users.create("owner")
    guest = users.create("guest")
    client.post(f"{API}/teams", headers=owner, json={
        "name": "omega", "storage": {"type": "external",
                                     "bucket": f"file://{tmp_path / 'omega-bucket'}"}})
    client.post(f"{API}/teams/omega/projects", json={"name": "p"}, headers=owner)
    _put(client, owner, "omega", "p", "f.txt", b"x")
    client.post(f"{API}/teams/omega/members", json={"username": "guest", "role": "viewer"},
                headers=owner)
    assert _get_url(client, guest, "omega", "p", "f.txt").status_code == 200
    # Viewers read but do not write.
    r = client.post(f"{API}/teams/omega/projects/p/files/urls", headers=guest,
                    json={"files": [{"path": "g.txt", "method": "PUT", "size": 1}]})
    assert r.status_code == 403
    client.delete(f"{API}/teams/omega/members/guest", headers=owner)
    assert _get_url(client, guest, "omega", "p", "f.txt").status_code == 403


def test_team_storage_is_immutable_and_claims_are_exclusive(
    client: TestClient, users: Users, tmp_path: Path
) -> None:
    a = users.create("alice")
    shared = f"file://{tmp_path / 'shared-bucket'}"
    assert client.post(f"{API}/teams", headers=a, json={
        "name": "one", "storage": {"type": "external", "bucket": shared, "path": "one"}}
    ).status_code == 201
    # Several teams may share a bucket under different paths...
    assert client.post(f"{API}/teams", headers=a, json={
        "name": "two", "storage": {"type": "external", "bucket": shared, "path": "two"}}
    ).status_code == 201
    # ...but not the same or an overlapping path.
    for path in ("one", "one/deeper", ""):
        r = client.post(f"{API}/teams", headers=a, json={
            "name": "three", "storage": {"type": "external", "bucket": shared, "path": path}})
        assert r.status_code == 409, r.text
        assert r.json()["error"]["code"] == "storage_already_claimed"
    r = client.patch(f"{API}/teams/one", headers=a,
                     json={"storage": {"type": "internal"}})
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "team_storage_immutable"
    assert client.get(f"{API}/teams/one", headers=a).json()["storage_path"] == "one"


def test_bucket_not_on_allow_list_is_refused(client: TestClient, users: Users, tmp_path: Path
                                             ) -> None:
    a = users.create("alice")
    r = client.post(f"{API}/teams", headers=a, json={
        "name": "rogue", "storage": {"type": "external", "bucket": f"file://{tmp_path / 'x'}"}})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "not_available_in_deployment"
    assert "allow-list" in r.json()["error"]["message"]
    assert client.get(f"{API}/teams/rogue", headers=a).status_code == 404


def test_instance_bucket_set_show_and_locked_once_written(
    client: TestClient, admin_headers: dict[str, str], users: Users, tmp_path: Path
) -> None:
    r = client.get(f"{API}/admin/storage", headers=admin_headers)
    assert r.status_code == 200 and r.json()["configured"] is False
    assert r.json()["organization_id"] and r.json()["customer_namespace"].startswith("satchel-")
    new_root = tmp_path / "instance-bucket"
    r = client.put(f"{API}/admin/storage", headers=admin_headers,
                   json={"address": f"file://{new_root}", "path": "prod"})
    assert r.status_code == 200, r.text
    assert r.json()["configured"] is True and r.json()["path"] == "prod"
    # A non-admin can neither see nor set it.
    ada = users.create("ada")
    assert client.get(f"{API}/admin/storage", headers=ada).status_code == 403
    # Files land under the new bucket's path, below the team prefix.
    client.post(f"{API}/teams", json={"name": "kappa"}, headers=ada)
    client.post(f"{API}/teams/kappa/projects", json={"name": "demo"}, headers=ada)
    _put(client, ada, "kappa", "demo", "a.txt", b"a")
    assert (new_root / "prod/teams/kappa/projects/demo/files/a.txt").read_bytes() == b"a"
    # Once a file was written the instance bucket cannot change.
    r = client.put(f"{API}/admin/storage", headers=admin_headers,
                   json={"address": f"file://{tmp_path / 'elsewhere'}"})
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "instance_storage_in_use"
    assert client.get(f"{API}/admin/storage", headers=admin_headers).json()["path"] == "prod"


def test_instance_bucket_doctor_errors_block_the_save(
    client: TestClient, admin_headers: dict[str, str], tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the bucket directory should be")
    r = client.put(f"{API}/admin/storage", headers=admin_headers,
                   json={"address": f"file://{blocker}"})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "bucket_check_failed"
    assert "cannot use" in r.json()["error"]["message"]
    assert client.get(f"{API}/admin/storage", headers=admin_headers).json()["configured"] is False


def test_audit_records_the_validated_request_id_not_raw_client_text(
    client: TestClient, users: Users, admin_headers: dict[str, str]
) -> None:
    kay = users.create("kay")
    client.post(f"{API}/teams", json={"name": "kappa"}, headers=kay)
    client.post(f"{API}/teams/kappa/projects", json={"name": "demo"}, headers=kay)
    for sent in ("good-request-id-0001", "bad id <script>\t"):
        r = client.post(f"{API}/teams/kappa/projects/demo/files/urls",
                        headers={**kay, "X-Request-ID": sent},
                        json={"files": [{"path": "a.txt", "method": "GET"}]})
        assert r.status_code == 200
    events = client.get(f"{API}/admin/audit", params={"team": "kappa"},
                        headers=admin_headers).json()
    ids = [e["request_id"] for e in events]
    assert "good-request-id-0001" in ids
    assert not any(i and "<script>" in i for i in ids)
    assert all(i for i in ids)  # the replacement id the middleware generated
