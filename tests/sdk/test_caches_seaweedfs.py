"""Hash cache, download cache and progress through the SDK and CLI against the live server and
SeaweedFS (behind the counting proxy, so "nothing was sent / fetched" is observed)."""

from __future__ import annotations

import hashlib
import io
import os
import re
import secrets
from pathlib import Path

import pytest
from rich.console import Console

from satchel import Api, Artifact
from satchel.cli import artifacts as cli_artifacts
from satchel.cli.main import main
from satchel.sdk.artifact import LoggedArtifact
from satchel.sdk.progress import ProgressEvent
from tests.sdk import test_resume_seaweedfs as _resume
from tests.sdk.proxy import CountingProxy

# The fixtures: the live server, its team bucket on SeaweedFS behind a counting proxy.
settings, address, proxy, live = _resume.settings, _resume.address, _resume.proxy, _resume.live

OLD = 1_600_000_000


def _tree(root: Path, n: int = 12) -> dict[str, bytes]:
    files = {f"d/f{i}.bin": secrets.token_bytes(2000 + i) for i in range(n)}
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
        os.utime(root / rel, (OLD, OLD))
    return files


def _log(api: Api, src: Path, name: str = "ds") -> LoggedArtifact:
    art = Artifact(name, "dataset")
    art.add_dir(src)
    return api.log_artifact(art, "kappa/p")


def test_relog_reads_nothing_and_a_same_size_edit_is_caught(
        live: dict[str, str], proxy: CountingProxy, tmp_path: Path) -> None:
    src = tmp_path / "src"
    files = _tree(src)
    with Api(live["url"], live["key"], cache_dir=tmp_path / "c") as api:
        v0 = _log(api, src)
        assert v0.stats.hashed_files == len(files)
        proxy.reset()
        same = _log(api, src)
        assert (same.version, same.uploaded) == ("v0", 0)
        st = same.stats
        assert (st.hashed_files, st.files_present, st.files_new) == (0, len(files), 0)
        assert proxy.uploads() == []
        # Rewritten in place with the same size; a new mtime (set explicitly).
        target = src / "d" / "f3.bin"
        new = secrets.token_bytes(len(files["d/f3.bin"]))
        with open(target, "r+b") as fh:
            fh.write(new)
        os.utime(target, (OLD + 60, OLD + 60))
        v1 = _log(api, src)
        st = v1.stats
        assert v1.version == "v1"
        assert (st.hashed_files, st.files_new, st.files_present) == (1, 1, len(files) - 1)
        assert [u.object_sha for u in proxy.uploads()] == [hashlib.sha256(new).hexdigest()]


def test_download_cache_serves_any_artifact_with_the_same_bytes(
        live: dict[str, str], proxy: CountingProxy, tmp_path: Path) -> None:
    src = tmp_path / "src"
    files = _tree(src)
    with Api(live["url"], live["key"], cache_dir=tmp_path / "c") as api:
        _log(api, src, "ds")
        _log(api, src, "copy")  # same bytes, another collection
        proxy.reset()
        first = api.artifact("kappa/p/ds")
        first.download(tmp_path / "o1")
        gets = [s for s in proxy.forwarded if s.method == "GET"]
        assert len(gets) == len(files)
        assert first.download_stats is not None
        assert first.download_stats.objects_fetched == len(files)
        proxy.reset()
        other = api.artifact("kappa/p/copy")
        other.download(tmp_path / "o2")
        assert [s for s in proxy.forwarded if s.method == "GET"] == []  # all from the cache
        assert other.download_stats is not None
        assert other.download_stats.objects_cached == len(files)
        for root in ("o1", "o2"):
            assert {rel: (tmp_path / root / rel).read_bytes() for rel in files} == files
        # Bypassing the cache fetches again.
        proxy.reset()
        other.download(tmp_path / "o3", cache=False)
        assert len([s for s in proxy.forwarded if s.method == "GET"]) == len(files)


def test_download_cache_can_be_disabled(live: dict[str, str], proxy: CountingProxy,
                                        tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                        ) -> None:
    monkeypatch.setenv("SATCHEL_DOWNLOAD_CACHE", "false")
    src = tmp_path / "src"
    files = _tree(src, 3)
    with Api(live["url"], live["key"], cache_dir=tmp_path / "c") as api:
        _log(api, src)
        for out in ("o1", "o2"):
            proxy.reset()
            api.artifact("kappa/p/ds").download(tmp_path / out)
            assert len([s for s in proxy.forwarded if s.method == "GET"]) == len(files)
    assert not (tmp_path / "c" / "objects").exists()


def test_progress_events_cover_hashing_and_uploading(live: dict[str, str],
                                                     tmp_path: Path) -> None:
    src = tmp_path / "src"
    files = _tree(src, 5)
    total = sum(len(b) for b in files.values())
    events: list[ProgressEvent] = []
    with Api(live["url"], live["key"], cache_dir=tmp_path / "c") as api:
        art = Artifact("ds", "dataset")
        art.add_dir(src)
        api.log_artifact(art, "kappa/p", progress=events.append)
        for phase in ("hash", "upload"):
            mine = [e for e in events if e.phase == phase]
            assert (mine[0].kind, mine[-1].kind) == ("start", "end")
            assert (mine[0].files, mine[0].bytes) == (5, total)
            adv = [e for e in mine if e.kind == "advance"]
            assert (sum(e.files for e in adv), sum(e.bytes for e in adv)) == (5, total)
        events.clear()
        api.artifact("kappa/p/ds").download(tmp_path / "o", progress=events.append)
        adv = [e for e in events if e.kind == "advance"]
        assert {e.phase for e in events} == {"download"}
        assert (sum(e.files for e in adv), sum(e.bytes for e in adv)) == (5, total)


def _cli_env(live: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SATCHEL_HOST", live["url"])
    monkeypatch.setenv("SATCHEL_API_KEY", live["key"])
    monkeypatch.setenv("SATCHEL_CACHE_DIR", str(tmp_path / "cli-cache"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


@pytest.mark.parametrize("quiet", [False, True])
def test_cli_progress_bars_on_a_terminal_only(
        live: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        quiet: bool) -> None:
    _cli_env(live, tmp_path, monkeypatch)
    screen = io.StringIO()
    monkeypatch.setattr(cli_artifacts, "console",
                        Console(file=screen, force_terminal=True, width=120))
    src = tmp_path / "src"
    _tree(src, 4)
    extra = ["--quiet"] if quiet else []
    assert main(["artifact", "put", str(src), "kappa/p/ds", "--type", "dataset", *extra]) == 0
    assert main(["artifact", "get", "kappa/p/ds", "--root", str(tmp_path / "o"), *extra]) == 0
    out = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.getvalue())  # colours, cursor
    shown = [w for w in ("Hashing", "Uploading", "Downloading") if w in out]
    assert shown == ([] if quiet else ["Hashing", "Uploading", "Downloading"])
    assert "4 file(s) new" in out and "0 already present" in out


def test_cli_put_summary_without_a_terminal(live: dict[str, str], tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    _cli_env(live, tmp_path, monkeypatch)
    src = tmp_path / "src"
    _tree(src, 3)
    assert main(["artifact", "put", str(src), "kappa/p/ds", "--type", "dataset"]) == 0
    first = capsys.readouterr().out
    assert "Hashing" not in first and "Uploading" not in first
    assert "ds:v0 (3 file(s) new (6.0 KB sent), 0 already present (0 B)" in first
    (src / "d" / "new.bin").write_bytes(b"n" * 1000)
    assert main(["artifact", "put", str(src), "kappa/p/ds", "--type", "dataset"]) == 0
    assert "ds:v1 (1 file(s) new (1.0 KB sent), 3 already present (6.0 KB)" in \
        capsys.readouterr().out
    # SATCHEL_CACHE_DIR placed the caches.
    assert {p.name for p in (tmp_path / "cli-cache").iterdir()} >= {"hashes.db", "journal.db"}
