"""Shared CLI output: rich tables, JSON, and the one-line error format."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)


def print_json(data: Any) -> None:
    console.print_json(json.dumps(data, default=str))


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[str], title: str | None = None
                ) -> None:
    table = Table(title=title)
    for col in columns:
        table.add_column(col)
    for row in rows:
        table.add_row(*[_cell(row.get(c)) for c in columns])
    console.print(table)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return ", ".join(_cell(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    return str(value)


def error_line(exc: BaseException) -> str:
    """`ClassName: message` on one line."""
    message = str(exc).replace("\n", " ")
    return f"{type(exc).__name__}: {message}"


def confirm(question: str) -> bool:
    """Ask on the terminal; no answer (EOF: a script, no terminal) counts as no."""
    import typer

    try:
        return typer.confirm(question, default=False)
    except typer.Abort:
        return False
