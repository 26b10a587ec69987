"""Every response says how long the server worked on it: ``Server-Timing: app;dur=<ms>``
(bench/bench_runs.py reads it to tell server time from client and network time)."""

from __future__ import annotations

import itertools
import re

import pytest
from fastapi.testclient import TestClient

from satchel.server import middleware

API = "/api/v1"
HEADER = re.compile(r"^app;dur=(\d+\.\d{2})$")


@pytest.fixture
def ticking_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """A clock that advances 12.5 ms on every reading: the request start is one reading and
    the response start the next, so the header must say exactly 12.50."""
    ticks = itertools.count()
    monkeypatch.setattr(middleware, "_clock", lambda: next(ticks) * 0.0125)


def test_success_carries_the_server_time(client: TestClient, admin_headers: dict[str, str],
                                         ticking_clock: None) -> None:
    resp = client.get(f"{API}/teams", headers=admin_headers)
    assert resp.status_code == 200
    assert resp.headers["server-timing"] == "app;dur=12.50"
    assert resp.headers["x-request-id"]  # the request id is still there


def test_errors_carry_it_too(client: TestClient, ticking_clock: None) -> None:
    resp = client.get(f"{API}/teams")  # no credentials: the one JSON error shape
    assert resp.status_code == 401
    assert resp.headers["server-timing"] == "app;dur=12.50"


def test_real_clock_gives_a_parseable_non_negative_duration(client: TestClient) -> None:
    resp = client.get("/readyz")
    assert resp.status_code == 200
    m = HEADER.match(resp.headers["server-timing"])
    assert m is not None, resp.headers["server-timing"]
    assert float(m.group(1)) >= 0
    assert len(resp.headers.get_list("server-timing")) == 1
