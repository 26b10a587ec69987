"""`satchel db ...`: schema migrations."""

from __future__ import annotations

import typer

from satchel.cli.output import console
from satchel.config import load_settings

app = typer.Typer(help="Database schema migrations.", no_args_is_help=True)


@app.command("upgrade")
def upgrade(revision: str = "head") -> None:
    """Migrate the database (SATCHEL_DATABASE_URL) to the latest schema."""
    from satchel.db.migrate import current_revision
    from satchel.db.migrate import upgrade as do_upgrade
    from satchel.db.session import Database

    db = Database(load_settings().sqlalchemy_url)
    try:
        do_upgrade(db.engine, revision)
        console.print(f"Database at revision {current_revision(db.engine)}.")
    finally:
        db.dispose()


@app.command("current")
def current() -> None:
    """Print the database's schema revision."""
    from satchel.db.migrate import current_revision
    from satchel.db.session import Database

    db = Database(load_settings().sqlalchemy_url)
    try:
        console.print(current_revision(db.engine) or "empty")
    finally:
        db.dispose()
