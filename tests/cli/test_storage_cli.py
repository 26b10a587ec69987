"""`satchel storage doctor` and `satchel storage policy` as a user runs them: the installed
command in its own process, with a private config directory and data directory.

The doctor runs against the session's SeaweedFS (127.0.0.1 only); the policy generator needs
no server when identity, organization ID and origin are given on the command line.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cli.proc import clean_env, run_cli
from tests.storage.servers.seaweedfs import SeaweedFS

ORIGIN = "http://satchel.test:8080"  # only sent as an Origin header to SeaweedFS


@pytest.fixture
def weed(seaweedfs: SeaweedFS) -> SeaweedFS:
    """The session's SeaweedFS (tests/storage/servers/seaweedfs.py)."""
    return seaweedfs


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """Temp SATCHEL_HOME / SATCHEL_CONFIG_DIR / HOME: nothing reads the user's own files."""
    return clean_env(tmp_path)


@pytest.fixture
def bucket(weed: SeaweedFS) -> Iterator[str]:
    """A fresh bucket with the CORS rule Satchel's policy generator prints for ORIGIN."""
    name = weed.create_bucket(f"cli-doctor-{secrets.token_hex(4)}")
    client = weed.client()
    client.put_bucket_cors(Bucket=name, CORSConfiguration={"CORSRules": [{
        "AllowedOrigins": [ORIGIN], "AllowedMethods": ["GET", "PUT", "HEAD"],
        "AllowedHeaders": ["*"], "ExposeHeaders": ["ETag"], "MaxAgeSeconds": 600}]})
    yield name
    for obj in client.list_objects_v2(Bucket=name).get("Contents", []):
        client.delete_object(Bucket=name, Key=obj["Key"])


def _all_output(result: Any) -> str:
    return f"{result.stdout}\n{result.stderr}"


def test_doctor_healthy_bucket_exits_0(weed: SeaweedFS, bucket: str,
                                       env: dict[str, str]) -> None:
    secret = weed.admin.secret_key

    result = run_cli(["storage", "doctor", weed.address(bucket), "--path", "satchel",
                      "--origin", ORIGIN], env)

    assert result.returncode == 0, _all_output(result)
    lines = result.stdout.splitlines()
    assert lines[-1] == "OK"
    assert "(path satchel)" in lines[0] and "****" in lines[0]
    assert "fix:" not in result.stdout
    passed = next(line for line in lines if line.startswith("passed"))
    for check in ("credentials", "write", "read", "list", "delete", "cors"):
        assert check in passed
    assert secret not in _all_output(result)


def test_doctor_broken_bucket_exits_1_with_one_finding(weed: SeaweedFS,
                                                       env: dict[str, str]) -> None:
    # ``no-list`` may read and write bucket-a but not list it: exactly one thing is wrong.
    secret = weed.identity("no-list").secret_key

    result = run_cli(["storage", "doctor", weed.address("bucket-a", "no-list")], env)

    assert result.returncode == 1, _all_output(result)
    lines = result.stdout.splitlines()
    findings = [i for i, line in enumerate(lines) if line.startswith(("ERROR", "WARNING"))]
    # Every finding is followed by its fix (no --origin: CORS is an unchecked warning).
    assert all(lines[i + 1].lstrip().startswith("fix: ") for i in findings), result.stdout
    errors = [i for i in findings if lines[i].startswith("ERROR")]
    assert len(errors) == 1, result.stdout
    assert lines[errors[0]].startswith("ERROR   list: cannot list objects")
    assert "s3:ListBucket" in lines[errors[0] + 1]
    assert lines[-1].startswith("FAILED")
    assert secret not in _all_output(result)


def test_doctor_wrong_secret_never_echoes_it(weed: SeaweedFS,
                                            env: dict[str, str]) -> None:
    secret = f"wrong-{secrets.token_urlsafe(16)}"
    address = (f"s3://{weed.admin.access_key}:{secret}@{weed.host}/bucket-a"
               f"?region={weed.region}")

    result = run_cli(["storage", "doctor", address], env)

    assert result.returncode == 1
    assert "ERROR   credentials:" in result.stdout
    assert secret not in _all_output(result)


def test_doctor_json_report(weed: SeaweedFS, bucket: str,
                            env: dict[str, str]) -> None:
    healthy = run_cli(["storage", "doctor", weed.address(bucket), "--origin", ORIGIN,
                       "--json"], env)
    broken = run_cli(["storage", "doctor", weed.address("bucket-a", "read-only"),
                      "--json"], env)

    assert healthy.returncode == 0, _all_output(healthy)
    report = json.loads(healthy.stdout)
    assert report["ok"] is True and report["findings"] == []
    assert "cors" in report["passed"] and report["address"].startswith("s3://")

    assert broken.returncode == 1, _all_output(broken)
    report = json.loads(broken.stdout)
    assert report["ok"] is False
    assert [(f["check"], f["severity"]) for f in report["findings"]
            if f["severity"] == "error"] == [("write", "error")]
    assert all(f["fix"] for f in report["findings"])
    for identity in ("admin", "read-only"):
        secret = weed.identity(identity).secret_key
        assert secret not in _all_output(healthy) + _all_output(broken)


# --------------------------------------------------------------------------- policy


def _json_blocks(text: str) -> list[Any]:
    """Every JSON document in `satchel storage policy` output (comment lines start with #)."""
    blocks: list[list[str]] = [[]]
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            if blocks[-1]:
                blocks.append([])
        else:
            blocks[-1].append(line)
    return [json.loads("\n".join(b)) for b in blocks if b]


IDENTITY = {
    "s3": "arn:aws:iam::123456789012:role/satchel",
    "cw": "cw:org-123:user/satchel",
    "gcs": "satchel@my-project.iam.gserviceaccount.com",
    "azure": "00000000-1111-2222-3333-444444444444",
}
ORG = "7f3c9a10-4b2e-4c1d-9e8f-0a1b2c3d4e5f"


@pytest.mark.parametrize("provider", ["s3", "cw", "gcs", "azure"])
def test_policy_prints_valid_documents_filled_in(provider: str, env: dict[str, str]) -> None:
    identity = IDENTITY[provider]

    result = run_cli(["storage", "policy", "--provider", provider, "--bucket", "ml-artifacts",
                      "--path", "satchel/prod", "--identity", identity, "--org-id", ORG,
                      "--origin", ORIGIN], env)

    assert result.returncode == 0, _all_output(result)
    docs = _json_blocks(result.stdout)
    assert len(docs) == 2
    cors, policy = docs
    text = json.dumps(policy)
    assert identity in text
    if provider in {"s3", "cw"}:
        (rule,) = cors["CORSRules"]
        assert rule["AllowedOrigins"] == [ORIGIN]
        assert set(rule["AllowedMethods"]) == {"GET", "PUT", "HEAD"}
        assert "ETag" in rule["ExposeHeaders"]
        statements = policy["Statement"]
        principal = "CW" if provider == "cw" else "AWS"
        assert all(s["Principal"] == {principal: [identity]} for s in statements)
        assert all(s["Sid"].startswith("Satchel" + ORG.replace("-", "")[:24])
                   for s in statements)
        objects = next(s for s in statements if "s3:PutObject" in s["Action"])
        assert objects["Resource"] == ["arn:aws:s3:::ml-artifacts/satchel/prod/*"]
        listing = next(s for s in statements if "s3:ListBucket" in s["Action"])
        assert listing["Condition"]["StringLike"]["s3:prefix"] == ["satchel/prod/*",
                                                                   "satchel/prod"]
    elif provider == "gcs":
        (rule,) = cors
        assert rule["origin"] == [ORIGIN] and "ETag" in rule["responseHeader"]
        binding = policy["bindings"][0]
        assert binding["members"] == [f"serviceAccount:{identity}"]
        assert binding["condition"]["title"] == f"satchel-{ORG[:8]}"
        assert "objects/satchel/prod/" in binding["condition"]["expression"]
    else:
        (rule,) = cors["CorsRules"]
        assert rule["AllowedOrigins"] == [ORIGIN] and "ETag" in rule["ExposedHeaders"]
        assert {a["assignee"] for a in policy["roleAssignments"]} == {identity}
        assert "containers/ml-artifacts" in policy["roleAssignments"][0]["scope"]
        assert "under satchel/prod/" in result.stdout  # RBAC cannot scope to a path: noted
    assert ORG in result.stdout


def test_policy_with_kms_key_adds_the_key_statement(env: dict[str, str]) -> None:
    kms = "arn:aws:kms:us-east-1:123456789012:key/abcd"

    result = run_cli(["storage", "policy", "--provider", "s3", "--bucket", "ml", "--identity",
                      IDENTITY["s3"], "--org-id", ORG, "--origin", ORIGIN, "--kms-key", kms],
                     env)

    assert result.returncode == 0, _all_output(result)
    _cors, policy, key_policy = _json_blocks(result.stdout)
    assert policy["Statement"][0]["Resource"] == ["arn:aws:s3:::ml/*"]  # no path: whole bucket
    assert "kms:GenerateDataKey" in key_policy["Statement"][0]["Action"]
    assert kms in result.stdout


def test_policy_unknown_provider_is_a_one_line_error(env: dict[str, str]) -> None:
    result = run_cli(["storage", "policy", "--provider", "dropbox", "--bucket", "b",
                      "--identity", "i", "--org-id", ORG, "--origin", ORIGIN], env)

    assert result.returncode != 0
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "unknown provider 'dropbox'" in lines[0]
    assert "s3, cw, gcs, azure" in lines[0]
