"""Authentication: API keys, password login, web sessions with CSRF, who may create users."""

from __future__ import annotations

import dataclasses
from http.cookies import SimpleCookie

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from satchel.config import Settings
from satchel.db.models import User
from satchel.server.app import create_app
from satchel.server.deps import AppContext
from tests.conftest import ADMIN_KEY, ADMIN_PASSWORD, Users
from tests.errorshape import assert_error

API = "/api/v1"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def disable(ctx: AppContext, username: str) -> None:
    # No API disables users yet; an admin would do it in the database.
    with ctx.db.session() as s:
        s.execute(update(User).where(User.username == username).values(disabled=True))


def test_new_key_works_and_is_never_shown_again(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    r = client.post(f"{API}/api-keys", json={"name": "laptop"}, headers=admin_headers)
    assert r.status_code == 201, r.text
    key = r.json()["api_key"]
    assert key.startswith("sk_")
    me = client.get(f"{API}/me", headers=bearer(key))
    assert me.status_code == 200 and me.json()["username"] == "admin"

    listing = client.get(f"{API}/api-keys", headers=bearer(key))
    assert listing.status_code == 200
    shown = {k["name"]: k for k in listing.json()}
    # The prefix identifies the key; the key itself is never returned again.
    assert shown["laptop"]["prefix"] == key.split("_")[1]
    assert shown["bootstrap"]["prefix"] == ADMIN_KEY.split("_")[1]
    assert key not in listing.text and ADMIN_KEY not in listing.text
    assert key.split("_")[2] not in listing.text
    assert shown["laptop"]["last_used_at"] is not None
    for body in (me.text, client.get(f"{API}/users", headers=admin_headers).text):
        assert key not in body and ADMIN_KEY not in body


def test_revoked_key_is_refused_on_the_next_request(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    r = client.post(f"{API}/api-keys", json={"name": "ci"}, headers=admin_headers)
    key, key_id = r.json()["api_key"], r.json()["key"]["id"]
    assert client.get(f"{API}/me", headers=bearer(key)).status_code == 200

    r = client.delete(f"{API}/api-keys/{key_id}", headers=bearer(key))
    assert r.status_code == 200, r.text
    assert r.json()["revoked_at"] is not None

    err = assert_error(client.get(f"{API}/me", headers=bearer(key)), 401, "not_authenticated")
    assert "revoked" in err["message"]
    err = assert_error(client.get(f"{API}/me", headers={"X-API-Key": key}), 401,
                       "not_authenticated")
    # Other keys of the same user keep working, and the listing shows the revocation.
    listing = client.get(f"{API}/api-keys", headers=admin_headers).json()
    assert {k["name"]: k["revoked_at"] is not None for k in listing} == {
        "bootstrap": False, "ci": True
    }


@pytest.mark.parametrize("header", [
    {"Authorization": "Bearer not-a-key"},
    {"Authorization": "Bearer sk_short_abc"},
    {"Authorization": f"Bearer {ADMIN_KEY}x" + "!"},
    {"X-API-Key": "sk_abcdefgh_" + "!" * 40},
])
def test_malformed_key_is_401(client: TestClient, header: dict[str, str]) -> None:
    err = assert_error(client.get(f"{API}/me", headers=header), 401, "not_authenticated")
    assert "malformed" in err["message"]


def test_well_formed_but_unknown_key_is_401(client: TestClient) -> None:
    # Same prefix as a real key, different secret.
    forged = ADMIN_KEY[:12] + "A" * 43
    err = assert_error(client.get(f"{API}/me", headers=bearer(forged)), 401, "not_authenticated")
    assert "unknown or revoked" in err["message"]


def test_a_user_cannot_revoke_someone_elses_key(
    client: TestClient, admin_headers: dict[str, str], users: Users
) -> None:
    carol = users.create("carol")
    admin_keys = client.get(f"{API}/api-keys", headers=admin_headers).json()
    assert_error(client.delete(f"{API}/api-keys/{admin_keys[0]['id']}", headers=carol), 404,
                 "not_found")
    assert client.get(f"{API}/me", headers=admin_headers).status_code == 200


def test_password_login_can_create_a_key(client: TestClient) -> None:
    r = client.post(f"{API}/auth/login", json={
        "username": "admin", "password": ADMIN_PASSWORD, "create_api_key": True,
        "key_name": "from-login",
    })
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["user"]["username"] == "admin" and body["csrf_token"] is None
    assert "satchel_session" not in r.cookies  # a key, not a web session
    key = body["api_key"]
    assert client.get(f"{API}/me", headers=bearer(key)).json()["username"] == "admin"
    names = [k["name"] for k in client.get(f"{API}/api-keys", headers=bearer(key)).json()]
    assert names == ["bootstrap", "from-login"]


def test_session_login_sets_a_protected_cookie_and_csrf_token(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    r = client.post(f"{API}/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["api_key"] is None
    csrf = body["csrf_token"]
    assert isinstance(csrf, str) and len(csrf) >= 32

    raw = r.headers["set-cookie"]
    morsel = SimpleCookie(raw)["satchel_session"]
    assert morsel.value and morsel.value != csrf
    assert morsel["httponly"] is True
    assert morsel["samesite"].lower() in {"lax", "strict"}
    assert morsel["path"] == "/"
    assert int(morsel["max-age"]) > 0
    # Served over plain http in this test, so not Secure (it is on an https base URL).
    assert not morsel["secure"]

    # The cookie alone authenticates safe requests.
    me = client.get(f"{API}/me")
    assert me.status_code == 200 and me.json()["username"] == "admin"
    # No API key was created for the session.
    assert [k["name"] for k in client.get(f"{API}/api-keys").json()] == ["bootstrap"]

    # Logging out ends the session on the server, not just in this browser.
    stolen = morsel.value
    assert client.post(f"{API}/auth/logout", headers={"X-CSRF-Token": csrf}).status_code == 204
    client.cookies.clear()
    client.cookies.set("satchel_session", stolen)
    assert_error(client.get(f"{API}/me"), 401, "not_authenticated")


def test_session_cookie_is_secure_behind_https(settings: Settings, ctx: AppContext) -> None:
    https = settings.model_copy(update={"base_url": "https://satchel.example.com"})
    app = create_app(https, context=dataclasses.replace(ctx, settings=https))
    with TestClient(app, base_url="https://satchel.example.com") as c:
        r = c.post(f"{API}/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD})
    assert r.status_code == 200, r.text
    morsel = SimpleCookie(r.headers["set-cookie"])["satchel_session"]
    assert morsel["secure"] is True and morsel["httponly"] is True


def test_cookie_post_needs_the_csrf_header(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    r = client.post(f"{API}/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD})
    csrf = r.json()["csrf_token"]

    err = assert_error(client.post(f"{API}/teams", json={"name": "kappa"}), 403, "csrf_failed")
    assert "X-CSRF-Token" in err["message"]
    assert_error(client.post(f"{API}/teams", json={"name": "kappa"},
                             headers={"X-CSRF-Token": csrf[:-1] + "x"}), 403, "csrf_failed")
    assert_error(client.delete(f"{API}/teams/kappa/members/admin"), 403, "csrf_failed")
    # Nothing was created.
    client.cookies.clear()
    assert client.get(f"{API}/teams", headers=admin_headers).json() == []

    r = client.post(f"{API}/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD})
    csrf = r.json()["csrf_token"]
    r = client.post(f"{API}/teams", json={"name": "kappa"}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 201, r.text
    client.cookies.clear()
    assert [t["name"] for t in client.get(f"{API}/teams", headers=admin_headers).json()] == [
        "kappa"
    ]


def test_csrf_token_of_one_session_does_not_work_for_another(client: TestClient) -> None:
    first = client.post(f"{API}/auth/login",
                        json={"username": "admin", "password": ADMIN_PASSWORD}).json()
    client.cookies.clear()
    client.post(f"{API}/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD})
    assert_error(client.post(f"{API}/teams", json={"name": "kappa"},
                             headers={"X-CSRF-Token": first["csrf_token"]}), 403, "csrf_failed")


def test_non_admin_cannot_create_or_list_users(
    client: TestClient, admin_headers: dict[str, str], users: Users
) -> None:
    carol = users.create("carol", password="carol-password-1")
    err = assert_error(client.post(f"{API}/users", json={"username": "mallory", "is_admin": True},
                                   headers=carol), 403, "permission_denied")
    assert "instance admins" in err["message"]
    assert_error(client.get(f"{API}/users", headers=carol), 403, "permission_denied")
    names = [u["username"] for u in client.get(f"{API}/users", headers=admin_headers).json()]
    assert names == ["admin", "carol"]
    # Logged in with a password (session) makes no difference.
    r = client.post(f"{API}/auth/login",
                    json={"username": "carol", "password": "carol-password-1"})
    assert r.status_code == 200, r.text
    assert_error(client.post(f"{API}/users", json={"username": "mallory"},
                             headers={"X-CSRF-Token": r.json()["csrf_token"]}),
                 403, "permission_denied")


def test_admin_can_create_an_admin(client: TestClient, admin_headers: dict[str, str]) -> None:
    r = client.post(f"{API}/users", json={"username": "root2", "is_admin": True,
                                          "create_api_key": True}, headers=admin_headers)
    assert r.status_code == 201, r.text
    key = r.json()["api_key"]
    assert client.get(f"{API}/users", headers=bearer(key)).status_code == 200


def test_wrong_password_and_unknown_user_get_the_same_answer(
    client: TestClient, users: Users
) -> None:
    users.create("carol", password="carol-password-1")
    wrong = client.post(f"{API}/auth/login",
                        json={"username": "carol", "password": "not-carols-password"})
    unknown = client.post(f"{API}/auth/login",
                          json={"username": "nobody", "password": "not-carols-password"})
    no_password = client.post(f"{API}/auth/login",
                              json={"username": "admin", "password": "carol-password-1"})
    errors = [assert_error(r, 401, "not_authenticated") for r in (wrong, unknown, no_password)]
    assert len({e["message"] for e in errors}) == 1
    assert len({repr(e["details"]) for e in errors}) == 1
    assert "satchel_session" not in client.cookies


def test_user_without_password_cannot_log_in(client: TestClient, users: Users) -> None:
    users.create("robot")  # API key only
    assert_error(client.post(f"{API}/auth/login", json={"username": "robot", "password": ""}),
                 422, "validation_failed")
    # Not even with the text of the dummy hash used to make unknown users cost the same.
    for password in ("x" * 8, "satchel-timing-equaliser"):
        r = client.post(f"{API}/auth/login", json={"username": "robot", "password": password})
        assert_error(r, 401, "not_authenticated")


def test_disabled_user_cannot_log_in_or_use_keys_or_sessions(
    client: TestClient, ctx: AppContext, users: Users
) -> None:
    carol = users.create("carol", password="carol-password-1")
    login = client.post(f"{API}/auth/login",
                        json={"username": "carol", "password": "carol-password-1"})
    assert login.status_code == 200
    session = client.cookies.get("satchel_session")
    client.cookies.clear()

    disable(ctx, "carol")

    wrong = assert_error(client.post(f"{API}/auth/login",
                                     json={"username": "carol", "password": "carol-password-1"}),
                         401, "not_authenticated")
    unknown = assert_error(client.post(f"{API}/auth/login",
                                       json={"username": "nobody", "password": "whatever-1"}),
                           401, "not_authenticated")
    # A disabled account is not distinguishable from a wrong password at login.
    assert wrong["message"] == unknown["message"]
    assert_error(client.get(f"{API}/me", headers=carol), 401, "not_authenticated")
    assert session
    client.cookies.set("satchel_session", session)
    assert_error(client.get(f"{API}/me"), 401, "not_authenticated")
