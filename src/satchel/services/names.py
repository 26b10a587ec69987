"""Validation of user-chosen names (teams, projects, users)."""

from __future__ import annotations

import re

from satchel.errors import InvalidInput

_TEAM = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_PROJECT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_USER = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


def team_name(name: str) -> str:
    if not _TEAM.match(name) or "--" in name:
        raise InvalidInput(
            f"team name {name[:70]!r} is not DNS-safe; expected 1-63 lowercase letters, digits "
            "and single hyphens, starting and ending with a letter or digit (e.g. 'kappa')",
            details={"field": "name"},
        )
    return name


def project_name(name: str) -> str:
    if not _PROJECT.match(name) or ".." in name:
        raise InvalidInput(
            f"project name {name[:140]!r} is invalid; expected 1-128 letters, digits, '.', '_' "
            "or '-', starting with a letter or digit (e.g. 'demo')",
            details={"field": "name"},
        )
    return name


def username(name: str) -> str:
    if not _USER.match(name):
        raise InvalidInput(
            f"username {name[:70]!r} is invalid; expected 1-64 lowercase letters, digits, '.', "
            "'_' or '-', starting with a letter or digit (e.g. 'ada')",
            details={"field": "username"},
        )
    return name


def project_path(text: str) -> tuple[str, str]:
    """Split 'team/project' into validated parts."""
    team, sep, project = text.partition("/")
    if not sep or "/" in project:
        raise InvalidInput(
            f"expected TEAM/PROJECT (e.g. 'kappa/demo'), got {text[:200]!r}",
            details={"field": "project"},
        )
    return team_name(team), project_name(project)


_RUN_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


def run_id(value: str) -> str:
    if not _RUN_ID.match(value):
        raise InvalidInput(
            f"run id {value[:70]!r} is invalid; expected 1-64 lowercase letters, digits, '_' or "
            "'-', starting with a letter or digit (e.g. '3f9k2x7q')",
            details={"field": "run_id"},
        )
    return value
