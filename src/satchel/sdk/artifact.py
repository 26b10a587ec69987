"""Artifacts in the SDK: build a manifest locally, upload what the bucket lacks, commit.

Files are hashed streaming (1 MiB blocks, bounded memory) in parallel, skipping files the
local hash cache knows unchanged; only objects the server reports missing for the team are
uploaded, straight to the bucket through :class:`TransferClient` (parallel files, parallel
multipart parts for big ones), journaled so that a killed upload resumes where it stopped
(sdk/uploads.py). Downloads verify the SHA-256 of every file and keep objects in a local
cache by hash (sdk/downloads.py). Caches, journal and refresh: docs/transfer.md.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any

from satchel.errors import InvalidInput
from satchel.sdk.cache import DownloadCache
from satchel.sdk.client import JSON, Client
from satchel.sdk.downloads import DownloadStats, download_version
from satchel.sdk.hashcache import HashCache, sha256_file
from satchel.sdk.journal import Journal
from satchel.sdk.lifecycle import TTL, ArtifactCollection, parse_time, ttl_seconds
from satchel.sdk.progress import ProgressCallback
from satchel.sdk.runs_api import ApiRun, RunsQuery, parse_run
from satchel.sdk.transfer import TransferClient
from satchel.sdk.uploads import FileEntry, RefEntry, UploadStats, upload_artifact

__all__ = ["Api", "Artifact", "Lineage", "LoggedArtifact", "RunRef", "sha256_file"]

log = logging.getLogger(__name__)


def parse_artifact_path(text: str) -> tuple[str, str, str, str | None]:
    """``team/project/name[:ref]`` -> (team, project, name, ref or None)."""
    path, _, ref = text.partition(":")
    parts = path.split("/")
    if len(parts) != 3 or not all(parts):
        raise InvalidInput(f"expected team/project/name[:alias|:vN], got {text[:200]!r}")
    return parts[0], parts[1], parts[2], ref or None


@dataclass(frozen=True)
class RunRef:
    """A run named by lineage; ``used_at`` is when it first used the version (consumers)."""

    team: str
    project: str
    run_id: str
    used_at: datetime | None = None

    @property
    def path(self) -> str:
        """``team/project/run_id``, as ``Api().run(...)`` takes it."""
        return f"{self.team}/{self.project}/{self.run_id}"


@dataclass(frozen=True)
class Lineage:
    """Which run produced a version and which used it (docs/artifacts.md, "Lineage")."""

    producer: RunRef | None
    consumers: list[RunRef]  # only runs you can read, first use first
    hidden_consumers: int  # runs in projects you cannot read: counted, not named


@dataclass(frozen=True)
class _Entry:
    path: str
    local: Path | None = None
    ref: str | None = None
    size: int = 0


class Artifact:
    """A set of files (and references) to log as one version of a named collection."""

    def __init__(self, name: str, type: str, *, description: str = "",
                 metadata: dict[str, Any] | None = None, ttl: TTL | None = None) -> None:
        """``ttl``: seconds or a timedelta from the commit; 0 = keep forever; None = the
        team's default (docs/artifacts.md, "Time-to-live")."""
        self.name = name
        self.type = type
        self.description = description
        self.metadata = dict(metadata or {})
        self.ttl: int | None = None if ttl is None else ttl_seconds(ttl)
        self._entries: dict[str, _Entry] = {}

    def _add(self, entry: _Entry) -> None:
        if entry.path in self._entries:
            raise InvalidInput(f"artifact already has an entry at {entry.path!r}")
        self._entries[entry.path] = entry

    def add_file(self, local_path: str | Path, name: str | None = None) -> None:
        path = Path(local_path)
        if not path.is_file():
            raise InvalidInput(f"{path} is not a file")
        self._add(_Entry(name or path.name, local=path, size=path.stat().st_size))

    def add_dir(self, local_path: str | Path, name: str = "") -> None:
        root = Path(local_path)
        if not root.is_dir():
            raise InvalidInput(f"{root} is not a directory")
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            rel = path.relative_to(root).as_posix()
            self.add_file(path, str(PurePosixPath(name, rel)) if name else rel)

    def add_reference(self, uri: str, name: str | None = None, *, size: int = 0) -> None:
        """Record an external URI (not copied into the bucket)."""
        self._add(_Entry(name or uri.rstrip("/").rsplit("/", 1)[-1], ref=uri, size=size))

    @property
    def entries(self) -> list[str]:
        return sorted(self._entries)


class LoggedArtifact:
    """A committed version on the server."""

    def __init__(self, api: Api, team: str, project: str, data: JSON, *, uploaded: int = 0,
                 stats: UploadStats | None = None) -> None:
        self._api = api
        self.team = team
        self.project = project
        self._data = data
        self.uploaded = uploaded  # objects sent by the log call that returned this
        # What that log call did: files/bytes new vs already present, sent, resumed, hashed.
        self.stats = stats
        # What the last download() did: fetched from the bucket vs copied from the cache.
        self.download_stats: DownloadStats | None = None

    name = property(lambda self: str(self._data["name"]))
    type = property(lambda self: str(self._data["type"]))
    digest = property(lambda self: str(self._data["digest"]))

    @property
    def version(self) -> str:
        return str(self._data["version"])

    @property
    def aliases(self) -> list[str]:
        return list(self._data["aliases"])

    @property
    def metadata(self) -> dict[str, Any]:
        return dict(self._data["metadata"])

    @property
    def producing_run(self) -> str | None:
        """Id of the run (in this version's project) that logged it; None when it was logged
        outside a run."""
        run = self._data.get("producing_run")
        return None if run is None else str(run)

    def lineage(self) -> Lineage:
        """The run that produced this version and the runs that used it."""
        consumers: list[RunRef] = []
        offset = 0
        while True:
            page = self._api.client.artifact_lineage(self.team, self.project, self.name,
                                                     self.version, offset=offset)
            consumers += [RunRef(c["team"], c["project"], c["run_id"], parse_time(c["used_at"]))
                          for c in page["consumers"]]
            offset += len(page["consumers"])
            if not page["consumers"] or offset >= int(page["total"]):
                break
        p = page["producer"]
        producer = RunRef(p["team"], p["project"], p["run_id"]) if p is not None else None
        return Lineage(producer, consumers, int(page["hidden_consumers"]))

    @property
    def expires_at(self) -> datetime | None:
        """When the TTL runs out (garbage collection then deletes the version); None = kept
        forever."""
        return parse_time(self._data.get("expires_at"))

    def set_ttl(self, ttl: TTL) -> None:
        """Expire ``ttl`` (seconds or timedelta) after the commit; 0 = keep forever."""
        self._data = self._api.client.set_artifact_ttl(self.team, self.project, self.name,
                                                       self.version, ttl_seconds(ttl))

    def __repr__(self) -> str:
        return f"<LoggedArtifact {self.team}/{self.project}/{self.name}:{self.version}>"

    def download(self, root: str | Path | None = None, *,
                 progress: ProgressCallback | None = None, cache: bool | None = None) -> Path:
        """Fetch every file into ``root`` (default ``./artifacts/<name>-<version>``), verifying
        each file's SHA-256; returns the root.

        Objects already in the local download cache are copied from it (still verified);
        ``cache=False`` bypasses the cache for this call (default: the
        ``SATCHEL_DOWNLOAD_CACHE`` setting). ``progress`` receives
        :class:`satchel.sdk.progress.ProgressEvent` s."""
        out = Path(root) if root is not None else Path("artifacts") / f"{self.name}-{self.version}"
        self.download_stats = download_version(
            self._api.client, self._api.transfer, team=self.team, project=self.project,
            name=self.name, version=self.version, root=out, workers=self._api.workers,
            cache=self._api.download_cache if cache is not False else None, progress=progress)
        return out

    def delete(self) -> None:
        self._data = self._api.client.delete_artifact_version(self.team, self.project,
                                                              self.name, self.version)

    def restore(self) -> None:
        self._data = self._api.client.restore_artifact_version(self.team, self.project,
                                                               self.name, self.version)


class Api:
    """Public API for artifacts (until runs exist, artifacts are logged here)."""

    def __init__(self, host: str | None = None, api_key: str | None = None, *,
                 client: Client | None = None, transfer: TransferClient | None = None,
                 workers: int = 8, cache_dir: str | Path | None = None) -> None:
        """``cache_dir``: where the hash cache, resume journal and download cache live
        (default: the ``SATCHEL_CACHE_DIR`` setting, ``~/.cache/satchel``)."""
        self.client = client or Client(host=host, api_key=api_key)
        self._transfer = transfer
        self.workers = workers
        settings = self.client.settings
        self.cache_dir = Path(cache_dir) if cache_dir is not None else settings.cache_dir
        self._use_download_cache = settings.download_cache
        self._download_cache_max = settings.download_cache_max_bytes
        self._hash_cache: HashCache | None = None
        self._journal: Journal | None = None
        self._download_cache: DownloadCache | None = None
        self._opened: set[str] = set()
        self._open_lock = threading.Lock()  # the caches open once, on first use

    @property
    def transfer(self) -> TransferClient:
        if self._transfer is None:
            self._transfer = TransferClient()
        return self._transfer

    @property
    def hash_cache(self) -> HashCache | None:
        with self._open_lock:
            if "hash" not in self._opened:
                self._opened.add("hash")
                cache = HashCache(self.cache_dir / "hashes.db")
                self._hash_cache = cache if cache.enabled else None
            return self._hash_cache

    @property
    def journal(self) -> Journal | None:
        """The resume journal; None (uploads still work, without resume) if it cannot open."""
        with self._open_lock:
            if "journal" not in self._opened:
                self._opened.add("journal")
                try:
                    self._journal = Journal(self.cache_dir / "journal.db")
                except (OSError, sqlite3.Error) as exc:
                    log.warning("resume journal disabled: cannot open it under %s (%s)",
                                self.cache_dir, exc)
            return self._journal

    @property
    def download_cache(self) -> DownloadCache | None:
        with self._open_lock:
            if "download" not in self._opened:
                self._opened.add("download")
                if self._use_download_cache:
                    try:
                        self._download_cache = DownloadCache(
                            self.cache_dir / "objects", max_bytes=self._download_cache_max)
                    except (OSError, sqlite3.Error) as exc:
                        log.warning("download cache disabled: cannot open it under %s (%s)",
                                    self.cache_dir, exc)
            return self._download_cache

    def close(self) -> None:
        if self._transfer is not None:
            self._transfer.close()
        for closable in (self._hash_cache, self._journal, self._download_cache):
            if closable is not None:
                closable.close()
        self.client.close()

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def log_artifact(self, artifact: Artifact, project: str, *, aliases: Sequence[str] = (),
                     progress: ProgressCallback | None = None,
                     run_id: str | None = None) -> LoggedArtifact:
        """Log ``artifact`` to ``project`` ("team/project"); returns the committed version
        (the existing one when nothing changed, with 0 uploads).

        ``run_id``: a run of that project to record as the producer (``run.log_artifact``
        passes its own); when nothing changed, the run is recorded as a user of the existing
        version instead (docs/artifacts.md, "Lineage").

        An upload interrupted earlier (process killed) with the same files resumes: finished
        files and multipart parts are not sent again. ``progress`` receives
        :class:`satchel.sdk.progress.ProgressEvent` s (hashing, then uploading)."""
        team, _, proj = project.partition("/")
        if not team or not proj or "/" in proj:
            raise InvalidInput(f"project must be 'team/project', got {project[:200]!r}")
        entries = list(artifact._entries.values())
        body: JSON = {
            "type": artifact.type, "description": artifact.description,
            "metadata": artifact.metadata,
        }
        if artifact.ttl is not None:
            body["ttl_seconds"] = artifact.ttl
        if run_id is not None:
            body["run_id"] = run_id
        result = upload_artifact(
            self.client, self.transfer, team=team, project=proj, name=artifact.name, body=body,
            files=[FileEntry(e.path, e.local) for e in entries if e.local is not None],
            refs=[RefEntry(e.path, e.ref, e.size) for e in entries if e.ref is not None],
            aliases=aliases, workers=self.workers, hash_cache=self.hash_cache,
            journal=self.journal, progress=progress)
        version = result.version
        if not result.created:
            data = version
            if artifact.ttl is not None:  # nothing new to log: the TTL applies to this version
                data = self.client.set_artifact_ttl(team, proj, artifact.name,
                                                    str(version["version"]), artifact.ttl)
            for alias in aliases:
                data = self.client.set_artifact_alias(team, proj, artifact.name, alias,
                                                      str(version["version"]))
            return LoggedArtifact(self, team, proj, data, stats=result.stats)
        return LoggedArtifact(self, team, proj, version, uploaded=result.stats.objects_sent,
                              stats=result.stats)

    def artifact_collection(self, path: str, *, deleted: bool = False) -> ArtifactCollection:
        """``team/project/name``: a collection (or, with ``deleted``, the soft-deleted one),
        to ``delete()`` or ``restore()`` as a whole."""
        team, proj, name, ref = parse_artifact_path(path)
        if ref:
            raise InvalidInput(f"expected team/project/name without :version, got {path[:200]!r}")
        data = self.client.artifact_collection(team, proj, name, deleted=deleted)
        return ArtifactCollection(self, team, proj, data)

    def runs(self, path: str, filters: dict[str, Any] | None = None,
             order: str = "-created_at", per_page: int = 100) -> RunsQuery:
        """Runs of ``team/project`` matching ``filters`` (state, tags, group, job_type,
        name), paged as you iterate (sdk/runs_api.py)."""
        return RunsQuery(self, path, filters, order, per_page)

    def run(self, path: str) -> ApiRun:
        """One run: ``team/project/run_id`` (sdk/runs_api.py)."""
        team, project, run_id = parse_run(path)
        return ApiRun(self, self.client.request(
            "GET", f"/api/v1/teams/{team}/projects/{project}/runs/{run_id}"))

    def artifact(self, path: str) -> LoggedArtifact:
        """``team/project/name[:alias|:vN]`` (default alias ``latest``)."""
        team, proj, name, ref = parse_artifact_path(path)
        data = self.client.artifact_version(team, proj, name, ref or "latest")
        return LoggedArtifact(self, team, proj, data["version"])
