"""Reading a run's files (``Api().run(...).files()``, ``satchel run`` commands): the listing
and downloads straight from the bucket, each file checked against its SHA-256 as it arrives.
Sending them is sdk/run_files.py."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from satchel.errors import ChecksumMismatch, InvalidInput
from satchel.sdk.client import JSON, Client
from satchel.sdk.run_files import files_api
from satchel.sdk.transfer import Digest, TransferClient
from satchel.sdk.uploads import request_from_json
from satchel.storage.base import PresignedRequest
from satchel.storage.keys import validate_key


@dataclass(frozen=True, slots=True)
class RunFileInfo:
    """A committed file of a run, as ``run.files()`` lists it."""

    path: str
    kind: str  # file | media
    size: int
    sha256: str | None
    created_at: datetime
    committed_at: datetime | None


def list_files(client: Client, team: str, project: str, run_id: str) -> list[RunFileInfo]:
    """Every committed file of the run, ordered by path."""
    out: list[RunFileInfo] = []
    while True:
        page = client.request("GET", files_api(team, project, run_id),
                              params={"limit": 1000, "offset": len(out)})
        for f in page["files"]:
            out.append(RunFileInfo(
                f["path"], f["kind"], int(f["size"]), f["sha256"],
                datetime.fromisoformat(f["created_at"]),
                datetime.fromisoformat(f["committed_at"]) if f["committed_at"] else None))
        if not page["files"] or len(out) >= int(page["total"]):
            return out


def download_files(client: Client, transfer: TransferClient, team: str, project: str,
                   run_id: str, root: str | Path, paths: Sequence[str] | None = None
                   ) -> list[Path]:
    """Download committed files (all, or ``paths``) under ``root``, keeping their paths, each
    verified against its SHA-256; returns the local paths in the order of ``paths``."""
    root = Path(root)
    wanted = list(paths) if paths is not None else [f.path for f in list_files(
        client, team, project, run_id)]
    base = root.resolve()
    for path in wanted:
        validate_key(path)
        if base not in (root / path).resolve().parents:
            raise InvalidInput(f"file {path!r} would land outside {root}")
    url = files_api(team, project, run_id) + "/download"
    entries: dict[str, JSON] = {}
    for start in range(0, len(wanted), 1000):
        res = client.request("POST", url, json={"paths": wanted[start:start + 1000]})
        entries.update((e["path"], e) for e in res["files"])

    def fresh(path: str) -> PresignedRequest:
        res = client.request("POST", url, json={"paths": [path]})
        return request_from_json(res["files"][0])

    def one(path: str) -> Path:
        e = entries[path]
        dest = root / path
        digest = Digest()  # hashed while downloading: no second read of the file
        transfer.get_file(request_from_json(e), dest, size=int(e["size"]),
                          refresh=lambda: fresh(path), digest=digest)
        if e["sha256"] and digest.hexdigest != e["sha256"]:
            dest.unlink(missing_ok=True)
            raise ChecksumMismatch(f"{path}: downloaded bytes do not match the recorded "
                                   "SHA-256; download again")
        return dest

    unique = list(dict.fromkeys(wanted))
    with ThreadPoolExecutor(max(1, min(8, len(unique))), thread_name_prefix="satchel-get") \
            as pool:
        done = dict(zip(unique, pool.map(one, unique), strict=True))
    return [done[p] for p in wanted]
