"""Logging an artifact version: hash, create (or resume) the pending version, send what the
team's bucket lacks straight to it, commit.

1. Hash every file (streaming, parallel), skipping files the local hash cache knows unchanged.
2. Look the upload up in the resume journal (sdk/journal.py) by (server, team/project/name,
   manifest digest). If an interrupted run left an entry, ``POST .../versions`` carries a
   ``resume`` hint; the server continues that pending version when it can (same collection,
   digest and user, and each multipart upload still open) and only answers URLs for what is
   still missing.
3. Send small objects (one PUT each, a pool of ``workers``) and, at the same time, multipart
   objects (parallel parts in the TransferClient's pool). Each finished object and part is
   journaled as it finishes. Expired URLs are refreshed in batches through
   ``POST .../pending/{id}/urls``.
4. Complete each multipart upload, commit (the server HEAD-verifies every new object), clear
   the journal entry.

When a resumed run finds the pending version or an upload gone (garbage collection, another
user), or the commit reports objects missing, the journal entry is dropped and the log starts
fresh, once. Memory stays bounded: files are streamed, never read whole.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from satchel.errors import ArtifactIncomplete, InvalidInput, NotFound, StorageError
from satchel.sdk.client import JSON, Client
from satchel.sdk.hashcache import HashCache, Hashed, hash_files
from satchel.sdk.journal import Journal, UploadKey, UploadState, manifest_digest
from satchel.sdk.progress import ProgressCallback, Reporter
from satchel.sdk.transfer import BatchRefresher, TransferClient
from satchel.storage.base import PresignedRequest

log = logging.getLogger(__name__)


def request_from_json(data: JSON) -> PresignedRequest:
    return PresignedRequest(data["url"], data["method"], dict(data["headers"]),
                            datetime.fromisoformat(data["expires_at"]))


@dataclass
class UploadStats:
    """What one ``log_artifact`` call did (also the CLI's summary line)."""

    files: int = 0  # file entries (references not counted)
    bytes: int = 0
    hashed_files: int = 0  # read and hashed by this call (hash-cache misses)
    hashed_bytes: int = 0
    files_new: int = 0  # files whose contents the team's bucket did not hold yet
    bytes_new: int = 0
    files_present: int = 0  # contents already in the bucket: nothing sent
    bytes_present: int = 0
    objects_sent: int = 0  # objects this call sent bytes of
    bytes_sent: int = 0
    parts_sent: int = 0
    objects_resumed: int = 0  # finished by an interrupted earlier run (journal): not sent
    parts_resumed: int = 0
    bytes_resumed: int = 0
    urls_refreshed: int = 0
    resumed: bool = False  # continued the pending version of an interrupted run
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, n in counts.items():
                setattr(self, name, getattr(self, name) + n)


@dataclass(frozen=True, slots=True)
class FileEntry:
    path: str  # path inside the artifact
    local: Path


@dataclass(frozen=True, slots=True)
class RefEntry:
    path: str
    ref: str
    size: int


@dataclass(frozen=True, slots=True)
class UploadResult:
    version: JSON  # the committed version, or the unchanged latest one
    created: bool
    stats: UploadStats


class _StartFresh(Exception):
    """The journaled state could not be continued; drop it and log from scratch."""


@dataclass
class _Target:
    client: Client
    team: str
    project: str
    name: str


def upload_artifact(
    client: Client, transfer: TransferClient, *, team: str, project: str, name: str,
    body: JSON, files: Sequence[FileEntry], refs: Sequence[RefEntry], aliases: Sequence[str],
    workers: int, hash_cache: HashCache | None, journal: Journal | None,
    progress: ProgressCallback | None = None,
) -> UploadResult:
    """Hash, create or resume, send, commit. ``body`` holds the version's fields besides the
    entries (type, description, metadata, ...)."""
    rep = Reporter(progress)
    stats = UploadStats(files=len(files))
    rep.start("hash", len(files), sum(_size(f.local) for f in files))
    hashed = hash_files([f.local for f in files], hash_cache, workers=workers,
                        on_file=rep.files("hash"), on_bytes=rep.bytes("hash"))
    rep.end("hash")
    for h in hashed:
        stats.bytes += h.size
        if not h.from_cache:
            stats.hashed_files += 1
            stats.hashed_bytes += h.size
    rows: list[tuple[str, str | None, int, str | None]] = [
        (f.path, h.sha256, h.size, None) for f, h in zip(files, hashed, strict=True)]
    rows += [(r.path, None, r.size, r.ref) for r in refs]
    full: JSON = {**body, "entries": [{"path": p, "size": n, "sha256": s, "ref": r}
                                      for p, s, n, r in rows]}
    local_of = {h.sha256: f.local for f, h in zip(files, hashed, strict=True)}
    key = UploadKey(client.host, team, project, name, manifest_digest(rows))
    target = _Target(client, team, project, name)
    with _claim(journal, key) as owned:
        jr = journal if owned else None
        state = jr.load(key) if jr is not None else None
        try:
            return _attempt(target, transfer, full, key, jr, state, local_of, hashed, aliases,
                            workers, stats, rep)
        except _StartFresh as exc:
            log.warning("could not resume the interrupted upload of %s/%s/%s (%s); "
                        "starting fresh", team, project, name, exc)
            assert jr is not None
            jr.clear(key)
            fresh = UploadStats(files=stats.files, bytes=stats.bytes,
                                hashed_files=stats.hashed_files, hashed_bytes=stats.hashed_bytes)
            return _attempt(target, transfer, full, key, jr, None, local_of, hashed, aliases,
                            workers, fresh, rep)


@contextmanager
def _claim(journal: Journal | None, key: UploadKey) -> Iterator[bool]:
    if journal is None:
        yield False
        return
    with journal.claim(key) as owned:
        yield owned


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _attempt(
    t: _Target, transfer: TransferClient, body: JSON, key: UploadKey, jr: Journal | None,
    state: UploadState | None, local_of: dict[str, Path], hashed: Sequence[Hashed],
    aliases: Sequence[str], workers: int, stats: UploadStats, rep: Reporter,
) -> UploadResult:
    request = dict(body)
    if state is not None:
        request["resume"] = state.resume_hint()
    try:
        res = t.client.create_artifact_version(t.team, t.project, t.name, request)
    except InvalidInput as exc:
        if state is None:
            raise
        raise _StartFresh(str(exc)) from exc
    version = res["version"]
    if not res["created"]:
        if jr is not None:
            jr.clear(key)
        stats.files_present, stats.bytes_present = stats.files, stats.bytes
        return UploadResult(version, False, stats)
    pending = int(version["id"])
    resumed = bool(res.get("resumed")) and state is not None and state.pending_id == pending
    stats.resumed = resumed
    if not resumed:
        state = None
    if jr is not None:
        jr.start(key, pending)
    try:
        _send(t, transfer, res, key, jr, state, local_of, hashed, workers, stats, rep, pending)
        data: JSON = t.client.commit_artifact(t.team, t.project, t.name, pending, list(aliases))
    except (NotFound, ArtifactIncomplete, StorageError) as exc:
        # Resumed from the journal and the server or the bucket disagrees with it (version or
        # upload dropped, object gone): start over once. A fresh run's errors are real ones.
        if resumed:
            raise _StartFresh(f"{type(exc).__name__}: {exc}") from exc
        raise
    if jr is not None:
        jr.clear(key)
    return UploadResult(data, True, stats)


def _send(
    t: _Target, transfer: TransferClient, res: JSON, key: UploadKey, jr: Journal | None,
    state: UploadState | None, local_of: dict[str, Path], hashed: Sequence[Hashed], workers: int,
    stats: UploadStats, rep: Reporter, pending: int,
) -> None:
    done = state.objects if state is not None else frozenset()
    uploads = [u for u in res["uploads"] if u["sha256"] not in done]
    multipart = [m for m in res["multipart"] if m["sha256"] not in done]
    sent_shas = {u["sha256"] for u in uploads} | {m["sha256"] for m in multipart}
    # Files vs the bucket: "new" = its object had to be (or was, by the interrupted run) sent.
    missing = sent_shas | set(done)
    for h in hashed:
        if h.sha256 in missing:
            stats.files_new += 1
            stats.bytes_new += h.size
        else:
            stats.files_present += 1
            stats.bytes_present += h.size
    resumed_objects = {s for s in done if s in local_of}
    stats.objects_resumed = len(resumed_objects)
    stats.bytes_resumed = sum(_size(local_of[s]) for s in resumed_objects)

    journaled: dict[str, dict[int, tuple[str, int]]] = {}
    part_work = 0
    for mp in multipart:
        js = state.multipart.get(mp["sha256"]) if state is not None else None
        have = js.parts if js is not None and (js.upload_id, js.part_size) == \
            (mp["upload_id"], mp["part_size"]) else {}
        journaled[mp["sha256"]] = have
        todo = [p["number"] for p in mp["parts"] if p["number"] not in have]
        part_work += sum(min(mp["part_size"], mp["size"] - (n - 1) * mp["part_size"])
                         for n in todo)
        stats.add(parts_resumed=len(have), bytes_resumed=sum(s for _, s in have.values()))
    rep.start("upload", len(uploads) + len(multipart),
              sum(u["size"] for u in uploads) + part_work)

    objects = BatchRefresher(lambda shas: _object_urls(t, pending, shas),
                             [u["sha256"] for u in uploads], clock=transfer.config.clock)

    def one(u: JSON) -> None:
        sha = u["sha256"]
        transfer.put_file(request_from_json(u), local_of[sha], refresh=objects.for_key(sha))
        objects.done(sha)
        if jr is not None:
            jr.object_done(key, sha)
        stats.add(objects_sent=1, bytes_sent=u["size"])
        rep.advance("upload", 1, u["size"])

    # Small objects in this pool while the big ones' parts use the TransferClient's pool: a
    # slow big file does not hold the small ones back (and each keeps its own parallelism).
    pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix="satchel-put")
    try:
        futures: list[Future[None]] = [pool.submit(one, u) for u in uploads]
        for mp in multipart:
            _multipart(t, transfer, mp, key, jr, journaled[mp["sha256"]], local_of, stats, rep,
                       pending)
        for f in futures:
            f.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    stats.add(urls_refreshed=objects.refreshed)
    rep.end("upload")


def _multipart(
    t: _Target, transfer: TransferClient, mp: JSON, key: UploadKey, jr: Journal | None,
    have: dict[int, tuple[str, int]], local_of: dict[str, Path], stats: UploadStats,
    rep: Reporter, pending: int,
) -> None:
    sha, upload_id, part_size = mp["sha256"], mp["upload_id"], int(mp["part_size"])
    if jr is not None:
        jr.multipart_started(key, sha, upload_id, part_size)
    todo = [p for p in mp["parts"] if p["number"] not in have]
    numbers = [int(p["number"]) for p in todo]
    parts = BatchRefresher(lambda ns: _part_urls(t, pending, sha, upload_id, part_size, ns),
                           numbers, clock=transfer.config.clock)

    def on_part(number: int, etag: str, size: int) -> None:
        parts.done(number)
        if jr is not None:
            jr.part_done(key, sha, number, etag, size)
        stats.add(parts_sent=1, bytes_sent=size)
        rep.advance("upload", 0, size)

    etags = transfer.put_parts(local_of[sha], [request_from_json(p) for p in todo], part_size,
                               numbers=numbers, refresh_part=parts, on_part=on_part,
                               parallel=not mp.get("sequential", False))
    every = {n: e for n, (e, _) in have.items()} | dict(zip(numbers, etags, strict=True))
    count = max(1, -(-int(mp["size"]) // part_size))
    if sorted(every) != list(range(1, count + 1)):
        raise StorageError(f"the parts of object {sha[:12]} do not cover it (the server's part "
                           "list and the journal disagree)")
    t.client.complete_artifact_multipart(t.team, t.project, t.name, pending, {
        "sha256": sha, "upload_id": upload_id,
        "parts": [{"number": n, "etag": every[n]} for n in sorted(every)]})
    if jr is not None:
        jr.object_done(key, sha)
    stats.add(objects_sent=1, urls_refreshed=parts.refreshed)
    rep.advance("upload", 1, 0)


def _object_urls(t: _Target, pending: int, shas: list[str]) -> dict[str, PresignedRequest]:
    res = t.client.artifact_pending_urls(t.team, t.project, t.name, pending, {"objects": shas})
    return {u["sha256"]: request_from_json(u) for u in res["uploads"]}


def _part_urls(t: _Target, pending: int, sha: str, upload_id: str, part_size: int,
               numbers: list[int]) -> dict[int, PresignedRequest]:
    res = t.client.artifact_pending_urls(t.team, t.project, t.name, pending, {"parts": [
        {"sha256": sha, "upload_id": upload_id, "part_size": part_size, "numbers": numbers}]})
    (mp,) = res["multipart"]
    return {int(p["number"]): request_from_json(p) for p in mp["parts"]}

