"""The queue of a run's files in its spool: ``files.jsonl``, appended only (format in
sdk/run_files.py). One :class:`FileQueue` per spool directory; thread-safe. A line torn by a
crash while it was written is skipped on load, so a queue survives any interruption."""

from __future__ import annotations

import json
import os
import threading
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

QUEUE_FILE = "files.jsonl"


@dataclass(frozen=True, slots=True)
class QueuedFile:
    path: str  # inside the run
    kind: str  # file | media
    size: int
    sha256: str
    local: str  # relative to the spool directory
    state: str = "queued"  # queued | sent | done | failed


@dataclass(frozen=True, slots=True)
class EndFile:
    pattern: str  # absolute file, directory or glob pattern
    base: str | None
    name: str | None


class FileQueue:
    """``files.jsonl`` of one spool: the run's files and how far each got (thread-safe)."""

    def __init__(self, spool_dir: Path) -> None:
        self.dir = spool_dir
        self._lock = threading.Lock()
        self.changed = threading.Condition(self._lock)
        self._entries: dict[str, QueuedFile] = {}
        self.end: list[EndFile] = []
        self.ended = False
        self._load()
        self._fh: Any = None  # opened at the first write: reading needs no handle

    def _load(self) -> None:
        try:
            text = (self.dir / QUEUE_FILE).read_text(encoding="utf-8")
        except FileNotFoundError:
            return
        for line in text.splitlines():
            try:
                self._apply(json.loads(line))
            except (ValueError, KeyError, TypeError):
                continue  # a line torn by a crash while it was written

    def _apply(self, op: dict[str, Any]) -> None:
        kind = op["op"]
        if kind == "add":
            self._entries[op["path"]] = QueuedFile(
                str(op["path"]), str(op["kind"]), int(op["size"]), str(op["sha256"]),
                str(op["local"]))
        elif kind == "state":
            e = self._entries.get(op["path"])
            if e is not None and e.sha256 == op["sha256"]:
                self._entries[e.path] = replace(e, state=str(op["state"]))
        elif kind == "end":
            self.end.append(EndFile(str(op["pattern"]), op.get("base"), op.get("name")))
        elif kind == "ended":
            self.ended = True

    def _write(self, op: dict[str, Any]) -> None:
        if self._fh is None:
            self._fh = open(self.dir / QUEUE_FILE, "a", encoding="utf-8")  # noqa: SIM115
        self._fh.write(json.dumps(op, separators=(",", ":")) + "\n")
        self._fh.flush()
        self._apply(op)
        self.changed.notify_all()

    def add(self, entry: QueuedFile) -> bool:
        """Queue a file; False when the same content is already queued or sent under that
        path."""
        with self._lock:
            old = self._entries.get(entry.path)
            if old is not None and old.sha256 == entry.sha256 and old.size == entry.size \
                    and old.state != "failed":
                return False
            self._write({"op": "add", **{k: v for k, v in asdict(entry).items()
                                         if k != "state"}})
            return True

    def set_state(self, path: str, sha256: str, state: str) -> None:
        with self._lock:
            e = self._entries.get(path)
            if e is not None and e.sha256 == sha256 and e.state != state:
                self._write({"op": "state", "path": path, "sha256": sha256, "state": state})

    def add_end(self, end: EndFile) -> None:
        with self._lock:
            self._write({"op": "end", **asdict(end)})

    def mark_ended(self) -> None:
        with self._lock:
            if not self.ended:
                self._write({"op": "ended"})

    def pending(self, limit: int | None = None) -> list[QueuedFile]:
        """Files not committed yet (sent ones first: they only need a commit)."""
        with self._lock:
            todo = [e for e in self._entries.values() if e.state in ("queued", "sent")]
        todo.sort(key=lambda e: e.state != "sent")
        return todo[:limit] if limit is not None else todo

    def has_pending_locked(self) -> bool:
        """Whether anything is queued or sent (the caller holds ``changed``)."""
        return any(e.state in ("queued", "sent") for e in self._entries.values())

    def entries(self) -> list[QueuedFile]:
        with self._lock:
            return list(self._entries.values())

    def close(self) -> None:
        with self._lock:
            if self._fh is not None and not self._fh.closed:
                self._fh.flush()
                os.fsync(self._fh.fileno())
                self._fh.close()
            self._fh = None  # a straggling write (uploader thread) opens it again
