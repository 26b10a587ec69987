"""Web UI assets: Jinja templates and our own static files (no vendored third-party code)."""

from __future__ import annotations

from pathlib import Path

TEMPLATES_DIR = Path(__file__).parent / "templates"
STATIC_DIR = Path(__file__).parent / "static"
