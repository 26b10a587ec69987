"""`satchel artifact put|get|ls|rm|restore` (calls the SDK; errors print as one line)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from satchel.cli.output import console, print_json, print_table
from satchel.errors import InvalidInput
from satchel.sdk.artifact import Api, Artifact, parse_artifact_path

app = typer.Typer(help="Log, fetch, list and delete artifact versions.", no_args_is_help=True)


@app.command("put")
def put(
    path: Annotated[Path, typer.Argument(help="A file or directory")],
    target: Annotated[str, typer.Argument(metavar="TEAM/PROJECT/NAME")],
    type: Annotated[str, typer.Option("--type", help="Artifact type, e.g. dataset, model")],
    alias: Annotated[list[str] | None, typer.Option("--alias", help="Custom alias")] = None,
    description: str = "",
) -> None:
    """Log PATH as a new version (nothing is uploaded or created when it is unchanged)."""
    team, project, name, ref = parse_artifact_path(target)
    if ref:
        raise InvalidInput("put takes team/project/name without :version")
    art = Artifact(name, type, description=description)
    if path.is_dir():
        art.add_dir(path)
    else:
        art.add_file(path)
    with Api() as api:
        logged = api.log_artifact(art, f"{team}/{project}", aliases=alias or [])
    console.print(f"Logged {team}/{project}/{name}:{logged.version} "
                  f"({logged.uploaded} object(s) uploaded; aliases: {', '.join(logged.aliases)})")


@app.command("get")
def get(
    target: Annotated[str, typer.Argument(metavar="TEAM/PROJECT/NAME[:ALIAS|:vN]")],
    root: Annotated[Path | None, typer.Option(help="Download into this directory")] = None,
) -> None:
    """Download a version (default: latest), verifying every file's SHA-256."""
    with Api() as api:
        logged = api.artifact(target)
        out = logged.download(root)
    console.print(f"Downloaded {logged.name}:{logged.version} to {out}")


@app.command("ls")
def ls(
    target: Annotated[str, typer.Argument(metavar="TEAM/PROJECT[/NAME]")],
    deleted: Annotated[bool, typer.Option(help="List deleted versions")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List a project's artifacts, or one artifact's versions."""
    parts = target.split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise InvalidInput(f"expected team/project or team/project/name, got {target[:200]!r}")
    with Api() as api:
        if len(parts) == 2:
            rows = api.client.artifact_collections(parts[0], parts[1])
            columns = ["name", "type", "versions", "created_at"]
        else:
            rows = api.client.artifact_versions(*parts, deleted=deleted)
            columns = ["version", "aliases", "size", "file_count", "digest", "committed_at"]
    if as_json:
        print_json(rows)
    else:
        print_table(rows, columns)


def _version(target: str) -> tuple[str, str, str, str]:
    team, project, name, ref = parse_artifact_path(target)
    if not ref:
        raise InvalidInput("name the version: team/project/name:vN")
    return team, project, name, ref


@app.command("rm")
def rm(target: Annotated[str, typer.Argument(metavar="TEAM/PROJECT/NAME:vN")]) -> None:
    """Soft-delete a version (restorable with `satchel artifact restore`)."""
    with Api() as api:
        v = api.client.delete_artifact_version(*_version(target))
    console.print(f"Deleted {v['name']}:{v['version']} (restorable).")


@app.command("restore")
def restore(target: Annotated[str, typer.Argument(metavar="TEAM/PROJECT/NAME:vN")]) -> None:
    """Restore a soft-deleted version."""
    with Api() as api:
        v = api.client.restore_artifact_version(*_version(target))
    console.print(f"Restored {v['name']}:{v['version']}.")
