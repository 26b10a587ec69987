"""History storage: one key's values as column chunks (``run_history_segments``).

Writing (services/run_records.py) turns each batch of history rows into one segment per key:
steps as little-endian int64, values as little-endian float64 (``kind`` "f8") or a JSON list
(``kind`` "json" for strings, media references and other non-numbers). Reading one key over
10k steps is then a handful of rows and two ``array.frombytes`` calls, not 10k row lookups;
reading many keys for a table merges them by step.

Non-finite floats are kept in storage; in JSON answers they travel as the strings "NaN",
"Infinity" and "-Infinity" (JSON has no such numbers), and the SDK turns them back.
"""

from __future__ import annotations

import json
import math
import sys
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from satchel.db.models import HistorySegment, Run
from satchel.errors import InvalidInput

STREAMS = ("history", "system")
MAX_KEYS_PER_READ = 1000
_LITTLE = sys.byteorder == "little"


def _to_bytes(a: array[Any]) -> bytes:
    if not _LITTLE:  # pragma: no cover - big-endian hosts
        a = array(a.typecode, a)
        a.byteswap()
    return a.tobytes()


def _from_bytes(code: str, data: bytes) -> array[Any]:
    a = array(code)
    a.frombytes(data)
    if not _LITTLE:  # pragma: no cover
        a.byteswap()
    return a


def encode(run_pk: int, stream: str, key: str, steps: Sequence[int], values: Sequence[Any],
           kind: str) -> dict[str, Any]:
    """A segment row (as a dict for a bulk insert)."""
    packed = _to_bytes(array("d", values)) if kind == "f8" else \
        json.dumps(list(values), separators=(",", ":")).encode()
    return {"run_id": run_pk, "stream": stream, "key": key, "kind": kind,
            "step_min": min(steps), "step_max": max(steps), "count": len(steps),
            "steps": _to_bytes(array("q", steps)), "values": packed}


def decode(seg: HistorySegment) -> tuple[array[int], Sequence[Any]]:
    steps = _from_bytes("q", seg.steps)
    values: Sequence[Any] = _from_bytes("d", seg.values) if seg.kind == "f8" else \
        json.loads(seg.values)
    return steps, values


@dataclass(slots=True)
class Series:
    key: str
    steps: list[int]
    values: list[Any]


def _merge(parts: list[tuple[array[int], Sequence[Any]]]) -> tuple[list[int], list[Any]]:
    """Concatenate segments in write order; if steps are not strictly increasing (a resumed
    run logged a step again, or steps arrived out of order) the last write wins per step."""
    steps: list[int] = []
    values: list[Any] = []
    for s, v in parts:
        steps.extend(s)
        values.extend(v)
    if all(a < b for a, b in pairwise(steps)):
        return steps, values
    last: dict[int, Any] = {}
    for s_, v_ in zip(steps, values, strict=True):
        last[s_] = v_
    ordered = sorted(last)
    return ordered, [last[s_] for s_ in ordered]


def _sample(steps: list[int], values: list[Any], samples: int) -> tuple[list[int], list[Any]]:
    """At most ``samples`` points, evenly spaced, always keeping the first and the last."""
    n = len(steps)
    if samples <= 0 or n <= samples:
        return steps, values
    if samples == 1:
        return steps[-1:], values[-1:]
    idx = sorted({round(i * (n - 1) / (samples - 1)) for i in range(samples)})
    return [steps[i] for i in idx], [values[i] for i in idx]


def read(db: Session, run: Run, keys: Sequence[str], *, stream: str = "history",
         samples: int = 0, min_step: int | None = None, max_step: int | None = None
         ) -> list[Series]:
    """The series of ``keys`` (missing keys give empty series), ordered by step."""
    if stream not in STREAMS:
        raise InvalidInput(f"stream must be one of {', '.join(STREAMS)}",
                           details={"field": "stream"})
    if not keys or len(keys) > MAX_KEYS_PER_READ:
        raise InvalidInput(f"ask for 1-{MAX_KEYS_PER_READ} keys", details={"field": "keys"})
    q = select(HistorySegment).where(HistorySegment.run_id == run.id,
                                     HistorySegment.stream == stream,
                                     HistorySegment.key.in_(list(keys)))
    if min_step is not None:
        q = q.where(HistorySegment.step_max >= min_step)
    if max_step is not None:
        q = q.where(HistorySegment.step_min <= max_step)
    by_key: dict[str, list[tuple[array[int], Sequence[Any]]]] = {k: [] for k in keys}
    for seg in db.scalars(q.order_by(HistorySegment.id)):
        by_key[seg.key].append(decode(seg))
    out = []
    for key in keys:
        steps, values = _merge(by_key[key])
        if min_step is not None or max_step is not None:
            lo = -math.inf if min_step is None else min_step
            hi = math.inf if max_step is None else max_step
            pairs = [(s, v) for s, v in zip(steps, values, strict=True) if lo <= s <= hi]
            steps, values = [p[0] for p in pairs], [p[1] for p in pairs]
        steps, values = _sample(steps, values, samples)
        out.append(Series(key, steps, values))
    return out


def keys(db: Session, run: Run, *, stream: str = "history") -> dict[str, int]:
    """Every key of a run's stream with its number of points (duplicates counted)."""
    rows = db.execute(select(HistorySegment.key, func.sum(HistorySegment.count))
                      .where(HistorySegment.run_id == run.id, HistorySegment.stream == stream)
                      .group_by(HistorySegment.key).order_by(HistorySegment.key))
    return {str(k): int(n) for k, n in rows}


def rows(db: Session, run: Run, *, stream: str = "history",
         wanted: Iterable[str] | None = None) -> Iterator[dict[str, Any]]:
    """The stream as rows ``{"_step": s, key: value, ...}`` ordered by step (for tables,
    ``scan_history`` and the Parquet export). Loads one run's stream in memory."""
    names = list(wanted) if wanted is not None else list(keys(db, run, stream=stream))
    if not names:
        return
    table: dict[int, dict[str, Any]] = {}
    for start in range(0, len(names), MAX_KEYS_PER_READ):
        for series in read(db, run, names[start:start + MAX_KEYS_PER_READ], stream=stream):
            for s, v in zip(series.steps, series.values, strict=True):
                table.setdefault(s, {})[series.key] = v
    for step in sorted(table):
        yield {"_step": step, **table[step]}


def jsonable(value: Any) -> Any:
    """Non-finite floats as strings (JSON has no NaN), also inside JSON values (a logged dict
    or list may hold NaN: records are parsed with Python's json, which accepts it)."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    return value


def jsonable_list(values: Sequence[Any]) -> list[Any]:
    if isinstance(values, list) and all(isinstance(v, float) and math.isfinite(v)
                                        for v in values):
        return values
    return [jsonable(v) for v in values]
