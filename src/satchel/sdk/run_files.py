"""Files of a run on the SDK side: spool queue, background uploader, ``satchel sync``, reading.

Every file a run sends (``run.save``, media such as ``satchel.Image``) is first copied into the
run's spool directory and recorded in ``files.jsonl`` there, so it survives the user deleting
or rewriting the original, the server or bucket being down, and the process dying:

    files/<sha256>                 a ``run.save`` copy (content-addressed, never rewritten)
    media/images/<key>_<step>_<sha8>.png   an image, written by satchel.Image
    files.jsonl                    the queue: one JSON object per line, appended only
        {"op": "add", "path", "kind", "size", "sha256", "local"}  a file to send (replaces an
                                                                   earlier one with that path)
        {"op": "state", "path", "sha256", "state"}  queued | sent (bytes in the bucket) |
                                                    done (committed) | failed (given up)
        {"op": "end", "pattern", "base", "name"}    run.save(..., policy="end"), copied at finish
        {"op": "ended"}                             the "end" files were copied

A background thread per online run (:class:`FileUploader`) waits until the run exists on the
server (``init`` may have been offline), then repeatedly takes a batch of pending files, asks
the server for presigned PUTs (``POST .../runs/{id}/files``), uploads them straight to the
bucket with the TransferClient (parallel, retried, expired URLs refreshed), and commits them
(``POST .../files/commit``; the server HEAD-verifies each). Files already sent but not yet
committed are committed first. Transient failures (server or bucket down) are retried with
backoff for as long as the process lives; ``run.finish()`` waits for the queue within
``finish_timeout_seconds``; whatever is left is sent by ``satchel sync DIR`` (``Sender.sync``
calls :func:`sync_files`), which re-sends only what the journal does not mark done.

The queue itself is sdk/file_queue.py; big files' parts are sdk/run_file_parts.py; reading
(``Api().run(...).files()``) is sdk/run_files_read.py.
"""

from __future__ import annotations

import glob
import hashlib
import os
import random
import secrets
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

from satchel.config import RunSettings
from satchel.errors import (
    ArtifactIncomplete,
    ChecksumMismatch,
    InvalidInput,
    NotAuthenticated,
    NotFound,
    PermissionDenied,
    SatchelError,
)
from satchel.sdk import run_file_parts
from satchel.sdk.client import JSON, Client
from satchel.sdk.file_queue import EndFile, FileQueue, QueuedFile
from satchel.sdk.sender import Sender, _transient
from satchel.sdk.spool import RunInfo, Spool
from satchel.sdk.transfer import TransferClient
from satchel.sdk.uploads import request_from_json
from satchel.storage.base import PresignedRequest
from satchel.storage.keys import validate_key

BLOCK = 1024 * 1024
BATCH_FILES = 100  # files per register/commit round trip
UPLOAD_WORKERS = 4
MAX_ATTEMPTS = 3  # commits that find a file wrong before it is given up
MAX_FILE_BYTES = 5 * 1024**4  # S3's object limit (services/run_files.py)
MAX_BACKOFF = 30.0
POLICIES = ("now", "end")


def files_api(team: str, project: str, run_id: str) -> str:
    return f"/api/v1/teams/{team}/projects/{project}/runs/{run_id}/files"


# ---------------------------------------------------------------------------- adding files


def _write_atomic(dest: Path, data: bytes) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp-{secrets.token_hex(4)}")
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, dest)


def _copy_hashed(src: Path, spool_dir: Path) -> tuple[str, str, int]:
    """Copy ``src`` into the spool while hashing it (one read); returns (local, sha, size)."""
    size = src.stat().st_size
    if size > MAX_FILE_BYTES:
        raise InvalidInput(f"{src} is {size} bytes; a run file may be at most {MAX_FILE_BYTES} "
                           "bytes")
    folder = spool_dir / "files"
    folder.mkdir(exist_ok=True)
    tmp = folder / f".tmp-{secrets.token_hex(8)}"
    digest = hashlib.sha256()
    size = 0
    try:
        with open(src, "rb") as fin, open(tmp, "wb") as fout:
            while block := fin.read(BLOCK):
                digest.update(block)
                fout.write(block)
                size += len(block)
        sha = digest.hexdigest()
        os.replace(tmp, folder / sha)  # content-addressed: the same bytes, the same copy
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return f"files/{sha}", sha, size


def _glob_root(pattern: Path) -> Path:
    parts = pattern.parts
    for i, part in enumerate(parts):
        if glob.has_magic(part):
            return Path(*parts[:i]) if i else Path(".")
    return pattern.parent


def _name(path: Path, base: Path) -> str:
    # abspath, not resolve: a symlink inside the saved directory keeps its name there.
    rel = os.path.relpath(os.path.abspath(path), os.path.abspath(base))
    if rel == ".." or rel.startswith("../"):
        raise InvalidInput(f"{path} is not under base_path {base}")
    return Path(rel).as_posix()


def expand(end: EndFile, *, must_exist: bool) -> list[tuple[Path, str]]:
    """(local file, name in the run) for a ``run.save`` argument."""
    pattern = Path(end.pattern)
    base = Path(end.base) if end.base else None
    out: list[tuple[Path, str]] = []
    if glob.has_magic(end.pattern):
        root = base or _glob_root(pattern)
        for match in sorted(glob.glob(end.pattern, recursive=True)):
            m = Path(match)
            if m.is_file():
                out.append((m, _name(m, root)))
            elif m.is_dir():
                out += [(f, _name(f, root)) for f in sorted(m.rglob("*")) if f.is_file()]
    elif pattern.is_dir():
        files = sorted(f for f in pattern.rglob("*") if f.is_file())
        if end.name:
            out = [(f, f"{end.name}/{_name(f, pattern)}") for f in files]
        else:
            out = [(f, _name(f, base or pattern.parent)) for f in files]
    elif pattern.is_file() or not must_exist:
        out = [(pattern, end.name or (_name(pattern, base) if base else pattern.name))]
    else:
        raise InvalidInput(f"run.save: no such file or directory: {end.pattern[:300]}")
    for _, name in out:
        validate_key(name)
    return out


class RunFiles:
    """A run's files: queue them in the spool and (online) upload them in the background."""

    def __init__(self, spool: Spool, client: Client | None, settings: RunSettings, *,
                 sender: Sender | None = None) -> None:
        self.spool = spool
        self.queue = FileQueue(spool.path)
        self.uploader: FileUploader | None = None
        self._sender = sender
        if client is not None:  # its thread starts with the first file (most runs have none)
            self.uploader = FileUploader(client, spool.info, self.queue, settings)

    def _queued(self, entry: QueuedFile) -> None:
        if self.queue.add(entry) and self.uploader is not None:
            self.uploader.start()
            self.uploader.wake()

    def add_bytes(self, path: str, data: bytes, sha256: str, *, kind: str = "media") -> None:
        """A file made by the SDK (an encoded image), written into the spool at ``path``."""
        validate_key(path)
        dest = self.spool.path / path
        if not dest.exists():
            _write_atomic(dest, data)
        self._queued(QueuedFile(path, kind, len(data), sha256, path))

    def save(self, path: str | Path, *, name: str | None = None,
             base_path: str | Path | None = None, policy: str = "now") -> list[str]:
        if policy not in POLICIES:
            raise InvalidInput(f"policy must be one of {', '.join(POLICIES)}, not {policy!r}")
        text = os.path.abspath(os.path.expanduser(str(path)))
        if name is not None:
            validate_key(name)
            if glob.has_magic(text):
                raise InvalidInput("name= names one file or directory, not a glob pattern; "
                                   "use base_path= to choose how matches are named")
        end = EndFile(text, os.path.abspath(base_path) if base_path is not None else None, name)
        if policy == "end":
            found = expand(end, must_exist=False)
            self.queue.add_end(end)
            return [n for _, n in found]
        found = expand(end, must_exist=True)
        if not found:
            raise InvalidInput(f"run.save: nothing matches {text[:300]}")
        return [self._add_copy(src, n) for src, n in found]

    def _add_copy(self, src: Path, name: str) -> str:
        try:
            local, sha, size = _copy_hashed(src, self.spool.path)
        except OSError as exc:
            raise InvalidInput(f"run.save: cannot read {src}: {exc.strerror or exc}") from exc
        self._queued(QueuedFile(name, "file", size, sha, local))
        return name

    def capture_end(self) -> list[str]:
        """Copy the ``policy="end"`` files into the spool (at finish, or by ``satchel sync``
        when the process died first). Files gone by then are skipped with a warning."""
        if self.queue.ended:
            return []
        names: list[str] = []
        for end in self.queue.end:
            try:
                for src, name in expand(end, must_exist=True):
                    names.append(self._add_copy(src, name))
            except Exception as exc:  # a file that vanished must not stop the run finishing
                print(f"satchel: run.save(policy='end'): {exc}", file=sys.stderr)
        self.queue.mark_ended()
        return names

    def finish(self, timeout: float) -> bool:
        """Wait (up to ``timeout`` seconds) for every queued file to be committed; then stop
        the uploader and close the queue. False when files are left for ``satchel sync``."""
        try:
            if self.uploader is not None:
                self.uploader.drain(max(0.0, timeout), sender=self._sender)
                self.uploader.stop()
            left = self.queue.pending()
            if left and self.uploader is not None and self.uploader.fatal is None:
                print(f"satchel: {len(left)} file(s) of run {self.spool.info.run_id} are "
                      f"not uploaded yet; they are kept in {self.spool.path}; send them "
                      f"with: satchel sync {self.spool.path}", file=sys.stderr)
            return not left
        finally:
            self.queue.close()


# ---------------------------------------------------------------------------- uploading


class _AlreadyThere(Exception):
    """The server already holds this content under the path: nothing to send."""


class _Refused(Exception):
    """The server refused the file when asked for a fresh URL (given up on already)."""


class FileUploader:
    """Sends a spool's queued files: register -> PUT to the bucket -> commit."""

    def __init__(self, client: Client, info: RunInfo, queue: FileQueue,
                 settings: RunSettings, *, transfer: TransferClient | None = None) -> None:
        self.client = client
        self.info = info
        self.queue = queue
        self.settings = settings
        self._path = files_api(info.team, info.project, info.run_id)
        self._transfer = transfer
        self._own_transfer = transfer is None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._attempts: dict[tuple[str, str], int] = {}
        self.fatal: SatchelError | None = None
        self.uploaded = 0  # files committed by this uploader
        self.failures = 0  # consecutive transient failures

    @property
    def transfer(self) -> TransferClient:
        if self._transfer is None:
            self._transfer = TransferClient()
        return self._transfer

    # ------------------------------------------------------------------ thread control

    def start(self) -> None:
        """Start the background thread (once; later calls do nothing)."""
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="satchel-files",
                                                daemon=True)
                self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def drain(self, timeout: float, *, sender: Sender | None = None) -> bool:
        """Wait until nothing is pending; False on timeout, on a fatal error, or when the run
        can no longer be created (the records sender gave up first)."""
        deadline = time.monotonic() + timeout
        with self.queue.changed:
            while self.fatal is None:
                if not self.queue.has_pending_locked():
                    return True
                if sender is not None and sender.fatal is not None and not self.info.created:
                    return False
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._wake.set()
                self.queue.changed.wait(min(left, 0.5))
        return False

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(30)
        if self._own_transfer and self._transfer is not None:
            self._transfer.close()
            self._transfer = None

    def _loop(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            if not self.info.created:  # the records sender creates the run
                self._wake.wait(self.settings.send_interval_seconds)
                self._wake.clear()
                continue
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
            except Exception as exc:  # e.g. the client closed under a straggling upload
                if not self._stop.is_set():
                    self._give_up(SatchelError(f"unexpected {type(exc).__name__}: {exc}"))
                return
            if not progressed:
                self._wake.wait(self.settings.send_interval_seconds)
                self._wake.clear()

    def _give_up(self, exc: SatchelError) -> None:
        with self.queue.changed:
            self.fatal = exc
            self.queue.changed.notify_all()
        hint = " (check your API key and the project)" if isinstance(
            exc, NotAuthenticated | PermissionDenied | NotFound) else ""
        print(f"satchel: stopped uploading files of run {self.info.run_id}: "
              f"{type(exc).__name__}: {exc}{hint}. They are kept in {self.queue.dir}; send "
              f"them later with: satchel sync {self.queue.dir}", file=sys.stderr)

    # ------------------------------------------------------------------ one round

    def step(self) -> bool:
        """Send one batch of pending files; False when there was nothing to do."""
        batch = self.queue.pending(BATCH_FILES)
        if not batch:
            return False
        sent = [e for e in batch if e.state == "sent"]
        queued = [e for e in batch if e.state == "queued"]
        if queued:
            sent += self._upload(queued)
        if sent:
            self._commit(sent)
        return True

    def _retry_later(self, e: QueuedFile, why: str) -> None:
        """Register and upload ``e`` again next round, at most MAX_ATTEMPTS times in all."""
        key = (e.path, e.sha256)
        self._attempts[key] = self._attempts.get(key, 0) + 1
        if self._attempts[key] >= MAX_ATTEMPTS:
            self._fail(e, f"{why}, {MAX_ATTEMPTS} times")
        else:
            self.queue.set_state(e.path, e.sha256, "queued")

    def _fail(self, e: QueuedFile, why: str) -> None:
        print(f"satchel: giving up on file {e.path!r} of run {self.info.run_id}: {why}",
              file=sys.stderr)
        self.queue.set_state(e.path, e.sha256, "failed")

    def _register(self, entries: Sequence[QueuedFile]) -> JSON:
        body = {"files": [{"path": e.path, "size": e.size, "sha256": e.sha256, "kind": e.kind}
                          for e in entries]}
        try:
            out: JSON = self.client.request("POST", self._path, json=body)
            return out
        except InvalidInput as exc:
            if len(entries) == 1:  # this file is refused (too big, bad name): skip it only
                self._fail(entries[0], str(exc))
                return {"uploads": [], "unchanged": [], "multipart": []}
            merged: JSON = {"uploads": [], "unchanged": [], "multipart": []}
            for e in entries:  # find the one the server refuses; send the others
                one = self._register([e])
                for field in merged:
                    merged[field] += one.get(field, [])
            return merged

    def _fresh_url(self, e: QueuedFile) -> PresignedRequest:
        out = self._register([e])
        for u in out["uploads"]:
            if u["path"] == e.path:
                return request_from_json(u)
        if e.path in out["unchanged"]:
            raise _AlreadyThere(e.path)
        raise _Refused(e.path)

    def _upload(self, entries: list[QueuedFile]) -> list[QueuedFile]:
        by_path = {e.path: e for e in entries}
        out = self._register(entries)
        for path in out["unchanged"]:
            e = by_path[path]
            self.queue.set_state(e.path, e.sha256, "done")

        transfer = self.transfer  # created here, not racing in the pool's threads

        def one(u: JSON) -> QueuedFile | None:
            e = by_path[u["path"]]
            local = self.queue.dir / e.local
            try:
                if "upload_id" in u:  # a big file: parts
                    try:
                        run_file_parts.upload(self.client, transfer, self._path, u, local)
                    except NotFound as exc:  # the upload was aborted, or replaced meanwhile
                        self._retry_later(e, f"its multipart upload is gone ({exc})")
                        return None
                else:
                    transfer.put_file(request_from_json(u), local,
                                      refresh=lambda: self._fresh_url(e))
            except _AlreadyThere:
                self.queue.set_state(e.path, e.sha256, "done")
                return None
            except _Refused:
                return None
            except ChecksumMismatch as exc:
                self._fail(e, f"the bucket refused the bytes ({exc}); the spool copy "
                              f"{local} was changed")
                return None
            except OSError as exc:  # the spool copy is gone: nothing to send, ever
                self._fail(e, f"cannot read {local}: {exc.strerror or exc}")
                return None
            self.queue.set_state(e.path, e.sha256, "sent")
            return replace(e, state="sent")

        uploads = out["uploads"] + out.get("multipart", [])
        if len(uploads) <= 1:
            results = [one(u) for u in uploads]
        else:
            with ThreadPoolExecutor(min(UPLOAD_WORKERS, len(uploads)),
                                    thread_name_prefix="satchel-files-put") as pool:
                results = list(pool.map(one, uploads))
        return [e for e in results if e is not None]

    def _commit(self, entries: list[QueuedFile]) -> None:
        todo = list(entries)
        for _ in range(MAX_ATTEMPTS):
            if not todo:
                return
            try:
                self.client.request("POST", self._path + "/commit",
                                    json={"paths": [e.path for e in todo]})
            except ArtifactIncomplete as exc:
                bad = {str(p.get("path")) for p in exc.details.get("problems", [])}
                if not bad & {e.path for e in todo}:
                    raise
                for e in todo:
                    if e.path in bad:
                        self._retry_later(e, "the bucket does not hold the uploaded bytes")
                todo = [e for e in todo if e.path not in bad]
                continue
            for e in todo:
                self.queue.set_state(e.path, e.sha256, "done")
                self.uploaded += 1
            return


def sync_files(client: Client, spool: Spool, *, transfer: TransferClient | None = None,
               settings: RunSettings | None = None) -> int:
    """Send a spool's pending files now, in this thread (``satchel sync``; the run must exist
    on the server); returns the number of files committed. ``policy="end"`` files of a process
    that died before finishing are copied from where they are now, if they still exist."""
    files = RunFiles(spool, None, settings or RunSettings())
    uploader = FileUploader(client, spool.info, files.queue, settings or RunSettings(),
                            transfer=transfer)
    try:
        files.capture_end()
        while uploader.step():
            pass
        return uploader.uploaded
    finally:
        uploader.stop()
        files.queue.close()
