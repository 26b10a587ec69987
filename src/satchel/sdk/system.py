"""System metrics of a run: CPU, memory, disk, network and GPUs, sampled in a daemon thread.

Every ``RunSettings.system_metrics_seconds`` (0 disables) the sampler writes one record
``["m", time, {key: value}]`` to the run's spool; the server stores it in the run's ``system``
stream (step = sample time in milliseconds since the epoch). Keys (docs/runs-reliability.md):

    cpu                      system-wide CPU use, percent (0-100)
    proc_cpu                 this process's CPU use, percent of one core (can exceed 100)
    memory_percent           system memory in use, percent
    proc_rss_mb              this process's resident memory, MiB
    disk_percent             used space of the filesystem holding the run directory, percent
    disk_read_bytes          bytes read from disks since the previous sample (system-wide)
    disk_write_bytes         bytes written to disks since the previous sample (system-wide)
    net_sent_bytes           bytes sent on all interfaces since the previous sample
    net_recv_bytes           bytes received on all interfaces since the previous sample
    gpu.<i>.util             GPU i utilization, percent
    gpu.<i>.memory_used_mb   GPU i memory in use, MiB
    gpu.<i>.memory_total_mb  GPU i memory, MiB
    gpu.<i>.memory_percent   GPU i memory in use, percent
    gpu.<i>.temp_c           GPU i temperature, degrees Celsius
    gpu.<i>.power_w          GPU i power draw, watts

A key the platform cannot measure is left out of the sample (no GPU: no ``gpu.*`` keys). GPUs
are read through NVML (``pynvml``) when it is importable and finds a driver, else through
``nvidia-smi`` when it is on PATH. Nothing here may break the training: every probe catches its
own errors, and the thread survives anything a sample raises.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import psutil

__all__ = ["GpuProbe", "NvidiaSmi", "Nvml", "SystemMetrics", "detect_gpu", "parse_nvidia_smi"]

MIB = 1024 * 1024
NVIDIA_SMI_FIELDS = ("index", "utilization.gpu", "memory.used", "memory.total",
                     "temperature.gpu", "power.draw")
NVIDIA_SMI_TIMEOUT = 10.0

Write = Callable[[list[Any]], None]


class GpuProbe(Protocol):
    """Reads every GPU once: {"gpu.0.util": 87.0, ...}; raises when it cannot."""

    def read(self) -> dict[str, float]: ...

    def close(self) -> None: ...


def _number(text: str) -> float | None:
    """A value of nvidia-smi's CSV ("87", " 45.12 ", "[N/A]", "[Not Supported]") or None."""
    try:
        value = float(text.strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _gpu_keys(index: int, util: float | None, used_mb: float | None, total_mb: float | None,
              temp: float | None, power: float | None) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, value in (("util", util), ("memory_used_mb", used_mb),
                        ("memory_total_mb", total_mb), ("temp_c", temp), ("power_w", power)):
        if value is not None:
            out[f"gpu.{index}.{name}"] = float(value)
    if used_mb is not None and total_mb:
        out[f"gpu.{index}.memory_percent"] = 100.0 * used_mb / total_mb
    return out


def parse_nvidia_smi(text: str) -> dict[str, float]:
    """``nvidia-smi --query-gpu=index,utilization.gpu,memory.used,memory.total,temperature.gpu,
    power.draw --format=csv,noheader,nounits`` output as sample keys. Lines that do not look
    like a GPU are skipped; fields a GPU does not support ("[N/A]") are left out."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) != len(NVIDIA_SMI_FIELDS) or not fields[0].isdigit():
            continue
        util, used, total, temp, power = (_number(f) for f in fields[1:])
        out.update(_gpu_keys(int(fields[0]), util, used, total, temp, power))
    return out


class NvidiaSmi:
    """GPUs through the ``nvidia-smi`` command (one short process per sample)."""

    def __init__(self, executable: str) -> None:
        self.executable = executable

    def read(self) -> dict[str, float]:
        done = subprocess.run(
            [self.executable, f"--query-gpu={','.join(NVIDIA_SMI_FIELDS)}",
             "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT, check=False,
            stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            raise RuntimeError(f"nvidia-smi exited with {done.returncode}")
        return parse_nvidia_smi(done.stdout)

    def close(self) -> None:
        pass


class Nvml:
    """GPUs through NVML (``pynvml``, the nvidia-ml-py package), in process."""

    def __init__(self, nvml: Any) -> None:
        self.nvml = nvml
        nvml.nvmlInit()
        self.handles = [nvml.nvmlDeviceGetHandleByIndex(i)
                        for i in range(nvml.nvmlDeviceGetCount())]

    def read(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for i, handle in enumerate(self.handles):
            out.update(self._device(i, handle))
        return out

    def _device(self, index: int, h: Any) -> dict[str, float]:
        nv = self.nvml
        # Each counter on its own: a GPU may lack one (power on some boards).
        return _gpu_keys(
            index,
            util=_try(lambda: nv.nvmlDeviceGetUtilizationRates(h).gpu),
            used_mb=_try(lambda: nv.nvmlDeviceGetMemoryInfo(h).used / MIB),
            total_mb=_try(lambda: nv.nvmlDeviceGetMemoryInfo(h).total / MIB),
            temp=_try(lambda: nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU)),
            power=_try(lambda: nv.nvmlDeviceGetPowerUsage(h) / 1000.0),  # milliwatts
        )

    def close(self) -> None:
        with contextlib.suppress(Exception):  # already shut down, driver gone
            self.nvml.nvmlShutdown()


def _try(read: Callable[[], Any]) -> float | None:
    try:
        value = float(read())
    except Exception:
        return None
    return value if math.isfinite(value) else None


def detect_gpu(*, nvml: bool = True) -> GpuProbe | None:
    """NVML if importable and it finds at least one GPU, else ``nvidia-smi`` if on PATH and it
    answers with at least one GPU, else None (no GPU keys)."""
    if nvml:
        try:
            import pynvml

            probe = Nvml(pynvml)
            if probe.handles:
                return probe
            probe.close()
        except Exception:  # noqa: S110 - not installed, or no driver: try nvidia-smi
            pass
    executable = shutil.which("nvidia-smi")
    if executable is None:
        return None
    smi = NvidiaSmi(executable)
    try:
        return smi if smi.read() else None
    except (OSError, subprocess.SubprocessError, RuntimeError):
        return None


class _Counters:
    """Byte counters turned into deltas since the previous call."""

    def __init__(self) -> None:
        self.previous: dict[str, int] = {}

    def delta(self, current: dict[str, int]) -> dict[str, float]:
        out: dict[str, float] = {}
        for key, value in current.items():
            before = self.previous.get(key)
            # A counter that went backwards (an interface reset, a wrap) restarts from 0.
            out[key] = float(value - before if before is not None and value >= before
                             else 0)
        self.previous = current
        return out


class SystemMetrics:
    """The sampler a run starts (``start``) and stops at finish (``stop``)."""

    def __init__(self, write: Write, interval: float, path: Path, *,
                 gpu: GpuProbe | None = None, find_gpu: bool = True,
                 clock: Callable[[], float] = time.time) -> None:
        if interval <= 0:
            raise ValueError("the sampling interval must be positive")
        self.write = write
        self.interval = interval
        self.path = path
        self.clock = clock
        self.gpu = gpu
        self._find_gpu = find_gpu and gpu is None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._process = psutil.Process()
        self._io = _Counters()
        self.samples = 0
        self.errors = 0
        self._prime()

    def _prime(self) -> None:
        """First readings, so the first sample's percentages and deltas cover one interval."""
        try:
            psutil.cpu_percent(interval=None)
            self._process.cpu_percent(interval=None)
            self._io.delta(self._io_counters())
        except Exception:  # noqa: S110 - the sample leaves those keys out instead
            pass

    def _io_counters(self) -> dict[str, int]:
        out: dict[str, int] = {}
        disk = psutil.disk_io_counters()
        if disk is not None:  # None where the kernel exposes no disk statistics
            out["disk_read_bytes"] = int(disk.read_bytes)
            out["disk_write_bytes"] = int(disk.write_bytes)
        net = psutil.net_io_counters()
        if net is not None:
            out["net_sent_bytes"] = int(net.bytes_sent)
            out["net_recv_bytes"] = int(net.bytes_recv)
        return out

    # ------------------------------------------------------------------ one sample

    def sample(self) -> dict[str, float]:
        """Read everything once; a probe that fails leaves its keys out."""
        out: dict[str, float] = {}
        probes: list[Callable[[], dict[str, float]]] = [
            lambda: {"cpu": float(psutil.cpu_percent(interval=None)),
                     "proc_cpu": float(self._process.cpu_percent(interval=None))},
            lambda: {"memory_percent": float(psutil.virtual_memory().percent),
                     "proc_rss_mb": self._process.memory_info().rss / MIB},
            lambda: {"disk_percent": float(psutil.disk_usage(str(self.path)).percent)},
            lambda: self._io.delta(self._io_counters()),
            self._gpu,
        ]
        for probe in probes:
            try:
                out.update(probe())
            except Exception:
                self.errors += 1
        return out

    def _gpu(self) -> dict[str, float]:
        if self._find_gpu:  # looked for lazily: nvidia-smi may take a moment to answer
            self._find_gpu = False
            self.gpu = detect_gpu()
        return self.gpu.read() if self.gpu is not None else {}

    # ------------------------------------------------------------------ thread

    def start(self) -> SystemMetrics:
        self._thread = threading.Thread(target=self._loop, name="satchel-system-metrics",
                                        daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                values = self.sample()
                if values:
                    self.write(["m", self.clock(), values])
                    self.samples += 1
            except Exception as exc:  # the training must go on whatever a sample does
                self.errors += 1
                if self.errors == 1:
                    print(f"satchel: system metrics sample failed: {exc}", file=sys.stderr)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(NVIDIA_SMI_TIMEOUT + 5)
        if self.gpu is not None:
            self.gpu.close()
