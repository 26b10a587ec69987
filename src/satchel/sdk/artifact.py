"""Artifacts in the SDK: build a manifest locally, upload what the bucket lacks, commit.

Files are hashed streaming (1 MiB blocks, bounded memory) in parallel; only objects the
server reports missing for the team are uploaded, straight to the bucket through
:class:`TransferClient` (parallel files, parallel multipart parts for big ones). Downloads
verify the SHA-256 of every file.

Not built yet (issue 5, later increments): the local hash cache, the resume journal for
interrupted uploads, URL refresh for artifact uploads, progress bars, runs' lineage.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any

from satchel.errors import ChecksumMismatch, InvalidInput
from satchel.sdk.client import JSON, Client
from satchel.sdk.transfer import BLOCK, TransferClient
from satchel.storage.base import PresignedRequest

__all__ = ["Api", "Artifact", "LoggedArtifact"]


def sha256_file(path: Path) -> str:
    """SHA-256 of a file, read in blocks (memory stays bounded whatever the size)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _request(data: JSON) -> PresignedRequest:
    return PresignedRequest(data["url"], data["method"], dict(data["headers"]),
                            datetime.fromisoformat(data["expires_at"]))


def parse_artifact_path(text: str) -> tuple[str, str, str, str | None]:
    """``team/project/name[:ref]`` -> (team, project, name, ref or None)."""
    path, _, ref = text.partition(":")
    parts = path.split("/")
    if len(parts) != 3 or not all(parts):
        raise InvalidInput(f"expected team/project/name[:alias|:vN], got {text[:200]!r}")
    return parts[0], parts[1], parts[2], ref or None


@dataclass(frozen=True)
class _Entry:
    path: str
    local: Path | None = None
    ref: str | None = None
    size: int = 0


class Artifact:
    """A set of files (and references) to log as one version of a named collection."""

    def __init__(self, name: str, type: str, *, description: str = "",
                 metadata: dict[str, Any] | None = None) -> None:
        self.name = name
        self.type = type
        self.description = description
        self.metadata = dict(metadata or {})
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

    def __init__(self, api: Api, team: str, project: str, data: JSON, *, uploaded: int = 0
                 ) -> None:
        self._api = api
        self.team = team
        self.project = project
        self._data = data
        self.uploaded = uploaded  # objects sent by the log call that returned this

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

    def __repr__(self) -> str:
        return f"<LoggedArtifact {self.team}/{self.project}/{self.name}:{self.version}>"

    def download(self, root: str | Path | None = None) -> Path:
        """Fetch every file into ``root`` (default ``./artifacts/<name>-<version>``), verifying
        each file's SHA-256; returns the root."""
        out = Path(root) if root is not None else Path("artifacts") / f"{self.name}-{self.version}"
        listing = self._api.client.artifact_download(self.team, self.project, self.name,
                                                     self.version)
        files = [e for e in listing["entries"] if e["url"] is not None]
        base = out.resolve()

        def one(e: JSON) -> None:
            dest = (out / e["path"]).resolve()
            if base not in dest.parents:
                raise InvalidInput(f"entry {e['path']!r} would land outside {out}")
            self._api.transfer.get_file(_request(e), dest, size=e["size"])
            if sha256_file(dest) != e["sha256"]:
                dest.unlink(missing_ok=True)
                raise ChecksumMismatch(f"{e['path']}: downloaded bytes do not match the "
                                       "recorded SHA-256; download again")

        with ThreadPoolExecutor(self._api.workers) as pool:
            list(pool.map(one, files))
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
                 workers: int = 8) -> None:
        self.client = client or Client(host=host, api_key=api_key)
        self._transfer = transfer
        self.workers = workers

    @property
    def transfer(self) -> TransferClient:
        if self._transfer is None:
            self._transfer = TransferClient()
        return self._transfer

    def close(self) -> None:
        if self._transfer is not None:
            self._transfer.close()
        self.client.close()

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def log_artifact(self, artifact: Artifact, project: str, *, aliases: Sequence[str] = ()
                     ) -> LoggedArtifact:
        """Log ``artifact`` to ``project`` ("team/project"); returns the committed version
        (the existing one when nothing changed, with 0 uploads)."""
        team, _, proj = project.partition("/")
        if not team or not proj or "/" in proj:
            raise InvalidInput(f"project must be 'team/project', got {project[:200]!r}")
        entries = list(artifact._entries.values())
        with ThreadPoolExecutor(self.workers) as pool:
            hashes = list(pool.map(lambda e: sha256_file(e.local) if e.local else None, entries))
        local_of = {h: e.local for e, h in zip(entries, hashes, strict=True) if h and e.local}
        body: JSON = {
            "type": artifact.type, "description": artifact.description,
            "metadata": artifact.metadata,
            "entries": [{"path": e.path, "size": e.size, "sha256": h, "ref": e.ref}
                        for e, h in zip(entries, hashes, strict=True)],
        }
        res = self.client.create_artifact_version(team, proj, artifact.name, body)
        version = res["version"]
        if not res["created"]:
            data = version
            for alias in aliases:
                data = self.client.set_artifact_alias(team, proj, artifact.name, alias,
                                                      str(version["version"]))
            return LoggedArtifact(self, team, proj, data)
        self._upload(res["uploads"], local_of)
        for mp in res["multipart"]:
            parts = [_request(p) for p in mp["parts"]]
            etags = self.transfer.put_parts(local_of[mp["sha256"]], parts, mp["part_size"])
            self.client.complete_artifact_multipart(team, proj, artifact.name, version["id"], {
                "sha256": mp["sha256"], "upload_id": mp["upload_id"],
                "parts": [{"number": i + 1, "etag": t} for i, t in enumerate(etags)]})
        data = self.client.commit_artifact(team, proj, artifact.name, version["id"],
                                           list(aliases))
        return LoggedArtifact(self, team, proj, data,
                              uploaded=len(res["uploads"]) + len(res["multipart"]))

    def _upload(self, uploads: Iterable[JSON], local_of: dict[str, Path]) -> None:
        def one(u: JSON) -> None:
            self.transfer.put_file(_request(u), local_of[u["sha256"]])

        with ThreadPoolExecutor(self.workers) as pool:
            list(pool.map(one, uploads))

    def artifact(self, path: str) -> LoggedArtifact:
        """``team/project/name[:alias|:vN]`` (default alias ``latest``)."""
        team, proj, name, ref = parse_artifact_path(path)
        data = self.client.artifact_version(team, proj, name, ref or "latest")
        return LoggedArtifact(self, team, proj, data["version"])
