"""Files of a run (``run.save``, media such as ``satchel.Image``): issue 6, docs/runs-files.md.

Key layout, relative to the team's prefix (services/storage.py)::

    runs/<project>/<run_id>/files/<path>     kind "file" (run.save) and "media" (images)
    runs/<project>/<run_id>/<path>           kind "export": Parquet written by the server
                                             (services/export.py; path "export/...")

Flow, like artifacts (services/artifacts.py) but addressed by path instead of content:

1. :func:`register` records each file as a ``pending`` ``run_files`` row and answers a
   presigned PUT per file (size and SHA-256 bound into the request where the store verifies
   them). A path already committed with the same SHA-256 and size gets no URL (``unchanged``):
   re-sending is a no-op. Different content **replaces** the file: the row goes back to
   pending with the new size and hash (the file is not listed until the new bytes are
   committed) and the upload overwrites the object at the same key.
2. The client PUTs straight to the bucket. Files from ``multipart.MULTIPART_THRESHOLD`` up
   are answered with a multipart upload instead (one URL per part, services/multipart.py):
   the client PUTs the parts, refreshes expired part URLs with :func:`part_urls`, and has
   the server assemble the object with :func:`complete_multipart`.
3. :func:`commit` HEADs every named pending file, checks the size (and the SHA-256 where the
   store reports one) and marks them committed, all or nothing; otherwise ``409
   artifact_incomplete`` with ``details.problems`` listing each path and what is wrong.
   Committing a path that is already committed (a retried commit) is a no-op.

Reading: :func:`list_files` (committed files of every kind, exports included) and
:func:`download_urls` (presigned GETs).
Every URL passes :func:`files.issue_urls` (and so :func:`require_url_access`: project read,
team-bucket members only, member role to write) and is audited.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from satchel.db.models import Project, Run, RunFile
from satchel.errors import ArtifactIncomplete, InvalidInput, NotFound
from satchel.services import artifact_verify, audit, multipart, runs
from satchel.services.authz import Principal, require_url_access
from satchel.services.files import FileRequest, IssuedUrl, issue_urls
from satchel.services.storage import StorageRegistry
from satchel.storage.keys import join_key, validate_key

KINDS = ("file", "media")  # what clients register; "export" rows are the server's own
ALL_KINDS = (*KINDS, "export")
# S3's limit for one object; files from multipart.MULTIPART_THRESHOLD up go as parts (a store
# with a lower limit refuses bigger files at registration: multipart.part_size).
MAX_FILE_BYTES = 5 * 1024**4
MAX_FILES_PER_REQUEST = 1000
MAX_FILES_PER_RUN = 100_000
_SHA = re.compile(r"^[0-9a-f]{64}$")


def file_key(project: Project, run_id: str, path: str) -> str:
    """Where a run keeps the file at ``path`` (relative to the team prefix)."""
    return join_key("runs", project.name, run_id, "files", validate_key(path))


def key_for(project: Project, run_id: str, kind: str, path: str) -> str:
    """The key of a ``run_files`` row of any kind (exports sit beside ``files/``; the same
    formula as services/export.run_file_key, which a test pins)."""
    if kind == "export":
        return join_key("runs", project.name, run_id, validate_key(path))
    return file_key(project, run_id, path)


@dataclass(frozen=True, slots=True)
class FileIn:
    path: str
    size: int
    sha256: str
    kind: str = "file"


@dataclass(frozen=True, slots=True)
class FileView:
    path: str
    kind: str
    size: int
    sha256: str | None
    created_at: datetime
    committed_at: datetime | None


@dataclass(frozen=True, slots=True)
class UploadUrl:
    path: str
    size: int
    sha256: str
    url: str
    method: str
    headers: dict[str, str]
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class MultipartUrls:
    """A big file's multipart upload: PUT each part, then :func:`complete_multipart`."""

    path: str
    size: int
    sha256: str
    upload_id: str
    part_size: int
    parts: list[IssuedUrl]  # path = the part number
    sequential: bool  # parts in order, one at a time (GCS resumable sessions)


@dataclass(frozen=True, slots=True)
class RegisterResult:
    uploads: list[UploadUrl]
    unchanged: list[str]  # committed already with the same content: nothing to send
    multipart: list[MultipartUrls]  # files from multipart.MULTIPART_THRESHOLD up


@dataclass(frozen=True, slots=True)
class DownloadUrl:
    path: str
    kind: str
    size: int
    sha256: str | None
    url: str
    method: str
    headers: dict[str, str]
    expires_at: datetime


def _view(f: RunFile) -> FileView:
    return FileView(f.path, f.kind, f.size, f.sha256, f.created_at, f.committed_at)


def _validate(files: Sequence[FileIn]) -> None:
    if len(files) > MAX_FILES_PER_REQUEST:
        raise InvalidInput(f"at most {MAX_FILES_PER_REQUEST} files per request; split the batch")
    seen: set[str] = set()
    for f in files:
        validate_key(f.path)
        if f.path in seen:
            raise InvalidInput(f"path {f.path[:200]!r} appears twice in the request",
                               details={"path": f.path[:200]})
        seen.add(f.path)
        if f.kind not in KINDS:
            raise InvalidInput(f"kind must be one of {', '.join(KINDS)}, not {f.kind[:20]!r}",
                               details={"path": f.path[:200]})
        if not 0 <= f.size <= MAX_FILE_BYTES:
            raise InvalidInput(
                f"{f.path[:200]!r}: a run file may be 0 to {MAX_FILE_BYTES} bytes, got "
                f"{f.size}", details={"path": f.path[:200], "max_bytes": MAX_FILE_BYTES})
        if not _SHA.match(f.sha256):
            raise InvalidInput("sha256 must be 64 lowercase hex characters",
                               details={"path": f.path[:200]})


def _rows(db: Session, run: Run, paths: Sequence[str]) -> dict[str, RunFile]:
    out: dict[str, RunFile] = {}
    unique = list(dict.fromkeys(paths))
    for start in range(0, len(unique), 500):
        out.update((f.path, f) for f in db.scalars(select(RunFile).where(
            RunFile.run_id == run.id, RunFile.path.in_(unique[start:start + 500]))))
    return out


def register(db: Session, storage: StorageRegistry, who: Principal, project: Project,
             run_id: str, files: Sequence[FileIn], info: audit.RequestInfo, *,
             expires_in: int, now: datetime | None = None) -> RegisterResult:
    """Record ``files`` as pending (unless unchanged) and sign one PUT for each."""
    require_url_access(db, who, project, "PUT")
    _validate(files)
    # Locked: two registrations of the same path serialize instead of racing on the row.
    run = runs.get_run(db, who, project, run_id, write=True, lock=True)
    now = now or datetime.now(UTC)
    existing = _rows(db, run, [f.path for f in files])
    new = sum(1 for f in files if f.path not in existing)
    if new:
        count = db.scalar(select(func.count()).select_from(RunFile)
                          .where(RunFile.run_id == run.id)) or 0
        if count + new > MAX_FILES_PER_RUN:
            raise InvalidInput(f"a run may hold at most {MAX_FILES_PER_RUN} files; this run has "
                               f"{count}", details={"max_files": MAX_FILES_PER_RUN})
    unchanged: list[str] = []
    todo: list[FileIn] = []
    for f in files:
        row = existing.get(f.path)
        if row is None:
            db.add(RunFile(run_id=run.id, path=f.path, kind=f.kind, state="pending",
                           size=f.size, sha256=f.sha256, created_at=now))
        elif row.kind not in KINDS:
            raise InvalidInput(f"path {f.path[:200]!r} holds a server-written {row.kind} "
                               "file; choose another path", details={"path": f.path[:200]})
        elif row.state == "committed" and row.sha256 == f.sha256 and row.size == f.size:
            unchanged.append(f.path)
            continue
        else:  # pending, or committed with other content: (re)placed by this upload
            row.kind, row.size, row.sha256 = f.kind, f.size, f.sha256
            row.state, row.committed_at, row.created_at = "pending", None, now
        todo.append(f)
    db.flush()
    store = storage.team_bucket(db, project.team).store
    big = [f for f in todo if multipart.wanted(f.size, store.capabilities)]
    for f in big:  # refused before anything is started when the store cannot hold it
        multipart.part_size(f.size, store.capabilities)
    single = [f for f in todo if f not in big]
    issued = issue_urls(db, storage, who, project,
                        [FileRequest(f.path, "PUT", f.size, f.sha256) for f in single], info,
                        expires_in=expires_in, key_of=lambda p, path: file_key(p, run_id, path),
                        action="run_file_presign")
    uploads = [UploadUrl(f.path, f.size, f.sha256, u.url, u.method, u.headers, u.expires_at)
               for f, u in zip(single, issued, strict=True)]
    parts: list[MultipartUrls] = []
    for f in big:
        key = file_key(project, run_id, f.path)
        started = multipart.start(store, key, f.size, expires_in=expires_in)
        parts.append(MultipartUrls(f.path, f.size, f.sha256, started.upload.upload_id,
                                   started.part_size, started.parts, started.sequential))
    if big:
        audit.record(db, who, "run_file_presign", info, team=project.team.name,
                     project=project.name,
                     keys=[(store.full_key(file_key(project, run_id, f.path)), "PUT")
                           for f in big])
    return RegisterResult(uploads, unchanged, parts)


def _pending_big_file(db: Session, who: Principal, project: Project, run_id: str,
                      path: str) -> RunFile:
    require_url_access(db, who, project, "PUT")
    validate_key(path)
    run = runs.get_run(db, who, project, run_id, write=True)
    row = _rows(db, run, [path]).get(path)
    if row is None or row.kind not in KINDS or row.state != "pending":
        raise NotFound(f"run '{project.team.name}/{project.name}/{run_id}' has no file "
                       f"{path[:200]!r} waiting for its upload; register it again",
                       details={"path": path[:200]})
    return row


def part_urls(db: Session, storage: StorageRegistry, who: Principal, project: Project,
              run_id: str, path: str, upload_id: str, part_size: int, numbers: Sequence[int],
              info: audit.RequestInfo, *, expires_in: int) -> list[IssuedUrl]:
    """Fresh URLs for parts of a registered file's multipart upload (URLs expire);
    ``part_size`` is the one the registration answered."""
    row = _pending_big_file(db, who, project, run_id, path)
    store = storage.team_bucket(db, project.team).store
    count = multipart.part_count(row.size, part_size, store.capabilities)
    if count is None:
        raise InvalidInput(f"part size {part_size} does not fit {path[:200]!r} of {row.size} "
                           "bytes on this store", details={"path": path[:200]})
    bad = [n for n in numbers if not 1 <= n <= count]
    if bad:
        raise InvalidInput(f"{path[:200]!r} has parts 1-{count}; got {bad[:5]}",
                           details={"path": path[:200]})
    key = file_key(project, run_id, path)
    urls = multipart.sign_parts(store, store.multipart_for(key, upload_id), row.size,
                                part_size, sorted(set(numbers)), expires_in=expires_in)
    audit.record(db, who, "run_file_presign", info, team=project.team.name,
                 project=project.name, keys=[(store.full_key(key), "PUT")])
    return urls


def complete_multipart(db: Session, storage: StorageRegistry, who: Principal,
                       project: Project, run_id: str, path: str, upload_id: str,
                       parts: Sequence[tuple[int, str]], info: audit.RequestInfo) -> None:
    """Assemble a registered file from its uploaded parts; :func:`commit` then checks it."""
    _pending_big_file(db, who, project, run_id, path)
    store = storage.team_bucket(db, project.team).store
    handle = multipart.complete(store, file_key(project, run_id, path), upload_id, parts)
    audit.record(db, who, "run_file_multipart_complete", info, team=project.team.name,
                 project=project.name, keys=[(handle.key, "POST")])


def commit(db: Session, storage: StorageRegistry, who: Principal, project: Project,
           run_id: str, paths: Sequence[str], info: audit.RequestInfo, *,
           now: datetime | None = None) -> list[FileView]:
    """Verify the named pending files in the bucket and mark them committed (all or none)."""
    require_url_access(db, who, project, "PUT")
    if len(paths) > MAX_FILES_PER_REQUEST:
        raise InvalidInput(f"at most {MAX_FILES_PER_REQUEST} paths per request; split the batch")
    for path in paths:
        validate_key(path)
    run = runs.get_run(db, who, project, run_id, write=True, lock=True)
    rows = _rows(db, run, paths)
    bucket = storage.team_bucket(db, project.team)
    problems: list[dict[str, Any]] = []
    to_check: list[RunFile] = []
    for path in dict.fromkeys(paths):
        row = rows.get(path)
        if row is None or row.kind not in KINDS:
            problems.append({"path": path, "problem": "not_registered"})
        elif row.state != "committed":  # committed already: a retried commit
            to_check.append(row)
    heads = artifact_verify.head_many(
        bucket.store, [file_key(project, run_id, row.path) for row in to_check])
    pending: list[RunFile] = []
    for row, head in zip(to_check, heads, strict=True):
        problem = artifact_verify.problem_of(head, row.size, row.sha256)
        if problem is None:
            pending.append(row)
        else:
            problems.append({"path": row.path, **problem})
    if problems:
        raise ArtifactIncomplete(
            f"cannot commit {len(problems)} file(s) of run '{project.team.name}/{project.name}/"
            f"{run_id}': missing from the bucket, of another size or content, or never "
            "registered; register and upload them again, then commit",
            details={"problems": problems[:100], "count": len(problems)})
    now = now or datetime.now(UTC)
    for row in pending:
        row.state, row.committed_at = "committed", now
    db.flush()
    if pending:
        audit.record(db, who, "run_file_commit", info, team=project.team.name,
                     project=project.name,
                     keys=[(bucket.store.full_key(file_key(project, run_id, r.path)), None)
                           for r in pending])
    return [_view(rows[p]) for p in dict.fromkeys(paths)]


def list_files(db: Session, who: Principal, project: Project, run_id: str, *,
               prefix: str = "", kind: str | None = None, limit: int = 1000, offset: int = 0
               ) -> tuple[list[FileView], int]:
    """Committed files of a run (exports too), ordered by path; returns (page, total)."""
    require_url_access(db, who, project, "GET")  # file metadata: the same rule as the bytes
    run = runs.get_run(db, who, project, run_id)
    if not 1 <= limit <= 10_000 or offset < 0:
        raise InvalidInput("limit must be 1-10000 and offset >= 0", details={"field": "limit"})
    q = select(RunFile).where(RunFile.run_id == run.id, RunFile.state == "committed")
    if kind is not None:
        if kind not in ALL_KINDS:
            raise InvalidInput(f"kind must be one of {', '.join(ALL_KINDS)}",
                               details={"field": "kind"})
        q = q.where(RunFile.kind == kind)
    if prefix:
        q = q.where(RunFile.path.startswith(prefix, autoescape=True))
    total = db.scalar(select(func.count()).select_from(q.subquery())) or 0
    page = db.scalars(q.order_by(RunFile.path).limit(limit).offset(offset))
    return [_view(f) for f in page], int(total)


def download_urls(db: Session, storage: StorageRegistry, who: Principal, project: Project,
                  run_id: str, info: audit.RequestInfo, *, expires_in: int,
                  paths: Sequence[str] | None = None) -> list[DownloadUrl]:
    """Presigned GETs for the named committed files (all of them when ``paths`` is None)."""
    require_url_access(db, who, project, "GET")
    run = runs.get_run(db, who, project, run_id)
    if paths is None:
        q = select(RunFile).where(RunFile.run_id == run.id, RunFile.state == "committed"
                                  ).order_by(RunFile.path)
        rows = list(db.scalars(q.limit(MAX_FILES_PER_REQUEST + 1)))
        if len(rows) > MAX_FILES_PER_REQUEST:
            raise InvalidInput(f"the run has more than {MAX_FILES_PER_REQUEST} files: name "
                               "them in 'paths' (list them with GET .../files)")
    else:
        if len(paths) > MAX_FILES_PER_REQUEST:
            raise InvalidInput(f"at most {MAX_FILES_PER_REQUEST} paths per request")
        for path in paths:
            validate_key(path)
        found = _rows(db, run, paths)
        missing = [p for p in dict.fromkeys(paths)
                   if p not in found or found[p].state != "committed"]
        if missing:
            raise NotFound(f"run '{run_id}' has no committed file {missing[0][:200]!r}"
                           + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""),
                           details={"paths": [p[:200] for p in missing[:100]]})
        rows = [found[p] for p in dict.fromkeys(paths)]
    kinds = {r.path: r.kind for r in rows}
    issued: list[IssuedUrl] = issue_urls(
        db, storage, who, project, [FileRequest(r.path, "GET") for r in rows], info,
        expires_in=expires_in, key_of=lambda p, path: key_for(p, run_id, kinds[path], path),
        action="run_file_presign")
    return [DownloadUrl(r.path, r.kind, r.size, r.sha256, u.url, u.method, u.headers,
                        u.expires_at) for r, u in zip(rows, issued, strict=True)]
