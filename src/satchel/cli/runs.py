"""`satchel run ls|show|logs`, `satchel sync` and `satchel export run|project`.

They call the SDK (sdk/runs_api.py, sdk/sync.py); errors print as one line (cli/main.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from satchel.cli.output import (
    confirm,
    console,
    err_console,
    error_line,
    print_json,
    print_table,
)
from satchel.errors import InvalidInput, SatchelError
from satchel.sdk.artifact import Api
from satchel.sdk.runs_api import RunExport, export_project, follow_logs, parse_run
from satchel.sdk.sync import Progress, find_spools, sync_spool

app = typer.Typer(help="List runs, show one, read its console output.", no_args_is_help=True)
export_app = typer.Typer(help="Write runs as Parquet into the team's bucket (and download "
                         "them).", no_args_is_help=True)
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON")]


def _bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------- satchel run


@app.command("ls")
def ls(
    target: Annotated[str, typer.Argument(metavar="TEAM/PROJECT")],
    state: Annotated[list[str] | None, typer.Option(
        "--state", help="running, finished, failed or crashed (repeat for several)")] = None,
    tag: Annotated[list[str] | None, typer.Option(
        "--tag", help="Runs with this tag (repeat: all of them)")] = None,
    group: Annotated[str | None, typer.Option(help="Runs of this group")] = None,
    job_type: Annotated[str | None, typer.Option("--job-type")] = None,
    name: Annotated[str | None, typer.Option(help="Name contains this text")] = None,
    order: Annotated[str, typer.Option(help="created_at, name, state, heartbeat_at or "
                                       "run_id; prefix - for descending")] = "-created_at",
    limit: Annotated[int, typer.Option(min=1, help="At most this many runs")] = 100,
    as_json: AsJson = False,
) -> None:
    """List the runs of a project, newest first."""
    filters: dict[str, Any] = {"state": state or None, "tags": tag or None, "group": group,
                               "job_type": job_type, "name": name}
    with Api() as api:
        query = api.runs(target, {k: v for k, v in filters.items() if v is not None},
                         order=order, per_page=min(limit, 1000))
        runs = []
        for run in query:
            runs.append(run)
            if len(runs) >= limit:
                break
        total = len(query)
    if as_json:
        print_json([r.json for r in runs])
        return
    rows = [{"run": r.id, "name": r.name, "state": r.state, "created_at": r.created_at,
             "steps": r.last_step + 1, "tags": r.tags} for r in runs]
    print_table(rows, ["run", "name", "state", "created_at", "steps", "tags"],
                title=f"{target}: {len(runs)} of {total} run(s)")


@app.command("show")
def show(target: Annotated[str, typer.Argument(metavar="TEAM/PROJECT/RUN")],
         as_json: AsJson = False) -> None:
    """A run's state, config, summary and counts."""
    with Api() as api:
        run = api.run(target)
    if as_json:
        print_json(run.json)
        return
    d = run.json
    lines = [
        ("run", run.path), ("name", run.name), ("state", run.state),
        ("exit code", "" if d["exit_code"] is None else str(d["exit_code"])),
        ("created", d["created_at"]), ("last heartbeat", d["heartbeat_at"]),
        ("finished", d["finished_at"] or ""), ("tags", ", ".join(run.tags)),
        ("group", run.group), ("job type", run.job_type), ("notes", run.notes),
        ("history", f"{run.history_rows} row(s), last step {run.last_step}"),
        ("console", f"{run.console_lines} line(s)"),
        ("config", json.dumps(run.config, sort_keys=True)),
        ("summary", json.dumps(run.summary, sort_keys=True)),
    ]
    for label, value in lines:
        console.print(f"{label + ':':16}{value}", markup=False, highlight=False)


@app.command("rm")
def rm(target: Annotated[str, typer.Argument(metavar="TEAM/PROJECT/RUN")],
       yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False) -> None:
    """Soft-delete a run (restorable with `satchel run restore`; its id is never reused)."""
    team, project, run_id = parse_run(target)
    if not yes and not confirm(f"Delete run {target}?"):
        raise typer.Exit(1)
    with Api() as api:
        api.client.request("DELETE", f"/api/v1/teams/{team}/projects/{project}/runs/{run_id}")
    console.print(f"Deleted run {target}; undo with: satchel run restore {target}",
                  markup=False, highlight=False)


@app.command("restore")
def restore(target: Annotated[str, typer.Argument(metavar="TEAM/PROJECT/RUN")]) -> None:
    """Bring a soft-deleted run back."""
    team, project, run_id = parse_run(target)
    with Api() as api:
        api.client.request(
            "POST", f"/api/v1/teams/{team}/projects/{project}/runs/{run_id}/restore")
    console.print(f"Restored run {target}.", markup=False, highlight=False)


@app.command("logs")
def logs(
    target: Annotated[str, typer.Argument(metavar="TEAM/PROJECT/RUN")],
    tail: Annotated[int | None, typer.Option(min=1, help="Only the last N lines")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines "
                                         "while the run is running")] = False,
) -> None:
    """Print the run's captured stdout/stderr lines."""
    with Api() as api:
        run = api.run(target)
        if follow:
            for line in follow_logs(run, offset=-tail if tail else 0):
                print(line.text, flush=True)
            return
        for line in run.logs(tail=tail):
            print(line.text)


# --------------------------------------------------------------------------- satchel sync


@contextmanager
def _progress(quiet: bool) -> Iterator[Any]:
    """A rich progress bar on a terminal; nothing when output is piped or with --quiet."""
    if quiet or not console.is_terminal:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  console=console, transient=True) as bars:
        yield bars


def sync(
    paths: Annotated[list[Path], typer.Argument(
        metavar="PATH...", help="Run directories (satchel/run-<time>-<id>), or directories "
        "that hold them")],
    host: Annotated[str | None, typer.Option(help="Server URL (default: where the run was "
                                             "going, else your login)")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar")] = False,
) -> None:
    """Send runs kept in local spools to the server.

    For offline runs, or runs the server did not fully receive. Sending again is safe:
    records the server already has are never duplicated."""
    spools: list[Path] = []
    for path in paths:
        spools += find_spools(path)
    failed = 0
    with _progress(quiet) as bars:
        for spool in spools:
            progress: Progress | None = None
            if bars is not None:
                task = bars.add_task(spool.name, total=None)

                def progress(done: int, total: int, task: Any = task) -> None:
                    bars.update(task, completed=done, total=total)
            try:
                res = sync_spool(spool, host=host, progress=progress)
            except SatchelError as exc:
                failed += 1
                err_console.print(f"{spool}: {error_line(exc)}", markup=False, highlight=False)
                continue
            if res.already_sent:
                console.print(f"{res.run}: already sent, nothing to do ({spool})",
                              markup=False, highlight=False)
            else:
                console.print(f"Synced {res.run}: {res.records_sent} record(s), "
                              f"{res.files_uploaded} file(s) ({spool})", markup=False,
                              highlight=False)
    if failed:
        raise typer.Exit(1)


# --------------------------------------------------------------------------- satchel export


def _print_export(res: RunExport) -> None:
    what = "written" if res.written else "already current"
    console.print(f"{res.team}/{res.project}/{res.run_id}: {what}", markup=False,
                  highlight=False)
    for f in res.files:
        rows = "" if f.rows is None else f"{f.rows} row(s), "
        where = f" -> {f.local_path}" if f.local_path is not None else ""
        console.print(f"  {f.bucket_key} ({rows}{_bytes(f.size)}){where}", markup=False,
                      highlight=False)


def _export_json(res: RunExport) -> dict[str, Any]:
    return {"team": res.team, "project": res.project, "run_id": res.run_id,
            "written": res.written, "exported_at": res.exported_at,
            "files": [{"path": f.path, "key": f.key, "bucket_key": f.bucket_key,
                       "size": f.size, "sha256": f.sha256, "rows": f.rows,
                       "local_path": str(f.local_path) if f.local_path else None}
                      for f in res.files]}


Download = Annotated[Path | None, typer.Option(
    "--download", help="Also download the Parquet files into this directory")]
Force = Annotated[bool, typer.Option("--force", help="Write the files even when the export "
                                     "is already current")]


@export_app.command("run")
def export_run(target: Annotated[str, typer.Argument(metavar="TEAM/PROJECT/RUN")],
               download: Download = None, force: Force = False, as_json: AsJson = False
               ) -> None:
    """Export one run's history, system metrics and console lines as Parquet into
    runs/<project>/<run>/export/ in the team's bucket."""
    with Api() as api:
        res = api.run(target).export(force=force, download=download)
    if as_json:
        print_json(_export_json(res))
    else:
        _print_export(res)


@export_app.command("project")
def export_project_cmd(target: Annotated[str, typer.Argument(metavar="TEAM/PROJECT")],
                       download: Download = None, force: Force = False,
                       as_json: AsJson = False) -> None:
    """Export every run of a project (with --download: into DIR/<run>/)."""
    if target.count("/") != 1:
        raise InvalidInput(f"expected team/project, got {target[:200]!r}")
    with Api() as api:
        res = export_project(api, target, force=force, download=download)
    if as_json:
        print_json({"runs": [_export_json(r) for r in res.runs], "failed": res.failed,
                    "written": res.written, "current": res.current})
    else:
        for r in res.runs:
            _print_export(r)
        for f in res.failed:
            err_console.print(f"{res.team}/{res.project}/{f['run_id']}: {f['code']}: "
                              f"{f['message']}", markup=False, highlight=False)
        console.print(f"{len(res.runs)} run(s) exported ({res.written} written, "
                      f"{res.current} already current), {len(res.failed)} failed",
                      markup=False, highlight=False)
    if res.failed:
        raise typer.Exit(1)
