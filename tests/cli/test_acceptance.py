"""Foundation acceptance: a new user's first session with the real ``satchel`` command.

The server runs as a separate process (``satchel server --port P``) on a fresh data directory;
every CLI call is a separate process too, with its own config directory. SQLite always; also
PostgreSQL (a freshly created database) when SATCHEL_TEST_DB=postgresql.
"""

from __future__ import annotations

import json
import os
import stat
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import httpx
import pytest

from tests.cli.proc import (
    API_KEY_RE,
    ServerProcess,
    clean_env,
    client_env,
    fresh_postgres_database,
    run_cli,
    satchel_server,
)
from tests.live import free_port

pytestmark = pytest.mark.slow

TEST_DB = os.environ.get("SATCHEL_TEST_DB", "sqlite")
DB_KINDS = ["sqlite", "postgresql"] if TEST_DB == "postgresql" else ["sqlite"]
# Generous: argon2 and other test sessions share the machine; this guards hangs, not speed.
HTTP_TIMEOUT = 60


@pytest.fixture(scope="module", params=DB_KINDS)
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp(f"server-{request.param}")
    if request.param == "postgresql":
        with fresh_postgres_database() as url, satchel_server(root, database_url=url) as srv:
            yield srv
    else:
        with satchel_server(root) as srv:
            yield srv


def credentials_file(env: dict[str, str]) -> Path:
    return Path(env["SATCHEL_CONFIG_DIR"]) / "credentials.json"


def key_env(server: ServerProcess, root: Path, key: str) -> dict[str, str]:
    return client_env(server, root, SATCHEL_HOST=server.url, SATCHEL_API_KEY=key)


def me(server: ServerProcess, key: str) -> httpx.Response:
    return httpx.get(f"{server.url}/api/v1/me", headers={"Authorization": f"Bearer {key}"},
                     timeout=HTTP_TIMEOUT)


def assert_error_shape(resp: httpx.Response, status: int, code: str) -> None:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    error = resp.json()["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["details"], dict)


# --------------------------------------------------------------------------- first session


def test_first_start_prints_admin_credentials_once(server: ServerProcess) -> None:
    assert "Created instance admin 'admin'." in server.startup
    assert server.admin_key is not None and API_KEY_RE.fullmatch(server.admin_key)
    assert server.admin_password
    assert server.startup.count(server.admin_key) == 1
    assert server.startup.count(server.admin_password) == 1
    assert f"Satchel listening on {server.url}" in server.startup


def test_new_user_journey(server: ServerProcess, tmp_path: Path) -> None:
    assert server.admin_key is not None
    env = client_env(server, tmp_path)

    out = run_cli(["login", "--host", server.url, "--key", server.admin_key], env)
    assert out.returncode == 0, out.stderr
    assert "as admin" in out.stdout
    creds = credentials_file(env)
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    assert json.loads(creds.read_text()) == {"host": server.url, "api_key": server.admin_key}

    out = run_cli(["team", "create", "kappa"], env)
    assert out.returncode == 0, out.stderr
    assert "Created team kappa" in out.stdout
    out = run_cli(["project", "create", "kappa/demo"], env)
    assert out.returncode == 0, out.stderr
    assert "Created project kappa/demo" in out.stdout

    out = run_cli(["project", "ls", "--json"], env)
    assert out.returncode == 0, out.stderr
    projects = json.loads(out.stdout)
    assert [(p["team"], p["name"], p["visibility"]) for p in projects] == [
        ("kappa", "demo", "instance")
    ]

    # Without credentials the API refuses, in the one JSON error shape.
    resp = httpx.get(f"{server.url}/api/v1/projects", timeout=HTTP_TIMEOUT)
    assert_error_shape(resp, 401, "not_authenticated")
    assert resp.headers["www-authenticate"].startswith("Bearer")


def test_login_with_username_and_password_prompts(server: ServerProcess, tmp_path: Path
                                                  ) -> None:
    assert server.admin_password is not None
    env = client_env(server, tmp_path)
    out = run_cli(["login", "--host", server.url], env,
                  stdin=f"admin\n{server.admin_password}\n")
    assert out.returncode == 0, out.stderr
    assert "Username" in out.stdout
    assert "as admin" in out.stdout
    assert server.admin_password not in out.stdout + out.stderr

    creds = credentials_file(env)
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    stored = json.loads(creds.read_text())
    # The password was exchanged for a new key of its own; the password is not stored.
    assert stored["host"] == server.url
    assert API_KEY_RE.fullmatch(stored["api_key"]) and stored["api_key"] != server.admin_key
    assert server.admin_password not in creds.read_text()
    assert me(server, stored["api_key"]).json()["username"] == "admin"

    out = run_cli(["whoami", "--json"], env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["username"] == "admin"


def test_login_with_wrong_password_stores_nothing(server: ServerProcess, tmp_path: Path) -> None:
    env = client_env(server, tmp_path)
    out = run_cli(["login", "--host", server.url], env, stdin="admin\nnot-the-password-123\n")
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1] == "NotAuthenticated: wrong username or password"
    assert "Traceback" not in out.stdout + out.stderr
    assert not credentials_file(env).exists()


def test_environment_variables_work_without_a_login_file(server: ServerProcess, tmp_path: Path
                                                         ) -> None:
    assert server.admin_key is not None
    env = key_env(server, tmp_path, server.admin_key)
    out = run_cli(["whoami", "--json"], env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["username"] == "admin"
    out = run_cli(["team", "ls", "--json"], env)
    assert out.returncode == 0, out.stderr
    assert isinstance(json.loads(out.stdout), list)
    assert not credentials_file(env).exists()


def test_environment_beats_a_stale_login_file(server: ServerProcess, tmp_path: Path) -> None:
    assert server.admin_key is not None
    env = key_env(server, tmp_path, server.admin_key)
    creds = credentials_file(env)
    creds.parent.mkdir(parents=True)
    creds.write_text(json.dumps({"host": f"http://127.0.0.1:{free_port()}",
                                 "api_key": "sk_AAAAAAAA_" + "B" * 40}))
    out = run_cli(["whoami", "--json"], env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["username"] == "admin"


def test_admin_create_user_print_api_key(server: ServerProcess, tmp_path: Path) -> None:
    env = client_env(server, tmp_path)
    out = run_cli(["admin", "create-user", "bob", "--print-api-key"], env)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 1, out.stdout
    key = lines[0]
    assert API_KEY_RE.fullmatch(key), key

    resp = me(server, key)
    assert resp.status_code == 200, resp.text
    assert resp.json()["username"] == "bob"
    assert resp.json()["is_admin"] is False
    out = run_cli(["whoami", "--json"], key_env(server, tmp_path, key))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["username"] == "bob"


class _Recorder(BaseHTTPRequestHandler):
    """A stranger's server: remembers the headers it was sent, answers 401."""

    seen: ClassVar[list[dict[str, str]]] = []

    def do_GET(self) -> None:
        self.seen.append(dict(self.headers))
        body = json.dumps({"error": {"code": "not_authenticated", "message": "who are you?",
                                     "details": {}}}).encode()
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def stranger() -> Iterator[tuple[str, list[dict[str, str]]]]:
    _Recorder.seen = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", _Recorder.seen
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)


def test_the_stored_key_is_never_sent_to_another_host(
    server: ServerProcess, tmp_path: Path, stranger: tuple[str, list[dict[str, str]]]
) -> None:
    assert server.admin_key is not None
    env = client_env(server, tmp_path)
    assert run_cli(["login", "--host", server.url, "--key", server.admin_key], env
                   ).returncode == 0
    other_url, seen = stranger

    out = run_cli(["whoami"], {**env, "SATCHEL_HOST": other_url})
    assert out.returncode == 1
    assert out.stderr.startswith("NotAuthenticated: ")
    # Logging in somewhere else asks for a password instead of reusing this server's key.
    out = run_cli(["login", "--host", other_url], env, stdin="admin\nwhatever-password\n")
    assert out.returncode == 1
    assert "Username" in out.stdout
    assert len(seen) == 2
    assert all(server.admin_key not in json.dumps(headers) for headers in seen)
    # The original login is untouched.
    assert json.loads(credentials_file(env).read_text())["api_key"] == server.admin_key


def test_logging_in_again_switches_user(server: ServerProcess, tmp_path: Path) -> None:
    assert server.admin_key is not None
    password = "carols-long-password-1"
    resp = httpx.post(f"{server.url}/api/v1/users",
                      json={"username": "carol", "password": password},
                      headers={"Authorization": f"Bearer {server.admin_key}"},
                      timeout=HTTP_TIMEOUT)
    assert resp.status_code == 201, resp.text
    env = client_env(server, tmp_path)
    assert run_cli(["login", "--host", server.url, "--key", server.admin_key], env
                   ).returncode == 0

    out = run_cli(["login", "--host", server.url], env, stdin=f"carol\n{password}\n")
    assert out.returncode == 0, out.stderr
    assert "as carol" in out.stdout
    out = run_cli(["whoami", "--json"], env)
    assert json.loads(out.stdout)["username"] == "carol"


# --------------------------------------------------------------------------- mistakes


def _logged_in(server: ServerProcess, root: Path) -> dict[str, str]:
    assert server.admin_key is not None
    return key_env(server, root, server.admin_key)


def _server_down(server: ServerProcess, root: Path) -> dict[str, str]:
    assert server.admin_key is not None
    return client_env(server, root, SATCHEL_HOST=f"http://127.0.0.1:{free_port()}",
                      SATCHEL_API_KEY=server.admin_key)


def _unknown_key(server: ServerProcess, root: Path) -> dict[str, str]:
    return key_env(server, root, "sk_AAAAAAAA_" + "C" * 40)


MISTAKES: list[tuple[str, list[str], Callable[[ServerProcess, Path], dict[str, str]], str,
                     str]] = [
    ("bad team name", ["team", "create", "Bad_Name"], _logged_in, "InvalidInput", "Bad_Name"),
    ("unknown team", ["project", "create", "nosuchteam/demo"], _logged_in, "NotFound",
     "nosuchteam"),
    ("no slash", ["project", "create", "nodash"], _logged_in, "InvalidInput", "TEAM/PROJECT"),
    ("server down", ["team", "ls"], _server_down, "ServerUnreachable", "127.0.0.1"),
    ("unknown key", ["whoami"], _unknown_key, "NotAuthenticated", "satchel login"),
]


@pytest.mark.parametrize(("args", "make_env", "error", "mentions"),
                         [m[1:] for m in MISTAKES], ids=[m[0] for m in MISTAKES])
def test_user_mistakes_print_one_line(
    server: ServerProcess, tmp_path: Path, args: list[str],
    make_env: Callable[[ServerProcess, Path], dict[str, str]], error: str, mentions: str,
) -> None:
    out = run_cli(args, make_env(server, tmp_path))
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith(f"{error}: "), lines[0]
    assert mentions in lines[0]
    assert out.stdout == ""
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize(("args", "stdin", "code", "mentions"), [
    (["whoami", "--host", "http://127.0.0.1:1"], "", 2, "No such option"),
    (["team", "create"], "", 2, "Missing argument"),
    (["server", "--port", "abc"], "", 2, "Invalid value for '--port'"),
    (["login", "--host", "http://127.0.0.1:1"], "", 1, "Abort"),  # stdin closed at the prompt
])
def test_usage_errors_never_show_a_traceback(
    tmp_path: Path, args: list[str], stdin: str, code: int, mentions: str
) -> None:
    env = clean_env(tmp_path)
    out = run_cli(args, env, stdin=stdin)
    assert out.returncode == code, (out.stdout, out.stderr)
    assert mentions in out.stderr
    assert "Traceback" not in out.stdout + out.stderr
    assert not Path(env["SATCHEL_HOME"]).exists()


def test_bad_setting_is_one_config_error_line_and_exit_2(tmp_path: Path) -> None:
    env = clean_env(tmp_path, SATCHEL_PORT="abc")
    out = run_cli(["server"], env)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("ConfigError: SATCHEL_PORT: "), lines[0]
    assert "Traceback" not in out.stderr
    # Nothing was started or created.
    assert out.stdout == ""
    assert not Path(env["SATCHEL_HOME"]).exists()


def test_each_bad_setting_gets_its_own_line_and_values_are_not_echoed(tmp_path: Path) -> None:
    secretish = "not-a-key-hunter2-do-not-print"
    env = clean_env(tmp_path, SATCHEL_PORT="abc", SATCHEL_LOG_LEVEL="loud",
                    SATCHEL_ADMIN_API_KEY=secretish)
    out = run_cli(["server"], env)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert sorted(line.split(":")[1].strip() for line in lines) == [
        "SATCHEL_ADMIN_API_KEY", "SATCHEL_LOG_LEVEL", "SATCHEL_PORT"
    ], lines
    assert all(line.startswith("ConfigError: SATCHEL_") for line in lines)
    assert secretish not in out.stdout + out.stderr
    assert "loud" not in out.stderr
    assert not Path(env["SATCHEL_HOME"]).exists()
