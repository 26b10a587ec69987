"""Deployment modes enforce DESIGN §3's availability matrix (no network needed for these)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from satchel.config import Deployment, Settings
from tests.conftest import Users

API = "/api/v1"
AZ = "az://:a2V5a2V5a2V5@acct/container"


@pytest.fixture
def settings(settings: Settings, tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    mode = getattr(request, "param", Deployment.MULTI_TENANT)
    return settings.model_copy(update={
        "deployment": mode, "supported_file_stores": f"{AZ},file://{tmp_path / 'ok'}"})


def test_multi_tenant_refuses_azure_team_buckets(client: TestClient, users: Users) -> None:
    a = users.create("alice")
    r = client.post(f"{API}/teams", headers=a, json={
        "name": "omega", "storage": {"type": "external", "bucket": AZ}})
    assert r.status_code == 400
    body = r.json()["error"]
    assert body["code"] == "not_available_in_deployment"
    assert "Azure" in body["message"] and "a2V5" not in r.text
    assert client.get(f"{API}/teams/omega", headers=a).status_code == 404


def test_multi_tenant_refuses_local_team_buckets(client: TestClient, users: Users,
                                                 tmp_path: Path) -> None:
    a = users.create("alice")
    r = client.post(f"{API}/teams", headers=a, json={
        "name": "omega", "storage": {"type": "external", "bucket": f"file://{tmp_path / 'ok'}"}})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "not_available_in_deployment"


def test_multi_tenant_has_no_customer_instance_bucket(
    client: TestClient, admin_headers: dict[str, str], tmp_path: Path
) -> None:
    r = client.put(f"{API}/admin/storage", headers=admin_headers,
                   json={"address": f"file://{tmp_path / 'x'}"})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "not_available_in_deployment"


def test_multi_tenant_create_bucket_needs_a_factory(client: TestClient, users: Users) -> None:
    a = users.create("alice")
    r = client.post(f"{API}/teams", headers=a, json={
        "name": "omega", "storage": {"type": "external", "create_bucket": True}})
    assert r.status_code == 400
    assert "SATCHEL_BUCKET_FACTORY" in r.json()["error"]["message"]


@pytest.mark.parametrize("settings", [Deployment.SELF_MANAGED, Deployment.DEDICATED],
                         indirect=True)
def test_self_managed_and_dedicated_accept_allow_listed_buckets_only(
    client: TestClient, users: Users, tmp_path: Path
) -> None:
    a = users.create("alice")
    r = client.post(f"{API}/teams", headers=a, json={
        "name": "good", "storage": {"type": "external", "bucket": f"file://{tmp_path / 'ok'}"}})
    assert r.status_code == 201, r.text
    r = client.post(f"{API}/teams", headers=a, json={
        "name": "bad", "storage": {"type": "external", "bucket": f"file://{tmp_path / 'no'}"}})
    assert r.json()["error"]["code"] == "not_available_in_deployment"
    r = client.post(f"{API}/teams", headers=a, json={
        "name": "new", "storage": {"type": "external", "create_bucket": True}})
    assert r.json()["error"]["code"] == "not_available_in_deployment"
    assert "multi-tenant" in r.json()["error"]["message"]
