"""The one JSON error shape, asserted the same way everywhere (DESIGN §9)."""

from __future__ import annotations

from typing import Any

import httpx

ERROR_KEYS = {"code", "message", "details", "request_id"}


def assert_error(resp: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """Check ``resp`` is exactly ``{"error": {code, message, details, request_id}}``.

    Returns the inner ``error`` object so callers can look at message and details.
    """
    assert resp.status_code == status, (resp.request.method, resp.request.url, resp.text)
    rid = resp.headers.get("x-request-id")
    assert rid, f"no X-Request-ID header on {resp.status_code} response"
    if resp.request.method == "HEAD":
        return {}
    assert resp.headers["content-type"].startswith("application/json"), resp.text
    body = resp.json()
    assert set(body) == {"error"}, body
    err: dict[str, Any] = body["error"]
    assert set(err) == ERROR_KEYS, err
    assert err["code"] == code, err
    assert isinstance(err["message"], str) and err["message"].strip(), err
    assert isinstance(err["details"], dict), err
    # The id in the body is the one in the header, so a user can quote it to an admin.
    assert err["request_id"] == rid, (err, rid)
    if status == 401:
        assert resp.headers.get("www-authenticate", "").startswith("Bearer"), resp.headers
    return err
