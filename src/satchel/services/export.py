"""Parquet export of a run into the team's bucket (issue 6, DESIGN §2 and §7).

For every run the server writes, under the team prefix (services/storage.py), ::

    runs/<project>/<run_id>/export/history.parquet   _step, _timestamp, one column per key
    runs/<project>/<run_id>/export/system.parquet    _time, one column per system metric
    runs/<project>/<run_id>/export/console.parquet   line_no, stream, time, text

Schema (docs/runs-export.md): a key is a ``float64`` column when every value ever logged for
it is a number (bools count as 0/1; NaN and ±inf are kept as IEEE values), otherwise a
``string`` column holding each value as JSON (non-finite numbers inside JSON appear as the
strings "NaN", "Infinity", "-Infinity", as in the REST API). A null cell means the key was not
logged at that step. Each file carries key-value metadata (``satchel.*``) naming the run and
the number of records it reflects; each key column says its kind (``satchel.kind``).

Why the server writes these bytes itself, when everywhere else it only signs URLs: the data
lives in the database, not on any client, and an export must happen when the run finishes
even if no client is around (crashed, offline-synced, or finished hours ago). The server
writes through the team's scoped store (``put_bytes``), so the same prefix rules apply, and
every write is audited (action ``run_export``). Reading the files back still goes through
presigned URLs issued by :func:`satchel.services.files.issue_urls`.

Exports of one run never overlap: each takes a database lease named after the run, so the
bytes in the bucket and the ``run_files`` rows (size, SHA-256) always describe the same write.
``runs.exported_at`` records what the files reflect: the run's ``heartbeat_at`` (the time its
last records batch was applied) when the export read it. It is set only if no record arrived
while the export was being built (``record_hwm`` unchanged); otherwise the run stays due and the
background job (services/export_job.py) exports it again. When the files were written is each
``run_files`` row's ``committed_at``.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from satchel.db.models import ConsoleLine, Project, Run, RunFile
from satchel.db.session import Database
from satchel.errors import Conflict, NotFound, PayloadTooLarge
from satchel.services import audit, history, leases
from satchel.services.authz import Principal
from satchel.services.background import Clock, system_clock
from satchel.services.storage import StorageRegistry
from satchel.storage.keys import join_key, validate_key

FORMAT = "1"
EXPORT_DIR = "export"
HISTORY = "history"
SYSTEM = "system"
CONSOLE = "console"
FILES = {HISTORY: f"{EXPORT_DIR}/history.parquet", SYSTEM: f"{EXPORT_DIR}/system.parquet",
         CONSOLE: f"{EXPORT_DIR}/console.parquet"}
CONTENT_TYPE = "application/vnd.apache.parquet"
# One PUT of put_bytes: S3's single-request limit (GCS and Azure clients chunk by themselves,
# S3-compatible stores share S3's limit). A run this large is far beyond what the database
# holds comfortably; the error says so instead of failing inside the provider.
MAX_OBJECT_BYTES = 5 * 1024**3
LEASE_TTL_SECONDS = 900.0
CONSOLE_PAGE = 10_000
NUMBER, JSON_KIND = "number", "json"


def run_file_key(project: Project | str, run_id: str, path: str) -> str:
    """Key of a run's file relative to the team prefix: ``runs/<project>/<run_id>/<path>``."""
    name = project if isinstance(project, str) else project.name
    return join_key("runs", name, run_id, validate_key(path))


def lease_name(run_pk: int) -> str:
    return f"run-export-{run_pk}"


# --------------------------------------------------------------------------- tables


def json_cell(value: Any) -> str:
    """How a value of a non-numeric key is stored: compact JSON text, non-finite numbers
    (also nested ones) as the API's strings "NaN", "Infinity", "-Infinity"."""
    return json.dumps(history.jsonable(value), ensure_ascii=False, separators=(",", ":"),
                      allow_nan=False)


def is_numeric(values: Sequence[Any]) -> bool:
    """Every value a float (the database stores all numbers of a key as float64)."""
    return {float}.issuperset(map(type, values))


def _column_name(key: str, reserved: set[str], taken: set[str]) -> str:
    """The key itself, unless it collides with an index column (``_step``/``_time``): then
    ``<key>_logged`` (with more ``_`` until it is free)."""
    if key not in reserved:
        return key
    name = f"{key}_logged"
    while name in taken or name in reserved:
        name += "_"
    return name


def _aligned(index: dict[int, int], n: int, steps: list[int], values: list[Any],
             all_steps: list[int]) -> list[Any]:
    if steps == all_steps:
        return values
    out: list[Any] = [None] * n
    for s, v in zip(steps, values, strict=True):
        out[index[s]] = v
    return out


def _wide(db: Session, run: Run, stream: str, index_field: pa.Field,
          first: Sequence[str] = ()) -> pa.Table:
    """One row per step of ``stream`` (the union of every key's steps), one column per key."""
    names = sorted(history.keys(db, run, stream=stream))
    series: list[history.Series] = []
    for start in range(0, len(names), history.MAX_KEYS_PER_READ):
        series += history.read(db, run, names[start:start + history.MAX_KEYS_PER_READ],
                               stream=stream)
    union: set[int] = set()
    for s in series:
        union.update(s.steps)
    all_steps = sorted(union)
    index = {step: i for i, step in enumerate(all_steps)}
    n = len(all_steps)
    steps_array = pa.array(all_steps, type=pa.int64())
    if pa.types.is_timestamp(index_field.type):
        steps_array = steps_array.cast(index_field.type)
    fields, arrays = [index_field], [steps_array]
    # ``first`` keys (history: _timestamp) right after the index, the rest by name.
    ordered = [s for k in first for s in series if s.key == k]
    ordered += [s for s in series if s.key not in first]
    reserved = {index_field.name}
    taken = {s.key for s in series}
    for s in ordered:
        values = _aligned(index, n, s.steps, s.values, all_steps)
        if is_numeric(s.values):
            kind, array = NUMBER, pa.array(values, type=pa.float64())
        else:
            kind = JSON_KIND
            array = pa.array([None if v is None else json_cell(v) for v in values],
                             type=pa.string())
        fields.append(pa.field(_column_name(s.key, reserved, taken), array.type,
                               metadata={"satchel.kind": kind, "satchel.key": s.key}))
        arrays.append(array)
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def history_table(db: Session, run: Run) -> pa.Table:
    table = _wide(db, run, "history", pa.field("_step", pa.int64(), nullable=False),
                  first=("_timestamp",))
    if "_timestamp" not in table.column_names:  # a run without history rows
        table = table.add_column(1, pa.field("_timestamp", pa.float64(), metadata={
            "satchel.kind": NUMBER, "satchel.key": "_timestamp"}),
            pa.array([], type=pa.float64()))
    return table


def system_table(db: Session, run: Run) -> pa.Table:
    return _wide(db, run, "system",
                 pa.field("_time", pa.timestamp("ms", tz="UTC"), nullable=False))


def console_table(db: Session, run: Run) -> pa.Table:
    line_nos: list[int] = []
    streams: list[str] = []
    times: list[datetime] = []
    texts: list[str] = []
    after = -1
    while True:
        page = db.execute(select(ConsoleLine.line_no, ConsoleLine.stream, ConsoleLine.created_at,
                                 ConsoleLine.text)
                          .where(ConsoleLine.run_id == run.id, ConsoleLine.line_no > after)
                          .order_by(ConsoleLine.line_no).limit(CONSOLE_PAGE)).all()
        for line_no, stream, created_at, text in page:
            line_nos.append(int(line_no))
            streams.append(str(stream))
            times.append(created_at)
            texts.append(str(text))
        if len(page) < CONSOLE_PAGE:
            break
        after = line_nos[-1]
    schema = pa.schema([pa.field("line_no", pa.int64(), nullable=False),
                        pa.field("stream", pa.string(), nullable=False),
                        pa.field("time", pa.timestamp("us", tz="UTC"), nullable=False),
                        pa.field("text", pa.string(), nullable=False)])
    return pa.Table.from_arrays([pa.array(line_nos, pa.int64()), pa.array(streams, pa.string()),
                                 pa.array(times, pa.timestamp("us", tz="UTC")),
                                 pa.array(texts, pa.string())], schema=schema)


def to_parquet(table: pa.Table, metadata: dict[str, str]) -> bytes:
    """Parquet bytes (zstd; deterministic for the same table and metadata). Dictionary
    encoding only for string columns: for float columns it costs time and makes files larger
    (measured: 4x slower, 2.3x larger for 100 keys x 10k steps)."""
    meta = dict(table.schema.metadata or {})
    meta.update({k.encode(): v.encode() for k, v in metadata.items()})
    sink = pa.BufferOutputStream()
    strings = [f.name for f in table.schema if pa.types.is_string(f.type)]
    pq.write_table(table.replace_schema_metadata(meta), sink, compression="zstd",
                   use_dictionary=strings)
    data: bytes = sink.getvalue().to_pybytes()
    return data


def build(db: Session, run: Run, project: Project) -> dict[str, tuple[bytes, int, int]]:
    """The three files of a run: name -> (Parquet bytes, rows, columns)."""
    out: dict[str, tuple[bytes, int, int]] = {}
    for name, make in ((HISTORY, history_table), (SYSTEM, system_table),
                       (CONSOLE, console_table)):
        table = make(db, run)
        data = to_parquet(table, {
            "satchel.format": FORMAT, "satchel.stream": name,
            "satchel.run": f"{project.team.name}/{project.name}/{run.run_id}",
            "satchel.record_hwm": str(run.record_hwm)})
        if len(data) > MAX_OBJECT_BYTES:
            raise PayloadTooLarge(
                f"the {name} export of run '{run.run_id}' would be {len(data)} bytes, more than "
                f"the {MAX_OBJECT_BYTES} bytes one upload can carry; read it through the API "
                "instead (Api().run(...).scan_history())", details={"file": FILES[name]})
        out[name] = (data, table.num_rows, table.num_columns)
    return out


# --------------------------------------------------------------------------- exporting


@dataclass(frozen=True, slots=True)
class ExportedFile:
    path: str  # relative to the run: export/history.parquet
    key: str  # relative to the team prefix: runs/<project>/<run_id>/export/history.parquet
    bucket_key: str  # the full key in the bucket (with the bucket's sub-path)
    size: int
    sha256: str
    committed_at: datetime
    rows: int | None = None  # known when this call wrote the file
    columns: int | None = None


@dataclass(frozen=True, slots=True)
class RunExport:
    team: str
    project: str
    run_id: str
    state: str
    written: bool  # False: the existing export was current (and force was not given)
    exported_at: datetime | None
    record_hwm: int
    files: list[ExportedFile]


def _is_current(run: Run, rows: dict[str, RunFile]) -> bool:
    return (run.exported_at is not None and run.exported_at >= run.heartbeat_at
            and all(p in rows and rows[p].state == "committed" and rows[p].kind == "export"
                    for p in FILES.values()))


def _existing(db: Session, run: Run) -> dict[str, RunFile]:
    return {f.path: f for f in db.scalars(select(RunFile).where(
        RunFile.run_id == run.id, RunFile.path.in_(list(FILES.values()))))}


def _export_locked(db: Session, storage: StorageRegistry, run: Run, project: Project, *,
                   force: bool, who: Principal | None, info: audit.RequestInfo,
                   clock: Clock) -> RunExport:
    team = project.team
    bucket = storage.team_bucket(db, team)
    rows = _existing(db, run)
    for path, row in rows.items():
        if row.kind != "export":
            raise Conflict(f"run '{run.run_id}' has a file of its own at '{path}'; the Parquet "
                           f"export needs that path (the '{EXPORT_DIR}/' folder of a run is "
                           "reserved for exports)", details={"path": path})

    def view(written: bool, exported_at: datetime | None,
             sizes: dict[str, tuple[int, int]]) -> RunExport:
        files = []
        for name, path in FILES.items():
            row = rows[path]
            key = run_file_key(project, run.run_id, path)
            rc = sizes.get(name)
            files.append(ExportedFile(path, key, bucket.store.full_key(key), row.size,
                                      row.sha256 or "", row.committed_at or row.created_at,
                                      rc[0] if rc else None, rc[1] if rc else None))
        return RunExport(team.name, project.name, run.run_id, run.state, written, exported_at,
                         run.record_hwm, files)

    if not force and _is_current(run, rows):
        return view(False, run.exported_at, {})
    # What the export reflects: records up to record_hwm, the last of them applied at
    # heartbeat_at (every records batch refreshes it). exported_at is set to that time, not to
    # this server's clock, so "due" (exported_at < heartbeat_at) compares two times written by
    # the same code path, whatever the clocks of the replicas and of the job.
    seen_hwm, seen_heartbeat = run.record_hwm, run.heartbeat_at
    built = build(db, run, project)
    written_keys = []
    now = clock()
    for name, (data, _, _) in built.items():
        path = FILES[name]
        key = run_file_key(project, run.run_id, path)
        bucket.store.put_bytes(key, data, content_type=CONTENT_TYPE)
        written_keys.append((bucket.store.full_key(key), "PUT"))
        if path not in rows:
            rows[path] = RunFile(run_id=run.id, path=path, kind="export", created_at=now)
            db.add(rows[path])
        f = rows[path]
        f.state, f.size, f.committed_at = "committed", len(data), now
        f.sha256 = hashlib.sha256(data).hexdigest()
    db.flush()
    # Only if nothing arrived meanwhile: otherwise the run stays due and is exported again.
    res = db.execute(update(Run).where(Run.id == run.id, Run.record_hwm == seen_hwm)
                     .values(exported_at=seen_heartbeat)
                     .execution_options(synchronize_session=False))
    current = int(res.rowcount or 0) == 1  # type: ignore[attr-defined]
    audit.record(db, who, "run_export", info, team=team.name, project=project.name,
                 keys=written_keys)
    return view(True, seen_heartbeat if current else run.exported_at,
                {name: (r, c) for name, (_, r, c) in built.items()})


def export_run(database: Database, storage: StorageRegistry, run_pk: int, *,
               force: bool = False, who: Principal | None = None,
               info: audit.RequestInfo | None = None, clock: Clock = system_clock,
               holder: str | None = None) -> RunExport:
    """Export one run (by primary key; the caller has authorized it) under the run's lease.

    Raises :class:`Conflict` when another export of the run holds the lease. Uses its own
    database sessions: on SQLite the caller must not hold a write transaction."""
    holder = holder or f"export-{uuid.uuid4().hex}"
    name = lease_name(run_pk)
    if not leases.acquire(database, name, holder, ttl_seconds=LEASE_TTL_SECONDS, now=clock()):
        raise Conflict("another export of this run is in progress; try again when it is done",
                       details={"lease": name})
    try:
        with database.session() as db:
            run = db.get(Run, run_pk)
            if run is None or run.deleted_at is not None:
                raise NotFound("the run does not exist (any more)")
            project = db.get(Project, run.project_id)
            assert project is not None
            return _export_locked(db, storage, run, project, force=force, who=who,
                                  info=info or audit.RequestInfo(), clock=clock)
    finally:
        leases.release(database, name, holder)


def project_runs(db: Session, project: Project) -> list[tuple[int, str]]:
    """(primary key, run id) of a project's live runs, oldest first."""
    rows = db.execute(select(Run.id, Run.run_id).where(
        Run.project_id == project.id, Run.deleted_at.is_(None)).order_by(Run.id))
    return [(int(pk), str(rid)) for pk, rid in rows]
