"""Request ids, a ``Server-Timing`` header and a query-string-free access log (pure ASGI, so
streaming is untouched).

``Server-Timing: app;dur=<ms>`` is the time from the request entering the app to the response
headers leaving it: for an ordinary (non-streaming) response that is all of the server's work,
which bench/bench_runs.py reads to separate server time from the network and the client."""

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
_clock = time.perf_counter  # replaced by tests


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
        start = _clock()
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                took = (_clock() - start) * 1000
                message["headers"] = [*message["headers"], (b"x-request-id", rid.encode()),
                                      (b"server-timing", b"app;dur=%.2f" % took)]
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
                (_clock() - start) * 1000,
            )
            request_id_var.reset(token)
