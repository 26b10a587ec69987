"""`satchel team ...`."""

from __future__ import annotations

from typing import Annotated

import typer

from satchel.cli.output import console, print_json, print_table
from satchel.sdk.client import Client

app = typer.Typer(help="Create teams and manage their members.", no_args_is_help=True)
RoleOpt = Annotated[str, typer.Option(help="admin, member or viewer")]


@app.command("create")
def create(name: str) -> None:
    """Create a team (DNS-safe name); you become its admin."""
    with Client() as client:
        team = client.create_team(name)
    console.print(f"Created team {team['name']}.")


@app.command("ls")
def ls(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List your teams."""
    with Client() as client:
        teams = client.teams()
    if as_json:
        print_json(teams)
        return
    rows = [{**t, "members": [f"{m['username']}:{m['role']}" for m in t["members"]]}
            for t in teams]
    print_table(rows, ["name", "my_role", "storage_type", "members"])


@app.command("add-member")
def add_member(team: str, username: str, role: RoleOpt = "member") -> None:
    """Add USERNAME to TEAM (or change their role)."""
    with Client() as client:
        client.add_member(team, username, role)
    console.print(f"{username} is now {role} of {team}.")


@app.command("remove-member")
def remove_member(team: str, username: str) -> None:
    """Remove USERNAME from TEAM; their access ends at once."""
    with Client() as client:
        client.remove_member(team, username)
    console.print(f"Removed {username} from {team}.")
