"""A run's local spool: every record is written here before anything is sent.

Layout of one run's directory (``<run_dir>/run-<UTC time>-<run_id>/``):

    run.json       host, team, project, run id, the init arguments, ``base`` (the number of
                   the first record in records.jsonl: 0, or the server's count when resuming)
    records.jsonl  one record per line (a compact JSON array, docs/runs.md); line i is
                   record ``base + i``
    sent.json      {"hwm": n, "offset": bytes}: records the server confirmed, and where the
                   next one starts in records.jsonl (a hint; the server's count is the truth)

The writer appends under a lock through a buffered file; the sender flushes it before reading,
with its own file handle, only complete lines. Nothing is ever rewritten in place except
sent.json (write temp + rename), so a killed process leaves a readable spool.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from satchel.errors import InvalidInput

FORMAT = 1
RUN_FILE = "run.json"
RECORDS_FILE = "records.jsonl"
SENT_FILE = "sent.json"
FLUSH_SECONDS = 0.5


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    with open(tmp, "w") as fh:
        json.dump(data, fh, indent=1, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


@dataclass
class RunInfo:
    host: str
    team: str
    project: str
    run_id: str
    spec: dict[str, Any]
    resume: str = "never"
    base: int = 0
    created: bool = False  # the server knows the run
    mode: str = "online"

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "host": self.host, "team": self.team,
                "project": self.project, "run_id": self.run_id, "spec": self.spec,
                "resume": self.resume, "base": self.base, "created": self.created,
                "mode": self.mode}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunInfo:
        if data.get("format") != FORMAT:
            raise InvalidInput(f"unknown spool format {data.get('format')!r}")
        return cls(str(data["host"]), str(data["team"]), str(data["project"]),
                   str(data["run_id"]), dict(data["spec"]), str(data.get("resume", "never")),
                   int(data.get("base", 0)), bool(data.get("created", False)),
                   str(data.get("mode", "online")))


class Spool:
    """Append-only record log of one run (thread-safe writer, one reader: the sender)."""

    def __init__(self, path: Path, info: RunInfo, *, create: bool) -> None:
        self.path = path
        self.info = info
        self._lock = threading.Lock()
        if create:
            path.mkdir(parents=True, exist_ok=False)
            self.save_info()
        self._fh = open(path / RECORDS_FILE, "a", encoding="utf-8",  # noqa: SIM115
                        buffering=1024 * 1024)
        self.count = self._count_lines() if not create else 0  # records written (from base)
        self._flushed_at = time.monotonic()

    # ------------------------------------------------------------------ opening

    @classmethod
    def create(cls, root: Path, info: RunInfo) -> Spool:
        stamp = datetime.now(UTC).strftime("%Y%m%d_%H%M%S")
        path = root / f"run-{stamp}-{info.run_id}"
        n = 1
        while path.exists():  # the same run resumed within the same second
            n += 1
            path = root / f"run-{stamp}-{info.run_id}-{n}"
        return cls(path, info, create=True)

    @classmethod
    def open(cls, path: Path) -> Spool:
        """An existing spool (``satchel sync``)."""
        try:
            data = json.loads((path / RUN_FILE).read_text())
        except (OSError, ValueError) as exc:
            raise InvalidInput(f"{path} is not a Satchel run directory (no readable "
                               f"{RUN_FILE})") from exc
        return cls(path, RunInfo.from_json(data), create=False)

    def save_info(self) -> None:
        _write_json(self.path / RUN_FILE, self.info.to_json())

    def _count_lines(self) -> int:
        n = 0
        with open(self.path / RECORDS_FILE, "rb") as fh:
            while block := fh.read(1 << 20):
                n += block.count(b"\n")
        return n

    # ------------------------------------------------------------------ writing

    def append(self, line: str) -> int:
        """Append one serialized record; returns its number. Buffered, but never more than
        ``FLUSH_SECONDS`` behind: a process killed while the server is away (the sender then
        backs off and does not flush) loses at most that much."""
        with self._lock:
            self._fh.write(line)
            self._fh.write("\n")
            number = self.info.base + self.count
            self.count += 1
            now = time.monotonic()
            if now - self._flushed_at >= FLUSH_SECONDS:
                self._fh.flush()
                self._flushed_at = now
            return number

    def flush(self, *, fsync: bool = False) -> int:
        """Make written records readable by the sender; returns the next record number."""
        with self._lock:
            self._fh.flush()
            self._flushed_at = time.monotonic()
            if fsync:
                os.fsync(self._fh.fileno())
            return self.info.base + self.count

    def close(self) -> None:
        with self._lock:
            if not self._fh.closed:
                self._fh.flush()
                os.fsync(self._fh.fileno())
                self._fh.close()

    # ------------------------------------------------------------------ reading

    def sent(self) -> tuple[int, int]:
        """(hwm, byte offset) the server last confirmed, or (base, 0)."""
        try:
            data = json.loads((self.path / SENT_FILE).read_text())
            return int(data["hwm"]), int(data["offset"])
        except (OSError, ValueError, KeyError, TypeError):
            return self.info.base, 0

    def mark_sent(self, hwm: int, offset: int) -> None:
        _write_json(self.path / SENT_FILE, {"hwm": hwm, "offset": offset})

    def offset_of(self, number: int) -> int:
        """Byte offset where record ``number`` starts (a scan; used after a rewind)."""
        target = number - self.info.base
        if target <= 0:
            return 0
        seen = 0
        with open(self.path / RECORDS_FILE, "rb") as fh:
            pos = 0
            while block := fh.read(1 << 20):
                start = 0
                while True:
                    i = block.find(b"\n", start)
                    if i < 0:
                        break
                    seen += 1
                    if seen == target:
                        return pos + i + 1
                    start = i + 1
                pos += len(block)
        raise InvalidInput(f"the spool at {self.path} holds fewer than {target} records")

    def read(self, offset: int, *, max_records: int, max_bytes: int
             ) -> tuple[list[bytes], int]:
        """Complete lines from ``offset``: (lines without newlines, offset after them)."""
        lines: list[bytes] = []
        size = 0
        with open(self.path / RECORDS_FILE, "rb") as fh:
            fh.seek(offset)
            while len(lines) < max_records:
                line = fh.readline()
                if not line or not line.endswith(b"\n"):
                    break  # end of file, or a line still being written
                if lines and size + len(line) > max_bytes:
                    break
                lines.append(line[:-1])
                size += len(line)
                offset += len(line)
        return lines, offset
