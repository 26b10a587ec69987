"""Durations on the command line: ``30d``, ``12h``, ``90m``, ``45s`` (or bare seconds)."""

from __future__ import annotations

import re

from satchel.errors import InvalidInput

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
_DURATION = re.compile(r"^(\d{1,12})([smhd]?)$")
FOREVER_WORDS = ("none", "forever")


def parse_ttl(text: str, *, option: str = "--ttl") -> int:
    """Seconds; 0 for ``none``/``forever``/``0`` (keep forever)."""
    value = text.strip().lower()
    if value in FOREVER_WORDS:
        return 0
    m = _DURATION.match(value)
    if m is None:
        raise InvalidInput(
            f"{option}: cannot read {text[:40]!r} as a duration; use a whole number with s, m, "
            "h or d (e.g. 30d, 12h), or 'none' to keep forever")
    return int(m.group(1)) * _UNITS[m.group(2) or "s"]


def format_ttl(seconds: int | None) -> str:
    """``90d``, ``36h``, ...; ``forever`` for None/0."""
    if not seconds:
        return "forever"
    for unit in ("d", "h", "m"):
        if seconds % _UNITS[unit] == 0:
            return f"{seconds // _UNITS[unit]}{unit}"
    return f"{seconds}s"
