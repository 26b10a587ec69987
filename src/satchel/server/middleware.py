"""Request ids and a query-string-free access log (pure ASGI, so streaming is untouched)."""

from __future__ import annotations

import logging
import re
import secrets
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from satchel.logs import request_id_var

access_log = logging.getLogger("satchel.access")
_VALID_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")
# Where the id is kept for code that runs outside this middleware (the 500 handler).
REQUEST_ID_SCOPE_KEY = "satchel.request_id"


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        rid = incoming if _VALID_ID.match(incoming) else secrets.token_hex(8)
        scope[REQUEST_ID_SCOPE_KEY] = rid
        token = request_id_var.set(rid)
        start = time.perf_counter()
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            # The outer error handler answers 500 after we return; log that, not "0".
            status = status or 500
            raise
        finally:
            # Path only: query strings carry presigned-URL signatures.
            access_log.info(
                "%s %s %s %.1fms", scope["method"], scope["path"], status,
                (time.perf_counter() - start) * 1000,
            )
            request_id_var.reset(token)
