"""``satchel.init`` and ``Run``: log metrics without ever blocking the training loop.

``run.log`` turns values into a record, appends it to the run's local spool (sdk/spool.py) and
returns; the background sender (sdk/sender.py) ships batches to the server. Nothing is lost
when the server is slow, down, or restarted: the spool keeps every record until the server has
confirmed it, and replays are idempotent (services/run_records.py on the server).

Modes: ``online`` (default; spool + sender), ``offline`` (spool only; ``satchel sync DIR``
later), ``disabled`` (nothing is written; every call is a cheap no-op).
"""

from __future__ import annotations

import atexit
import json
import math
import os
import secrets
import string
import sys
import threading
import time
import weakref
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

from satchel.config import RunSettings
from satchel.errors import InvalidInput, SatchelError
from satchel.sdk.client import Client
from satchel.sdk.console import ConsoleCapture
from satchel.sdk.run_artifacts import RunArtifacts
from satchel.sdk.run_files import RunFiles
from satchel.sdk.sender import Sender, _transient
from satchel.sdk.spool import RunInfo, Spool
from satchel.sdk.system import SystemMetrics

if TYPE_CHECKING:
    from satchel.sdk.artifact import Artifact, LoggedArtifact
    from satchel.sdk.progress import ProgressCallback

__all__ = ["Run", "finish", "init", "log"]

MODES = ("online", "offline", "disabled")
RESUME = {None: "never", False: "never", True: "allow", "never": "never", "allow": "allow",
          "must": "must"}
_ALPHABET = string.ascii_lowercase + string.digits
_current: Run | None = None
_live: weakref.WeakSet[Run] = weakref.WeakSet()


class RunPlugin(Protocol):
    """Something a run starts and stops (console capture, system metrics)."""

    def stop(self) -> None: ...


def _dumps(record: list[Any]) -> str:
    return json.dumps(record, separators=(",", ":"), allow_nan=True, ensure_ascii=False)


def encode_value(value: Any, run: Run | None = None, key: str = "", step: int = 0) -> Any:
    """A loggable value as JSON data: numbers, strings, bools, None, lists and dicts of those,
    numpy scalars, and media objects (anything with ``_satchel_encode(run, key, step)``)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    hook = getattr(value, "_satchel_encode", None)
    if hook is not None:
        return hook(run, key, step)
    item = getattr(value, "item", None)
    if item is not None and getattr(value, "ndim", 0) == 0:
        return item()  # numpy / torch scalar
    if isinstance(value, Mapping):
        return {str(k): encode_value(v, run, f"{key}.{k}", step) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [encode_value(v, run, key, step) for v in value]
    raise InvalidInput(f"cannot log {key or 'value'!s} of type {type(value).__name__}: log "
                       "numbers, strings, lists/dicts of them, or satchel.Image")


class Config(MutableMapping[str, Any]):
    """The run's configuration; changes are recorded (``run.config["lr"] = 0.1`` or
    ``run.config.lr = 0.1``)."""

    def __init__(self, run: Run, initial: Mapping[str, Any]) -> None:
        object.__setattr__(self, "_run", run)
        object.__setattr__(self, "_data", dict(initial))

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.update({key: value})

    def __delitem__(self, key: str) -> None:
        raise InvalidInput("config keys cannot be removed once logged")

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __getattr__(self, key: str) -> Any:
        try:
            return self._data[key]
        except KeyError:
            raise AttributeError(key) from None

    def __setattr__(self, key: str, value: Any) -> None:
        self.update({key: value})

    def update(self, other: Any = (), /, **kw: Any) -> None:
        values = {str(k): encode_value(v) for k, v in dict(other, **kw).items()}
        self._data.update(values)
        self._run._write(["c", values])

    def __repr__(self) -> str:
        return f"Config({self._data!r})"


class Summary(MutableMapping[str, Any]):
    """Last logged value of every key, unless set explicitly (``run.summary["best"] = x``),
    which wins from then on."""

    def __init__(self, run: Run, auto: Mapping[str, Any] | None = None) -> None:
        self._run = run
        self._auto: dict[str, Any] = dict(auto or {})
        self._user: dict[str, Any] = {}

    def __getitem__(self, key: str) -> Any:
        return self._user[key] if key in self._user else self._auto[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.update({key: value})

    def __delitem__(self, key: str) -> None:
        self._user.pop(key, None)
        self._auto.pop(key, None)
        self._run._write(["s", {key: None}])

    def __iter__(self) -> Iterator[str]:
        return iter({**self._auto, **self._user})

    def __len__(self) -> int:
        return len({**self._auto, **self._user})

    def update(self, other: Any = (), /, **kw: Any) -> None:
        values = {str(k): encode_value(v) for k, v in dict(other, **kw).items()}
        self._user.update(values)
        self._run._write(["s", values])

    def __repr__(self) -> str:
        return f"Summary({dict(self)!r})"


class Run:
    """One run. Create with :func:`satchel.init`; also a context manager (an exception
    inside the block finishes the run as failed)."""

    def __init__(self, *, team: str, project: str, run_id: str, name: str, mode: str,
                 settings: RunSettings, client: Client | None, spool: Spool | None,
                 config: Mapping[str, Any], step: int = 0,
                 summary: Mapping[str, Any] | None = None) -> None:
        self.team = team
        self.project = project
        self.id = run_id
        self.name = name
        self.mode = mode
        self.settings = settings
        self._client = client
        self._spool = spool
        self._lock = threading.RLock()
        self._step = step
        self._row: dict[str, Any] = {}
        self._finished = False
        self._pid = os.getpid()
        self._exit_code: int | None = None
        self.config = Config(self, config)
        self.summary = Summary(self, summary)
        self._sender: Sender | None = None
        self._plugins: list[RunPlugin] = []
        if spool is not None and mode == "online" and client is not None:
            self._sender = Sender(client, spool, settings)
            self._sender.start()
        # run.save and media: copied into the spool, uploaded in the background when online.
        self._files: RunFiles | None = None
        if spool is not None:
            self._files = RunFiles(spool, client if mode == "online" else None, settings,
                                   sender=self._sender)
        self._artifacts = RunArtifacts(self)  # run.log_artifact / use_artifact

    def __repr__(self) -> str:
        return f"<Run {self.path} ({self.mode})>"

    @property
    def path(self) -> str:
        return f"{self.team}/{self.project}/{self.id}"

    @property
    def dir(self) -> Path | None:
        """The local spool directory (None when disabled)."""
        return None if self._spool is None else self._spool.path

    @property
    def step(self) -> int:
        """The step the next ``log`` call writes to."""
        return self._step

    # ------------------------------------------------------------------ logging

    def _write(self, record: list[Any]) -> None:
        if self._spool is None or self._finished:
            return
        if os.getpid() != self._pid:
            # A forked child (e.g. a DataLoader worker) must not write through the parent's
            # spool file handle: records from children are dropped (log from the parent).
            return
        self._spool.append(_dumps(record))

    def log(self, data: Mapping[str, Any], step: int | None = None,
            commit: bool | None = None) -> None:
        """Record ``data`` at the current step (or ``step``).

        Without ``step`` each call is its own row and the step advances. With ``step``, values
        for the same step accumulate until a larger step is logged (or ``commit=True``).
        ``commit=False`` accumulates at the current step. Steps never go back: a smaller
        step is ignored with a warning."""
        if not isinstance(data, Mapping):
            raise InvalidInput(f"run.log takes a dict of key -> value, not "
                               f"{type(data).__name__}")
        with self._lock:
            if self._finished:
                return
            if step is not None:
                if not isinstance(step, int) or isinstance(step, bool) or step < 0:
                    raise InvalidInput(f"step must be a non-negative integer, not {step!r}")
                if step < self._step:
                    print(f"satchel: ignoring log at step {step}: run {self.id} is already at "
                          f"step {self._step} (steps only go forward)", file=sys.stderr)
                    return
                if step > self._step:
                    self._commit()
                    self._step = step
            for key, value in data.items():
                if not isinstance(key, str) or not key:
                    raise InvalidInput(f"keys must be non-empty strings, not {key!r}")
                self._row[key] = encode_value(value, self, key, self._step)
            if commit or (commit is None and step is None):
                self._commit()

    def _commit(self) -> None:
        if not self._row:
            return
        row, self._row = self._row, {}
        self._write(["h", self._step, time.time(), row])
        self.summary._auto.update((k, v) for k, v in row.items()
                                  if not (isinstance(v, float) and not math.isfinite(v)))
        self._step += 1

    def save(self, path: str | Path, *, name: str | None = None,
             base_path: str | Path | None = None, policy: str = "now") -> list[str]:
        """Upload a file, a directory or a glob pattern's matches with the run (a bucket
        object under the run; ``Api`` lists and downloads them). The bytes are copied into the
        run's spool first (``policy="now"``), or at ``finish`` (``policy="end"``, for files
        still being written). Names: ``name`` (one file or directory), else relative to
        ``base_path``, else the file name (a glob: relative to its fixed leading directory).
        Returns the names in the run. See docs/runs-files.md."""
        if self._files is None or self._finished:
            return []
        return self._files.save(path, name=name, base_path=base_path, policy=policy)

    # ------------------------------------------------------------------ artifacts

    def log_artifact(self, artifact: Artifact, aliases: Sequence[str] = (), *,
                     progress: ProgressCallback | None = None) -> LoggedArtifact | None:
        """Log ``artifact`` to this run's project with this run as its producer (lineage);
        returns the committed version. When the files equal the latest version, nothing new
        is created and this run is recorded as a user of that version. Blocks until the
        upload is committed. Online runs only (offline: refused; disabled: returns None).
        See docs/artifacts.md, "Lineage"."""
        return self._artifacts.log(artifact, aliases, progress)

    def use_artifact(self, path: str) -> LoggedArtifact:
        """Record that this run uses ``team/project/name[:alias|:vN]`` (default ``latest``;
        any project whose artifacts you may download) and return that version, to
        ``.download()``. Online runs only."""
        return self._artifacts.use(path)

    # ------------------------------------------------------------------ finishing

    def finish(self, exit_code: int | None = None) -> None:
        """Flush everything, mark the run finished (exit code 0) or failed, and wait for the
        server to confirm (up to ``SATCHEL_FINISH_TIMEOUT_SECONDS``). Idempotent."""
        global _current
        with self._lock:
            if self._finished:
                return
            for plugin in reversed(self._plugins):
                try:
                    plugin.stop()
                except Exception as exc:  # a plugin must not stop the run from finishing
                    print(f"satchel: {type(plugin).__name__} failed to stop: {exc}",
                          file=sys.stderr)
            self._commit()
            if self._files is not None:
                self._files.capture_end()  # run.save(..., policy="end")
            code = exit_code if exit_code is not None else (self._exit_code or 0)
            self._write(["x", int(code), time.time()])
            self._finished = True
        if _current is self:
            _current = None
        if self._spool is None:
            return
        deadline = time.monotonic() + self.settings.finish_timeout_seconds
        if self._sender is not None:
            ok = self._sender.drain(self.settings.finish_timeout_seconds)
            self._sender.stop()
            if not ok:
                why = f"{type(self._sender.fatal).__name__}: {self._sender.fatal}" \
                    if self._sender.fatal else "the server did not confirm in time"
                print(f"satchel: run {self.path} is not fully sent ({why}); everything is "
                      f"kept in {self._spool.path}; send it with: satchel sync "
                      f"{self._spool.path}", file=sys.stderr)
        elif self.mode == "offline":
            print(f"satchel: offline run saved in {self._spool.path}; send it with: "
                  f"satchel sync {self._spool.path}", file=sys.stderr)
        if self._files is not None:
            self._files.finish(deadline - time.monotonic())
        self._spool.close()
        self._artifacts.close()
        if self._client is not None:
            self._client.close()

    def __enter__(self) -> Run:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.finish(exit_code=1 if exc_type is not None else 0)


# ---------------------------------------------------------------------- module API


def _new_id() -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(8))


def init(project: str | None = None, *, team: str | None = None,
         config: Mapping[str, Any] | None = None, name: str | None = None,
         tags: list[str] | None = None, notes: str = "", group: str = "", job_type: str = "",
         id: str | None = None, resume: bool | str | None = None, mode: str | None = None,
         host: str | None = None, api_key: str | None = None, dir: str | Path | None = None,
         settings: RunSettings | None = None) -> Run:
    """Start (or resume) a run in ``project`` ("team/project", or ``team=`` + ``project=``)."""
    global _current
    settings = settings or RunSettings()
    mode = mode or settings.mode
    if mode not in MODES:
        raise InvalidInput(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    if resume not in RESUME:
        raise InvalidInput("resume must be True/False, 'allow', 'must' or 'never'")
    resume_mode = RESUME[resume]
    if project is None:
        raise InvalidInput("init needs project='team/project'")
    if team is None:
        team, sep, project = project.partition("/")
        if not sep:
            raise InvalidInput(f"project must be 'team/project' (or pass team=), got "
                               f"{team[:100]!r}")
    if not team or not project or "/" in project:
        raise InvalidInput(f"project must be 'team/project', got {team}/{project}"[:200])
    if resume_mode != "never" and not id:
        raise InvalidInput("resume needs the run's id: init(..., id='...', resume='allow')")
    run_id = id or _new_id()
    cfg = {str(k): encode_value(v) for k, v in (config or {}).items()}
    spec = {"name": name or "", "config": cfg, "tags": list(tags or []), "notes": notes,
            "group": group, "job_type": job_type,
            "metadata": {"python": sys.version.split()[0], "argv": sys.argv[:20]}}
    if mode == "disabled":
        return _register(Run(team=team, project=project, run_id=run_id, name=name or run_id,
                             mode=mode, settings=settings, client=None, spool=None,
                             config=cfg))
    client = Client(host=host, api_key=api_key) if mode == "online" else None
    info = RunInfo(host=client.host if client else (host or ""), team=team, project=project,
                   run_id=run_id, spec=spec, resume=resume_mode, mode=mode)
    step, summary = 0, None
    if client is not None:
        try:
            out = client.request("POST", f"/api/v1/teams/{team}/projects/{project}/runs",
                                 json=dict(spec, run_id=run_id, resume=resume_mode))
        except SatchelError as exc:
            if not _transient(exc) or resume_mode != "never":
                client.close()
                raise
            # The server is unreachable: keep going; the sender creates the run later.
            print(f"satchel: cannot reach the server ({exc}); logging to the local spool and "
                  "sending when it is back", file=sys.stderr)
        else:
            server_run = out["run"]
            info.created = True
            info.base = int(server_run["record_hwm"])
            step = int(server_run["last_step"]) + 1
            summary = server_run["summary"]
            cfg = server_run["config"]
            name = server_run["name"]
    spool = Spool.create(Path(dir) if dir is not None else settings.run_dir, info)
    run = Run(team=team, project=project, run_id=run_id, name=name or run_id, mode=mode,
              settings=settings, client=client, spool=spool, config=cfg, step=step,
              summary=summary)
    _register(run)
    _start_plugins(run)  # after _register: a previous run has given the console back
    return run


def _start_plugins(run: Run) -> None:
    """Console capture and system metrics (sdk/console.py, sdk/system.py); ``finish`` stops
    them in reverse order."""
    s = run.settings
    if s.console_capture:
        run._plugins.append(ConsoleCapture(run._write).start())
    if s.system_metrics_seconds > 0 and run.dir is not None:
        run._plugins.append(SystemMetrics(run._write, s.system_metrics_seconds,
                                          run.dir).start())


def _register(run: Run) -> Run:
    global _current, _previous_hook
    if _previous_hook is None:  # first run of the process: learn about uncaught exceptions
        _previous_hook = sys.excepthook
        sys.excepthook = _excepthook
        atexit.register(_finish_all)
    if _current is not None and not _current._finished:
        _current.finish()
    _current = run
    _live.add(run)
    return run


def log(data: Mapping[str, Any], step: int | None = None, commit: bool | None = None) -> None:
    """``run.log`` on the current run."""
    if _current is None:
        raise InvalidInput("call satchel.init(...) before satchel.log(...)")
    _current.log(data, step=step, commit=commit)


def finish(exit_code: int | None = None) -> None:
    """``run.finish`` on the current run (if any)."""
    if _current is not None:
        _current.finish(exit_code)


def _excepthook(tp: type[BaseException], value: BaseException, tb: TracebackType | None
                ) -> None:
    for run in list(_live):
        run._exit_code = 1
    (_previous_hook or sys.__excepthook__)(tp, value, tb)


def _finish_all() -> None:
    for run in list(_live):
        run.finish()


_previous_hook: Any = None
