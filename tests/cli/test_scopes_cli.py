"""The Scopes CLI as an admin uses it: instance bucket, team buckets, audit (real processes)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from tests.cli.proc import client_env, run_cli, satchel_server


def test_admin_storage_team_buckets_and_audit_from_the_cli(tmp_path: Path) -> None:
    allowed = tmp_path / "omega-bucket"
    with satchel_server(tmp_path / "srv", SATCHEL_SUPPORTED_FILE_STORES=f"file://{allowed}"
                        ) as server:
        assert server.admin_key
        env = client_env(server, tmp_path / "cli", SATCHEL_HOST=server.url,
                         SATCHEL_API_KEY=server.admin_key)

        shown = run_cli(["admin", "storage", "show", "--json"], env)
        assert shown.returncode == 0, shown.stderr
        info = json.loads(shown.stdout)
        assert info["provider"] == "file" and info["configured"] is False
        assert info["organization_id"] and info["customer_namespace"].startswith("satchel-")

        new_bucket = tmp_path / "instance-bucket"
        done = run_cli(["admin", "storage", "set", f"file://{new_bucket}", "--path", "prod"], env)
        assert done.returncode == 0, done.stderr
        assert "Instance bucket set" in done.stdout

        made = run_cli(["team", "create", "omega", "--storage", "external", "--bucket",
                        f"file://{allowed}", "--path", "satchel"], env)
        assert made.returncode == 0, made.stderr
        assert "Created team omega" in made.stdout
        refused = run_cli(["team", "create", "rogue", "--storage", "external", "--bucket",
                           f"file://{tmp_path / 'not-allowed'}"], env)
        assert refused.returncode == 1
        (line,) = refused.stderr.strip().splitlines()
        assert line.startswith("NotAvailable: ") and "allow-list" in line

        assert run_cli(["project", "create", "omega/demo"], env).returncode == 0
        r = httpx.post(f"{server.url}/api/v1/teams/omega/projects/demo/files/urls",
                       headers={"Authorization": f"Bearer {server.admin_key}"},
                       json={"files": [{"path": "a.txt", "method": "PUT", "size": 2}]})
        assert r.status_code == 200, r.text
        assert httpx.put(r.json()[0]["url"], content=b"hi").status_code == 200
        assert (allowed / "satchel/teams/omega/projects/demo/files/a.txt").read_bytes() == b"hi"

        audit = run_cli(["admin", "audit", "--team", "omega", "--json"], env)
        assert audit.returncode == 0, audit.stderr
        events = json.loads(audit.stdout)
        assert [(e["username"], e["method"], e["action"]) for e in events] == [
            ("admin", "PUT", "presign")]
        assert events[0]["object_key"] == "satchel/teams/omega/projects/demo/files/a.txt"
        assert events[0]["client_ip"] == "127.0.0.1"
