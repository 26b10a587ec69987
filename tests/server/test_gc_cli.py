"""`satchel gc` and `satchel gc status` against a real server over HTTP (issue 5)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from satchel.cli.gc import human_bytes
from satchel.cli.main import main
from satchel.db.models import ArtifactObject, ArtifactVersion, Run
from satchel.server.app import create_app
from satchel.server.deps import AppContext
from satchel.services import gc, leases
from tests.conftest import ADMIN_KEY
from tests.live import free_port, serve_in_thread
from tests.server.test_artifacts_local import _log
from tests.server.test_gc_local import _delete, _store, alice, sha
from tests.server.test_run_files import _send as send_files

__all__ = ["alice"]


@pytest.fixture
def cli(client: TestClient, ctx: AppContext, monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> Iterator[str]:
    with serve_in_thread(create_app(ctx.settings, context=ctx), free_port()) as url:
        monkeypatch.setenv("SATCHEL_HOST", url)
        monkeypatch.setenv("SATCHEL_API_KEY", ADMIN_KEY)
        monkeypatch.setenv("HOME", str(tmp_path / "home"))
        yield url


def test_human_bytes() -> None:
    assert [human_bytes(n) for n in (0, 1023, 1024, 1536, 5 * 1024**3)] == [
        "0 B", "1023 B", "1.0 KiB", "1.5 KiB", "5.0 GiB"]


def test_gc_dry_run_run_and_status(cli: str, client: TestClient, ctx: AppContext,
                                   alice: dict[str, str], capsys: pytest.CaptureFixture[str]
                                   ) -> None:
    _log(client, alice, "kappa", "ds", {"a": b"a" * 3000, "b": b"bravo"})
    _log(client, alice, "kappa", "ds", {"b": b"bravo"})
    _delete(client, alice, "ds", "v0")
    long_ago = datetime.now(UTC) - timedelta(days=365)
    with ctx.db.session() as s:
        s.execute(update(ArtifactVersion).where(ArtifactVersion.deleted_at.is_not(None))
                  .values(deleted_at=long_ago))
        s.execute(update(ArtifactObject).values(created_at=long_ago))
    store = _store(ctx)
    store.delete_many([gc._key(sha(b"bravo"))])  # a row whose object vanished
    capsys.readouterr()

    assert main(["gc", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "dry run" in out and "would free 1 object, 2.9 KiB" in out
    assert f"missing from the bucket: {sha(b'bravo')}" in out
    assert "rows without objects: 1" in out

    assert "team kappa: would free 1 unreferenced object (2.9 KiB) and 0 orphan objects" in out
    assert main(["gc", "--team", "kappa", "--json"]) == 0
    run = json.loads(capsys.readouterr().out)
    assert (run["dry_run"], run["team"], run["objects_freed"], run["bytes_freed"]) == (
        False, "kappa", 1, 3000)

    assert main(["gc", "status"]) == 0
    out = capsys.readouterr().out
    assert "Collector: idle" in out
    assert f"#{run['id'] - 1} " in out and "manual, dry run (all teams): succeeded; would free 1 " \
        "object, 2.9 KiB; expired 0, dropped 0 pending" in out
    assert main(["gc", "status", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert [r["id"] for r in info["runs"]] == [run["id"], run["id"] - 1]
    assert info["status"]["last_run"]["id"] == run["id"]

    # Errors are one line, no traceback.
    assert main(["gc", "--team", "nope"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == "NotFound: team 'nope' does not exist"
    assert leases.acquire(ctx.db, gc.LEASE_NAME, "other", ttl_seconds=600,
                          now=datetime.now(UTC))
    assert main(["gc"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("Conflict: another garbage collection is running") and "\n" not in err
    assert main(["gc", "status"]) == 0
    assert "Collector: running (lease held by other" in capsys.readouterr().out


def test_gc_reports_purged_runs(cli: str, client: TestClient, ctx: AppContext,
                                alice: dict[str, str], capsys: pytest.CaptureFixture[str]
                                ) -> None:
    runs = "/api/v1/teams/kappa/projects/p/runs"
    assert client.post(runs, json={"run_id": "old"}, headers=alice).status_code == 201
    send_files(client, alice, {"a.bin": b"a" * 2048, "b.txt": b"b"}, base=f"{runs}/old/files")
    assert client.delete(f"{runs}/old", headers=alice).status_code == 200
    with ctx.db.session() as s:
        s.execute(update(Run).values(deleted_at=datetime.now(UTC) - timedelta(days=365)))
    capsys.readouterr()
    assert main(["gc", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "deleted runs would be purged: 1; run files would be freed: 2 (2.0 KiB)" in out
    assert main(["gc"]) == 0
    out = capsys.readouterr().out
    assert "deleted runs purged: 1; run files freed: 2 (2.0 KiB)" in out
    assert "freed 2 objects, 2.0 KiB" in out
