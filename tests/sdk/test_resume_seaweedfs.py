"""Resume and URL refresh end to end: SDK child processes -> live Satchel server -> a counting
proxy -> real SeaweedFS.

The acceptance case of issue 5: a process logging an artifact (one file big enough for
multipart, many small ones) is SIGKILLed after some parts and files are journaled; the next run
sends exactly the missing parts and files (counted by the proxy in front of the bucket, not
inferred), and the committed version downloads byte-identical.

The thresholds are lowered in this process, where the server runs (8 MiB multipart threshold,
5 MiB parts: SeaweedFS's minimum). The proxy *holds* part and file PUTs beyond a quota, so the
kill happens at a known point (no timing); held requests are answered 503 after the kill
without reaching the bucket.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from satchel import Api, Artifact
from satchel.config import Settings
from satchel.sdk.journal import Journal, UploadState
from satchel.sdk.transfer import TransferClient, TransferConfig
from satchel.server.app import create_app
from satchel.server.deps import AppContext
from satchel.services import artifact_uploads, artifacts, multipart
from satchel.storage.address import parse_address
from tests.conftest import ADMIN_KEY
from tests.live import free_port, serve_in_thread
from tests.sdk.proxy import CountingProxy, Seen, counting_proxy
from tests.storage.servers.seaweedfs import SeaweedFS
from tests.storage.test_scopes_seaweedfs import _cors

API = "/api/v1"
MiB = 1024 * 1024
BIG_SIZE = 60 * MiB + 123  # 13 parts of 5 MiB (the last one short)
PART = 5 * MiB
PARTS = -(-BIG_SIZE // PART)
SMALL_COUNT = 200

CHILD = """
import json, sys
from satchel import Api, Artifact

url, key, src, cache = sys.argv[1:5]
with Api(url, key, cache_dir=cache) as api:
    art = Artifact("ds", "dataset")
    art.add_dir(src)
    logged = api.log_artifact(art, "kappa/p")
    stats = {k: v for k, v in vars(logged.stats).items() if not k.startswith("_")}
    print(json.dumps({"version": logged.version, "id": logged._data["id"], "stats": stats}))
"""


@pytest.fixture
def proxy(seaweedfs: SeaweedFS) -> Iterator[CountingProxy]:
    with counting_proxy(seaweedfs.http_port) as p:
        yield p


@pytest.fixture
def settings(settings: Settings, seaweedfs: SeaweedFS) -> Settings:
    _cors(seaweedfs, "bucket-a")
    return settings


@pytest.fixture
def address(seaweedfs: SeaweedFS, proxy: CountingProxy) -> str:
    """bucket-a through the proxy (URLs are signed for the proxy's host:port)."""
    return seaweedfs.address("bucket-a", "bucket-a").replace(
        seaweedfs.host, f"127.0.0.1:{proxy.port}")


@pytest.fixture
def live(client: TestClient, settings: Settings, ctx: AppContext, address: str,
         monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    monkeypatch.setattr(multipart, "MULTIPART_THRESHOLD", 8 * MiB)
    monkeypatch.setattr(multipart, "PART_SIZE", PART)
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    r = client.put(f"{API}/admin/storage", headers=admin, json={
        "address": address, "path": f"resume-{secrets.token_hex(4)}"})
    assert r.status_code == 200, r.text
    r = client.post(f"{API}/users", json={"username": "kay", "create_api_key": True},
                    headers=admin)
    key = r.json()["api_key"]
    kay = {"Authorization": f"Bearer {key}"}
    assert client.post(f"{API}/teams", json={"name": "kappa"}, headers=kay).status_code == 201
    assert client.post(f"{API}/teams/kappa/projects", json={"name": "p"},
                       headers=kay).status_code == 201
    with serve_in_thread(create_app(settings, context=ctx), free_port()) as url:
        yield {"url": url, "key": key}


def _source(root: Path) -> dict[str, str]:
    """One multipart-sized file and SMALL_COUNT small ones; returns path -> SHA-256."""
    (root / "small").mkdir(parents=True)
    digest = hashlib.sha256()
    with open(root / "big.bin", "wb") as fh:
        left = BIG_SIZE
        while left:
            chunk = os.urandom(min(left, 4 * MiB))
            digest.update(chunk)
            fh.write(chunk)
            left -= len(chunk)
    out = {"big.bin": digest.hexdigest()}
    for i in range(SMALL_COUNT):
        data = secrets.token_bytes(1000 + i * 37)
        (root / "small" / f"f{i:03d}.bin").write_bytes(data)
        out[f"small/f{i:03d}.bin"] = hashlib.sha256(data).hexdigest()
    return out


def _child_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SATCHEL_", "GORILLA_"))}
    env["HOME"] = str(tmp_path / "home")  # no stored credentials, nothing in the real home
    return env


def _spawn(live: dict[str, str], src: Path, cache: Path, tmp_path: Path
           ) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, live["url"], live["key"], str(src), str(cache)],
        env=_child_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _journaled(cache: Path) -> UploadState | None:
    journal = Journal(cache / "journal.db")
    try:
        entries = journal.entries()
    finally:
        journal.close()
    assert len(entries) <= 1
    return entries[0][1] if entries else None


def _wait_for(child: subprocess.Popen[str], cache: Path, small: int, parts: int,
              deadline_s: float = 180) -> UploadState:
    """Poll the child's journal until it shows ``small`` files and ``parts`` parts done."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if child.poll() is not None:
            out, err = child.communicate()
            pytest.fail(f"the uploading process exited early ({child.returncode}):\n{out}\n{err}")
        state = _journaled(cache)
        if state is not None and len(state.objects) == small and \
                sum(len(m.parts) for m in state.multipart.values()) == parts:
            return state
        time.sleep(0.05)
    pytest.fail("the journal never reached the expected state")


def _gate(files: int, parts: int) -> Any:
    """Let ``files`` object PUTs and ``parts`` part PUTs through; hold every other one."""
    quota = {"file": files, "part": parts}

    def hold(seen: Seen) -> bool:
        if seen.method != "PUT" or seen.object_sha is None:
            return False
        kind = "part" if seen.part_number is not None else "file"
        if quota[kind] > 0:
            quota[kind] -= 1
            return False
        return True

    return hold


def _tree_hashes(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            digest = hashlib.sha256()
            with open(p, "rb") as fh:
                while block := fh.read(4 * MiB):
                    digest.update(block)
            out[p.relative_to(root).as_posix()] = digest.hexdigest()
    return out


def test_sigkill_midway_then_resume_sends_only_the_missing_parts_and_files(
        live: dict[str, str], proxy: CountingProxy, tmp_path: Path) -> None:
    src = tmp_path / "src"
    expected = _source(src)
    big_sha = expected["big.bin"]
    small_shas = {s for p, s in expected.items() if p != "big.bin"}
    cache = tmp_path / "cache"

    # Run 1: 30 files and 4 parts reach the bucket, everything else is held; then SIGKILL.
    proxy.hold = _gate(files=30, parts=4)
    child = _spawn(live, src, cache, tmp_path)
    try:
        state = _wait_for(child, cache, small=30, parts=4)
    finally:
        child.send_signal(signal.SIGKILL)
        child.communicate()
    assert child.returncode == -signal.SIGKILL
    proxy.release()
    first = proxy.uploads()
    # What the proxy let through is exactly what the journal recorded.
    assert {s.object_sha for s in first if s.part_number is None} == set(state.objects)
    assert {s.part_number for s in first if s.part_number is not None} == \
        set(state.multipart[big_sha].parts)
    assert len(proxy.held) > 0  # the kill really interrupted work in flight
    done_parts = set(state.multipart[big_sha].parts)
    upload_id = state.multipart[big_sha].upload_id

    # Run 2: a new process resumes.
    proxy.reset()
    child = _spawn(live, src, cache, tmp_path)
    out, err = child.communicate(timeout=300)
    assert child.returncode == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    second = proxy.uploads()
    sent_parts = [s.part_number for s in second if s.part_number is not None]
    sent_files = [s.object_sha for s in second if s.part_number is None]
    # Only the missing parts, each once, into the same multipart upload ...
    assert sorted(sent_parts) == sorted(set(range(1, PARTS + 1)) - done_parts)
    assert {s.upload_id for s in second if s.part_number is not None} == {upload_id}
    # ... and only the missing files, each once.
    assert sorted(sent_files) == sorted(small_shas - set(state.objects))
    # The same pending version was committed; the SDK's own account agrees with the proxy.
    assert result["version"] == "v0" and result["id"] == state.pending_id
    stats = result["stats"]
    assert stats["resumed"] is True
    assert (stats["parts_resumed"], stats["objects_resumed"]) == (4, 30)
    assert stats["parts_sent"] == len(sent_parts)
    assert stats["objects_sent"] == len(sent_files) + 1  # + the big file, completed now
    assert stats["hashed_files"] == 0  # the hash cache knew every file
    assert _journaled(cache) is None  # cleared after the commit

    # Byte-identical, verified by downloading (SHA-256 checked by the SDK, and here again).
    with Api(live["url"], live["key"], cache_dir=tmp_path / "dl-cache") as api:
        root = api.artifact("kappa/p/ds:v0").download(tmp_path / "out")
    assert _tree_hashes(root) == expected


def test_resume_starts_over_when_the_upload_was_aborted_meanwhile(
        live: dict[str, str], proxy: CountingProxy, tmp_path: Path, seaweedfs: SeaweedFS,
        ctx: AppContext, address: str) -> None:
    """The journal names a multipart upload the store no longer has (the garbage collector
    aborts abandoned ones): the server starts a new one and every part is sent again; the
    small files already up are not."""
    src = tmp_path / "src"
    expected = _source(src)
    big_sha = expected["big.bin"]
    cache = tmp_path / "cache"
    proxy.hold = _gate(files=10, parts=3)
    child = _spawn(live, src, cache, tmp_path)
    try:
        state = _wait_for(child, cache, small=10, parts=3)
    finally:
        child.send_signal(signal.SIGKILL)
        child.communicate()
    proxy.release()
    old_upload = state.multipart[big_sha].upload_id
    store = ctx.storage.open(parse_address(address))
    (up,) = [u for u in store.list_multipart_uploads("") if u.upload_id == old_upload]
    store.abort_multipart(up)

    proxy.reset()
    child = _spawn(live, src, cache, tmp_path)
    out, err = child.communicate(timeout=300)
    assert child.returncode == 0, err
    second = proxy.uploads()
    parts = [s for s in second if s.part_number is not None]
    assert sorted(s.part_number for s in parts) == list(range(1, PARTS + 1))
    assert {s.upload_id for s in parts} != {old_upload}
    assert len([s for s in second if s.part_number is None]) == SMALL_COUNT - 10
    stats = json.loads(out.strip().splitlines()[-1])["stats"]
    assert stats["resumed"] is True  # the same pending version, a new multipart upload
    assert (stats["objects_resumed"], stats["parts_resumed"]) == (10, 0)
    with Api(live["url"], live["key"], cache_dir=tmp_path / "dl") as api:
        root = api.artifact("kappa/p/ds").download(tmp_path / "out")
    assert _tree_hashes(root) == expected


class _Clock:
    """Shifts time for one side: the server's signer or the client's expiry check."""

    def __init__(self, offset: float = 0.0) -> None:
        self.offset = offset

    def __call__(self) -> float:
        return time.time() + self.offset


@pytest.mark.parametrize("client_clock_behind", [True, False],
                         ids=["store-refuses-then-refresh", "refresh-before-sending"])
def test_expired_upload_and_download_urls_are_refreshed(
        live: dict[str, str], proxy: CountingProxy, tmp_path: Path, ctx: AppContext,
        address: str, monkeypatch: pytest.MonkeyPatch, client_clock_behind: bool) -> None:
    """URLs the server hands out at create_version / download are already expired (signed by a
    clock two hours behind). SeaweedFS enforces SigV4 expiry. With the client's clock behind
    too, the client does not see it: the store refuses (403 "Request has expired") and the SDK
    refreshes; with a correct client clock the SDK refreshes before sending anything."""
    store = ctx.storage.open(parse_address(address))
    past = _Clock(-7200)
    real = store._clock  # type: ignore[attr-defined]

    def expired_during(fn: Any) -> Any:
        """``fn`` signs with the past clock, except for the download refresh (``paths``)."""

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            if kwargs.get("paths") is not None:
                return fn(*args, **kwargs)
            store._clock = past  # type: ignore[attr-defined]
            try:
                return fn(*args, **kwargs)
            finally:
                store._clock = real  # type: ignore[attr-defined]

        return wrapped

    refreshes = {"n": 0}
    real_refresh = artifact_uploads.refresh_urls

    def counting_refresh(*args: Any, **kwargs: Any) -> Any:
        refreshes["n"] += 1
        return real_refresh(*args, **kwargs)

    monkeypatch.setattr(artifacts, "create_version", expired_during(artifacts.create_version))
    monkeypatch.setattr(artifacts, "download_urls", expired_during(artifacts.download_urls))
    monkeypatch.setattr(artifact_uploads, "refresh_urls", counting_refresh)

    src = tmp_path / "src"
    (src / "s").mkdir(parents=True)
    big = os.urandom(12 * MiB)  # 3 parts
    (src / "big.bin").write_bytes(big)
    files = {f"s/{i}.txt": secrets.token_bytes(500 + i) for i in range(20)}
    for rel, data in files.items():
        (src / rel).write_bytes(data)
    config = TransferConfig(clock=_Clock(-10800 if client_clock_behind else 0))
    with Api(live["url"], live["key"], cache_dir=tmp_path / "c",
             transfer=TransferClient(config)) as api:
        art = Artifact("ds", "dataset")
        art.add_dir(src)
        logged = api.log_artifact(art, "kappa/p")
        assert logged.version == "v0"
        assert logged.stats is not None
        assert logged.stats.urls_refreshed == 20 + 3  # every file and every part
        # Batched: far fewer server calls than URLs (one per object batch, one per big file).
        assert 1 < refreshes["n"] <= 3
        refused = [s for s in proxy.forwarded if s.method == "PUT" and s.status == 403]
        if client_clock_behind:
            assert len(refused) == 23  # the store enforced the expiry, every URL once
        else:
            assert refused == []  # nothing was sent on an expired URL
        fetched = api.artifact("kappa/p/ds")
        out = fetched.download(tmp_path / "out", cache=False)
    assert (out / "big.bin").read_bytes() == big
    assert all((out / rel).read_bytes() == data for rel, data in files.items())
    assert fetched.download_stats is not None
    assert fetched.download_stats.urls_refreshed == 21
    refused_gets = [s for s in proxy.forwarded if s.method == "GET" and s.status == 403]
    assert len(refused_gets) == (21 if client_clock_behind else 0)
