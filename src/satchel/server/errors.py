"""Map every exception to the one JSON error shape {"error": {"code", "message", "details"}}."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from satchel.errors import (
    MethodNotAllowed,
    NotAuthenticated,
    NotFound,
    PayloadTooLarge,
    SatchelError,
    ValidationFailed,
)
from satchel.logs import request_id_var
from satchel.server.middleware import REQUEST_ID_SCOPE_KEY

log = logging.getLogger("satchel.server")


def error_response(exc: SatchelError, headers: dict[str, str] | None = None) -> JSONResponse:
    payload = exc.to_payload()
    payload["error"]["request_id"] = request_id_var.get()
    hdrs = dict(headers or {})
    if isinstance(exc, NotAuthenticated):
        hdrs.setdefault("WWW-Authenticate", 'Bearer realm="satchel"')
    return JSONResponse(payload, status_code=exc.http_status, headers=hdrs)


def _validation_details(exc: RequestValidationError) -> list[dict[str, Any]]:
    out = []
    for err in exc.errors():
        # Never echo the input value back: it may be a password.
        out.append({"loc": [str(p) for p in err.get("loc", ())], "msg": err.get("msg", "")})
    return out


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(SatchelError)
    async def _satchel(_: Request, exc: SatchelError) -> JSONResponse:
        if exc.http_status >= 500:
            log.error("%s: %s", exc.code, exc.message)
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = _validation_details(exc)
        first = problems[0] if problems else {"loc": [], "msg": "invalid request"}
        where = ".".join(p for p in first["loc"] if p not in {"body", "query", "path"})
        message = f"{where}: {first['msg']}" if where else str(first["msg"])
        return error_response(ValidationFailed(message, details={"problems": problems}))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        mapped: SatchelError
        if exc.status_code == 404:
            mapped = NotFound("no such endpoint; see /api/v1/openapi.json for the API")
        elif exc.status_code == 405:
            mapped = MethodNotAllowed("this endpoint does not support that HTTP method")
        elif exc.status_code == 413:
            mapped = PayloadTooLarge("request body too large")
        else:
            mapped = SatchelError(str(exc.detail))
            mapped.http_status = exc.status_code  # type: ignore[misc]
        return error_response(mapped, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Starlette calls this outermost, after RequestIdMiddleware has finished: restore the
        # request's id so the log line, the body and the X-Request-ID header all carry it.
        rid = request.scope.get(REQUEST_ID_SCOPE_KEY)
        token = request_id_var.set(rid) if rid else None
        try:
            log.exception("unexpected error")
            return error_response(
                SatchelError(
                    "internal server error; the server log has details under this request id"
                ),
                headers={"x-request-id": rid} if rid else None,
            )
        finally:
            if token is not None:
                request_id_var.reset(token)
