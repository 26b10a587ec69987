"""Browser fixtures: Debian's headless Chromium driven by Playwright against the live app.

`playwright install` cannot download browsers on our machines, so the tests launch the
system browser that scripts/install.d/chromium.sh installs. Without it the tests skip on a
developer's machine, but in CI (CI=true) a missing browser is a failure: a browser suite that
silently skips proves nothing.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from satchel.config import Settings
from satchel.server.app import create_app
from satchel.server.deps import AppContext
from tests.live import free_port, serve_in_thread

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page

CHROMIUM = Path("/usr/bin/chromium")
# --headless: Debian's build, not Playwright's headless shell. The rest keep the browser from
# reaching anything but the server under test on 127.0.0.1: no background fetches or component
# updates, and every host name fails to resolve, so a stray request cannot leave the machine.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--no-proxy-server",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
]
ADMIN_USER = "ada"
IN_CI = os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def require_browser(executable: Path, *, in_ci: bool) -> None:
    """Skip when the browser is missing on a developer machine; fail in CI."""
    problems = []
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        problems.append("the 'playwright' package is not installed (pip install -e '.[test]')")
    if not (executable.is_file() and os.access(executable, os.X_OK)):
        problems.append(f"{executable} is missing (run: bash scripts/install.d/chromium.sh)")
    if not problems:
        return
    reason = "browser tests need headless Chromium: " + "; ".join(problems)
    if in_ci:
        pytest.fail(f"{reason} [CI=true: a missing browser fails instead of skipping]",
                    pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    require_browser(CHROMIUM, in_ci=IN_CI)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        # launch() gives every browser a fresh temporary user-data-dir, deleted on close;
        # each test then gets its own context (its own cookie jar).
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def public_scheme() -> str:
    """The scheme of the configured public URL; parametrize it to 'https' to test Secure cookies."""
    return "http"


@pytest.fixture
def settings(settings: Settings, port: int, public_scheme: str) -> Settings:
    """The shared settings, with the public URL the browser really uses.

    The first admin gets a name of its own, so a page that shows "admin" (the role) cannot pass
    for one that shows the user's name.
    """
    return settings.model_copy(update={
        "base_url": f"{public_scheme}://127.0.0.1:{port}",
        "admin_username": ADMIN_USER,
    })


@pytest.fixture
def live_url(settings: Settings, ctx: AppContext, port: int) -> Iterator[str]:
    with serve_in_thread(create_app(settings, context=ctx), port) as url:
        yield url


@pytest.fixture
def javascript() -> bool:
    """Whether pages run scripts; parametrize it to False to test the UI without JavaScript."""
    return True


@pytest.fixture
def open_context(
    browser: Browser, live_url: str, javascript: bool
) -> Iterator[Callable[[], BrowserContext]]:
    """Opens fresh cookie jars on the live app (a second visitor, say); closes them after."""
    opened: list[BrowserContext] = []

    def open_() -> BrowserContext:
        ctx = browser.new_context(base_url=live_url, java_script_enabled=javascript,
                                  viewport={"width": 1100, "height": 720})
        opened.append(ctx)
        return ctx

    yield open_
    for ctx in opened:
        ctx.close()


@pytest.fixture
def context(open_context: Callable[[], BrowserContext]) -> BrowserContext:
    return open_context()


@pytest.fixture
def page(context: BrowserContext) -> Page:
    return context.new_page()
