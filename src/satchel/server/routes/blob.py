"""The local bucket's blob endpoint: behaves like a cloud store behind presigned URLs.

Only requests carrying a valid, unexpired signature for exactly this key and method are
served. PUT bodies are streamed to a temp file, checked against the declared size and SHA-256,
and only then published; anything else leaves the bucket untouched.
"""

from __future__ import annotations

import re
from urllib.parse import quote

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from satchel.errors import InvalidInput, NotFound, RangeNotSatisfiable
from satchel.server.deps import Ctx
from satchel.storage.local import LocalStore, LocalWriter

router = APIRouter(tags=["blob"], include_in_schema=False)
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_FLUSH = 1024 * 1024


def _store(ctx: Ctx, store_id: str) -> LocalStore:
    store = ctx.local_stores.get(store_id)
    if store is None:
        # A team created on another replica may use a local bucket this process has not
        # opened yet.
        with ctx.db.session() as db:
            store = ctx.storage.local_store(db, store_id)
    if store is None:
        raise NotFound("no such bucket on this server")
    return store


def _check_range(header: str | None, size: int) -> None:
    """Reject ranges we cannot satisfy with the JSON error shape (416)."""
    if header is None:
        return
    m = _RANGE.match(header.strip())
    if m is None:
        raise InvalidInput("only a single 'bytes=start-end' range is supported")
    start, end = m.groups()
    if start == "" and end == "":
        raise InvalidInput("malformed Range header")
    if start != "" and int(start) >= size:
        raise RangeNotSatisfiable(f"range starts beyond the object's {size} bytes",
                                  details={"size": size})
    if start != "" and end != "" and int(end) < int(start):
        raise InvalidInput("malformed Range header: end is before start")
    if start == "" and (int(end) == 0 or size == 0):
        # A suffix range of an empty object (or of zero bytes) selects nothing (RFC 9110 14.1.2).
        raise RangeNotSatisfiable(f"a suffix range needs at least one of the object's {size} "
                                  "bytes", details={"size": size})


@router.api_route("/blob/{store_id}/{key:path}", methods=["GET", "HEAD"])
def get_blob(store_id: str, key: str, request: Request, ctx: Ctx) -> Response:
    store = _store(ctx, store_id)
    signed = store.verify(request.method, key, dict(request.query_params))
    path, info = store.open_read(key)
    _check_range(request.headers.get("range"), info.size)
    headers = {"ETag": info.etag or ""}
    if info.sha256:
        headers["x-satchel-sha256"] = info.sha256
    if signed.filename:
        headers["Content-Disposition"] = f"attachment; filename*=UTF-8''{quote(signed.filename)}"
    return FileResponse(path, headers=headers, media_type="application/octet-stream",
                        stat_result=None)


@router.put("/blob/{store_id}/{key:path}")
async def put_blob(store_id: str, key: str, request: Request, ctx: Ctx) -> Response:
    store = _store(ctx, store_id)
    signed = store.verify("PUT", key, dict(request.query_params))
    writer: LocalWriter
    if signed.upload_id is not None and signed.part_number is not None:
        writer = await run_in_threadpool(
            store.open_part_writer, signed.upload_id, signed.part_number, size=signed.size,
            key=key,
        )
    else:
        writer = await run_in_threadpool(
            store.open_writer, key, size=signed.size, sha256=signed.sha256
        )
    buf = bytearray()
    try:
        async for chunk in request.stream():
            buf += chunk
            if len(buf) >= _FLUSH:
                await run_in_threadpool(writer.write, bytes(buf))
                buf.clear()
        if buf:
            await run_in_threadpool(writer.write, bytes(buf))
        info = await run_in_threadpool(writer.commit)
    except ClientDisconnect:
        # An interrupted upload (network drop, cancelled transfer) is the client's business,
        # not a server error: answer like any refused upload instead of logging a traceback.
        writer.abort()
        raise InvalidInput(
            "the upload was interrupted before the body was complete; nothing was stored"
        ) from None
    except BaseException:
        # Client went away, checksum failed, disk full...: nothing is published.
        writer.abort()
        raise
    return Response(status_code=200, headers={"ETag": f'"{info.etag.strip(chr(34))}"'
                                              if info.etag else ""})
