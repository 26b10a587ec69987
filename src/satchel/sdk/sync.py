"""``satchel sync``: send runs left in local spools (offline runs, or runs the server never
fully received) to the server.

A spool (sdk/spool.py) knows its run, where it was going and what the server confirmed, so
syncing is the sender's own loop run in the calling thread (:meth:`Sender.sync`): records from
the server's count on, then the run's queued files. The server applies records exactly once,
so syncing twice, or syncing a spool whose process had sent part of it, never duplicates
anything. A spool with nothing left to send is recognized locally and the server is not
contacted at all (not even a heartbeat, which would count as a sign of life of the run).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from satchel.config import RunSettings
from satchel.errors import InvalidInput
from satchel.sdk.client import Client
from satchel.sdk.file_queue import QUEUE_FILE, FileQueue
from satchel.sdk.sender import Sender
from satchel.sdk.spool import RUN_FILE, Spool

Progress = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class SyncResult:
    path: Path
    run: str  # team/project/run_id
    records_sent: int
    files_uploaded: int
    already_sent: bool  # nothing was left to send: the server was not contacted


def find_spools(path: Path) -> list[Path]:
    """``path`` itself when it is a run spool, else the run spools directly inside it (a run
    directory such as ``./satchel``). One-line error when there is none."""
    if (path / RUN_FILE).is_file():
        return [path]
    if not path.is_dir():
        raise InvalidInput(f"{path} does not exist or is not a directory; pass a run directory "
                           "(satchel/run-<time>-<id>) or the directory that holds them")
    found = sorted(p for p in path.iterdir() if (p / RUN_FILE).is_file())
    if not found:
        raise InvalidInput(f"{path} is not a Satchel run directory (no {RUN_FILE}) and holds "
                           "none; pass a run directory (satchel/run-<time>-<id>) or the "
                           "directory that holds them")
    return found


def _nothing_left(spool: Spool) -> bool:
    if not spool.info.created:
        return False
    hwm, _ = spool.sent()
    if hwm < spool.info.base + spool.count:
        return False
    if not (spool.path / QUEUE_FILE).exists():
        return True
    queue = FileQueue(spool.path)
    try:
        return not queue.pending() and (queue.ended or not queue.end)
    finally:
        queue.close()


def sync_spool(path: Path, *, host: str | None = None, api_key: str | None = None,
               settings: RunSettings | None = None, progress: Progress | None = None
               ) -> SyncResult:
    """Send what the server has not confirmed yet from the spool at ``path``."""
    spool = Spool.open(path)
    info = spool.info
    run = f"{info.team}/{info.project}/{info.run_id}"
    try:
        if _nothing_left(spool):
            return SyncResult(path, run, 0, 0, True)
        with Client(host=host or info.host or None, api_key=api_key) as client:
            sender = Sender(client, spool, settings or RunSettings())
            sent = sender.sync(progress=progress)
            uploaded = int(getattr(sender, "files_uploaded", 0))
        return SyncResult(path, run, sent, uploaded, False)
    finally:
        spool.close()
