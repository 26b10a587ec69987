"""The artifact lifecycle from the CLI: TTLs (team default, per version), whole-collection and
project delete / restore with confirmation. Real HTTP to the app in a thread, a local bucket
served by its blob endpoint; the CLI runs in-process (``main``), as tests/sdk does."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from satchel.cli import output
from satchel.cli.main import main
from satchel.config import Settings
from satchel.server.app import create_app
from satchel.server.deps import AppContext
from tests.conftest import ADMIN_KEY
from tests.live import free_port, serve_in_thread

API = "/api/v1"
DAY = 86_400


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def settings(settings: Settings, port: int) -> Settings:
    # Presigned URLs of the local bucket must point at the live server.
    return settings.model_copy(update={"base_url": f"http://127.0.0.1:{port}"})


@pytest.fixture
def cli(client: TestClient, settings: Settings, ctx: AppContext, port: int, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A live server and a CLI user 'ada' (no team yet)."""
    r = client.post(f"{API}/users", json={"username": "ada", "create_api_key": True},
                    headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert r.status_code == 201, r.text
    with serve_in_thread(create_app(settings, context=ctx), port) as url:
        monkeypatch.setenv("SATCHEL_HOST", url)
        monkeypatch.setenv("SATCHEL_API_KEY", r.json()["api_key"])
        monkeypatch.setenv("HOME", str(tmp_path / "home"))
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
        monkeypatch.setenv("SATCHEL_CONFIG_DIR", str(tmp_path / "config"))
        monkeypatch.setattr(output.console, "_width", 300)  # tables on one line
        yield url


def run(capsys: pytest.CaptureFixture[str], *args: str, stdin: str = "") -> tuple[int, str, str]:
    """``satchel ARGS`` in-process; stdin answers prompts (empty: no terminal, EOF)."""
    capsys.readouterr()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("sys.stdin", io.StringIO(stdin))
        code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def api(url: str, method: str, path: str, **kwargs: Any) -> Any:
    import os

    r = httpx.request(method, f"{url}{API}{path}", **kwargs,
                      headers={"Authorization": f"Bearer {os.environ['SATCHEL_API_KEY']}"})
    assert r.status_code < 400, r.text
    return r.json()


def one_line_error(err: str, kind: str) -> str:
    (line,) = err.strip().splitlines()
    assert line.startswith(f"{kind}: "), line
    return line


def test_ttls_from_the_cli(cli: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "team", "create", "tau", "--artifact-ttl", "90d")
    assert code == 0, err
    assert api(cli, "GET", "/teams/tau")["artifact_ttl_seconds"] == 90 * DAY
    code, out, err = run(capsys, "team", "set-ttl", "tau", "12h")
    assert (code, out.strip()) == (0, "Team tau: new artifact versions expire 12h after their "
                                      "commit."), err
    code, out, _ = run(capsys, "team", "ls")
    assert "artifact_ttl" in out and "12h" in out
    code, out, _ = run(capsys, "team", "set-ttl", "tau", "none")
    assert (code, out.strip()) == (0, "Team tau: new artifact versions are kept forever.")
    code, _, err = run(capsys, "team", "set-ttl", "tau", "3w")
    assert code == 1 and "use a whole number with s, m, h or d" in one_line_error(
        err, "InvalidInput")
    assert run(capsys, "project", "create", "tau/p")[0] == 0

    src = tmp_path / "data.txt"
    src.write_text("rows")
    code, out, err = run(capsys, "artifact", "put", str(src), "tau/p/ds", "--type", "dataset",
                         "--ttl", "30d")
    assert code == 0, err
    assert "ds:v0" in out and "expires: " in out and "never" not in out
    v0 = api(cli, "GET", "/teams/tau/projects/p/artifacts/ds/versions/v0")["version"]
    assert datetime.fromisoformat(v0["expires_at"]) == \
        datetime.fromisoformat(v0["committed_at"]) + timedelta(days=30)
    # Re-logging unchanged files with a TTL applies it to the existing version.
    code, out, err = run(capsys, "artifact", "put", str(src), "tau/p/ds", "--type", "dataset",
                         "--ttl", "1d")
    assert code == 0 and "ds:v0" in out, err
    v0 = api(cli, "GET", "/teams/tau/projects/p/artifacts/ds/versions/v0")["version"]
    assert datetime.fromisoformat(v0["expires_at"]) == \
        datetime.fromisoformat(v0["committed_at"]) + timedelta(days=1)
    code, out, _ = run(capsys, "artifact", "ls", "tau/p/ds")
    assert code == 0 and "expires_at" in out and v0["expires_at"][:10] in out
    code, out, _ = run(capsys, "artifact", "ls", "tau/p/ds", "--json")
    assert [v["expires_at"] for v in json.loads(out)] == [v0["expires_at"]]
    code, out, err = run(capsys, "artifact", "set-ttl", "tau/p/ds:v0", "none")
    assert (code, out.strip()) == (0, "ds:v0 expires: never (kept forever)"), err
    code, _, err = run(capsys, "artifact", "put", str(src), "tau/p/ds", "--type", "dataset",
                       "--ttl", "soon")
    assert code == 1 and "--ttl" in one_line_error(err, "InvalidInput")
    code, _, err = run(capsys, "artifact", "set-ttl", "tau/p/ds", "1d")
    assert code == 1 and "name the version" in one_line_error(err, "InvalidInput")


def test_rm_and_restore_collections_and_projects(cli: str, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "team", "create", "tau")[0] == 0
    assert run(capsys, "project", "create", "tau/p")[0] == 0
    src = tmp_path / "model.bin"
    for i in range(2):
        src.write_bytes(b"weights %d" % i)
        assert run(capsys, "artifact", "put", str(src), "tau/p/m", "--type", "model")[0] == 0

    # The whole collection: refused without an answer (no terminal) or with "no".
    for answer in ("", "n\n"):
        code, _, err = run(capsys, "artifact", "rm", "tau/p/m", stdin=answer)
        assert code == 1 and "--yes" in one_line_error(err, "InvalidInput")
    assert [c["name"] for c in api(cli, "GET", "/teams/tau/projects/p/artifacts")] == ["m"]
    code, out, err = run(capsys, "artifact", "rm", "tau/p/m", stdin="y\n")
    assert code == 0 and "Deleted tau/p/m and its 2 version(s)" in out, err
    code, out, _ = run(capsys, "artifact", "ls", "tau/p", "--deleted", "--json")
    assert [(c["name"], c["versions"]) for c in json.loads(out)] == [("m", 2)]
    code, _, err = run(capsys, "artifact", "get", "tau/p/m", "--root", str(tmp_path / "o"))
    assert code == 1
    one_line_error(err, "NotFound")
    code, out, err = run(capsys, "artifact", "restore", "tau/p/m")
    assert code == 0 and "Restored tau/p/m with 2 version(s)" in out, err
    assert run(capsys, "artifact", "rm", "tau/p/m", "--yes")[0] == 0
    assert run(capsys, "artifact", "restore", "tau/p/m")[0] == 0
    # A version still works as before.
    assert run(capsys, "artifact", "rm", "tau/p/m:v1")[0] == 0
    code, out, _ = run(capsys, "artifact", "ls", "tau/p/m", "--deleted")
    assert "v1" in out and "deleted_at" in out
    assert run(capsys, "artifact", "restore", "tau/p/m:v1")[0] == 0

    # Projects: same confirmation; team admins only.
    code, _, err = run(capsys, "project", "rm", "tau/p")
    assert code == 1 and "--yes" in one_line_error(err, "InvalidInput")
    code, out, err = run(capsys, "project", "rm", "tau/p", "--yes")
    assert code == 0 and "Deleted project tau/p" in out, err
    code, out, _ = run(capsys, "project", "ls", "--team", "tau", "--deleted", "--json")
    assert [p["name"] for p in json.loads(out)] == ["p"]
    code, _, err = run(capsys, "project", "ls", "--deleted")
    assert code == 1 and "--team" in one_line_error(err, "InvalidInput")
    code, _, err = run(capsys, "artifact", "ls", "tau/p")
    assert code == 1
    one_line_error(err, "NotFound")
    code, _, err = run(capsys, "project", "create", "tau/p")
    assert code == 1 and "restore" in one_line_error(err, "AlreadyExists")
    code, out, err = run(capsys, "project", "restore", "tau/p")
    assert code == 0 and "Restored project tau/p" in out, err
    code, _, _ = run(capsys, "artifact", "get", "tau/p/m", "--root", str(tmp_path / "o"))
    assert code == 0 and (tmp_path / "o" / "model.bin").read_bytes() == b"weights 1"
