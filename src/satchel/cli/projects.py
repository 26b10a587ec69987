"""`satchel project ...`."""

from __future__ import annotations

from typing import Annotated

import typer

from satchel.cli.output import confirm, console, print_json, print_table
from satchel.errors import InvalidInput
from satchel.sdk.client import Client
from satchel.services.names import project_path

app = typer.Typer(help="Create, list, delete and restore projects.", no_args_is_help=True)


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
    deleted: Annotated[bool, typer.Option(help="The team's soft-deleted projects (needs "
                                          "--team)")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List the projects you can read."""
    if deleted and team is None:
        raise InvalidInput("--deleted lists one team's deleted projects; add --team TEAM")
    with Client() as client:
        projects = client.team_projects(team, deleted=True) if deleted and team \
            else client.projects(team)
    if as_json:
        print_json(projects)
    else:
        print_table(projects, ["team", "name", "visibility", "created_at",
                               *(["deleted_at"] if deleted else [])])


@app.command("rm")
def rm(
    path: Annotated[str, typer.Argument(metavar="TEAM/NAME")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask")] = False,
) -> None:
    """Soft-delete a project and everything in it (team admins; restorable with `satchel
    project restore` within the retention window). Its name stays taken."""
    team, name = project_path(path)
    if not yes and not confirm(f"Delete project {team}/{name} and everything in it?"):
        raise InvalidInput(f"project {team}/{name} not deleted: answer yes, or pass --yes")
    with Client() as client:
        p = client.delete_project(team, name)
    console.print(f"Deleted project {p['team']}/{p['name']} (restorable).")


@app.command("restore")
def restore(path: Annotated[str, typer.Argument(metavar="TEAM/NAME")]) -> None:
    """Restore a soft-deleted project with everything that was in it."""
    team, name = project_path(path)
    with Client() as client:
        p = client.restore_project(team, name)
    console.print(f"Restored project {p['team']}/{p['name']}.")
