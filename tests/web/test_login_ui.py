"""The web UI as a person sees it: real headless Chromium against the real app over HTTP.

Every page is a plain HTML form, so the main journey runs twice, with JavaScript on and off.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from satchel.server.deps import SESSION_COOKIE
from satchel.server.routes.web import LOGIN_CSRF_COOKIE
from tests.conftest import ADMIN_KEY, ADMIN_PASSWORD
from tests.web.conftest import ADMIN_USER, IN_CI

try:
    from playwright.sync_api import BrowserContext, Page, expect
except ImportError:  # the browser fixture explains; in CI this import error fails the run
    if IN_CI:
        raise
    pytest.skip("the 'playwright' package is not installed (pip install -e '.[test]')",
                allow_module_level=True)

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


def log_in(page: Page, password: str = ADMIN_PASSWORD, username: str = ADMIN_USER) -> None:
    page.goto("/login")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()


def cookie(context: BrowserContext, name: str) -> Any:
    return next((c for c in context.cookies() if c["name"] == name), None)


def team_names(page: Page) -> list[str]:
    """Teams as the server has them (the admin API), independent of what the page shows."""
    resp = page.request.get("/api/v1/teams", headers=ADMIN)
    assert resp.ok, resp.text()
    return [t["name"] for t in resp.json()]


@pytest.mark.parametrize("javascript", [True, False], ids=["js", "no-js"])
def test_log_in_create_team_and_project_then_log_out(
    page: Page, context: BrowserContext, live_url: str, javascript: bool, tmp_path: Path
) -> None:
    log_in(page)
    expect(page).to_have_url(f"{live_url}/")
    expect(page.locator("header .who")).to_have_text(f"{ADMIN_USER} admin")  # name + role badge
    # No script anywhere: the forms below work because they are forms, not because of JS.
    expect(page.locator("script")).to_have_count(0)
    expect(page.locator("#teams")).to_have_text("No teams yet.")

    page.get_by_label("New team name").fill("kappa")
    page.get_by_role("button", name="Create team").click()
    expect(page).to_have_url(f"{live_url}/")  # POST-redirect-GET: a reload re-posts nothing
    expect(page.locator("#teams li")).to_have_text([re.compile(r"^kappa\b.*internal storage")])

    page.get_by_label("Team", exact=True).select_option("kappa")
    page.get_by_label("New project name").fill("demo")
    page.get_by_label("Visibility").select_option("team")
    page.get_by_role("button", name="Create project").click()
    rows = page.locator("#projects tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first.locator("td")).to_have_text([
        "kappa/demo", "team", re.compile(r"^\d{4}-\d{2}-\d{2}$")
    ])
    # The page is styled: our stylesheet loaded and applies.
    expect(page.get_by_role("button", name="Create team")).to_have_css(
        "background-color", "rgb(47, 111, 222)"
    )
    page.screenshot(path=tmp_path / f"home-{'js' if javascript else 'no-js'}.png",
                    full_page=True)

    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(f"{live_url}/login")
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    assert cookie(context, SESSION_COOKIE) is None
    page.goto("/")
    expect(page).to_have_url(f"{live_url}/login")


def test_form_errors_are_shown_on_the_page(page: Page, live_url: str) -> None:
    log_in(page)
    page.get_by_label("New team name").fill("Not_DNS_safe")
    page.get_by_role("button", name="Create team").click()
    expect(page.get_by_role("alert")).to_contain_text("is not DNS-safe")
    expect(page.locator("#teams")).to_have_text("No teams yet.")
    assert team_names(page) == []


def test_wrong_password_shows_error_and_stays_logged_out(
    page: Page, context: BrowserContext, live_url: str
) -> None:
    log_in(page, password="not-the-password")
    expect(page).to_have_url(f"{live_url}/login")
    expect(page.get_by_role("alert")).to_have_text("wrong username or password")
    expect(page.get_by_label("Username")).to_have_value(ADMIN_USER)
    expect(page.get_by_label("Password")).to_have_value("")
    assert cookie(context, SESSION_COOKIE) is None
    page.goto("/")
    expect(page).to_have_url(f"{live_url}/login")

    # The login page works after a failure.
    log_in(page)
    expect(page).to_have_url(f"{live_url}/")


def test_log_out_ends_the_session_on_the_server(
    page: Page, context: BrowserContext, open_context: Callable[[], BrowserContext],
    live_url: str,
) -> None:
    log_in(page)
    stolen = cookie(context, SESSION_COOKIE)
    assert stolen is not None
    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(f"{live_url}/login")

    # Replaying the old cookie (say, from a shared machine) no longer opens the home page.
    other = open_context()
    other.add_cookies([stolen])
    replay = other.new_page()
    replay.goto("/")
    expect(replay).to_have_url(f"{live_url}/login")


def test_cookies_are_http_only_and_same_site(
    page: Page, context: BrowserContext, live_url: str
) -> None:
    page.goto("/login")
    login_csrf = cookie(context, LOGIN_CSRF_COOKIE)
    assert login_csrf is not None
    assert login_csrf["httpOnly"] is True
    assert login_csrf["sameSite"] == "Strict"
    assert login_csrf["path"] == "/login"
    assert login_csrf["secure"] is False  # plain-HTTP base_url

    log_in(page)
    expect(page).to_have_url(f"{live_url}/")
    session = cookie(context, SESSION_COOKIE)
    assert session is not None
    assert session["httpOnly"] is True
    assert session["sameSite"] == "Lax"
    assert session["path"] == "/"
    assert session["secure"] is False
    assert session["expires"] > 0  # persistent for the session lifetime, not a browser-session
    assert cookie(context, LOGIN_CSRF_COOKIE) is None  # spent at login
    # HttpOnly as a script on the page experiences it.
    assert page.evaluate("document.cookie") == ""


@pytest.mark.parametrize("public_scheme", ["https"])
def test_cookies_are_secure_when_base_url_is_https(
    page: Page, context: BrowserContext, live_url: str, public_scheme: str
) -> None:
    page.goto("/login")
    assert cookie(context, LOGIN_CSRF_COOKIE)["secure"] is True
    log_in(page)
    expect(page).to_have_url(f"{live_url}/")
    assert cookie(context, SESSION_COOKIE)["secure"] is True


def test_post_with_session_cookie_but_no_csrf_token_is_refused(
    page: Page, live_url: str
) -> None:
    log_in(page)
    expect(page).to_have_url(f"{live_url}/")
    token = page.locator("#create-team input[name=csrf]").input_value()
    assert token

    # page.request shares the browser's cookie jar: the session cookie rides along, as it would
    # on a forged request, but the token it cannot know is missing or wrong.
    for form in ({"name": "evil"}, {"name": "evil", "csrf": "x" * len(token)}):
        resp = page.request.post("/teams", form=form, max_redirects=0)
        assert resp.status == 403, resp.text()
        assert resp.json()["error"]["code"] == "csrf_failed"
    resp = page.request.post("/logout", form={}, max_redirects=0)
    assert resp.status == 403

    # A script on our own origin that did not read the token is refused too ...
    status = page.evaluate(
        """async () => (await fetch('/teams', {method: 'POST',
               body: new URLSearchParams({name: 'evil-fetch'})})).status"""
    )
    assert status == 403
    # ... and so is the JSON API when the same cookie authenticates it without X-CSRF-Token.
    resp = page.request.post("/api/v1/teams", data={"name": "evil-api"})
    assert resp.status == 403, resp.text()
    assert resp.json()["error"]["code"] == "csrf_failed"

    assert team_names(page) == []
    page.reload()
    expect(page.locator("#teams")).to_have_text("No teams yet.")
    expect(page.locator("header .who")).to_contain_text(ADMIN_USER)  # still logged in


def test_cross_site_form_post_creates_nothing(
    page: Page, context: BrowserContext, live_url: str
) -> None:
    log_in(page)
    expect(page).to_have_url(f"{live_url}/")
    # An attacker's page on another site, served by Playwright itself: nothing leaves the
    # machine (.invalid never resolves, and the browser resolves no names anyway).
    evil = "http://attacker.invalid/"
    html = f"""<form id="f" method="post" action="{live_url}/teams">
                 <input name="name" value="evil"></form>
               <script>document.getElementById('f').submit()</script>"""
    context.route(evil, lambda route: route.fulfill(status=200, body=html,
                                                    content_type="text/html"))
    attack = context.new_page()
    attack.goto(evil)
    # SameSite=Lax keeps the session cookie off a cross-site POST: the server sees no session.
    expect(attack).to_have_url(f"{live_url}/login")
    assert team_names(page) == []
    page.reload()
    expect(page.locator("header .who")).to_contain_text(ADMIN_USER)


def test_login_post_with_mismatched_csrf_is_refused(
    page: Page, context: BrowserContext, live_url: str
) -> None:
    page.goto("/login")
    real = page.locator("#login-form input[name=csrf]").input_value()
    creds = {"username": ADMIN_USER, "password": ADMIN_PASSWORD}
    for csrf in ("", "y" * len(real)):
        resp = page.request.post("/login", form={**creds, "csrf": csrf}, max_redirects=0)
        assert resp.status == 403
        assert "This login form has expired" in resp.text()
        assert cookie(context, SESSION_COOKIE) is None
    # Without the cookie (a cross-site login form: the cookie is SameSite=Strict) the right
    # token alone does not log anyone in either.
    context.clear_cookies()
    resp = page.request.post("/login", form={**creds, "csrf": real}, max_redirects=0)
    assert resp.status == 403
    assert cookie(context, SESSION_COOKIE) is None
    page.goto("/")
    expect(page).to_have_url(f"{live_url}/login")


def test_stale_login_form_shows_a_fresh_one(
    page: Page, context: BrowserContext, live_url: str
) -> None:
    page.goto("/login")
    second_tab = context.new_page()
    second_tab.goto("/login")  # replaces the login cookie: the first tab's form is now stale

    page.get_by_label("Username").fill(ADMIN_USER)
    page.get_by_label("Password").fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_have_text(
        "This login form has expired. Please log in again."
    )
    assert cookie(context, SESSION_COOKIE) is None

    page.get_by_label("Password").fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(f"{live_url}/")
