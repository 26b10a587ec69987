"""No secret ever reaches the server's output, even at DEBUG.

A real ``satchel server`` process runs with a seeded admin password and API key and
SATCHEL_LOG_LEVEL=DEBUG; everything it writes to stdout and stderr is captured. The test uses the
password (REST login, the web login form, the CLI prompt) and keys (API calls, the CLI), provokes
failures (wrong password, revoked key, validation errors whose input holds a password), stops the
server and then searches the whole capture for every secret that crossed the wire.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.cli.proc import (
    API_KEY_RE,
    ServerProcess,
    client_env,
    fresh_postgres_database,
    run_cli,
    satchel_server,
)

pytestmark = pytest.mark.slow

TEST_DB = os.environ.get("SATCHEL_TEST_DB", "sqlite")


def _token(prefix: str) -> str:
    # Letters and digits only: the same in JSON, form and URL encoding, so a leak in any of
    # those encodings is found by a plain substring search.
    return prefix + secrets.token_hex(16)


def _api_key() -> str:
    return f"sk_{secrets.token_hex(4)}_{secrets.token_hex(24)}"


@dataclass
class Secrets:
    admin_password: str = field(default_factory=lambda: _token("AdminPw"))
    admin_key: str = field(default_factory=_api_key)
    wrong_password: str = field(default_factory=lambda: _token("WrongPw"))
    carol_password: str = field(default_factory=lambda: _token("CarolPw"))
    short_password: str = field(default_factory=lambda: "Sh0" + secrets.token_hex(2))
    # Filled in as the server hands them out.
    issued: dict[str, str] = field(default_factory=dict)

    def all(self) -> dict[str, str]:
        return {
            "admin password": self.admin_password, "admin API key": self.admin_key,
            "wrong password": self.wrong_password, "carol's password": self.carol_password,
            "rejected short password": self.short_password, **self.issued,
        }


@dataclass
class Captured:
    server: ServerProcess
    secrets: Secrets
    output: str
    responses: list[httpx.Response]


def _csrf_field(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m is not None, html[:500]
    return m.group(1)


def _exercise_api(http: httpx.Client, s: Secrets, seen: list[httpx.Response]) -> None:
    def call(method: str, url: str, expect: int, **kw: object) -> httpx.Response:
        resp = http.request(method, url, **kw)  # type: ignore[arg-type]
        seen.append(resp)
        assert resp.status_code == expect, (method, url, resp.status_code, resp.text[:300])
        return resp

    admin = {"Authorization": f"Bearer {s.admin_key}"}

    # Password login that mints an API key, and one that starts a web session.
    out = call("POST", "/api/v1/auth/login", 200, json={
        "username": "admin", "password": s.admin_password, "create_api_key": True})
    s.issued["key from password login"] = out.json()["api_key"]
    out = call("POST", "/api/v1/auth/login", 200,
               json={"username": "admin", "password": s.admin_password})
    session = out.cookies["satchel_session"]
    csrf = out.json()["csrf_token"]
    s.issued["API session cookie"] = session
    s.issued["API session CSRF token"] = csrf
    cookie = {"Cookie": f"satchel_session={session}"}
    call("GET", "/api/v1/me", 200, headers=cookie)
    call("POST", "/api/v1/teams", 201, json={"name": "via-session"},
         headers={**cookie, "X-CSRF-Token": csrf})
    call("POST", "/api/v1/teams", 403, json={"name": "no-csrf"}, headers=cookie)
    call("POST", "/api/v1/auth/logout", 204, headers={**cookie, "X-CSRF-Token": csrf})

    # Many ordinary calls with the seeded key, in both header forms and (by mistake) the URL.
    call("GET", "/api/v1/me", 200, headers=admin)
    call("GET", "/api/v1/me", 200, headers={"X-Api-Key": s.admin_key})
    call("GET", "/api/v1/me", 200, headers=admin, params={"api_key": s.admin_key})
    call("GET", "/api/v1/teams", 200, headers=admin)
    call("POST", "/api/v1/teams", 201, json={"name": "kappa"}, headers=admin)
    call("POST", "/api/v1/teams/kappa/projects", 201, json={"name": "demo"}, headers=admin)
    call("GET", "/api/v1/projects", 200, headers=admin)
    call("GET", "/api/v1/teams/does-not-exist", 404, headers=admin)
    out = call("POST", "/api/v1/users", 201, headers=admin, json={
        "username": "carol", "password": s.carol_password, "create_api_key": True})
    s.issued["carol's API key"] = out.json()["api_key"]
    call("POST", "/api/v1/auth/login", 200, json={
        "username": "carol", "password": s.carol_password, "create_api_key": False})

    # Failures.
    call("POST", "/api/v1/auth/login", 401,
         json={"username": "admin", "password": s.wrong_password})
    call("POST", "/api/v1/auth/login", 401,
         json={"username": "nobody", "password": s.wrong_password, "create_api_key": True})
    call("GET", "/api/v1/me", 401, headers={"Authorization": f"Bearer {s.admin_password}"})
    out = call("POST", "/api/v1/api-keys", 201, json={"name": "to revoke"}, headers=admin)
    revoked = out.json()["api_key"]
    s.issued["revoked API key"] = revoked
    call("DELETE", f"/api/v1/api-keys/{out.json()['key']['id']}", 200, headers=admin)
    call("GET", "/api/v1/me", 401, headers={"Authorization": f"Bearer {revoked}"})
    call("GET", "/api/v1/teams", 401, headers={"X-Api-Key": revoked})
    # Validation errors whose input carries a password.
    call("POST", "/api/v1/auth/login", 422,
         json={"username": "admin", "password": s.admin_password, "unexpected": 1})
    call("POST", "/api/v1/auth/login", 422,
         json={"username": ["admin"], "password": s.admin_password})
    call("POST", "/api/v1/auth/login", 422,
         json={"username": "admin", "password": s.admin_password * 40})
    call("POST", "/api/v1/auth/login", 422,
         content=f'{{"username": "admin", "password": "{s.admin_password}"',
         headers={"Content-Type": "application/json"})
    call("POST", "/api/v1/users", 422, headers=admin,
         json={"username": "dave", "password": s.carol_password, "is_admin": "maybe"})
    call("POST", "/api/v1/users", 400, headers=admin,
         json={"username": "Dave!", "password": s.carol_password})
    call("POST", "/api/v1/users", 400, headers=admin,
         json={"username": "dave", "password": s.short_password})


def _exercise_web(http: httpx.Client, s: Secrets, seen: list[httpx.Response]) -> None:
    page = http.get("/login")
    assert page.status_code == 200
    resp = http.post("/login", data={"username": "admin", "password": s.wrong_password,
                                     "csrf": _csrf_field(page.text)})
    seen.append(resp)
    assert resp.status_code == 401

    page = http.get("/login")
    resp = http.post("/login", data={"username": "admin", "password": s.admin_password * 40,
                                     "csrf": _csrf_field(page.text)})
    seen.append(resp)
    assert resp.status_code == 422

    page = http.get("/login")
    resp = http.post("/login", data={"username": "admin", "password": s.admin_password,
                                     "csrf": _csrf_field(page.text)})
    seen.append(resp)
    assert resp.status_code == 303
    s.issued["web session cookie"] = resp.cookies["satchel_session"]
    home = http.get("/")
    assert home.status_code == 200
    assert "admin" in home.text
    s.issued["web session CSRF token"] = _csrf_field(home.text)


def _exercise_cli(server: ServerProcess, root: Path, s: Secrets) -> None:
    env = client_env(server, root / "cli-key")
    out = run_cli(["login", "--host", server.url, "--key", s.admin_key], env)
    assert out.returncode == 0, out.stderr
    for args in (["whoami"], ["team", "ls"], ["project", "ls", "--json"], ["api-key", "ls"]):
        out = run_cli(args, env)
        assert out.returncode == 0, (args, out.stderr)
    out = run_cli(["api-key", "create", "--name", "cli"], env)
    assert out.returncode == 0, out.stderr
    (printed,) = API_KEY_RE.findall(out.stdout)
    s.issued["key created by the CLI"] = printed

    env = client_env(server, root / "cli-password")
    out = run_cli(["login", "--host", server.url], env, stdin=f"admin\n{s.admin_password}\n")
    assert out.returncode == 0, out.stderr
    stored = json.loads((Path(env["SATCHEL_CONFIG_DIR"]) / "credentials.json").read_text())
    s.issued["key from CLI password login"] = stored["api_key"]
    out = run_cli(["login", "--host", server.url], env, stdin=f"admin\n{s.wrong_password}\n")
    assert out.returncode == 1


@pytest.fixture(scope="module")
def captured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Captured]:
    root = tmp_path_factory.mktemp("secrets")
    s = Secrets()
    seen: list[httpx.Response] = []
    with ExitStack() as stack:
        url = stack.enter_context(fresh_postgres_database()) if TEST_DB == "postgresql" \
            else None
        server = stack.enter_context(satchel_server(
            root, database_url=url, SATCHEL_ADMIN_PASSWORD=s.admin_password,
            SATCHEL_ADMIN_API_KEY=s.admin_key, SATCHEL_LOG_LEVEL="DEBUG",
        ))
        with httpx.Client(base_url=server.url, timeout=60) as http:
            _exercise_api(http, s, seen)
        with httpx.Client(base_url=server.url, timeout=60) as http:
            _exercise_web(http, s, seen)
        _exercise_cli(server, root, s)
        server.stop()
        yield Captured(server, s, server.output(), seen)


def test_the_server_output_was_really_captured(captured: Captured) -> None:
    # Guard against a vacuous pass: the capture holds the DEBUG log and the access log of the
    # requests above, including the failures.
    out = captured.output
    assert " DEBUG " in out
    assert "POST /api/v1/auth/login 200" in out
    assert "POST /api/v1/auth/login 401" in out
    assert "POST /api/v1/auth/login 422" in out
    assert "GET /api/v1/me 401" in out
    assert "POST /login 303" in out
    assert "Satchel listening on" in out
    assert len(captured.secrets.issued) >= 9
    assert all(API_KEY_RE.fullmatch(v) for k, v in captured.secrets.issued.items() if "key" in k)


def test_no_secret_appears_in_the_server_output(captured: Captured) -> None:
    out = captured.output
    for label, secret in captured.secrets.all().items():
        assert secret not in out, f"{label} leaked into the server output"
        if API_KEY_RE.fullmatch(secret):
            # The key's secret part, or a long piece of it, must not appear either.
            tail = secret.rsplit("_", 1)[1]
            assert tail[-16:] not in out, f"part of the {label} leaked into the server output"


def test_error_responses_do_not_echo_secrets(captured: Captured) -> None:
    failures = [r for r in captured.responses if r.status_code >= 400]
    assert len(failures) >= 10
    passwords = [captured.secrets.admin_password, captured.secrets.wrong_password,
                 captured.secrets.carol_password, captured.secrets.short_password]
    for resp in failures:
        for pw in passwords:
            assert pw not in resp.text, (resp.request.url.path, resp.status_code)
        if resp.headers.get("content-type", "").startswith("application/json"):
            assert set(resp.json()["error"]) >= {"code", "message", "details"}


def test_seeded_bootstrap_announces_the_admin_without_secrets(captured: Captured) -> None:
    startup = captured.server.startup
    assert "Created instance admin 'admin'." in startup
    assert "shown once" not in startup
    assert captured.secrets.admin_password not in startup
    assert captured.secrets.admin_key not in startup
    assert not re.search(r"^\s*(password|API key):", startup, re.M)
