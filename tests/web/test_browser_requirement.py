"""The browser tests may skip on a developer's machine, never in CI."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.web.conftest import require_browser


def test_missing_browser_skips_outside_ci(tmp_path: Path) -> None:
    with pytest.raises(pytest.skip.Exception, match=r"install\.d/chromium\.sh"):
        require_browser(tmp_path / "no-chromium", in_ci=False)


def test_missing_browser_fails_in_ci(tmp_path: Path) -> None:
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        require_browser(tmp_path / "no-chromium", in_ci=True)


def test_present_browser_passes() -> None:
    pytest.importorskip("playwright.sync_api")
    # Any executable stands in for the browser: only its presence is checked here.
    require_browser(Path(sys.executable), in_ci=True)
