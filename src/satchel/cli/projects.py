"""`satchel project ...`."""

from __future__ import annotations

from typing import Annotated

import typer

from satchel.cli.output import console, print_json, print_table
from satchel.sdk.client import Client
from satchel.services.names import project_path

app = typer.Typer(help="Create and list projects.", no_args_is_help=True)


@app.command("create")
def create(
    path: Annotated[str, typer.Argument(metavar="TEAM/NAME")],
    visibility: Annotated[str, typer.Option(help="instance (default) or team")] = "instance",
    description: str = "",
) -> None:
    """Create a project in a team."""
    team, name = project_path(path)
    with Client() as client:
        p = client.create_project(team, name, visibility=visibility, description=description)
    console.print(f"Created project {p['team']}/{p['name']} ({p['visibility']}-visible).")


@app.command("ls")
def ls(
    team: Annotated[str | None, typer.Option(help="Only this team's projects")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List the projects you can read."""
    with Client() as client:
        projects = client.projects(team)
    if as_json:
        print_json(projects)
    else:
        print_table(projects, ["team", "name", "visibility", "created_at"])
