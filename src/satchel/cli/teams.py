"""`satchel team ...`."""

from __future__ import annotations

from typing import Annotated

import typer

from satchel.cli.duration import format_ttl, parse_ttl
from satchel.cli.output import console, print_json, print_table
from satchel.sdk.client import Client

app = typer.Typer(help="Create teams and manage their members.", no_args_is_help=True)
RoleOpt = Annotated[str, typer.Option(help="admin, member or viewer")]


@app.command("create")
def create(
    name: str,
    storage: Annotated[str, typer.Option(help="internal (the instance bucket) or external (a "
                                         "bucket of the team's own)")] = "internal",
    bucket: Annotated[str | None, typer.Option(help="External: an allow-listed bucket name or a "
                                               "storage address")] = None,
    path: Annotated[str, typer.Option(help="External: sub-path inside the bucket")] = "",
    kms_key: Annotated[str | None, typer.Option(help="AWS KMS key ARN (SSE-KMS)")] = None,
    azure_tenant_id: Annotated[str | None, typer.Option(help="Azure tenant id")] = None,
    azure_client_id: Annotated[str | None, typer.Option(help="Azure managed identity client "
                                                        "id")] = None,
    create_bucket: Annotated[bool, typer.Option("--create-bucket", help="Multi-tenant: create "
                                                "a new bucket for the team")] = False,
    artifact_ttl: Annotated[str | None, typer.Option(
        "--artifact-ttl", help="Default time-to-live of new artifact versions: 90d, 12h, ... "
        "(default: keep forever)")] = None,
) -> None:
    """Create a team (DNS-safe name); you become its admin. Storage is fixed at creation."""
    spec = None
    if storage != "internal" or bucket or create_bucket:
        spec = {"type": storage if storage != "internal" else "external", "bucket": bucket,
                "path": path, "kms_key": kms_key, "azure_tenant_id": azure_tenant_id,
                "azure_client_id": azure_client_id, "create_bucket": create_bucket}
    ttl = parse_ttl(artifact_ttl, option="--artifact-ttl") if artifact_ttl else None
    with Client() as client:
        team = client.create_team(name, storage=spec, artifact_ttl_seconds=ttl or None)
    where = f" on {team['storage']}" if team.get("storage") else " on the instance bucket"
    console.print(f"Created team {team['name']}{where}.", markup=False)
    for w in team.get("warnings", []):
        console.print(f"WARNING {w['check']}: {w['message']} (fix: {w['fix']})", markup=False)


@app.command("ls")
def ls(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List your teams."""
    with Client() as client:
        teams = client.teams()
    if as_json:
        print_json(teams)
        return
    rows = [{**t, "members": [f"{m['username']}:{m['role']}" for m in t["members"]],
             "artifact_ttl": format_ttl(t.get("artifact_ttl_seconds"))} for t in teams]
    print_table(rows, ["name", "my_role", "storage_type", "artifact_ttl", "members"])


@app.command("set-ttl")
def set_ttl(
    team: str,
    ttl: Annotated[str, typer.Argument(metavar="TTL", help="90d, 12h, 90m, 45s, or 'none' "
                                       "(keep forever)")],
) -> None:
    """Set TEAM's default time-to-live of new artifact versions (team admins). Versions
    already logged keep their expiry."""
    seconds = parse_ttl(ttl, option="TTL")
    with Client() as client:
        t = client.update_team(team, artifact_ttl_seconds=seconds or None)
    after = t["artifact_ttl_seconds"]
    console.print(f"Team {t['name']}: new artifact versions "
                  + (f"expire {format_ttl(after)} after their commit." if after
                     else "are kept forever."))


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
