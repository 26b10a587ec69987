"""Shared helpers for the benchmarks: timing, machine description, result files.

Benchmarks run on shared, noisy machines, so every script measures the things it compares in
ONE process and ONE run, interleaved round by round, and reports ratios. Absolute figures from
different runs (or machines) are not comparable; ratios from the same run are.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"


@dataclass
class Sample:
    """One timed execution: ``count`` units (URLs, bytes) in ``wall`` / ``cpu`` seconds."""

    count: int
    wall: float
    cpu: float

    @property
    def wall_rate(self) -> float:
        return self.count / self.wall if self.wall > 0 else float("inf")

    @property
    def cpu_rate(self) -> float:
        return self.count / self.cpu if self.cpu > 0 else float("inf")


@dataclass
class Series:
    """Every sample of one variant, in round order."""

    name: str
    samples: list[Sample] = field(default_factory=list)

    def wall_rates(self) -> list[float]:
        return [s.wall_rate for s in self.samples]

    def cpu_rates(self) -> list[float]:
        return [s.cpu_rate for s in self.samples]

    def best(self, *, cpu: bool = False) -> float:
        return max(self.cpu_rates() if cpu else self.wall_rates())

    def median(self, *, cpu: bool = False) -> float:
        return statistics.median(self.cpu_rates() if cpu else self.wall_rates())

    def summary(self) -> dict[str, Any]:
        return {
            "best_wall_rate": self.best(), "median_wall_rate": self.median(),
            "best_cpu_rate": self.best(cpu=True), "median_cpu_rate": self.median(cpu=True),
            "samples": [asdict(s) for s in self.samples],
        }


def timed(fn: Callable[[], object], count: int) -> Sample:
    """Run ``fn`` once after a full collection; wall time and this process's CPU time."""
    gc.collect()
    c0, w0 = time.process_time(), time.perf_counter()
    fn()
    w1, c1 = time.perf_counter(), time.process_time()
    return Sample(count, w1 - w0, c1 - c0)


def paired_ratios(a: Series, b: Series, *, cpu: bool = False) -> list[float]:
    """a/b rate ratio per round (both measured back to back in the same round)."""
    ra = a.cpu_rates() if cpu else a.wall_rates()
    rb = b.cpu_rates() if cpu else b.wall_rates()
    return [x / y for x, y in zip(ra, rb, strict=True)]


def compare(a: Series, b: Series) -> dict[str, float]:
    """Ratio a/b: best against best, and the median of the per-round ratios."""
    return {
        "best_wall": a.best() / b.best(),
        "median_paired_wall": statistics.median(paired_ratios(a, b)),
        "best_cpu": a.best(cpu=True) / b.best(cpu=True),
        "median_paired_cpu": statistics.median(paired_ratios(a, b, cpu=True)),
    }


def loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def machine(packages: Sequence[str] = ()) -> dict[str, Any]:
    versions = {}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    cpu_model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model,
        "loadavg_at_start": loadavg(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": versions,
    }


def write_result(name: str, payload: dict[str, Any], out: Path | None = None) -> Path:
    """Write ``payload`` as JSON to ``out`` or bench/results/<name>-<UTC time>.json."""
    if out is None:
        RESULTS.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        out = RESULTS / f"{name}-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {**payload, "loadavg_at_end": loadavg(),
               "note": "compare ratios within this run; absolute rates depend on machine load"}
    out.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return out


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain-text table (also valid Markdown)."""
    cells = [[str(h) for h in headers], *[[_fmt(c) for c in r] for r in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
             for row in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def _fmt(value: object) -> str:
    if isinstance(value, float):
        if value >= 100:
            return f"{value:,.0f}"
        return f"{value:.2f}"
    return str(value)
