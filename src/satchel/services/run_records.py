"""Apply a run's numbered records: exactly once, in order, in one transaction per batch.

The SDK writes every record to a local spool first and numbers it (0, 1, 2, ... per run). A
batch says where it starts; the run row keeps ``record_hwm``, the number of records applied.
Under a row lock:

* ``start > hwm``: records are missing in between -> :class:`RecordGap` (409, details.hwm);
  the SDK rewinds its spool to ``hwm`` and sends again;
* ``start + n <= hwm``: a replay of records already applied -> nothing happens;
* otherwise the records from ``hwm`` on are applied and ``hwm`` moves to ``start + n``, in
  the same transaction as the data they carry. A batch therefore counts either wholly or not
  at all, whatever happens to the server or the network, and replays never duplicate.

Records are compact JSON arrays (docs/runs.md):

    ["h", step, time, {key: value, ...}]     a history row
    ["m", time, {key: value, ...}]           a system-metrics sample
    ["o", stream, time, text]                one console line (stream "stdout" | "stderr")
    ["s", {key: value | null, ...}]          summary values set by the user (null removes)
    ["c", {key: value, ...}]                 config updates
    ["x", exit_code, time]                   the run finished

A malformed record is skipped and reported (``rejected``), never retried forever: the
envelope is strict, single records are not, so one bad value cannot wedge a run's spool.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import Session

from satchel.db.models import ConsoleLine, HistorySegment, Run
from satchel.errors import InvalidInput, RecordGap
from satchel.services import history
from satchel.services.runs import touch

MAX_RECORDS_PER_BATCH = 100_000
MAX_KEY_LENGTH = 256
MAX_LINE_LENGTH = 64 * 1024
_NUMBER = (int, float)


@dataclass(slots=True)
class ApplyResult:
    hwm: int
    applied: int = 0
    duplicates: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)
    state: str = "running"


@dataclass(slots=True)
class _Columns:
    steps: list[int] = field(default_factory=list)
    values: list[Any] = field(default_factory=list)


def _ts(value: Any) -> datetime:
    if not isinstance(value, _NUMBER) or isinstance(value, bool) or not math.isfinite(value):
        raise ValueError("time must be a number of seconds since the epoch")
    return datetime.fromtimestamp(float(value), UTC)


def _kind(value: Any) -> str | None:
    """'f8' for numbers (bools count as 0/1), 'json' for the rest, None to skip (null)."""
    if value is None:
        return None
    if isinstance(value, _NUMBER):
        return "f8"
    return "json"


def _check_row(row: Any) -> dict[str, Any]:
    if not isinstance(row, dict):
        raise ValueError("values must be an object of key -> value")
    for key in row:
        if not key or len(key) > MAX_KEY_LENGTH:
            raise ValueError(f"keys must be 1-{MAX_KEY_LENGTH} characters")
    return row


class _Batch:
    """Accumulates one batch's effects, written with a few bulk statements."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.columns: dict[tuple[str, str, str], _Columns] = defaultdict(_Columns)
        self.last: dict[str, Any] = {}
        self.user_summary: dict[str, Any] = {}
        self.config: dict[str, Any] = {}
        self.lines: list[dict[str, Any]] = []
        self.rows = 0
        self.last_step = run.last_step
        self.finished: tuple[int, datetime] | None = None

    def add(self, rec: Any) -> None:
        if not isinstance(rec, list) or not rec or not isinstance(rec[0], str):
            raise ValueError("a record is a JSON array starting with its type")
        kind = rec[0]
        if kind == "h":
            _, step, ts, row = rec
            if not isinstance(step, int) or isinstance(step, bool) or step < 0:
                raise ValueError("step must be a non-negative integer")
            row = _check_row(row)
            self._values("history", step, row)
            self._values("history", step, {"_timestamp": _ts(ts).timestamp()})
            self.last.update(row)
            self.rows += 1
            self.last_step = max(self.last_step, step)
        elif kind == "m":
            _, ts, row = rec
            self._values("system", int(_ts(ts).timestamp() * 1000), _check_row(row))
        elif kind == "o":
            _, stream, ts, text = rec
            if stream not in ("stdout", "stderr") or not isinstance(text, str):
                raise ValueError("console records are ['o', 'stdout'|'stderr', time, text]")
            self.lines.append({"run_id": self.run.id, "stream": stream, "created_at": _ts(ts),
                               "text": text[:MAX_LINE_LENGTH]})
        elif kind == "s":
            self.user_summary.update(_check_row(rec[1]))
        elif kind == "c":
            self.config.update(_check_row(rec[1]))
        elif kind == "x":
            _, code, ts = rec
            if not isinstance(code, int) or isinstance(code, bool):
                raise ValueError("exit code must be an integer")
            self.finished = (code, _ts(ts))
        else:
            raise ValueError(f"unknown record type {kind[:8]!r}")

    def _values(self, stream: str, step: int, row: dict[str, Any]) -> None:
        for key, value in row.items():
            k = _kind(value)
            if k is None:
                continue
            if k == "f8":
                value = float(value)
            col = self.columns[(stream, key, k)]
            col.steps.append(step)
            col.values.append(value)

    def write(self, db: Session) -> None:
        run = self.run
        segments = [history.encode(run.id, stream, key, col.steps, col.values, kind)
                    for (stream, key, kind), col in self.columns.items()]
        if segments:
            db.execute(insert(HistorySegment), segments)
        if self.lines:
            for i, line in enumerate(self.lines):
                line["line_no"] = run.console_lines + i
            db.execute(insert(ConsoleLine), self.lines)
            run.console_lines += len(self.lines)
        if self.last:
            summary = json.loads(run.summary_json)
            summary.update({k: v for k, v in self.last.items()
                            if not (isinstance(v, float) and not math.isfinite(v))})
            run.summary_json = json.dumps(summary)
        if self.user_summary:
            user = json.loads(run.summary_user_json)
            for k, v in self.user_summary.items():
                if v is None:
                    user.pop(k, None)
                else:
                    user[k] = v
            run.summary_user_json = json.dumps(user)
        if self.config:
            config = json.loads(run.config_json)
            config.update(self.config)
            run.config_json = json.dumps(config)
        run.history_rows += self.rows
        run.last_step = self.last_step
        if self.finished is not None:
            code, when = self.finished
            run.state = "finished" if code == 0 else "failed"
            run.exit_code = code
            run.finished_at = when


def apply(db: Session, run: Run, start: int, records: Sequence[Any], *,
          now: datetime | None = None) -> ApplyResult:
    """Apply ``records`` numbered from ``start`` to ``run`` (locked by the caller)."""
    if start < 0:
        raise InvalidInput("start must be >= 0", details={"field": "start"})
    if len(records) > MAX_RECORDS_PER_BATCH:
        raise InvalidInput(f"at most {MAX_RECORDS_PER_BATCH} records per batch",
                           details={"field": "records"})
    hwm = run.record_hwm
    if start > hwm:
        raise RecordGap(f"records {hwm}..{start - 1} of run '{run.run_id}' were never received; "
                        f"send again from record {hwm}", details={"hwm": hwm})
    skip = hwm - start
    result = ApplyResult(hwm=hwm, duplicates=min(skip, len(records)))
    if skip >= len(records):  # a pure replay is no sign of life
        result.state = run.state
        return result
    touch(run, now or datetime.now(UTC))
    batch = _Batch(run)
    for offset, rec in enumerate(records[skip:], start=hwm):
        try:
            batch.add(rec)
        except (ValueError, TypeError, OverflowError) as exc:
            if len(result.rejected) < 100:
                result.rejected.append({"record": offset, "reason": str(exc)[:200]})
    batch.write(db)
    run.record_hwm = start + len(records)
    result.hwm = run.record_hwm
    result.applied = len(records) - skip
    result.state = run.state
    db.flush()
    return result
