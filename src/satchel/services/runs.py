"""Runs: create or resume, read, list, update, heartbeat, crash detection (issue 6, DESIGN §7).

What a run *logs* (history, summary, config, console lines, system metrics, finish) arrives as
numbered records and is applied by :mod:`satchel.services.run_records`; reading history is
:mod:`satchel.services.history`. This module owns the run row itself.

Run ids are chosen by the SDK (so an offline run knows its id before the server does), unique
per project and never reused: soft-deleted runs keep their row.
"""

from __future__ import annotations

import json
import secrets
import string
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from satchel.db.models import ConsoleLine, Project, Run
from satchel.errors import AlreadyExists, InvalidInput, NotFound, RunPurged
from satchel.services import locks, names
from satchel.services.authz import Principal, require_read_project, require_write_project

STATES = ("running", "finished", "failed", "crashed")
# "attach": the SDK creating a run it numbered itself (init could not reach the server); if
# an earlier attempt already created it, take it as it is (no resume, no state change).
RESUME_MODES = ("never", "allow", "must", "attach")
MAX_CONFIG_BYTES = 1_000_000
MAX_TAGS = 64
_ALPHABET = string.ascii_lowercase + string.digits
ORDERS = {"created_at": Run.created_at, "name": Run.name, "state": Run.state,
          "heartbeat_at": Run.heartbeat_at, "run_id": Run.run_id}


def new_run_id() -> str:
    """8 random lowercase letters and digits (36^8 ≈ 2.8e12 per project)."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(8))


@dataclass(frozen=True, slots=True)
class RunView:
    team: str
    project: str
    run_id: str
    name: str
    state: str
    config: dict[str, Any]
    summary: dict[str, Any]
    tags: list[str]
    notes: str
    group: str
    job_type: str
    metadata: dict[str, Any]
    created_by: str | None
    created_at: datetime
    heartbeat_at: datetime
    finished_at: datetime | None
    exit_code: int | None
    record_hwm: int
    last_step: int
    history_rows: int
    console_lines: int
    resumed: int


def summary_of(run: Run) -> dict[str, Any]:
    """Last logged values, overridden by what the user set explicitly."""
    out: dict[str, Any] = json.loads(run.summary_json)
    out.update(json.loads(run.summary_user_json))
    return out


def view(run: Run, project: Project, created_by: str | None = None) -> RunView:
    return RunView(
        project.team.name, project.name, run.run_id, run.name, run.state,
        json.loads(run.config_json), summary_of(run), json.loads(run.tags_json), run.notes,
        run.group, run.job_type, json.loads(run.metadata_json), created_by, run.created_at,
        run.heartbeat_at, run.finished_at, run.exit_code, run.record_hwm, run.last_step,
        run.history_rows, run.console_lines, run.resumed)


def _json_text(value: Any, what: str, limit: int = MAX_CONFIG_BYTES) -> str:
    try:
        text = json.dumps(value, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"{what} must be JSON (finite numbers, strings, lists, objects): "
                           f"{exc}", details={"field": what}) from exc
    if len(text) > limit:
        raise InvalidInput(f"{what} is larger than {limit} bytes as JSON",
                           details={"field": what})
    return text


def _tags(tags: Sequence[str]) -> str:
    if len(tags) > MAX_TAGS or any(not isinstance(t, str) or not t or len(t) > 64
                                   for t in tags):
        raise InvalidInput(f"tags: at most {MAX_TAGS} non-empty strings of up to 64 characters",
                           details={"field": "tags"})
    return json.dumps(sorted(set(tags)))


def _text(value: str, what: str, limit: int) -> str:
    if len(value) > limit:
        raise InvalidInput(f"{what} is longer than {limit} characters", details={"field": what})
    return value


def get_run(db: Session, who: Principal, project: Project, run_id: str, *,
            write: bool = False, lock: bool = False) -> Run:
    """The run if ``who`` may read (or write) its project; NotFound otherwise."""
    (require_write_project if write else require_read_project)(db, who, project)
    q = select(Run).where(Run.project_id == project.id, Run.run_id == run_id,
                          Run.deleted_at.is_(None))
    run = db.scalar(q.with_for_update() if lock else q)
    if run is None:
        raise NotFound(f"run '{project.team.name}/{project.name}/{run_id[:64]}' does not exist",
                       details={"run": run_id[:64]})
    if lock and db.get_bind().dialect.name == "sqlite":
        # No row locks on SQLite: take the write lock, then read the row again, so nothing
        # can change record_hwm between our read and our commit.
        locks.sqlite_write_lock(db, "runs", run.id)
        db.refresh(run)
    return run


@dataclass(frozen=True, slots=True)
class RunIn:
    run_id: str | None = None
    name: str = ""
    config: dict[str, Any] | None = None
    tags: Sequence[str] = ()
    notes: str = ""
    group: str = ""
    job_type: str = ""
    metadata: dict[str, Any] | None = None
    resume: str = "never"


def start_run(db: Session, who: Principal, project: Project, spec: RunIn, *,
              now: datetime | None = None) -> tuple[Run, bool]:
    """Create a run, or resume an existing one; returns (run, created)."""
    require_write_project(db, who, project)
    if spec.resume not in RESUME_MODES:
        raise InvalidInput(f"resume must be one of {', '.join(RESUME_MODES)}",
                           details={"field": "resume"})
    now = now or datetime.now(UTC)
    run_id = names.run_id(spec.run_id) if spec.run_id else new_run_id()
    existing = db.scalar(select(Run).where(Run.project_id == project.id, Run.run_id == run_id)
                         .with_for_update())
    if existing is not None:
        if spec.resume == "attach" and existing.deleted_at is None:
            return existing, False
        if spec.resume in ("never", "attach") or existing.deleted_at is not None:
            raise AlreadyExists(
                f"run id '{run_id}' is already used in '{project.team.name}/{project.name}' "
                "(run ids are never reused); pass resume='allow' to continue that run or "
                "choose another id", details={"run": run_id})
        existing.state = "running"
        existing.heartbeat_at = now
        existing.finished_at = None
        existing.exit_code = None
        existing.resumed += 1
        if spec.config:
            merged = json.loads(existing.config_json)
            merged.update(spec.config)
            existing.config_json = _json_text(merged, "config")
        db.flush()
        return existing, False
    if spec.resume == "must":
        raise NotFound(f"run '{project.team.name}/{project.name}/{run_id}' does not exist; "
                       "resume='must' only continues an existing run", details={"run": run_id})
    run = _insert_run(db, who, project, spec, run_id, now)
    if run is None:  # another request created the same id just now: resume or refuse
        return start_run(db, who, project, spec, now=now)
    return run, True


def _insert_run(db: Session, who: Principal, project: Project, spec: RunIn, run_id: str,
                now: datetime) -> Run | None:
    """Insert a new run in a savepoint; None when the id was taken concurrently."""
    run = Run(team_id=project.team_id, project_id=project.id, run_id=run_id,
              name=_text(spec.name or run_id, "name", 128),
              config_json=_json_text(spec.config or {}, "config"), tags_json=_tags(spec.tags),
              notes=_text(spec.notes, "notes", 10_000), group=_text(spec.group, "group", 128),
              job_type=_text(spec.job_type, "job_type", 64),
              metadata_json=_json_text(spec.metadata or {}, "metadata", 100_000),
              created_by=who.user_id, created_at=now, heartbeat_at=now)
    try:
        with db.begin_nested():
            db.add(run)
    except IntegrityError:
        return None
    return run


def update_run(db: Session, who: Principal, project: Project, run_id: str, *,
               name: str | None = None, tags: Sequence[str] | None = None,
               notes: str | None = None) -> Run:
    run = get_run(db, who, project, run_id, write=True)
    if name is not None:
        if not name.strip():
            raise InvalidInput("name must not be empty", details={"field": "name"})
        run.name = _text(name, "name", 128)
    if tags is not None:
        run.tags_json = _tags(tags)
    if notes is not None:
        run.notes = _text(notes, "notes", 10_000)
    db.flush()
    return run


def heartbeat(db: Session, who: Principal, project: Project, run_id: str, *,
              now: datetime | None = None) -> Run:
    run = get_run(db, who, project, run_id, write=True)
    touch(run, now or datetime.now(UTC))
    db.flush()
    return run


def touch(run: Run, now: datetime) -> None:
    """A sign of life: refresh the heartbeat; a run marked crashed that speaks again is
    running again (its process was only cut off from the server)."""
    run.heartbeat_at = now
    if run.state == "crashed":
        run.state = "running"


@dataclass(frozen=True, slots=True)
class RunFilter:
    states: Sequence[str] = ()
    tags: Sequence[str] = ()
    group: str | None = None
    job_type: str | None = None
    name_contains: str | None = None


def list_runs(db: Session, who: Principal, project: Project, *, filters: RunFilter,
              order: str = "-created_at", limit: int = 100, offset: int = 0
              ) -> tuple[list[Run], int]:
    """Runs of a project, filtered and ordered; returns (page, total)."""
    require_read_project(db, who, project)
    for state in filters.states:
        if state not in STATES:
            raise InvalidInput(f"unknown state {state[:20]!r}; expected one of "
                               f"{', '.join(STATES)}", details={"field": "state"})
    desc = order.startswith("-")
    column = ORDERS.get(order.lstrip("-+"))
    if column is None:
        raise InvalidInput(f"cannot order by {order[:40]!r}; expected one of "
                           f"{', '.join(sorted(ORDERS))} (prefix '-' for descending)",
                           details={"field": "order"})
    if not 1 <= limit <= 1000 or offset < 0:
        raise InvalidInput("limit must be 1-1000 and offset >= 0", details={"field": "limit"})
    q = select(Run).where(Run.project_id == project.id, Run.deleted_at.is_(None))
    if filters.states:
        q = q.where(Run.state.in_(list(filters.states)))
    if filters.group is not None:
        q = q.where(Run.group == filters.group)
    if filters.job_type is not None:
        q = q.where(Run.job_type == filters.job_type)
    if filters.name_contains:
        q = q.where(Run.name.contains(filters.name_contains, autoescape=True))
    for tag in filters.tags:  # tags_json is a sorted JSON list of strings
        q = q.where(Run.tags_json.contains(json.dumps(tag), autoescape=True))
    total = db.scalar(select(func.count()).select_from(q.subquery())) or 0
    q = q.order_by(column.desc() if desc else column.asc(), Run.id.desc() if desc else Run.id)
    return list(db.scalars(q.limit(limit).offset(offset))), int(total)


def mark_crashed(db: Session, *, now: datetime, timeout_seconds: float) -> int:
    """Runs still ``running`` whose last sign of life is older than the timeout -> ``crashed``.

    One UPDATE; safe to run on several replicas at once (the background job also holds a
    lease so only one does the work)."""
    cutoff = now - timedelta(seconds=timeout_seconds)
    res = db.execute(update(Run).where(Run.state == "running", Run.heartbeat_at < cutoff)
                     .values(state="crashed").execution_options(synchronize_session=False))
    return int(res.rowcount or 0)  # type: ignore[attr-defined]


def console(db: Session, run: Run, *, offset: int = 0, limit: int = 1000
            ) -> list[ConsoleLine]:
    """Captured stdout/stderr lines from ``offset`` (negative: the last ``-offset`` lines)."""
    if not 1 <= limit <= 10_000:
        raise InvalidInput("limit must be 1-10000", details={"field": "limit"})
    if offset < 0:
        offset = max(0, run.console_lines + offset)
    return list(db.scalars(select(ConsoleLine).where(
        ConsoleLine.run_id == run.id, ConsoleLine.line_no >= offset)
        .order_by(ConsoleLine.line_no).limit(limit)))


def delete_run(db: Session, who: Principal, project: Project, run_id: str, *,
               now: datetime | None = None) -> Run:
    """Soft delete: the run disappears from lists and reads at once (its id stays taken);
    ``restore_run`` brings it back. History, console lines and files are kept."""
    run = get_run(db, who, project, run_id, write=True, lock=True)
    run.deleted_at = now or datetime.now(UTC)
    db.flush()
    return run


def restore_run(db: Session, who: Principal, project: Project, run_id: str) -> Run:
    require_write_project(db, who, project)
    run = db.scalar(select(Run).where(Run.project_id == project.id, Run.run_id == run_id,
                                      Run.deleted_at.is_not(None)).with_for_update())
    if run is None:
        raise NotFound(f"no deleted run '{project.team.name}/{project.name}/{run_id[:64]}'",
                       details={"run": run_id[:64]})
    if db.get_bind().dialect.name == "sqlite":
        # The collector may be purging it: take the write lock and read the row again.
        locks.sqlite_write_lock(db, "runs", run.id)
        db.refresh(run)
    if run.purged_at is not None:
        raise RunPurged(
            f"cannot restore run '{project.team.name}/{project.name}/{run_id[:64]}': it was "
            "deleted longer than the retention window ago and garbage collection purged its "
            "history, console output and files", details={"run": run_id[:64],
                                                          "purged_at": run.purged_at.isoformat()})
    run.deleted_at = None
    db.flush()
    return run
