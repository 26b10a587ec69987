"""`satchel gc [--dry-run] [--team T] [--json]` and `satchel gc status` (docs/gc.md).

Both call the server's API (instance admins only); errors print as one line.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from satchel.cli.output import console, print_json
from satchel.sdk.client import Client

app = typer.Typer(help="Artifact garbage collection: run it now, or show its status and "
                  "history (instance admins).", invoke_without_command=True)

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def human_bytes(n: int) -> str:
    value = float(n)
    for unit in _UNITS:
        if abs(value) < 1024 or unit == _UNITS[-1]:
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _print(text: str) -> None:
    console.print(text, markup=False, highlight=False)


def print_run(run: dict[str, Any]) -> None:
    dry = run["dry_run"]
    scope = f"team {run['team']}" if run.get("team") else "all teams"
    _print(f"Garbage collection run {run['id']} ({run['trigger']}{', dry run' if dry else ''}, "
           f"{scope}): {run['status']}")
    verb = "would free" if dry else "freed"
    _print(f"  {verb} {_plural(run['objects_freed'], 'object')}, "
           f"{human_bytes(run['bytes_freed'])}")
    would = "would be " if dry else ""
    _print(f"  versions {would}expired by TTL: {run['versions_expired']}; stale pending versions "
           f"{would}dropped: {run['pending_dropped']}; multipart uploads {would}aborted: "
           f"{run['multipart_aborted']}")
    for t in run.get("report", {}).get("teams", []):
        _print(f"  team {t['team']}: {verb} {_plural(t['objects_freed'], 'unreferenced object')}"
               f" ({human_bytes(t['bytes_freed'])}) and "
               f"{_plural(t['orphan_objects_freed'], 'orphan object')} "
               f"({human_bytes(t['orphan_bytes_freed'])})")
        if t.get("runs_purged") or t.get("run_objects_freed"):
            _print(f"    deleted runs {would}purged: {t['runs_purged']}; run files "
                   f"{would}freed: {t['run_objects_freed']} "
                   f"({human_bytes(t['run_bytes_freed'])})")
        orphans, missing = t.get("orphan_objects_count", 0), t.get("rows_missing_object_count", 0)
        _print(f"    objects without rows: {orphans} ({t['orphan_objects_kept']} kept: live or "
               f"younger than the grace period); rows without objects: {missing}")
        for sha in t.get("rows_missing_object", [])[:20]:
            _print(f"      missing from the bucket: {sha}")
        if missing > 20:
            _print(f"      ... and {missing - 20} more (--json lists up to 1000)")
        if t.get("error"):
            _print(f"    ERROR: {t['error']}")
    if run.get("error"):
        _print(f"  error: {run['error']}")


@app.callback()
def gc(
    ctx: typer.Context,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Report only; change nothing")]
    = False,
    team: Annotated[str | None, typer.Option(help="Collect this team only")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the run record as JSON")]
    = False,
) -> None:
    """Free artifact objects that no live or restorable version references, expire versions
    past their TTL, drop stale pending uploads. Exits 1 when the run failed."""
    if ctx.invoked_subcommand is not None:
        return
    with Client() as client:
        run = client.run_gc(dry_run=dry_run, team=team)
    if as_json:
        print_json(run)
    else:
        print_run(run)
    if run["status"] != "succeeded":
        raise typer.Exit(1)


@app.command("status")
def status(
    limit: Annotated[int, typer.Option(help="How many recent runs")] = 10,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Whether a collector is running (holds the lease), the next scheduled run, recent runs."""
    with Client() as client:
        info = client.gc_status()
        runs = client.gc_runs(limit=limit)
    if as_json:
        print_json({"status": info, "runs": runs})
        return
    if info["running"]:
        _print(f"Collector: running (lease held by {info['lease_holder']} until "
               f"{info['lease_expires_at']})")
    else:
        _print("Collector: idle (no one holds the lease)")
    if info["interval_seconds"]:
        _print(f"Schedule: every {info['interval_seconds']} s; next run due at "
               f"{info['next_run_at'] or 'unknown (no scheduler has started yet)'}")
    else:
        _print("Schedule: off (SATCHEL_GC_INTERVAL_SECONDS=0)")
    _print("Recent runs:" if runs else "No runs recorded yet.")
    for r in runs:
        kind = r["trigger"] + (", dry run" if r["dry_run"] else "")
        line = (f"  #{r['id']} {str(r['started_at'])[:19].replace('T', ' ')} {kind} "
                f"({r['team'] or 'all teams'}): {r['status']}; "
                f"{'would free' if r['dry_run'] else 'freed'} "
                f"{_plural(r['objects_freed'], 'object')}, {human_bytes(r['bytes_freed'])}; "
                f"expired {r['versions_expired']}, dropped {r['pending_dropped']} pending")
        if r["error"]:
            line += f"; error: {r['error'][:200]}"
        _print(line)
