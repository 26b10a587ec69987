"""Web routes over real HTTP without a browser: what a browser would get, step by step."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
from sqlalchemy.orm import Session

from satchel.db.session import Database
from tests.conftest import ADMIN_KEY, ADMIN_PASSWORD
from tests.web.conftest import ADMIN_USER

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html
    return found.group(1)


def log_in(client: httpx.Client) -> str:
    """Log in through the form; returns the session's CSRF token from the home page."""
    token = csrf_of(client.get("/login").text)
    resp = client.post("/login", data={"username": ADMIN_USER, "password": ADMIN_PASSWORD,
                                       "csrf": token})
    assert resp.status_code == 303 and resp.headers["location"] == "/"
    home = client.get("/")
    assert home.status_code == 200, home.headers.get("location")
    return csrf_of(home.text)


@pytest.fixture
def slow_commits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hold every commit back a little, as a busy database would.

    The browser follows a redirect at once; if the server answered before committing, the next
    page would be rendered from the old state.
    """
    original = Database.session

    @contextmanager
    def slow(self: Database) -> Iterator[Session]:
        with original(self) as session:
            yield session
            time.sleep(0.3)  # widens a race window; nothing asserts on time

    monkeypatch.setattr(Database, "session", slow)


@pytest.mark.usefixtures("slow_commits")
def test_each_redirect_lands_on_the_committed_state(live_url: str) -> None:
    with httpx.Client(base_url=live_url) as client:
        csrf = log_in(client)  # the home page right after the login redirect is logged in

        resp = client.post("/teams", data={"name": "kappa", "csrf": csrf})
        assert resp.status_code == 303
        assert "kappa" in client.get("/").text

        resp = client.post("/projects", data={"team": "kappa", "name": "demo", "csrf": csrf})
        assert resp.status_code == 303
        assert "kappa/demo" in client.get("/").text

        resp = client.post("/logout", data={"csrf": csrf})
        assert resp.status_code == 303
        assert resp.headers["location"] == "/login"
        old_cookie = resp.request.headers["cookie"]
    # The ended session is refused straight away, even to a client that kept the cookie.
    with httpx.Client(base_url=live_url, headers={"cookie": old_cookie}) as replay:
        resp = replay.get("/")
        assert resp.status_code == 303 and resp.headers["location"] == "/login"


def test_home_page_prints_no_message_from_the_url(live_url: str) -> None:
    with httpx.Client(base_url=live_url) as client:
        log_in(client)
        resp = client.get("/", params={"error": "Your session expired, call +1 555 0100"})
    assert resp.status_code == 200
    assert "555 0100" not in resp.text
    assert 'role="alert"' not in resp.text


def test_failed_form_action_answers_with_its_status(live_url: str) -> None:
    with httpx.Client(base_url=live_url) as client:
        csrf = log_in(client)
        assert client.post("/teams", data={"name": "kappa", "csrf": csrf}).status_code == 303
        again = client.post("/teams", data={"name": "kappa", "csrf": csrf})
        assert again.status_code == 409
        assert "team &#39;kappa&#39; already exists" in again.text
        missing = client.post("/projects", data={"team": "nope", "name": "demo", "csrf": csrf})
        assert missing.status_code == 404
        assert 'role="alert"' in missing.text
        teams = client.get("/api/v1/teams", headers=ADMIN).json()
    assert [t["name"] for t in teams] == ["kappa"]
