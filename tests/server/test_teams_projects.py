from __future__ import annotations

from fastapi.testclient import TestClient

from tests.conftest import Users


def test_create_team_and_project(client: TestClient, admin_headers: dict[str, str]) -> None:
    r = client.post("/api/v1/teams", json={"name": "kappa"}, headers=admin_headers)
    assert r.status_code == 201, r.text
    assert r.json()["members"] == [{"username": "admin", "role": "admin"}]
    r = client.post("/api/v1/teams/kappa/projects", json={"name": "demo"}, headers=admin_headers)
    assert r.status_code == 201, r.text
    assert r.json()["visibility"] == "instance"
    r = client.get("/api/v1/projects", headers=admin_headers)
    assert [(p["team"], p["name"]) for p in r.json()] == [("kappa", "demo")]


def test_non_member_cannot_read_team_visible_project(
    client: TestClient, admin_headers: dict[str, str], users: Users
) -> None:
    alice = users.create("alice")
    bob = users.create("bob")
    assert client.post("/api/v1/teams", json={"name": "omega"}, headers=alice).status_code == 201
    r = client.post("/api/v1/teams/omega/projects", json={"name": "secret", "visibility": "team"},
                    headers=alice)
    assert r.status_code == 201
    r = client.post("/api/v1/teams/omega/projects", json={"name": "open"}, headers=alice)
    assert r.status_code == 201

    r = client.get("/api/v1/teams/omega/projects/secret", headers=bob)
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found"
    assert [p["name"] for p in client.get("/api/v1/projects", headers=bob).json()] == ["open"]
    assert client.get("/api/v1/teams/omega/projects/open", headers=bob).status_code == 200

    # Once bob joins as a viewer he can read it; removed again, he cannot.
    r = client.post("/api/v1/teams/omega/members", json={"username": "bob", "role": "viewer"},
                    headers=alice)
    assert r.status_code == 200, r.text
    assert client.get("/api/v1/teams/omega/projects/secret", headers=bob).status_code == 200
    # A viewer cannot create projects.
    r = client.post("/api/v1/teams/omega/projects", json={"name": "x"}, headers=bob)
    assert r.status_code == 403
    assert r.json()["error"]["details"]["needed_role"] == "member"
    assert client.delete("/api/v1/teams/omega/members/bob", headers=alice).status_code == 200
    assert client.get("/api/v1/teams/omega/projects/secret", headers=bob).status_code == 404
