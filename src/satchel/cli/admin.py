"""`satchel admin ...`: run on the server host, against the database directly."""

from __future__ import annotations

from typing import Annotated

import typer

from satchel.cli.output import console
from satchel.config import load_settings

app = typer.Typer(help="Instance administration (runs against the server's database).",
                  no_args_is_help=True)


@app.command("settings-reference")
def settings_reference() -> None:
    """Print the server settings reference (Markdown): `... > docs/settings.md`."""
    from satchel.config import settings_reference as reference

    print(reference(), end="", flush=True)


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


storage_app = typer.Typer(help="The instance bucket (via the server's API; admins only).",
                          no_args_is_help=True)
app.add_typer(storage_app, name="storage")


@storage_app.command("show")
def storage_show(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Show the instance bucket (redacted), identity, organization ID and namespace."""
    from satchel.cli.output import print_json
    from satchel.sdk.client import Client

    with Client() as client:
        info = client.instance_storage()
    if as_json:
        print_json(info)
        return
    for key in ("address", "path", "provider", "configured", "bucket_access_identity",
                "organization_id", "customer_namespace"):
        console.print(f"{key:24} {info.get(key)}", markup=False)


@storage_app.command("set")
def storage_set(
    address: Annotated[str, typer.Argument(help="Storage address (quote it)")],
    path: Annotated[str | None, typer.Option(help="Sub-path inside the bucket")] = None,
) -> None:
    """Set the instance bucket; the bucket doctor runs first and errors block the change."""
    from satchel.sdk.client import Client

    with Client() as client:
        info = client.set_instance_storage(address, path=path)
    console.print(f"Instance bucket set to {info['address']}.", markup=False)
    for w in info.get("warnings", []):
        console.print(f"WARNING {w['check']}: {w['message']} (fix: {w['fix']})", markup=False)


@app.command("audit")
def audit(
    user: Annotated[str | None, typer.Option(help="Only this user")] = None,
    team: Annotated[str | None, typer.Option(help="Only this team")] = None,
    project: Annotated[str | None, typer.Option(help="Only this project")] = None,
    action: Annotated[str | None, typer.Option(help="Only this action (e.g. presign)")] = None,
    limit: Annotated[int, typer.Option(help="How many events")] = 50,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Audit events, newest first: every presigned URL issued, with user, key and client IP."""
    from satchel.cli.output import print_json, print_table
    from satchel.sdk.client import Client

    with Client() as client:
        rows = client.audit(user=user, team=team, project=project, action=action, limit=limit)
    if as_json:
        print_json(rows)
    else:
        print_table(rows, ["created_at", "username", "action", "team", "project", "method",
                           "object_key", "client_ip"])
