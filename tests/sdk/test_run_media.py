"""Run media and files end to end: SDK -> real Satchel server over HTTP -> a real SeaweedFS
team bucket (team omega owns bucket-b, as in tests/sdk/test_artifacts_seaweedfs.py).

``satchel.Image`` from a path, a PIL image and numpy arrays, ``run.save`` now and at the end,
history references, byte-identical downloads, offline + ``satchel sync``, a server that is down
when the run starts, and a sync that re-sends only what the spool does not mark done.
"""

from __future__ import annotations

import hashlib
import io
import json
import secrets
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image as PILImage

import satchel
from satchel.config import RunSettings, Settings
from satchel.errors import InvalidInput, InvalidKey, NotFound
from satchel.sdk import run_file_parts
from satchel.sdk.client import Client
from satchel.sdk.file_queue import QUEUE_FILE, FileQueue
from satchel.sdk.media import encode_png, safe_name
from satchel.sdk.run_files import sync_files
from satchel.sdk.run_files_read import download_files, list_files
from satchel.sdk.sender import Sender
from satchel.sdk.spool import Spool
from satchel.sdk.transfer import TransferClient, TransferConfig
from satchel.server.app import create_app
from satchel.server.deps import AppContext
from satchel.services import multipart
from satchel.services import run_files as run_files_service
from tests.conftest import ADMIN_KEY
from tests.live import free_port, serve_in_thread
from tests.storage.servers.seaweedfs import SeaweedFS
from tests.storage.test_scopes_seaweedfs import _cors, _keys

API = "/api/v1"


# ---------------------------------------------------------------------------- satchel.Image


def _pixels(png: bytes) -> np.ndarray:
    with PILImage.open(io.BytesIO(png)) as img:
        return np.asarray(img)


def test_image_from_arrays_round_trips_through_png() -> None:
    rng = np.random.default_rng(7)
    rgb = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    rgba = rng.integers(0, 256, (4, 3, 4), dtype=np.uint8)
    gray = rng.integers(0, 256, (6, 2), dtype=np.uint8)
    for arr in (rgb, rgba, gray):
        img = satchel.Image(arr)
        assert (img.height, img.width) == arr.shape[:2]
        assert np.array_equal(_pixels(img.png), arr)
        assert img.sha256 == hashlib.sha256(img.png).hexdigest()
    # HxWx1 is grayscale; floats in [0, 1] scale to 0-255; bools to 0/255; ints in range.
    assert np.array_equal(_pixels(satchel.Image(gray[:, :, None]).png), gray)
    floats = np.array([[0.0, 0.5, 1.0]])
    assert _pixels(satchel.Image(floats).png).tolist() == [[0, 128, 255]]
    assert _pixels(satchel.Image(np.array([[True, False]])).png).tolist() == [[255, 0]]
    assert _pixels(satchel.Image(np.array([[3, 200]], dtype=np.int64)).png).tolist() == [[3, 200]]
    # The same pixels always give the same bytes (so the same file in the bucket).
    assert satchel.Image(rgb.copy()).png == satchel.Image(rgb).png
    # Changing the array after creating the image changes nothing.
    arr = rgb.copy()
    img = satchel.Image(arr, caption="before")
    arr[:] = 0
    assert np.array_equal(_pixels(img.png), rgb) and img.caption == "before"


@pytest.mark.parametrize(("data", "words"), [
    (np.zeros((3, 4, 5), dtype=np.uint8), "HxWx3"),
    (np.zeros((3, 8, 8), dtype=np.uint8), "channels first"),
    (np.zeros((2, 2, 2, 2), dtype=np.uint8), "HxW"),
    (np.zeros((0, 4), dtype=np.uint8), "empty"),
    (np.array([[0.0, 1.5]]), "[0, 1]"),
    (np.array([[np.nan]]), "finite"),
    (np.array([[-1, 300]]), "[0, 255]"),
    (np.array([["a"]]), "uint8"),
    (42, "file path, a PIL image or a numpy array"),
])
def test_image_refuses_what_it_cannot_show(data: Any, words: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        satchel.Image(data)
    assert words in str(exc.value)


def test_image_from_paths_and_pil(tmp_path: Path) -> None:
    arr = np.arange(24, dtype=np.uint8).reshape(2, 4, 3)
    png_path = tmp_path / "a.png"
    PILImage.fromarray(arr).save(png_path)
    from_path = satchel.Image(png_path)
    assert from_path.png == png_path.read_bytes()  # a PNG is kept byte for byte
    assert (from_path.width, from_path.height) == (4, 2)
    jpg = tmp_path / "b.jpg"
    PILImage.fromarray(np.full((8, 6, 3), 200, dtype=np.uint8)).save(jpg)
    converted = satchel.Image(str(jpg))
    assert converted.png.startswith(b"\x89PNG") and (converted.width, converted.height) == (6, 8)
    cmyk = PILImage.new("CMYK", (3, 2))
    assert _pixels(satchel.Image(cmyk).png).shape == (2, 3, 3)  # converted to RGB
    assert np.array_equal(_pixels(satchel.Image(PILImage.fromarray(arr)).png), arr)
    with pytest.raises(InvalidInput, match="cannot read image"):
        satchel.Image(tmp_path / "missing.png")
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(InvalidInput, match="not an image"):
        satchel.Image(tmp_path / "text.png")
    with pytest.raises(InvalidInput, match="caption"):
        satchel.Image(arr, caption=3)  # type: ignore[arg-type]


def test_png_writer_and_names() -> None:
    png = encode_png(bytes([1, 2, 3, 4, 5, 6]), 2, 1, 3)
    assert struct.unpack(">II", png[16:24]) == (2, 1)
    assert _pixels(png).tolist() == [[[1, 2, 3], [4, 5, 6]]]
    assert safe_name("val/sample img") == "val/sample_img"
    assert safe_name("../x/./é") == "_/x/_/_"


# ---------------------------------------------------------------------------- live


@pytest.fixture
def settings(settings: Settings, seaweedfs: SeaweedFS) -> Settings:
    _cors(seaweedfs, "bucket-b")
    return settings.model_copy(update={
        "supported_file_stores": seaweedfs.address("bucket-b", "bucket-b")})


@pytest.fixture
def prefix() -> str:
    return f"media-{secrets.token_hex(4)}"


@pytest.fixture
def olga(client: TestClient, prefix: str) -> str:
    """Team omega, whose files live in its own SeaweedFS bucket (bucket-b); project p."""
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    r = client.post(f"{API}/users", json={"username": "olga", "create_api_key": True},
                    headers=admin)
    key: str = r.json()["api_key"]
    h = {"Authorization": f"Bearer {key}"}
    r = client.post(f"{API}/teams", headers=h, json={
        "name": "omega", "storage": {"type": "external", "bucket": "bucket-b", "path": prefix}})
    assert r.status_code == 201, r.text
    assert client.post(f"{API}/teams/omega/projects", json={"name": "p"},
                       headers=h).status_code == 201
    return key


@pytest.fixture
def live(olga: str, settings: Settings, ctx: AppContext) -> Iterator[str]:
    with serve_in_thread(create_app(settings, context=ctx), free_port()) as url:
        yield url


@pytest.fixture
def rs(tmp_path: Path) -> RunSettings:
    return RunSettings(run_dir=tmp_path / "runs", send_interval_seconds=0.05,
                       finish_timeout_seconds=60, heartbeat_seconds=1, console_capture=False,
                       system_metrics_seconds=0)


def _history(url: str, key: str, run_id: str, *keys: str) -> dict[str, Any]:
    r = httpx.get(f"{url}{API}/teams/omega/projects/p/runs/{run_id}/history",
                  params={"keys": list(keys)}, headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()["keys"]
    return out


def _bucket_files(seaweedfs: SeaweedFS, prefix: str, run_id: str) -> dict[str, bytes]:
    base = f"{prefix}/teams/omega/runs/p/{run_id}/files/"
    s3 = seaweedfs.client()
    return {k[len(base):]: s3.get_object(Bucket="bucket-b", Key=k)["Body"].read()
            for k in _keys(seaweedfs, "bucket-b") if k.startswith(base)}


def _download_all(url: str, key: str, run_id: str, root: Path) -> dict[str, bytes]:
    with Client(host=url, api_key=key) as c, TransferClient() as t:
        got = download_files(c, t, "omega", "p", run_id, root)
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in got}


def test_media_and_saved_files_reach_the_team_bucket(
        live: str, olga: str, rs: RunSettings, tmp_path: Path, seaweedfs: SeaweedFS,
        prefix: str) -> None:
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 256, (16, 12, 3), dtype=np.uint8)
    png_path = tmp_path / "input.png"
    PILImage.fromarray(arr[:, :, 0]).save(png_path)
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(secrets.token_bytes(3 * 1024 * 1024 + 7))
    notes = tmp_path / "out" / "notes.txt"
    notes.parent.mkdir()
    notes.write_text("draft")

    run = satchel.init("omega/p", host=live, api_key=olga, settings=rs)
    run.log({"sample": satchel.Image(arr, caption="numpy"), "loss": 0.5})
    run.log({"sample": satchel.Image(PILImage.fromarray(arr[:4])),
             "from_path": satchel.Image(png_path)})
    run.log({"grid": [satchel.Image(arr[:2]), satchel.Image(arr[2:4])]})
    assert run.save(ckpt) == ["model.ckpt"]
    ckpt_bytes = ckpt.read_bytes()
    ckpt.unlink()  # the spool holds a copy: the upload does not need the original
    assert run.save(notes, policy="end", base_path=tmp_path) == ["out/notes.txt"]
    notes.write_text("final notes")  # "end": what the file holds at finish is sent
    run.finish()

    hist = _history(live, olga, run.id, "sample", "from_path", "grid")
    first, second = hist["sample"]["values"]
    assert first["_type"] == "image" and first["caption"] == "numpy"
    assert (first["width"], first["height"]) == (12, 16)
    assert first["path"] == f"media/images/sample_0_{first['sha256'][:8]}.png"
    assert second["path"].startswith("media/images/sample_1_")
    assert len(hist["grid"]["values"][0]) == 2
    refs = [first, second, hist["from_path"]["values"][0], *hist["grid"]["values"][0]]

    # The bucket holds every file under the run's prefix of omega's own prefix...
    stored = _bucket_files(seaweedfs, prefix, run.id)
    assert set(stored) == {r["path"] for r in refs} | {"model.ckpt", "out/notes.txt"}
    for ref in refs:
        assert hashlib.sha256(stored[ref["path"]]).hexdigest() == ref["sha256"]
        assert len(stored[ref["path"]]) == ref["size"]
    assert stored[hist["from_path"]["values"][0]["path"]] == png_path.read_bytes()
    assert np.array_equal(_pixels(stored[first["path"]]), arr)
    assert stored["model.ckpt"] == ckpt_bytes and stored["out/notes.txt"] == b"final notes"
    # ...and nothing else of this run anywhere in the bucket.
    assert not [k for k in _keys(seaweedfs, "bucket-b")
                if f"/{run.id}/" in k and not k.startswith(prefix + "/")]

    # Listing and download (SHA-256 verified) round-trip byte for byte.
    with Client(host=live, api_key=olga) as c:
        listed = {f.path: f for f in list_files(c, "omega", "p", run.id)}
    assert set(listed) == set(stored)
    assert listed["model.ckpt"].kind == "file" and listed[first["path"]].kind == "media"
    assert _download_all(live, olga, run.id, tmp_path / "dl") == stored
    # Nothing is left in the spool queue, and a later sync sends nothing again.
    assert run.dir is not None
    assert FileQueue(run.dir).pending() == []
    spool = Spool.open(run.dir)
    with Client(host=live, api_key=olga) as c:
        sender = Sender(c, spool, rs)
        assert sender.sync() == 0 and sender.files_uploaded == 0
    spool.close()


def test_offline_run_then_sync_uploads_media(
        live: str, olga: str, rs: RunSettings, tmp_path: Path, seaweedfs: SeaweedFS,
        prefix: str) -> None:
    arr = np.full((3, 3), 7, dtype=np.uint8)
    saved = tmp_path / "config.yaml"
    saved.write_text("lr: 0.1\n")
    run = satchel.init("omega/p", mode="offline", host=live, settings=rs)
    for step in range(3):
        run.log({"img": satchel.Image(arr + step)})
    run.save(saved)
    run.save(tmp_path / "later.txt", policy="end")  # never written: skipped with a warning
    run.finish()
    assert run.dir is not None
    assert _bucket_files(seaweedfs, prefix, run.id) == {}
    queue = FileQueue(run.dir)
    assert len(queue.pending()) == 4
    # Pretend an earlier sync uploaded one image but died before committing it: the commit
    # finds it missing, and it is registered and uploaded again.
    first = next(e for e in queue.pending() if e.kind == "media")
    queue.set_state(first.path, first.sha256, "sent")
    queue.close()
    spool = Spool.open(run.dir)
    with Client(host=live, api_key=olga) as c:
        sender = Sender(c, spool, rs)
        assert sender.sync() > 0
        assert sender.files_uploaded == 4
        again = Sender(c, spool, rs)
        assert again.sync() == 0 and again.files_uploaded == 0
    spool.close()
    stored = _bucket_files(seaweedfs, prefix, run.id)
    values = _history(live, olga, run.id, "img")["img"]["values"]
    assert set(stored) == {v["path"] for v in values} | {"config.yaml"}
    assert [int(_pixels(stored[v["path"]])[0, 0]) for v in values] == [7, 8, 9]
    assert stored["config.yaml"] == b"lr: 0.1\n"
    journal = [json.loads(line) for line in (run.dir / QUEUE_FILE).read_text().splitlines()]
    assert {j["state"] for j in journal if j["op"] == "state"} >= {"sent", "queued", "done"}


def test_server_down_at_init_files_arrive_when_it_is_back(
        olga: str, settings: Settings, ctx: AppContext, rs: RunSettings, tmp_path: Path,
        seaweedfs: SeaweedFS, prefix: str, capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    run = satchel.init("omega/p", host=url, api_key=olga, settings=rs)
    assert "cannot reach the server" in capsys.readouterr().err
    run.log({"img": satchel.Image(np.zeros((2, 2), dtype=np.uint8))})
    (tmp_path / "w.bin").write_bytes(b"weights")
    run.save(tmp_path / "w.bin")
    with serve_in_thread(create_app(settings, context=ctx), port):
        run.finish()
        assert "not uploaded" not in capsys.readouterr().err
        stored = _bucket_files(seaweedfs, prefix, run.id)
        (ref,) = _history(url, olga, run.id, "img")["img"]["values"]
    assert set(stored) == {ref["path"], "w.bin"}


def test_save_arguments(live: str, olga: str, rs: RunSettings, tmp_path: Path,
                        seaweedfs: SeaweedFS, prefix: str) -> None:
    d = tmp_path / "ckpts"
    (d / "sub").mkdir(parents=True)
    (d / "a.pt").write_bytes(b"a")
    (d / "sub" / "b.pt").write_bytes(b"b")
    (d / "c.txt").write_bytes(b"c")
    run = satchel.init("omega/p", host=live, api_key=olga, settings=rs)
    assert run.save(d / "*.pt") == ["a.pt"]
    assert run.save(str(d / "**" / "*.pt"), base_path=tmp_path) == ["ckpts/a.pt",
                                                                    "ckpts/sub/b.pt"]
    assert run.save(d, name="all") == ["all/a.pt", "all/c.txt", "all/sub/b.pt"]
    assert run.save(d / "c.txt", name="renamed.txt") == ["renamed.txt"]
    (tmp_path / "empty").write_bytes(b"")
    assert run.save(tmp_path / "empty") == ["empty"]
    for bad, exc in (({"path": tmp_path / "nope"}, InvalidInput),
                     ({"path": d / "a.pt", "policy": "live"}, InvalidInput),
                     ({"path": d / "a.pt", "name": "../up"}, InvalidKey),
                     ({"path": d / "*.pt", "name": "x"}, InvalidInput),
                     ({"path": d / "a.pt", "base_path": tmp_path / "elsewhere"}, InvalidInput)):
        with pytest.raises(exc):
            run.save(**bad)
    run.finish()
    assert run.save(d / "a.pt") == []  # a finished run takes nothing more
    assert _bucket_files(seaweedfs, prefix, run.id) == {
        "a.pt": b"a", "ckpts/a.pt": b"a", "ckpts/sub/b.pt": b"b", "all/a.pt": b"a",
        "all/c.txt": b"c", "all/sub/b.pt": b"b", "renamed.txt": b"c", "empty": b""}
    disabled = satchel.init("omega/p", mode="disabled", settings=rs)
    assert disabled.save(d / "a.pt") == []
    disabled.log({"img": satchel.Image(np.zeros((1, 1), dtype=np.uint8))})
    disabled.finish()


def test_a_file_the_server_refuses_does_not_hold_up_the_others(
        live: str, olga: str, rs: RunSettings, tmp_path: Path, seaweedfs: SeaweedFS,
        prefix: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(run_files_service, "MAX_FILES_PER_RUN", 3)  # the in-thread server's
    run = satchel.init("omega/p", mode="offline", host=live, settings=rs)
    for name in ("one", "two", "gone", "three"):
        (tmp_path / name).write_text(name)
        run.save(tmp_path / name)
    run.finish()
    assert run.dir is not None
    # The spool copy of "gone" disappears (a user cleaning up): it cannot be sent, ever.
    (run.dir / "files" / hashlib.sha256(b"gone").hexdigest()).unlink()
    spool = Spool.open(run.dir)
    with Client(host=live, api_key=olga) as c:
        sender = Sender(c, spool, rs)
        sender.sync()
    spool.close()
    assert sender.files_uploaded == 2
    err = capsys.readouterr().err
    assert "giving up on file 'three'" in err and "at most 3 files" in err
    assert "giving up on file 'gone'" in err and "cannot read" in err
    assert _bucket_files(seaweedfs, prefix, run.id) == {"one": b"one", "two": b"two"}
    states = {e.path: e.state for e in FileQueue(run.dir).entries()}
    assert states == {"one": "done", "two": "done", "gone": "failed", "three": "failed"}


def test_big_saved_files_go_up_in_parts(
        live: str, olga: str, rs: RunSettings, tmp_path: Path, seaweedfs: SeaweedFS,
        prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Files from the multipart threshold up (lowered here; the server runs in this process)
    are sent as parallel parts, assembled by the server and committed like any other file."""
    monkeypatch.setattr(multipart, "MULTIPART_THRESHOLD", 8 * 1024 * 1024)
    monkeypatch.setattr(multipart, "PART_SIZE", 5 * 1024 * 1024)  # S3's smallest part
    big = tmp_path / "model.ckpt"
    big.write_bytes(secrets.token_bytes(12 * 1024 * 1024 + 3))  # 3 parts
    small = tmp_path / "small.txt"
    small.write_text("small")
    run = satchel.init("omega/p", host=live, api_key=olga, settings=rs)
    run.save(big)
    run.save(small)
    run.finish()
    stored = _bucket_files(seaweedfs, prefix, run.id)
    assert stored == {"model.ckpt": big.read_bytes(), "small.txt": b"small"}
    head = seaweedfs.client().head_object(
        Bucket="bucket-b", Key=f"{prefix}/teams/omega/runs/p/{run.id}/files/model.ckpt")
    assert head["ETag"].strip('"').endswith("-3")  # a multipart object of 3 parts
    assert _download_all(live, olga, run.id, tmp_path / "dl") == stored

    # An offline run synced later with every part URL already expired on arrival (the
    # client's clock is two hours ahead until the first refresh): the parts' URLs are
    # refreshed, all in one batch.
    off = satchel.init("omega/p", mode="offline", host=live, settings=rs)
    off.save(big, name="late.ckpt")
    off.finish()
    r = httpx.post(f"{live}{API}/teams/omega/projects/p/runs", json={"run_id": off.id},
                   headers={"Authorization": f"Bearer {olga}"})
    assert r.status_code == 201, r.text
    refreshes: list[Any] = []
    real = httpx.Client.request
    skew = [7200.0]

    def counting(self: httpx.Client, method: str, url: Any, **kw: Any) -> Any:
        if str(url).endswith("/files/multipart/urls"):
            refreshes.append(kw.get("json"))
            skew[0] = 0.0
        return real(self, method, url, **kw)

    monkeypatch.setattr(httpx.Client, "request", counting)
    assert off.dir is not None
    spool = Spool.open(off.dir)
    ahead = TransferClient(TransferConfig(clock=lambda: time.time() + skew[0]))
    with Client(host=live, api_key=olga) as c, ahead:
        assert sync_files(c, spool, transfer=ahead, settings=rs) == 1
    spool.close()
    assert [sorted(x["numbers"]) for x in refreshes] == [[1, 2, 3]]
    assert _bucket_files(seaweedfs, prefix, off.id) == {"late.ckpt": big.read_bytes()}


def test_a_vanished_multipart_upload_is_retried_then_given_up(
        live: str, olga: str, rs: RunSettings, tmp_path: Path, seaweedfs: SeaweedFS,
        prefix: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The server answers 404 for a big file's parts when its upload was aborted (the
    collector) or replaced: the file is registered again, at most 3 times, then failed
    with a message; the other files go on."""
    monkeypatch.setattr(multipart, "MULTIPART_THRESHOLD", 8 * 1024 * 1024)
    monkeypatch.setattr(multipart, "PART_SIZE", 5 * 1024 * 1024)
    calls: list[str] = []

    def gone(client: Any, transfer: Any, files_api: str, mp: Any, local: Path) -> None:
        calls.append(mp["upload_id"])
        raise NotFound("no file 'big.bin' waiting for its upload")

    monkeypatch.setattr(run_file_parts, "upload", gone)
    (tmp_path / "big.bin").write_bytes(secrets.token_bytes(9 * 1024 * 1024))
    (tmp_path / "small.txt").write_text("small")
    run = satchel.init("omega/p", mode="offline", host=live, settings=rs)
    run.save(tmp_path / "big.bin")
    run.save(tmp_path / "small.txt")
    run.finish()
    assert run.dir is not None
    spool = Spool.open(run.dir)
    with Client(host=live, api_key=olga) as c:
        sender = Sender(c, spool, rs)
        sender.sync()
    spool.close()
    assert len(calls) == 3 and len(set(calls)) == 3  # a new upload each registration
    assert "giving up on file 'big.bin'" in capsys.readouterr().err
    states = {e.path: e.state for e in FileQueue(run.dir).entries()}
    assert states == {"big.bin": "failed", "small.txt": "done"}
    assert _bucket_files(seaweedfs, prefix, run.id) == {"small.txt": b"small"}
