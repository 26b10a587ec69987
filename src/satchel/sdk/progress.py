"""Progress reporting for artifact transfers: a plain callback for the SDK, rich bars for the CLI.

``Api.log_artifact(..., progress=cb)`` and ``LoggedArtifact.download(..., progress=cb)`` call
``cb(ProgressEvent)`` for each phase (``hash``, ``upload``, ``download``): one ``start`` with
the phase's totals, ``advance`` events with deltas, one ``end``. Callbacks may be called from
worker threads at the same time; keep them quick and thread-safe.

:class:`RichProgress` draws them as rich progress bars (files and bytes per phase). ``rich`` is
imported only when one is created, so library code paths that pass no callback never load it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from rich.console import Console

Phase = Literal["hash", "upload", "download"]


@dataclass(frozen=True, slots=True)
class ProgressEvent:
    phase: Phase
    kind: Literal["start", "advance", "end"]
    # start: the phase's totals; advance: what just finished (files) or moved (bytes).
    files: int = 0
    bytes: int = 0


ProgressCallback = Callable[[ProgressEvent], None]


class Reporter:
    """What the SDK calls internally; does nothing without a callback."""

    def __init__(self, callback: ProgressCallback | None) -> None:
        self._cb = callback

    def start(self, phase: Phase, files: int, nbytes: int) -> None:
        if self._cb is not None:
            self._cb(ProgressEvent(phase, "start", files, nbytes))

    def advance(self, phase: Phase, files: int = 0, nbytes: int = 0) -> None:
        if self._cb is not None and (files or nbytes):
            self._cb(ProgressEvent(phase, "advance", files, nbytes))

    def end(self, phase: Phase) -> None:
        if self._cb is not None:
            self._cb(ProgressEvent(phase, "end"))

    def files(self, phase: Phase) -> Callable[[int], None] | None:
        """``f(size)``: one file of ``size`` bytes finished (counts its bytes too)."""
        if self._cb is None:
            return None
        return lambda size: self.advance(phase, 1, size)

    def bytes(self, phase: Phase) -> Callable[[int], None] | None:
        if self._cb is None:
            return None
        return lambda n: self.advance(phase, 0, n)


_LABELS: dict[Phase, str] = {"hash": "Hashing", "upload": "Uploading", "download": "Downloading"}


class RichProgress:
    """A :data:`ProgressCallback` drawing one bar per phase; use as a context manager."""

    def __init__(self, console: Console | None = None) -> None:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._progress = Progress(
            TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
            TransferSpeedColumn(), TextColumn("{task.fields[files]}"), TimeRemainingColumn(),
            console=console, transient=False,
        )
        self._tasks: dict[Phase, Any] = {}
        self._counts: dict[Phase, list[int]] = {}
        self._lock = threading.Lock()

    def __enter__(self) -> RichProgress:
        self._progress.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._progress.stop()

    def __call__(self, event: ProgressEvent) -> None:
        with self._lock:
            if event.kind == "start":
                self._counts[event.phase] = [0, event.files, event.bytes]
                self._tasks[event.phase] = self._progress.add_task(
                    _LABELS[event.phase], total=event.bytes or None,
                    files=f"0/{event.files} files")
                return
            task = self._tasks.get(event.phase)
            if task is None:
                return
            counts = self._counts[event.phase]
            if event.kind == "advance":
                counts[0] += event.files
                self._progress.update(task, advance=event.bytes,
                                      files=f"{counts[0]}/{counts[1]} files")
            else:  # the phase is over: show it complete even if some bytes were skipped
                self._progress.update(task, completed=counts[2],
                                      files=f"{counts[0]}/{counts[1]} files")
