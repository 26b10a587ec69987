"""`satchel artifact put|get|ls|rm|restore|set-ttl` (calls the SDK; errors print as one line)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from satchel.cli.duration import parse_ttl
from satchel.cli.output import confirm, console, print_json, print_table
from satchel.errors import InvalidInput
from satchel.sdk.artifact import Api, Artifact, LoggedArtifact, parse_artifact_path
from satchel.sdk.progress import ProgressCallback

app = typer.Typer(help="Log, fetch, list and delete artifact versions.", no_args_is_help=True)
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars")]


@contextmanager
def _progress(quiet: bool) -> Iterator[ProgressCallback | None]:
    """Rich progress bars on a terminal; nothing when output is piped or with --quiet."""
    if quiet or not console.is_terminal:
        yield None
        return
    from satchel.sdk.progress import RichProgress

    with RichProgress(console) as bars:
        yield bars


def _bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


def _put_summary(logged: LoggedArtifact) -> str:
    """How many files/bytes were uploaded vs already in the bucket (and resumed, if so)."""
    st = logged.stats
    if st is None:
        return f"{logged.uploaded} object(s) uploaded"
    text = (f"{st.files_new} file(s) new ({_bytes(st.bytes_sent)} sent), "
            f"{st.files_present} already present ({_bytes(st.bytes_present)})")
    if st.resumed:
        text += (f"; resumed an interrupted upload: {st.objects_resumed} object(s) and "
                 f"{st.parts_resumed} part(s) ({_bytes(st.bytes_resumed)}) were not sent again")
    return text


@app.command("put")
def put(
    path: Annotated[Path, typer.Argument(help="A file or directory")],
    target: Annotated[str, typer.Argument(metavar="TEAM/PROJECT/NAME")],
    type: Annotated[str, typer.Option("--type", help="Artifact type, e.g. dataset, model")],
    alias: Annotated[list[str] | None, typer.Option("--alias", help="Custom alias")] = None,
    description: str = "",
    ttl: Annotated[str | None, typer.Option(
        "--ttl", help="Time-to-live from the commit: 30d, 12h, 90m, 45s, or 'none' to keep "
        "forever (default: the team's default)")] = None,
    quiet: Quiet = False,
) -> None:
    """Log PATH as a new version (nothing is uploaded or created when it is unchanged; an
    interrupted upload of the same files resumes where it stopped)."""
    team, project, name, ref = parse_artifact_path(target)
    if ref:
        raise InvalidInput("put takes team/project/name without :version")
    art = Artifact(name, type, description=description,
                   ttl=None if ttl is None else parse_ttl(ttl))
    if path.is_dir():
        art.add_dir(path)
    else:
        art.add_file(path)
    with Api() as api, _progress(quiet) as progress:
        logged = api.log_artifact(art, f"{team}/{project}", aliases=alias or [],
                                  progress=progress)
    expires = logged.expires_at.isoformat() if logged.expires_at else "never"
    console.print(f"Logged {team}/{project}/{name}:{logged.version} "
                  f"({_put_summary(logged)}; aliases: {', '.join(logged.aliases)}; "
                  f"expires: {expires})")


@app.command("get")
def get(
    target: Annotated[str, typer.Argument(metavar="TEAM/PROJECT/NAME[:ALIAS|:vN]")],
    root: Annotated[Path | None, typer.Option(help="Download into this directory")] = None,
    quiet: Quiet = False,
) -> None:
    """Download a version (default: latest), verifying every file's SHA-256."""
    with Api() as api, _progress(quiet) as progress:
        logged = api.artifact(target)
        out = logged.download(root, progress=progress)
    st = logged.download_stats
    detail = "" if st is None else (
        f" ({st.files} file(s), {_bytes(st.bytes)}; {_bytes(st.bytes_fetched)} fetched, "
        f"{_bytes(st.bytes_cached)} from the local cache)")
    console.print(f"Downloaded {logged.name}:{logged.version} to {out}{detail}")


@app.command("ls")
def ls(
    target: Annotated[str, typer.Argument(metavar="TEAM/PROJECT[/NAME]")],
    deleted: Annotated[bool, typer.Option(help="List deleted collections or versions")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List a project's artifacts, or one artifact's versions."""
    parts = target.split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise InvalidInput(f"expected team/project or team/project/name, got {target[:200]!r}")
    with Api() as api:
        if len(parts) == 2:
            rows = api.client.artifact_collections(parts[0], parts[1], deleted=deleted)
            columns = ["name", "type", "versions", "created_at"]
        else:
            rows = api.client.artifact_versions(*parts, deleted=deleted)
            columns = ["version", "aliases", "size", "file_count", "digest", "committed_at",
                       "expires_at", "producing_run"]
        if deleted:
            columns.append("deleted_at")
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
def rm(
    target: Annotated[str, typer.Argument(metavar="TEAM/PROJECT/NAME[:vN]")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Delete a whole collection "
                                      "without asking")] = False,
) -> None:
    """Soft-delete a version, or without :vN the whole collection (restorable with `satchel
    artifact restore` within the retention window)."""
    team, project, name, ref = parse_artifact_path(target)
    with Api() as api:
        if ref:
            v = api.client.delete_artifact_version(team, project, name, ref)
            console.print(f"Deleted {v['name']}:{v['version']} (restorable).")
            return
        if not yes and not confirm(f"Delete the whole artifact {team}/{project}/{name} with "
                                   "all its versions?"):
            raise InvalidInput(f"not deleted: {team}/{project}/{name} is a whole collection; "
                               "answer yes, or pass --yes")
        c = api.client.delete_artifact_collection(team, project, name)
    console.print(f"Deleted {team}/{project}/{c['name']} and its {c['versions']} version(s) "
                  "(restorable).")


@app.command("restore")
def restore(target: Annotated[str, typer.Argument(metavar="TEAM/PROJECT/NAME[:vN]")]) -> None:
    """Restore a soft-deleted version, or without :vN a soft-deleted collection."""
    team, project, name, ref = parse_artifact_path(target)
    with Api() as api:
        if ref:
            v = api.client.restore_artifact_version(team, project, name, ref)
            console.print(f"Restored {v['name']}:{v['version']}.")
            return
        c = api.client.restore_artifact_collection(team, project, name)
    console.print(f"Restored {team}/{project}/{c['name']} with {c['versions']} version(s).")


@app.command("set-ttl")
def set_ttl(
    target: Annotated[str, typer.Argument(metavar="TEAM/PROJECT/NAME:vN")],
    ttl: Annotated[str, typer.Argument(metavar="TTL", help="30d, 12h, 90m, 45s from the "
                                       "commit, or 'none' to keep forever")],
) -> None:
    """Change a version's time-to-live (also of a deleted version, before restoring it)."""
    seconds = parse_ttl(ttl, option="TTL")
    with Api() as api:
        v = api.client.set_artifact_ttl(*_version(target), seconds)
    expires = v["expires_at"] or "never (kept forever)"
    console.print(f"{v['name']}:{v['version']} expires: {expires}")
