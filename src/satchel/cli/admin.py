"""`satchel admin ...`: run on the server host, against the database directly."""

from __future__ import annotations

from typing import Annotated

import typer

from satchel.cli.output import console
from satchel.config import load_settings

app = typer.Typer(help="Instance administration (runs against the server's database).",
                  no_args_is_help=True)


@app.command("create-user")
def create_user(
    username: str,
    admin: Annotated[bool, typer.Option("--admin", help="Make the user an instance admin")] = False,
    password: Annotated[bool, typer.Option("--password", help="Ask for a password")] = False,
    print_api_key: Annotated[bool, typer.Option(
        "--print-api-key", help="Create an API key and print only that key")] = False,
) -> None:
    """Create a user; with --print-api-key the only output is the new key (for scripts)."""
    from satchel.db.migrate import upgrade
    from satchel.db.session import Database
    from satchel.services import users

    secret = None
    if password:
        secret = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    db = Database(load_settings().sqlalchemy_url)
    try:
        upgrade(db.engine)
        with db.session() as session:
            user = users.create_user(session, username, password=secret, is_admin=admin)
            key = users.issue_api_key(session, user, name="created").key if print_api_key \
                else None
    finally:
        db.dispose()
    if key is not None:
        print(key, flush=True)
    else:
        console.print(f"Created {'admin ' if admin else ''}user {username}.")
