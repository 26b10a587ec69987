"""Reading runs from Python: ``Api().runs("team/project")`` and ``Api().run("team/project/id")``.

A :class:`RunsQuery` pages through ``GET .../runs`` as you iterate; an :class:`ApiRun` holds one
run's fields and reads the rest on demand: ``history()`` (pandas, pyarrow or plain rows),
``scan_history()`` (every step, a page at a time), ``logs()``, ``files()``, ``export()``.

Values: JSON has no NaN, so the API sends non-finite numbers as the strings "NaN", "Infinity"
and "-Infinity"; for a key whose values are all numbers (or those strings) they become floats
again. A key whose values are *only* such strings is taken as numeric (the API does not say
whether "NaN" was logged as a number or as text). Non-numeric values (strings, media
references, lists, dicts) come back as Python objects, or in ``format="arrow"`` as JSON text,
exactly like the Parquet export (docs/runs-export.md).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from satchel.errors import ChecksumMismatch, InvalidInput
from satchel.sdk.client import JSON
from satchel.sdk.hashcache import sha256_file
from satchel.sdk.uploads import request_from_json

if TYPE_CHECKING:
    import pyarrow as pa

    from satchel.sdk.artifact import Api, LoggedArtifact
    from satchel.sdk.run_files_read import RunFileInfo

__all__ = ["ApiRun", "ExportedFile", "LogLine", "RunExport", "RunsQuery"]

NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
FILTERS = ("state", "tags", "group", "job_type", "name")
FORMATS = ("pandas", "arrow", "rows")
STREAMS = {"history": "_step", "system": "_time"}
# Key names per history request: the URL carries them (servers cap request lines near 8 KiB).
URL_KEY_BUDGET = 4000
MAX_KEYS_PER_REQUEST = 1000  # the server's limit
LOG_PAGE = 10_000


def parse_project(path: str) -> tuple[str, str]:
    parts = path.split("/")
    if len(parts) != 2 or not all(parts):
        raise InvalidInput(f"expected team/project, got {path[:200]!r}")
    return parts[0], parts[1]


def parse_run(path: str) -> tuple[str, str, str]:
    parts = path.split("/")
    if len(parts) != 3 or not all(parts):
        raise InvalidInput(f"expected team/project/run_id, got {path[:200]!r}")
    return parts[0], parts[1], parts[2]


def _time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _api_value(value: Any) -> Any:
    """Non-finite floats anywhere inside a value as the API's strings (JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: _api_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_api_value(v) for v in value]
    return value


def json_cell(value: Any) -> str:
    """A non-numeric value as JSON text, exactly as the Parquet export writes it
    (services/export.py ``json_cell``; tests/sdk/test_runs_api_sdk.py compares the two)."""
    return json.dumps(_api_value(value), ensure_ascii=False, separators=(",", ":"),
                      allow_nan=False)


def _numeric(values: Sequence[Any]) -> bool:
    return all((isinstance(v, int | float) and not isinstance(v, bool)) or
               (isinstance(v, str) and v in NON_FINITE) for v in values)


def _floats(values: Sequence[Any]) -> list[float]:
    return [NON_FINITE[v] if isinstance(v, str) else float(v) for v in values]


@dataclass(frozen=True, slots=True)
class LogLine:
    line_no: int
    stream: str  # stdout | stderr
    time: datetime
    text: str


@dataclass(frozen=True, slots=True)
class ExportedFile:
    path: str  # export/history.parquet
    key: str  # runs/<project>/<run_id>/export/history.parquet (under the team prefix)
    bucket_key: str  # the object's full key in the bucket
    size: int
    sha256: str
    rows: int | None
    url: str  # presigned GET
    local_path: Path | None = None  # when downloaded


@dataclass(frozen=True, slots=True)
class RunExport:
    team: str
    project: str
    run_id: str
    written: bool  # False: the existing export was current
    exported_at: datetime | None
    files: list[ExportedFile] = field(default_factory=list)

    def file(self, name: str) -> ExportedFile:
        """``"history"``, ``"system"`` or ``"console"``."""
        for f in self.files:
            if f.path.endswith(f"/{name}.parquet"):
                return f
        raise KeyError(name)


# --------------------------------------------------------------------------- listing


class RunsQuery:
    """The runs of a project matching the filters; pages through the API as you iterate.
    ``len()`` is the total number of matches (one request)."""

    def __init__(self, api: Api, path: str, filters: Mapping[str, Any] | None = None,
                 order: str = "-created_at", per_page: int = 100) -> None:
        self._api = api
        self.team, self.project = parse_project(path)
        unknown = sorted(set(filters or {}) - set(FILTERS))
        if unknown:
            raise InvalidInput(f"unknown run filter(s) {', '.join(unknown)}; expected "
                               f"{', '.join(FILTERS)}")
        if not 1 <= per_page <= 1000:
            raise InvalidInput("per_page must be 1-1000")
        f = dict(filters or {})
        params: dict[str, Any] = {"order": order}
        if f.get("state") is not None:
            params["state"] = [f["state"]] if isinstance(f["state"], str) else list(f["state"])
        if f.get("tags") is not None:
            params["tag"] = [f["tags"]] if isinstance(f["tags"], str) else list(f["tags"])
        for key in ("group", "job_type", "name"):
            if f.get(key) is not None:
                params[key] = str(f[key])
        self._params = params
        self.per_page = per_page
        self._total: int | None = None

    @property
    def _url(self) -> str:
        return f"/api/v1/teams/{self.team}/projects/{self.project}/runs"

    def _page(self, offset: int, limit: int) -> JSON:
        page: JSON = self._api.client.request(
            "GET", self._url, params={**self._params, "limit": limit, "offset": offset})
        self._total = int(page["total"])
        return page

    def __iter__(self) -> Iterator[ApiRun]:
        offset = 0
        while True:
            page = self._page(offset, self.per_page)
            for data in page["runs"]:
                yield ApiRun(self._api, data)
            offset += len(page["runs"])
            if not page["runs"] or offset >= int(page["total"]):
                return

    def __len__(self) -> int:
        if self._total is None:
            self._page(0, 1)
        assert self._total is not None
        return self._total

    def __repr__(self) -> str:
        return f"<RunsQuery {self.team}/{self.project} {self._params}>"


# --------------------------------------------------------------------------- one run


class ApiRun:
    """One run as the API shows it. Fields are a snapshot; :meth:`refresh` reloads them."""

    def __init__(self, api: Api, data: JSON) -> None:
        self._api = api
        self._data = data

    # ------------------------------------------------------------------ fields

    team = property(lambda self: str(self._data["team"]))
    project = property(lambda self: str(self._data["project"]))
    id = property(lambda self: str(self._data["run_id"]))
    name = property(lambda self: str(self._data["name"]))
    state = property(lambda self: str(self._data["state"]))
    config = property(lambda self: dict(self._data["config"]))
    summary = property(lambda self: dict(self._data["summary"]))
    tags = property(lambda self: list(self._data["tags"]))
    notes = property(lambda self: str(self._data["notes"]))
    group = property(lambda self: str(self._data["group"]))
    job_type = property(lambda self: str(self._data["job_type"]))
    metadata = property(lambda self: dict(self._data["metadata"]))
    created_at = property(lambda self: _time(self._data["created_at"]))
    heartbeat_at = property(lambda self: _time(self._data["heartbeat_at"]))
    finished_at = property(lambda self: _time(self._data["finished_at"]))
    exit_code = property(lambda self: self._data["exit_code"])
    last_step = property(lambda self: int(self._data["last_step"]))
    history_rows = property(lambda self: int(self._data["history_rows"]))
    console_lines = property(lambda self: int(self._data["console_lines"]))

    @property
    def path(self) -> str:
        return f"{self.team}/{self.project}/{self.id}"

    @property
    def json(self) -> JSON:
        """Everything the API says about the run."""
        return dict(self._data)

    def __repr__(self) -> str:
        return f"<ApiRun {self.path} ({self.state})>"

    @property
    def _url(self) -> str:
        return f"/api/v1/teams/{self.team}/projects/{self.project}/runs/{self.id}"

    def refresh(self) -> ApiRun:
        self._data = self._api.client.request("GET", self._url)
        return self

    # ------------------------------------------------------------------ history

    def history_keys(self, *, stream: str = "history") -> dict[str, int]:
        """Every key of the stream with its number of points."""
        out = self._api.client.request("GET", self._url + "/history/keys",
                                       params={"stream": stream})
        return {str(k): int(n) for k, n in out["keys"].items()}

    def _series(self, keys: Sequence[str], *, stream: str, samples: int = 0,
                min_step: int | None = None, max_step: int | None = None
                ) -> dict[str, tuple[list[int], list[Any], bool]]:
        """key -> (steps, values, numeric); several requests when the keys are many."""
        out: dict[str, tuple[list[int], list[Any], bool]] = {}
        chunk: list[str] = []
        size = 0
        chunks: list[list[str]] = []
        for key in dict.fromkeys(keys):
            if chunk and (size + len(key) > URL_KEY_BUDGET or len(chunk) >= MAX_KEYS_PER_REQUEST):
                chunks.append(chunk)
                chunk, size = [], 0
            chunk.append(key)
            size += len(key) + 6
        if chunk:
            chunks.append(chunk)
        for part in chunks:
            params: dict[str, Any] = {"keys": part, "stream": stream, "samples": samples}
            if min_step is not None:
                params["min_step"] = min_step
            if max_step is not None:
                params["max_step"] = max_step
            body = self._api.client.request("GET", self._url + "/history", params=params)
            for key, s in body["keys"].items():
                values = s["values"]
                numeric = _numeric(values)
                out[key] = (list(s["steps"]), _floats(values) if numeric else list(values),
                            numeric)
        return out

    def _wanted(self, keys: Sequence[str] | None, stream: str) -> list[str]:
        if stream not in STREAMS:
            raise InvalidInput(f"stream must be one of {', '.join(STREAMS)}")
        if keys is None:
            return sorted(self.history_keys(stream=stream))
        if isinstance(keys, str):
            return [keys]
        return list(keys)

    def history(self, keys: Sequence[str] | None = None, *, samples: int = 0,
                format: str = "pandas", stream: str = "history",
                min_step: int | None = None, max_step: int | None = None) -> Any:
        """The history as a table: one row per step, one column per key (all keys when
        ``keys`` is None). ``samples`` > 0 thins each key to at most that many evenly spaced
        points (first and last kept). ``stream="system"`` reads system metrics (index
        ``_time``).

        ``format``: ``"pandas"`` (a DataFrame; needs pandas), ``"arrow"`` (a pyarrow Table
        with the Parquet export's schema) or ``"rows"`` (a list of dicts holding the keys
        logged at each step)."""
        if format not in FORMATS:
            raise InvalidInput(f"format must be one of {', '.join(FORMATS)}, not {format!r}")
        if format == "pandas":
            try:
                import pandas  # noqa: F401
            except ImportError:
                raise InvalidInput("run.history(format='pandas') needs pandas: pip install "
                                   "'satchel[pandas]' (or use format='arrow' or 'rows')"
                                   ) from None
        wanted = self._wanted(keys, stream)
        series = self._series(wanted, stream=stream, samples=samples, min_step=min_step,
                              max_step=max_step) if wanted else {}
        index = STREAMS[stream]
        if format == "rows":
            return _rows(series, index, stream)
        table = _arrow(series, [k for k in wanted if k in series], index, stream)
        if format == "arrow":
            return table
        return _pandas(table)

    def scan_history(self, keys: Sequence[str] | None = None, *, page_size: int = 1000,
                     min_step: int | None = None, max_step: int | None = None
                     ) -> Iterator[dict[str, Any]]:
        """Every history row in step order, ``page_size`` steps per request round, as
        ``{"_step": s, key: value, ...}`` with the keys logged at that step (rows where none
        of ``keys`` was logged are left out)."""
        if page_size < 1:
            raise InvalidInput("page_size must be at least 1")
        wanted = self._wanted(keys, "history")
        if not wanted:
            return
        # Every history row has _timestamp: its steps are the run's steps.
        steps = self._series(["_timestamp"], stream="history", min_step=min_step,
                             max_step=max_step)["_timestamp"][0]
        for start in range(0, len(steps), page_size):
            page = steps[start:start + page_size]
            series = self._series(wanted, stream="history", min_step=page[0],
                                  max_step=page[-1])
            yield from _rows(series, "_step", "history")

    # ------------------------------------------------------------------ console

    def iter_logs(self, offset: int = 0) -> Iterator[LogLine]:
        """Console lines from line ``offset`` on (negative: the last ``-offset`` lines)."""
        while True:
            page = self._api.client.request("GET", self._url + "/logs",
                                            params={"offset": offset, "limit": LOG_PAGE})
            lines = page["lines"]
            for line in lines:
                yield LogLine(int(line["line_no"]), str(line["stream"]),
                              datetime.fromisoformat(line["created_at"]), str(line["text"]))
            if not lines:
                return
            offset = int(lines[-1]["line_no"]) + 1
            if offset >= int(page["total"]):
                return

    def logs(self, *, tail: int | None = None) -> list[LogLine]:
        """Captured stdout/stderr lines (the last ``tail`` of them when given)."""
        if tail is not None and tail < 1:
            raise InvalidInput("tail must be at least 1")
        return list(self.iter_logs(-tail if tail else 0))

    # ------------------------------------------------------------------ files and export

    def files(self) -> list[RunFileInfo]:
        """Committed files of the run: ``run.save`` files, media, and the Parquet exports
        (kind ``export``, paths ``export/*.parquet``)."""
        from satchel.sdk.run_files_read import list_files

        return list_files(self._api.client, self.team, self.project, self.id)

    def download_files(self, root: str | Path, paths: Sequence[str] | None = None
                       ) -> list[Path]:
        """Download files (all, or ``paths``) under ``root``, SHA-256 verified."""
        from satchel.sdk.run_files_read import download_files

        return download_files(self._api.client, self._api.transfer, self.team, self.project,
                              self.id, root, paths)

    def export(self, *, force: bool = False, download: str | Path | None = None) -> RunExport:
        """Write the run's Parquet export into the team bucket now (needs write access; an
        export that is current is not written again unless ``force``); with ``download``,
        also fetch the files into that directory (SHA-256 verified)."""
        out = self._api.client.request(
            "POST", self._url + "/export", json={"force": force},
            timeout=httpx.Timeout(self._api.client.settings.timeout_seconds, read=None))
        return _export_result(self._api, out, Path(download) if download is not None else None)

    # ------------------------------------------------------------------ artifacts (lineage)

    def _artifacts(self, which: str) -> list[LoggedArtifact]:
        from satchel.sdk.artifact import LoggedArtifact  # artifact.py imports this module

        out = self._api.client.run_artifacts(self.team, self.project, self.id)
        return [LoggedArtifact(self._api, str(a["team"]), str(a["project"]), a)
                for a in out[which]]

    def logged_artifacts(self) -> list[LoggedArtifact]:
        """Versions this run logged (it is their producer) that you may read."""
        return self._artifacts("logged")

    def used_artifacts(self) -> list[LoggedArtifact]:
        """Versions this run used (``run.use_artifact``) that you may read, first use
        first."""
        return self._artifacts("used")


# --------------------------------------------------------------------------- tables


def _rows(series: Mapping[str, tuple[list[int], list[Any], bool]], index: str, stream: str
          ) -> list[dict[str, Any]]:
    table: dict[int, dict[str, Any]] = {}
    for key, (steps, values, _) in series.items():
        name = f"{key}_logged" if key == index else key  # never hide the index
        for s, v in zip(steps, values, strict=True):
            table.setdefault(s, {})[name] = v
    if stream == "system":
        return [{index: datetime.fromtimestamp(s / 1000, UTC), **table[s]} for s in sorted(table)]
    return [{index: s, **table[s]} for s in sorted(table)]


def _arrow(series: Mapping[str, tuple[list[int], list[Any], bool]], keys: Sequence[str],
           index: str, stream: str) -> pa.Table:
    """The Parquet export's schema: index, then float64 (numbers) or JSON text per key."""
    import pyarrow as pa

    all_steps = sorted({s for steps, _, _ in series.values() for s in steps})
    position = {s: i for i, s in enumerate(all_steps)}
    steps_array = pa.array(all_steps, type=pa.int64())
    if stream == "system":
        steps_array = steps_array.cast(pa.timestamp("ms", tz="UTC"))
    fields = [pa.field(index, steps_array.type, nullable=False)]
    arrays = [steps_array]
    for key in keys:
        steps, values, numeric = series[key]
        cells: list[Any] = [None] * len(all_steps)
        for s, v in zip(steps, values, strict=True):
            cells[position[s]] = v if numeric else json_cell(v)
        name = f"{key}_logged" if key == index else key
        arrays.append(pa.array(cells, type=pa.float64() if numeric else pa.string()))
        fields.append(pa.field(name, arrays[-1].type, metadata={
            "satchel.kind": "number" if numeric else "json", "satchel.key": key}))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def _pandas(table: pa.Table) -> Any:
    """A DataFrame: numbers as float64 (missing: NaN), other keys as Python objects."""
    import pandas as pd

    frame = table.to_pandas()
    for f in table.schema:
        if f.metadata and f.metadata.get(b"satchel.kind") == b"json":
            # dtype=object: keep Python values and None (pandas would make strings "str"
            # with NaN for missing ones).
            frame[f.name] = pd.Series([None if v is None else json.loads(v)
                                       for v in table.column(f.name).to_pylist()],
                                      dtype=object, index=frame.index)
    return frame


# --------------------------------------------------------------------------- export


def _export_result(api: Api, out: JSON, download: Path | None) -> RunExport:
    files: list[ExportedFile] = []
    for f in out["files"]:
        local = None
        if download is not None:
            local = download / f["path"].rsplit("/", 1)[-1]
            api.transfer.get_file(request_from_json(f), local, size=int(f["size"]))
            if sha256_file(local) != f["sha256"]:
                local.unlink(missing_ok=True)
                raise ChecksumMismatch(f"{f['path']}: the downloaded bytes do not match the "
                                       "recorded SHA-256; export and download again")
        files.append(ExportedFile(f["path"], f["key"], f["bucket_key"], int(f["size"]),
                                  f["sha256"], f["rows"], f["url"], local))
    return RunExport(out["team"], out["project"], out["run_id"], bool(out["written"]),
                     _time(out["exported_at"]), files)


@dataclass(frozen=True, slots=True)
class ProjectExport:
    team: str
    project: str
    runs: list[RunExport]
    failed: list[dict[str, str]]  # {"run_id", "code", "message"}
    written: int
    current: int


def export_project(api: Api, path: str, *, force: bool = False,
                   download: str | Path | None = None) -> ProjectExport:
    """Export every run of ``team/project``; with ``download``, fetch each run's files into
    ``download/<run_id>/``."""
    team, project = parse_project(path)
    out = api.client.request(
        "POST", f"/api/v1/teams/{team}/projects/{project}/export", json={"force": force},
        timeout=httpx.Timeout(api.client.settings.timeout_seconds, read=None))
    root = Path(download) if download is not None else None
    runs = [_export_result(api, r, root / r["run_id"] if root is not None else None)
            for r in out["runs"]]
    return ProjectExport(out["team"], out["project"], runs, list(out["failed"]),
                         int(out["written"]), int(out["current"]))


def follow_logs(run: ApiRun, *, offset: int = 0, poll_seconds: float = 1.0,
                sleep: Any = time.sleep) -> Iterator[LogLine]:
    """Console lines from ``offset`` on, waiting for new ones while the run is ``running``;
    ends when the run is no longer running and every line has been read."""
    next_line = offset
    while True:
        got = False
        for line in run.iter_logs(next_line):
            got = True
            next_line = line.line_no + 1
            yield line
        if next_line < 0:  # a negative offset that found no lines
            next_line = 0
        if not got:
            if run.refresh().state != "running" and next_line >= run.console_lines:
                return
            sleep(poll_seconds)
