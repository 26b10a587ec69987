"""The OpenAPI document is the API's contract: it changes only on purpose.

After an intentional API change, regenerate the snapshot and commit it with the change:

    SATCHEL_UPDATE_SNAPSHOTS=1 .venv/bin/pytest tests/server/test_openapi_snapshot.py

and review ``git diff tests/snapshots/openapi.json`` like any other API change.
"""

from __future__ import annotations

import difflib
import json
import os
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

SNAPSHOT = Path(__file__).parent.parent / "snapshots" / "openapi.json"
REGENERATE = "SATCHEL_UPDATE_SNAPSHOTS=1 .venv/bin/pytest tests/server/test_openapi_snapshot.py"


def render(doc: object) -> str:
    return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def test_openapi_matches_the_snapshot(client: TestClient) -> None:
    resp = client.get("/api/v1/openapi.json")
    assert resp.status_code == 200
    current = render(resp.json())
    if os.environ.get("SATCHEL_UPDATE_SNAPSHOTS") == "1":
        SNAPSHOT.parent.mkdir(parents=True, exist_ok=True)
        SNAPSHOT.write_text(current, encoding="utf-8")
        pytest.skip(f"wrote {SNAPSHOT}; review and commit it")
    assert SNAPSHOT.exists(), f"no OpenAPI snapshot yet; create it with: {REGENERATE}"
    expected = SNAPSHOT.read_text(encoding="utf-8")
    if current != expected:
        diff = "".join(difflib.unified_diff(
            expected.splitlines(keepends=True), current.splitlines(keepends=True),
            fromfile="tests/snapshots/openapi.json", tofile="/api/v1/openapi.json", n=2,
        ))
        pytest.fail(
            "the OpenAPI document changed. If the change is intended, regenerate the "
            f"snapshot with\n    {REGENERATE}\nand commit it with the change.\n\n{diff}",
            pytrace=False,
        )


def test_every_operation_documents_the_error_shape(client: TestClient) -> None:
    """Clients generated from the document know the one error body (DESIGN §9)."""
    doc = client.get("/api/v1/openapi.json").json()
    error_ref = "#/components/schemas/ErrorResponse"
    error = doc["components"]["schemas"]["ErrorBody"]
    assert set(error["required"]) == {"code", "message", "details"}
    assert set(error["properties"]) == {"code", "message", "details", "request_id"}
    missing = []
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            for status in ("401", "422"):
                schema = op["responses"].get(status, {}).get("content", {}).get(
                    "application/json", {}).get("schema", {})
                if schema.get("$ref") != error_ref:
                    missing.append(f"{method.upper()} {path} {status}")
    assert not missing, missing
