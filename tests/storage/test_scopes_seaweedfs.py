"""The seed scenario end to end on two real SeaweedFS buckets (Scopes issue acceptance).

Team Kappa uses the instance bucket (``bucket-a``), team Omega its own (``bucket-b``); each
bucket's credentials reach that bucket only (SeaweedFS identities scoped with ``Read:bucket-a``
etc.), the way two customers' keys would. Every URL comes from the Satchel API; every byte goes
straight to SeaweedFS.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from satchel.config import Deployment, Settings
from satchel.storage.doctor import DoctorOptions, run_doctor
from satchel.storage.registry import StoreContext
from tests.conftest import Users
from tests.storage.servers.seaweedfs import SeaweedFS

API = "/api/v1"
ORIGIN = "http://testserver"  # the TestClient app's public URL: the CORS origin to allow


def _cors(server: SeaweedFS, bucket: str) -> None:
    server.client().put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": [{
        "AllowedOrigins": [ORIGIN], "AllowedMethods": ["GET", "PUT", "HEAD"],
        "AllowedHeaders": ["*"], "ExposeHeaders": ["ETag"], "MaxAgeSeconds": 600}]})


def _keys(server: SeaweedFS, bucket: str) -> set[str]:
    pages = server.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return {o["Key"] for page in pages for o in page.get("Contents", [])}


@pytest.fixture
def paths() -> dict[str, str]:
    token = secrets.token_hex(4)
    return {"instance": f"inst-{token}", "omega": f"omega-{token}"}


@pytest.fixture
def settings(settings: Settings, seaweedfs: SeaweedFS, paths: dict[str, str]) -> Settings:
    for bucket in ("bucket-a", "bucket-b"):
        _cors(seaweedfs, bucket)
    # The allow-list entry holds Omega's credentials (scoped to bucket-b only).
    return settings.model_copy(update={
        "supported_file_stores": seaweedfs.address("bucket-b", "bucket-b")})


def _put(client: TestClient, headers: dict[str, str], team: str, project: str, path: str,
         data: bytes) -> None:
    r = client.post(f"{API}/teams/{team}/projects/{project}/files/urls", headers=headers,
                    json={"files": [{"path": path, "method": "PUT", "size": len(data),
                                     "sha256": hashlib.sha256(data).hexdigest()}]})
    assert r.status_code == 200, r.text
    (url,) = r.json()
    assert "X-Amz-Signature" in url["url"] and url["url"].startswith("http://127.0.0.1")
    resp = httpx.put(url["url"], content=data, headers=url["headers"])
    assert resp.status_code == 200, resp.text


@pytest.fixture
def seeded(client: TestClient, users: Users, admin_headers: dict[str, str],
           seaweedfs: SeaweedFS, paths: dict[str, str]) -> Iterator[dict[str, Any]]:
    r = client.put(f"{API}/admin/storage", headers=admin_headers, json={
        "address": seaweedfs.address("bucket-a", "bucket-a"), "path": paths["instance"]})
    assert r.status_code == 200, r.text
    kay, olga = users.create("kay"), users.create("olga")
    before_b = _keys(seaweedfs, "bucket-b")
    assert client.post(f"{API}/teams", json={"name": "kappa"}, headers=kay).status_code == 201
    r = client.post(f"{API}/teams", headers=olga, json={
        "name": "omega", "storage": {"type": "external", "bucket": "bucket-b",
                                     "path": paths["omega"]}})
    assert r.status_code == 201, r.text
    assert "****" in r.json()["storage"]
    for headers, team in ((kay, "kappa"), (olga, "omega")):
        r = client.post(f"{API}/teams/{team}/projects", json={"name": "demo"}, headers=headers)
        assert r.status_code == 201
    _put(client, kay, "kappa", "demo", "data/train.csv", b"kappa,1\n")
    _put(client, olga, "omega", "demo", "model.bin", b"omega weights")
    yield {"kay": kay, "olga": olga, "before_b": before_b}


def _get(client: TestClient, headers: dict[str, str], team: str, path: str) -> httpx.Response:
    return client.post(f"{API}/teams/{team}/projects/demo/files/urls", headers=headers,
                       json={"files": [{"path": path, "method": "GET"}]})


def test_credentials_really_are_scoped_to_one_bucket(seaweedfs: SeaweedFS) -> None:
    import botocore.exceptions

    with pytest.raises(botocore.exceptions.ClientError):
        seaweedfs.client("bucket-a").list_objects_v2(Bucket="bucket-b")
    seaweedfs.client("bucket-a").list_objects_v2(Bucket="bucket-a")


def test_seed_scenario(client: TestClient, seeded: dict[str, Any], seaweedfs: SeaweedFS,
                       paths: dict[str, str], admin_headers: dict[str, str]) -> None:
    kay, olga = seeded["kay"], seeded["olga"]
    # A member of Omega downloads a file from Kappa's instance-visible project.
    r = _get(client, olga, "kappa", "data/train.csv")
    assert r.status_code == 200
    assert httpx.get(r.json()[0]["url"]).content == b"kappa,1\n"
    # A member of Kappa gets 403 for Omega's file, and no URL is issued.
    r = _get(client, kay, "omega", "model.bin")
    assert r.status_code == 403
    assert "url" not in r.text and "X-Amz" not in r.text
    # Omega reads its own file.
    r = _get(client, olga, "omega", "model.bin")
    assert httpx.get(r.json()[0]["url"]).content == b"omega weights"

    # Omega's bucket holds only Omega's objects, all under Omega's path.
    new_b = _keys(seaweedfs, "bucket-b") - seeded["before_b"]
    assert new_b == {f"{paths['omega']}/teams/omega/projects/demo/files/model.bin"}
    assert {k for k in _keys(seaweedfs, "bucket-b") if k.startswith(paths["omega"] + "/")} \
        == new_b
    # Kappa's object is in the instance bucket, under the instance path and Kappa's prefix.
    assert f"{paths['instance']}/teams/kappa/projects/demo/files/data/train.csv" in \
        _keys(seaweedfs, "bucket-a")
    assert not any(k.startswith(paths["omega"]) for k in _keys(seaweedfs, "bucket-a"))

    # The audit log recorded who got which URL.
    events = client.get(f"{API}/admin/audit", params={"team": "omega"},
                        headers=admin_headers).json()
    assert {(e["username"], e["method"]) for e in events} == {("olga", "PUT"), ("olga", "GET")}
    assert all(e["object_key"].startswith(paths["omega"] + "/teams/omega/") for e in events)


def test_removed_member_and_team_visibility(client: TestClient, seeded: dict[str, Any],
                                            users: Users) -> None:
    olga = seeded["olga"]
    ivan = users.create("ivan")
    client.post(f"{API}/teams/omega/members", json={"username": "ivan", "role": "viewer"},
                headers=olga)
    r = _get(client, ivan, "omega", "model.bin")
    assert r.status_code == 200
    assert httpx.get(r.json()[0]["url"]).content == b"omega weights"
    client.delete(f"{API}/teams/omega/members/ivan", headers=olga)
    assert _get(client, ivan, "omega", "model.bin").status_code == 403

    # A team-visible project in the instance bucket is invisible to non-members.
    kay = seeded["kay"]
    client.post(f"{API}/teams/kappa/projects", json={"name": "secret", "visibility": "team"},
                headers=kay)
    r = client.post(f"{API}/teams/kappa/projects/secret/files/urls", headers=ivan,
                    json={"files": [{"path": "x", "method": "GET"}]})
    assert r.status_code == 404
    assert "secret" not in [p["name"] for p in
                            client.get(f"{API}/projects", headers=ivan).json()]


def test_team_storage_cannot_change(client: TestClient, seeded: dict[str, Any]) -> None:
    r = client.patch(f"{API}/teams/omega", headers=seeded["olga"], json={
        "storage": {"type": "external", "bucket": "bucket-b", "path": "elsewhere"}})
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "team_storage_immutable"


class TestMultiTenant:
    @pytest.fixture
    def settings(self, settings: Settings, seaweedfs: SeaweedFS) -> Settings:
        prefix = f"mt{secrets.token_hex(3)}"
        return settings.model_copy(update={
            "deployment": Deployment.MULTI_TENANT,
            "bucket_factory": SecretStr(seaweedfs.address(prefix)),
        })

    def test_create_a_new_bucket_for_me(self, client: TestClient, users: Users,
                                        settings: Settings, seaweedfs: SeaweedFS) -> None:
        a = users.create("alice")
        r = client.post(f"{API}/teams", headers=a, json={
            "name": "delta", "storage": {"type": "external", "create_bucket": True,
                                         "path": "satchel"}})
        assert r.status_code == 201, r.text
        assert settings.bucket_factory is not None
        bucket = settings.bucket_factory.get_secret_value().split("/")[-1].split("?")[0] + \
            "-delta"
        assert bucket in {b["Name"] for b in seaweedfs.client().list_buckets()["Buckets"]}
        # The auto-created bucket has the CORS Satchel needs, as the doctor confirms.
        report = run_doctor(seaweedfs.address(bucket), StoreContext(ORIGIN, b"x" * 32),
                            DoctorOptions(origin=ORIGIN, path="satchel"))
        assert report.ok, report.findings
        assert "cors" in report.passed
        # Files of the new team land in that bucket under the path.
        client.post(f"{API}/teams/delta/projects", json={"name": "p"}, headers=a)
        _put(client, a, "delta", "p", "f.txt", b"delta")
        assert "satchel/teams/delta/projects/p/files/f.txt" in _keys(seaweedfs, bucket)

    def test_azure_refused(self, client: TestClient, users: Users) -> None:
        a = users.create("alice")
        r = client.post(f"{API}/teams", headers=a, json={
            "name": "azteam", "storage": {"type": "external",
                                          "bucket": "az://:a2V5@acct/container"}})
        assert r.status_code == 400
        assert r.json()["error"]["code"] == "not_available_in_deployment"
