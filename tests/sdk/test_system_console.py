"""System metrics and console capture of a run (issue 6): a real sampler, a fake
``nvidia-smi`` process on PATH, the line splitter, the stdout/stderr tee, and both end to end
through a real server (in a thread) and read back over the API."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

import satchel
from satchel.config import RunSettings
from satchel.sdk.console import MAX_LINE, ConsoleCapture, LineSplitter
from satchel.sdk.system import NvidiaSmi, SystemMetrics, detect_gpu, parse_nvidia_smi
from satchel.server.app import create_app
from satchel.server.deps import AppContext
from tests.conftest import ADMIN_KEY
from tests.live import free_port, serve_in_thread

API = "/api/v1"
# A hang guard for waiting on a background thread, not a timing check.
DEADLINE_SECONDS = 60
BASE_KEYS = {"cpu", "proc_cpu", "memory_percent", "proc_rss_mb", "disk_percent",
             "net_sent_bytes", "net_recv_bytes"}

FAKE_SMI = """#!/bin/sh
# What nvidia-smi prints for two GPUs; the second has no power reading.
case "$*" in
  *--query-gpu=index,utilization.gpu,memory.used,memory.total,temperature.gpu,power.draw*--format=csv,noheader,nounits*)
    echo "0, 87, 4096, 16384, 65, 120.50"
    echo "1, 3, 100, 16384, 41, [N/A]"
    ;;
  *) echo "unexpected arguments: $*" >&2; exit 2 ;;
esac
"""


def _executable(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(text)
    path.chmod(0o755)
    return path


@pytest.fixture
def fake_smi_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake nvidia-smi first on PATH (a real process the sampler runs)."""
    bin_dir = tmp_path / "fakebin"
    _executable(bin_dir, "nvidia-smi", FAKE_SMI)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return bin_dir


class Records:
    """A run's ``_write`` stand-in that lets a test wait for n records."""

    def __init__(self) -> None:
        self.items: list[list[Any]] = []
        self._cond = threading.Condition()

    def __call__(self, record: list[Any]) -> None:
        with self._cond:
            self.items.append(record)
            self._cond.notify_all()

    def wait_for(self, n: int) -> None:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.items) >= n, DEADLINE_SECONDS), \
                f"only {len(self.items)} record(s) arrived"


# ---------------------------------------------------------------------- system metrics


def test_sampler_writes_samples_with_sane_values(tmp_path: Path) -> None:
    records = Records()
    sampler = SystemMetrics(records, 0.05, tmp_path, find_gpu=False).start()
    try:
        (tmp_path / "data.bin").write_bytes(os.urandom(1 << 20))  # some disk activity
        records.wait_for(3)
    finally:
        sampler.stop()
    after_stop = len(records.items)
    samples = list(records.items)
    assert all(r[0] == "m" and len(r) == 3 for r in samples)
    times = [r[1] for r in samples]
    assert times == sorted(times) and abs(times[-1] - time.time()) < 3600
    for _, _, values in samples:
        assert set(values) >= BASE_KEYS, set(values)
        assert not any(k.startswith("gpu.") for k in values)
        assert 0 <= values["cpu"] <= 100
        assert 0 <= values["proc_cpu"] <= 100 * (os.cpu_count() or 1)
        assert 0 < values["memory_percent"] <= 100
        assert 1 < values["proc_rss_mb"] < 1_000_000
        assert 0 < values["disk_percent"] <= 100
        assert all(values[k] >= 0 for k in values if k.endswith("_bytes"))
        assert all(isinstance(v, float) for v in values.values())
    assert sampler._thread is not None and not sampler._thread.is_alive()
    assert len(records.items) == after_stop  # nothing written after stop()


def test_sampler_deltas_count_bytes_since_the_previous_sample(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    """Counters become per-interval deltas; a counter that goes backwards restarts at 0."""
    from satchel.sdk import system

    class Net:
        def __init__(self, sent: int, recv: int) -> None:
            self.bytes_sent, self.bytes_recv = sent, recv

    readings = iter([Net(1000, 50), Net(1600, 80), Net(100, 90)])
    monkeypatch.setattr(system.psutil, "net_io_counters", lambda: next(readings))
    monkeypatch.setattr(system.psutil, "disk_io_counters", lambda: None)  # e.g. a container
    sampler = SystemMetrics(lambda r: None, 1, tmp_path, find_gpu=False)  # primes: 1000, 50
    first, second = sampler.sample(), sampler.sample()
    assert (first["net_sent_bytes"], first["net_recv_bytes"]) == (600, 30)
    assert (second["net_sent_bytes"], second["net_recv_bytes"]) == (0, 10)
    assert "disk_read_bytes" not in first and "cpu" in first


def test_a_failing_probe_leaves_its_keys_out_and_never_raises(tmp_path: Path) -> None:
    class BrokenGpu:
        def read(self) -> dict[str, float]:
            raise RuntimeError("driver went away")

        def close(self) -> None:
            raise RuntimeError("still gone")

    sampler = SystemMetrics(lambda r: None, 1, tmp_path / "does-not-exist", gpu=BrokenGpu())
    values = sampler.sample()
    assert "disk_percent" not in values and "cpu" in values
    assert not any(k.startswith("gpu.") for k in values)
    assert sampler.errors == 2
    with pytest.raises(ValueError):
        SystemMetrics(lambda r: None, 0, tmp_path)


def test_parse_nvidia_smi_output() -> None:
    text = ("0, 87, 4096, 16384, 65, 120.50\n"
            "1, [N/A], 10, 0, [Not Supported], 30\n"
            "\n"
            "index, utilization.gpu [%], memory.used [MiB]\n"  # a header is not a GPU
            "No devices were found\n"
            " 2 ,  5 , 1 , 4 , nan , 7 \n")
    assert parse_nvidia_smi(text) == {
        "gpu.0.util": 87.0, "gpu.0.memory_used_mb": 4096.0, "gpu.0.memory_total_mb": 16384.0,
        "gpu.0.memory_percent": 25.0, "gpu.0.temp_c": 65.0, "gpu.0.power_w": 120.5,
        "gpu.1.memory_used_mb": 10.0, "gpu.1.memory_total_mb": 0.0, "gpu.1.power_w": 30.0,
        "gpu.2.util": 5.0, "gpu.2.memory_used_mb": 1.0, "gpu.2.memory_total_mb": 4.0,
        "gpu.2.memory_percent": 25.0, "gpu.2.power_w": 7.0,
    }
    assert parse_nvidia_smi("") == {}


def test_nvidia_smi_on_path_is_found_and_sampled(fake_smi_path: Path, tmp_path: Path) -> None:
    probe = detect_gpu(nvml=False)
    assert isinstance(probe, NvidiaSmi) and probe.executable == str(fake_smi_path /
                                                                    "nvidia-smi")
    records = Records()
    sampler = SystemMetrics(records, 0.05, tmp_path).start()  # finds the GPU itself
    try:
        records.wait_for(2)
    finally:
        sampler.stop()
    values = records.items[-1][2]
    assert values["gpu.0.util"] == 87.0 and values["gpu.0.memory_percent"] == 25.0
    assert values["gpu.0.power_w"] == 120.5 and values["gpu.1.temp_c"] == 41.0
    assert "gpu.1.power_w" not in values and set(values) >= BASE_KEYS


@pytest.mark.parametrize("script", [
    "#!/bin/sh\necho 'NVIDIA-SMI has failed because it could not communicate with the NVIDIA "
    "driver.' >&2\nexit 9\n",
    "#!/bin/sh\necho 'No devices were found'\n",
])
def test_no_gpu_means_no_gpu_keys(script: str, tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    _executable(bin_dir, "nvidia-smi", script)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    assert detect_gpu(nvml=False) is None
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert detect_gpu(nvml=False) is None
    sampler = SystemMetrics(lambda r: None, 1, tmp_path)
    assert not any(k.startswith("gpu.") for k in sampler.sample())


# ---------------------------------------------------------------------- console lines


def _split(chunks: list[str], max_line: int = MAX_LINE) -> list[str]:
    out: list[str] = []
    splitter = LineSplitter(out.append, max_line)
    for chunk in chunks:
        splitter.feed(chunk)
    splitter.close()
    return out


def test_line_splitter_lines_progress_bars_and_long_lines() -> None:
    assert _split(["a\nb", "c\n\nd"]) == ["a", "bc", "", "d"]          # partial line at close
    assert _split(["win\r\n", "dows\r", "\n"]) == ["win", "dows"]      # \r\n, split \r | \n
    bar = ["\r  0%|", "\r 50%|#####", "\r100%|##########", "\n", "done\n"]
    assert _split(bar) == ["100%|##########", "done"]                  # last state of a bar
    assert _split(["pending\r"]) == ["pending"]                        # nothing overwrote it
    assert _split(["x" * 10 + "\n"], max_line=4) == ["xxxx", "xxxx", "xx"]
    assert _split(["y" * 8 + "\n"], max_line=4) == ["yyyy", "yyyy"]    # no empty tail line
    long = "z" * (2 * MAX_LINE + 5)
    assert [len(x) for x in _split([long[:1000], long[1000:] + "\nend\n"])] == [
        MAX_LINE, MAX_LINE, 5, 3]


def test_console_capture_tees_and_restores(capsys: pytest.CaptureFixture[str]) -> None:
    before = (sys.stdout, sys.stderr)
    records = Records()
    capture = ConsoleCapture(records, clock=lambda: 1234.5).start()
    try:
        assert sys.stdout is not before[0] and sys.stdout.isatty() == before[0].isatty()
        print("hello")
        print("to stderr", file=sys.stderr)
        sys.stdout.write("a progress bar 1/2\ra progress bar 2/2")
        sys.stdout.writelines(["x", "y\n"])
    finally:
        capture.stop()
    assert (sys.stdout, sys.stderr) == before
    print("after stop")
    seen = capsys.readouterr()
    assert seen.out == "hello\na progress bar 1/2\ra progress bar 2/2xy\nafter stop\n"
    assert seen.err == "to stderr\n"
    assert records.items == [["o", "stdout", 1234.5, "hello"],
                             ["o", "stderr", 1234.5, "to stderr"],
                             ["o", "stdout", 1234.5, "a progress bar 2/2xy"]]


def test_console_capture_leaves_a_later_replacement_in_place(
        monkeypatch: pytest.MonkeyPatch) -> None:
    records = Records()
    capture = ConsoleCapture(records).start()
    tee = sys.stdout
    replacement = _Sink()
    monkeypatch.setattr(sys, "stdout", replacement)  # e.g. contextlib.redirect_stdout
    capture.stop()
    assert sys.stdout is replacement  # not pulled out from under its owner
    print("still printed", file=tee)  # the old tee passes through, records nothing
    assert records.items == []


def test_a_forked_child_does_not_record(tmp_path: Path) -> None:
    """A DataLoader-style worker inherits the tee; its output must not enter the parent's
    spool (the records go to a file here, so a child's write would show)."""
    spool = tmp_path / "records.jsonl"

    def write(record: list[Any]) -> None:
        with open(spool, "a") as fh:
            fh.write(json.dumps(record) + "\n")

    capture = ConsoleCapture(write).start()
    try:
        pid = os.fork()
        if pid == 0:  # the child
            try:
                print("from the child")
                sys.stdout.flush()
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        print("from the parent")
    finally:
        capture.stop()
    lines = [json.loads(x)[3] for x in spool.read_text().splitlines()]
    assert lines == ["from the parent"]


class _Sink:
    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


# ---------------------------------------------------------------------- end to end


@pytest.fixture
def live(client: TestClient, ctx: AppContext, settings: Any) -> Iterator[str]:
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    assert client.post(f"{API}/teams", json={"name": "kappa"}, headers=admin).status_code == 201
    assert client.post(f"{API}/teams/kappa/projects", json={"name": "p"},
                       headers=admin).status_code == 201
    with serve_in_thread(create_app(settings, context=ctx), free_port()) as url:
        yield url


def _get(url: str, path: str, **params: Any) -> Any:
    r = httpx.get(f"{url}{API}/teams/kappa/projects/p/runs{path}", params=params,
                  headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert r.status_code == 200, r.text
    return r.json()


def test_run_stores_console_lines_and_system_metrics(
        live: str, tmp_path: Path, fake_smi_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    rs = RunSettings(run_dir=tmp_path / "runs", send_interval_seconds=0.05,
                     finish_timeout_seconds=60, heartbeat_seconds=1,
                     system_metrics_seconds=0.05, console_capture=True)
    before = sys.stdout
    run = satchel.init("kappa/p", host=live, api_key=ADMIN_KEY, settings=rs)
    try:
        print("epoch 1 starting")
        for i in range(3):
            sys.stderr.write(f"\rtraining {i + 1}/3")
        sys.stderr.write("\n")
        run.log({"loss": 0.5})
        print("epoch 1 done", end="")  # no newline: written at finish
        sampler = next(p for p in run._plugins if isinstance(p, SystemMetrics))
        deadline = time.monotonic() + DEADLINE_SECONDS
        while sampler.samples < 2:  # let the sampler run a couple of rounds
            assert time.monotonic() < deadline, "no system samples"
            time.sleep(0.02)
    finally:
        run.finish()
    assert sys.stdout is before
    assert "epoch 1 starting" in capsys.readouterr().out  # the user still saw it
    logs = _get(live, f"/{run.id}/logs")
    assert [(x["line_no"], x["stream"], x["text"]) for x in logs["lines"]] == [
        (0, "stdout", "epoch 1 starting"), (1, "stderr", "training 3/3"),
        (2, "stdout", "epoch 1 done")]
    assert logs["total"] == 3
    assert _get(live, f"/{run.id}/logs", offset=-1)["lines"][0]["text"] == "epoch 1 done"
    keys = _get(live, f"/{run.id}/history/keys", stream="system")["keys"]
    assert BASE_KEYS | {"gpu.0.util", "gpu.1.temp_c"} <= set(keys)
    assert keys["cpu"] >= 2 and keys["gpu.0.util"] == keys["cpu"]
    gpu = _get(live, f"/{run.id}/history", keys=["gpu.0.util"], stream="system")["keys"]
    steps = gpu["gpu.0.util"]["steps"]
    assert set(gpu["gpu.0.util"]["values"]) == {87.0}
    assert steps == sorted(steps) and abs(steps[0] / 1000 - time.time()) < 3600  # ms stamps
    assert _get(live, f"/{run.id}/history/keys")["keys"]["loss"] == 1


def test_capture_and_sampler_can_be_switched_off(live: str, tmp_path: Path) -> None:
    rs = RunSettings(run_dir=tmp_path / "runs", send_interval_seconds=0.05,
                     finish_timeout_seconds=60, system_metrics_seconds=0,
                     console_capture=False)
    before = sys.stdout
    run = satchel.init("kappa/p", host=live, api_key=ADMIN_KEY, settings=rs)
    try:
        assert sys.stdout is before and run._plugins == []
        print("not captured")
        run.log({"x": 1})
    finally:
        run.finish()
    assert _get(live, f"/{run.id}/logs")["total"] == 0
    assert _get(live, f"/{run.id}/history/keys", stream="system")["keys"] == {}
