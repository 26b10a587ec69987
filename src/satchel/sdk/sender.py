"""The background sender: spool -> server, in order, exactly once, surviving outages.

One thread per run. It creates the run on the server if ``init`` could not (server down),
then repeatedly flushes the spool, reads up to a batch of complete records from where the
server's count stands, and POSTs them (gzip above 64 KiB) with their starting number. The
server applies a batch wholly or not at all and ignores records it already has, so a lost
answer is simply sent again. When the server is unreachable (or answers 5xx) the sender waits
with capped exponential backoff and tries again, for as long as the process lives; the spool
keeps everything meanwhile. ``satchel sync`` runs the same loop over a spool left behind.

Errors the server will keep giving (revoked key, no permission, deleted project) stop the
sender: it says so once on stderr, with the ``satchel sync`` command to use later.
"""

from __future__ import annotations

import gzip
import random
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from satchel.config import RunSettings
from satchel.errors import (
    DatabaseUnavailable,
    NotAuthenticated,
    NotFound,
    PermissionDenied,
    RecordGap,
    SatchelError,
    ServerUnreachable,
    StorageUnavailable,
)
from satchel.sdk.client import Client
from satchel.sdk.spool import Spool

GZIP_ABOVE = 64 * 1024
TRANSIENT = (ServerUnreachable, DatabaseUnavailable, StorageUnavailable)
MAX_BACKOFF = 30.0


def _transient(exc: SatchelError) -> bool:
    if isinstance(exc, TRANSIENT):
        return True
    return getattr(exc, "http_status", 0) >= 500


class Sender:
    def __init__(self, client: Client, spool: Spool, settings: RunSettings, *,
                 on_created: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.client = client
        self.spool = spool
        self.settings = settings
        self.on_created = on_created
        info = spool.info
        self._path = f"/api/v1/teams/{info.team}/projects/{info.project}/runs/{info.run_id}"
        self.hwm, self.offset = spool.sent()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._idle = threading.Condition()
        self._thread: threading.Thread | None = None
        self._last_contact = 0.0
        self.fatal: SatchelError | None = None
        self.failures = 0  # consecutive transient failures (shown by finish)
        self.batches = 0
        self.files_uploaded = 0  # by sync()

    # ------------------------------------------------------------------ thread control

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="satchel-sender", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def drain(self, timeout: float) -> bool:
        """Wait until every record written so far is confirmed; False on timeout/fatal."""
        target = self.spool.flush(fsync=True)
        deadline = time.monotonic() + timeout
        with self._idle:
            while self.hwm < target and self.fatal is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._wake.set()
                self._idle.wait(min(left, 0.5))
        return self.hwm >= target

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(10)

    # ------------------------------------------------------------------ the loop

    def _loop(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                progressed = self.step()
                self.failures = 0
                backoff = 0.5
            except SatchelError as exc:
                if not _transient(exc):
                    self._give_up(exc)
                    return
                self.failures += 1
                self._wake.wait(backoff * (0.5 + random.random()))
                self._wake.clear()
                backoff = min(backoff * 2, MAX_BACKOFF)
                continue
            if not progressed:
                self._wake.wait(self.settings.send_interval_seconds)
                self._wake.clear()

    def step(self, *, heartbeat: bool = True) -> bool:
        """One round: create the run if needed, send one batch (or a heartbeat when idle and
        ``heartbeat``). Returns True when records were sent (more may be waiting)."""
        if not self.spool.info.created:
            self.create()
        self.spool.flush()
        lines, end = self.spool.read(self.offset, max_records=self.settings.batch_max_records,
                                     max_bytes=self.settings.batch_max_bytes)
        if not lines:
            if heartbeat and \
                    time.monotonic() - self._last_contact >= self.settings.heartbeat_seconds:
                self.client.request("POST", self._path + "/heartbeat")
                self._last_contact = time.monotonic()
            return False
        self.send(lines, end)
        return True

    def create(self) -> None:
        info = self.spool.info
        body = dict(info.spec, run_id=info.run_id, resume="attach")
        # "attach": we numbered this run ourselves; if an earlier attempt (or another sync of
        # the same spool) created it already, take it as it is.
        out = self.client.request(
            "POST", f"/api/v1/teams/{info.team}/projects/{info.project}/runs", json=body)
        info.created = True
        self.spool.save_info()
        self._last_contact = time.monotonic()
        server_hwm = int(out["run"]["record_hwm"])
        if server_hwm != self.hwm:  # the server's count is the truth
            self._advance(server_hwm, self.spool.offset_of(server_hwm))
        if self.on_created is not None:
            self.on_created(out["run"])

    def send(self, lines: list[bytes], end: int) -> None:
        start = self.hwm
        body = b'{"start":%d,"records":[%s]}' % (start, b",".join(lines))
        headers = {"Content-Type": "application/json"}
        if len(body) > GZIP_ABOVE:
            body = gzip.compress(body, compresslevel=1)
            headers["Content-Encoding"] = "gzip"
        try:
            out = self.client.request("POST", self._path + "/records", content=body,
                                      headers=headers)
        except RecordGap as exc:
            # The server has fewer records than we thought (e.g. it lost a batch we believed
            # sent when its database was restored): rewind and send from its count.
            server_hwm = int(exc.details.get("hwm", self.spool.info.base))
            self._advance(server_hwm, self.spool.offset_of(server_hwm))
            return
        self._last_contact = time.monotonic()
        self.batches += 1
        if out.get("rejected"):
            print(f"satchel: the server rejected {len(out['rejected'])} malformed record(s) "
                  f"of run {self.spool.info.run_id}: {out['rejected'][0]['reason']}",
                  file=sys.stderr)
        new_hwm = int(out["hwm"])
        offset = end if new_hwm == start + len(lines) else self.spool.offset_of(new_hwm)
        self._advance(new_hwm, offset)

    def _advance(self, hwm: int, offset: int) -> None:
        with self._idle:
            self.hwm, self.offset = hwm, offset
            self.spool.mark_sent(hwm, offset)
            self._idle.notify_all()

    def _give_up(self, exc: SatchelError) -> None:
        with self._idle:
            self.fatal = exc
            self._idle.notify_all()
        hint = ""
        if isinstance(exc, NotAuthenticated | PermissionDenied | NotFound):
            hint = " (check your API key and the project)"
        print(f"satchel: stopped sending run {self.spool.info.run_id}: "
              f"{type(exc).__name__}: {exc}{hint}. Everything is kept in {self.spool.path}; "
              f"send it later with: satchel sync {self.spool.path}", file=sys.stderr)

    def sync(self, *, progress: Callable[[int, int], None] | None = None) -> int:
        """Send everything in the spool now, in this thread (``satchel sync``); returns the
        number of records the server confirmed. Then the run's queued files (run.save,
        media) are uploaded too (sdk/run_files.py)."""
        from satchel.sdk.run_files import sync_files  # imports this module

        total = self.spool.flush()
        first = self.hwm
        while True:
            # No heartbeats: the process that wrote this spool may be long gone; a heartbeat
            # would mark its finished or crashed run as alive.
            if not self.step(heartbeat=False) and self.hwm >= total:
                break
            if progress is not None:
                progress(self.hwm, total)
        self.files_uploaded = sync_files(self.client, self.spool, settings=self.settings)
        return self.hwm - first
