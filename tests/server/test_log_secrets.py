"""No password, API key or session token reaches a log record, even at DEBUG (in-process).

Every logger is captured at DEBUG (SQLAlchemy's statement log included) while a session logs
in, uses keys, and provokes failures. Secrets must not reach a log call at all: the scrubbing
filter in satchel.logs is only the second line of defence, so it is not installed on the
capturing handler here except in the test that exercises it. (tests/test_secrets_in_logs.py
does the same against a real server process.)
"""

from __future__ import annotations

import io
import logging
import re
import secrets
import sys
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from satchel.config import Settings
from satchel.logs import configure_logging
from satchel.server.app import create_app
from satchel.server.deps import AppContext
from satchel.services import teams as teams_service
from tests.conftest import ADMIN_KEY, ADMIN_PASSWORD
from tests.errorshape import assert_error

API = "/api/v1"


def record_texts(records: list[logging.LogRecord]) -> Iterator[tuple[str, str]]:
    """Everything a handler could write for each record: message, traceback, extra fields."""
    fmt = logging.Formatter()
    for r in records:
        yield r.name, r.getMessage()
        if r.exc_info:
            yield r.name, fmt.formatException(r.exc_info)
        if r.exc_text:
            yield r.name, r.exc_text
        if r.stack_info:
            yield r.name, r.stack_info
        yield r.name, repr(r.__dict__)


def assert_no_secrets(records: list[logging.LogRecord], found: dict[str, str]) -> None:
    leaks = [
        f"{what} in a record of logger {name!r}"
        for name, text in record_texts(records)
        for what, value in found.items()
        if value in text
    ]
    assert not leaks, leaks


def session_token(set_cookie: str) -> str:
    m = re.search(r"satchel_session=([^;]+)", set_cookie)
    assert m, set_cookie
    return m.group(1)


def test_a_session_with_errors_logs_no_secret(
    client: TestClient, admin_headers: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    # Every logger at DEBUG: the root, and those that set their own level (SQLAlchemy sets
    # "sqlalchemy" to WARNING on import; at DEBUG it logs statements, parameters and rows).
    caplog.set_level(logging.DEBUG)
    for name in [*logging.root.manager.loggerDict, "sqlalchemy"]:
        if logging.getLogger(name).level != logging.NOTSET:
            caplog.set_level(logging.DEBUG, logger=name)
    wrong = "Wrong" + secrets.token_hex(12)
    found = {"admin password": ADMIN_PASSWORD, "admin API key": ADMIN_KEY,
             "wrong password": wrong}

    # Password login: a web session, then a new API key.
    r = client.post(f"{API}/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD})
    assert r.status_code == 200, r.text
    found["session cookie"] = session_token(r.headers["set-cookie"])
    csrf = r.json()["csrf_token"]
    assert client.post(f"{API}/teams", json={"name": "kappa"},
                       headers={"X-CSRF-Token": csrf}).status_code == 201
    client.cookies.clear()
    r = client.post(f"{API}/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD,
                                               "create_api_key": True})
    found["key from login"] = login_key = r.json()["api_key"]

    # Keys in use, a new key, and a revoked key used again.
    assert client.get(f"{API}/me", headers=admin_headers).status_code == 200
    assert client.get(f"{API}/me", headers={"X-API-Key": login_key}).status_code == 200
    r = client.post(f"{API}/api-keys", json={"name": "ci"},
                    headers={"Authorization": f"Bearer {login_key}"})
    found["new key"] = new_key = r.json()["api_key"]
    new = {"Authorization": f"Bearer {new_key}"}
    assert client.get(f"{API}/api-keys", headers=new).status_code == 200
    r = client.post(f"{API}/users", json={"username": "carol", "password": ADMIN_PASSWORD[::-1],
                                          "create_api_key": True}, headers=new)
    assert r.status_code == 201, r.text
    found["carol's password"] = ADMIN_PASSWORD[::-1]
    found["carol's key"] = r.json()["api_key"]
    key_id = next(k["id"] for k in client.get(f"{API}/api-keys", headers=new).json()
                  if k["name"] == "ci")
    assert client.delete(f"{API}/api-keys/{key_id}", headers=new).status_code == 200
    assert_error(client.get(f"{API}/me", headers=new), 401, "not_authenticated")

    # Failures: wrong password, unknown user with the real password, malformed keys.
    assert_error(client.post(f"{API}/auth/login", json={"username": "admin", "password": wrong}),
                 401, "not_authenticated")
    assert_error(client.post(f"{API}/auth/login",
                             json={"username": "nobody", "password": ADMIN_PASSWORD}),
                 401, "not_authenticated")
    assert_error(client.get(f"{API}/me", headers={"Authorization": f"Bearer {ADMIN_KEY}!"}),
                 401, "not_authenticated")
    assert_error(client.get(f"{API}/me", headers={"Authorization": f"Bearer {ADMIN_PASSWORD}"}),
                 401, "not_authenticated")

    # Validation errors whose input holds a password.
    assert_error(client.post(f"{API}/auth/login", content=(
        f'{{"username": "admin", "password": "{ADMIN_PASSWORD}"').encode(),
        headers={"content-type": "application/json"}), 422, "validation_failed")
    assert_error(client.post(f"{API}/auth/login", json={
        "username": "admin", "password": ADMIN_PASSWORD, "remember": ADMIN_PASSWORD}),
        422, "validation_failed")
    assert_error(client.post(f"{API}/users", json={"username": "Not OK", "password": wrong},
                             headers=admin_headers), 400, "invalid_input")
    assert_error(client.post(f"{API}/users", json={"username": "dave", "password": wrong * 50},
                             headers=admin_headers), 422, "validation_failed")

    # The web login form, wrong and right.
    page = client.get("/login")
    form_csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert form_csrf, page.text
    r = client.post("/login", data={"username": "admin", "password": wrong,
                                    "csrf": form_csrf.group(1)})
    assert r.status_code == 401
    page = client.get("/login")
    form_csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert form_csrf
    r = client.post("/login", data={"username": "admin", "password": ADMIN_PASSWORD,
                                    "csrf": form_csrf.group(1)}, follow_redirects=False)
    assert r.status_code == 303, r.text
    found["web session cookie"] = session_token(r.headers["set-cookie"])

    # The capture really saw the traffic (else "no leak" would prove nothing).
    names = {rec.name for rec in caplog.records}
    assert "satchel.access" in names
    assert any(n.startswith("sqlalchemy.engine") for n in names), names
    assert_no_secrets(caplog.records, found)


@pytest.fixture
def server_log(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """The server's own logging set-up (satchel.logs.configure_logging), writing to a buffer
    in place of stderr."""
    root = logging.getLogger()
    level, access = root.level, logging.getLogger("uvicorn.access").disabled
    buf = io.StringIO()
    monkeypatch.setattr(sys, "stderr", buf)
    configure_logging("DEBUG")
    yield buf
    for h in list(root.handlers):
        if getattr(h, "_satchel", False):
            root.removeHandler(h)
    root.setLevel(level)
    logging.getLogger("uvicorn.access").disabled = access


def test_unexpected_error_text_is_scrubbed_in_the_server_log(
    settings: Settings, ctx: AppContext, admin_headers: dict[str, str],
    monkeypatch: pytest.MonkeyPatch, server_log: io.StringIO,
) -> None:
    """Second line of defence: a 500 whose exception quotes credentials is logged scrubbed."""

    def leaky(*_: object) -> None:
        # What a careless library error might say about the request it was handling.
        raise RuntimeError(f"upstream refused Authorization: Bearer {ADMIN_KEY} "
                           f"with password={ADMIN_PASSWORD}")

    monkeypatch.setattr(teams_service, "list_teams", leaky)
    with TestClient(create_app(settings, context=ctx), raise_server_exceptions=False) as c:
        resp = c.get(f"{API}/teams", headers=admin_headers)
    err = assert_error(resp, 500, "internal")
    out = server_log.getvalue()
    assert ADMIN_KEY not in resp.text and ADMIN_PASSWORD not in resp.text
    # The traceback is in the log, under the request id the user was given ...
    assert f"[{err['request_id']}] unexpected error" in out
    assert "RuntimeError: upstream refused" in out
    # ... with the credentials it quoted scrubbed.
    assert ADMIN_KEY not in out and ADMIN_PASSWORD not in out
    assert "Authorization: Bearer ****" in out and "password=****" in out
