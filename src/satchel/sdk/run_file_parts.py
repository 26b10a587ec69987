"""A big run file's multipart upload (server side: services/run_files.py, services/multipart.py).

The registration answered an open upload with one presigned URL per part: the parts go up in
parallel through the TransferClient (in order where the store needs it), URLs that expire are
refreshed in batches (``POST .../files/multipart/urls``), and the server assembles the object
(``POST .../files/multipart``); the uploader's usual commit then checks it like any other file.
An upload interrupted by a dead process starts over at the next registration (the server
opens a new upload; the collector aborts the old one after the grace period). Artifacts,
which can be much bigger, resume part by part instead (sdk/uploads.py).
"""

from __future__ import annotations

from pathlib import Path

from satchel.sdk.client import JSON, Client
from satchel.sdk.transfer import BatchRefresher, TransferClient
from satchel.sdk.uploads import request_from_json
from satchel.storage.base import PresignedRequest


def upload(client: Client, transfer: TransferClient, files_api: str, mp: JSON,
           local: Path) -> None:
    """Send every part of ``mp`` (a ``multipart`` entry of the registration answer) from
    ``local`` and complete the upload."""
    path, upload_id = mp["path"], mp["upload_id"]
    numbers = [int(p["number"]) for p in mp["parts"]]

    def fetch(todo: list[int]) -> dict[int, PresignedRequest]:
        res = client.request("POST", files_api + "/multipart/urls", json={
            "path": path, "upload_id": upload_id, "part_size": mp["part_size"],
            "numbers": todo})
        return {int(p["number"]): request_from_json(p) for p in res["parts"]}

    fresh = BatchRefresher(fetch, numbers, clock=transfer.config.clock)
    etags = transfer.put_parts(
        local, [request_from_json(p) for p in mp["parts"]], int(mp["part_size"]),
        numbers=numbers, refresh_part=fresh, on_part=lambda n, _etag, _size: fresh.done(n),
        parallel=not mp.get("sequential", False))
    client.request("POST", files_api + "/multipart", json={
        "path": path, "upload_id": upload_id,
        "parts": [{"number": n, "etag": e} for n, e in zip(numbers, etags, strict=True)]})
