"""Console capture: what the program prints to ``sys.stdout`` / ``sys.stderr``, as run records.

:class:`ConsoleCapture` replaces ``sys.stdout`` and ``sys.stderr`` with tees: everything still
goes to the original stream (the user sees the same output, at the same time), and a copy is
split into lines written to the run's spool as ``["o", "stdout"|"stderr", time, text]``.
``run.finish`` stops the capture: a pending partial line is written and the original streams
are put back (if something else replaced them meanwhile, the tee stays but only passes through).

Lines: ``\\n`` ends a line (``\\r\\n`` too); a lone ``\\r`` starts the line again, so a progress
bar that redraws itself with ``\\r`` is stored once, in its last state. A line longer than
:data:`MAX_LINE` characters (64 Ki) is cut into pieces of that size. The time of a line is when
it ended.

Scope (a decision, docs/runs-reliability.md): Python-level writes only. Output a subprocess or
C extension writes straight to file descriptors 1 and 2 is not captured. Redirecting the
descriptors themselves (a pipe and a reader thread) would catch it, but a stuck or killed
reader would block the training process on a full pipe, and the output would pass through one
more buffer before the user sees it; run a subprocess with ``stdout=PIPE`` and print its lines
when they matter.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, TextIO

__all__ = ["MAX_LINE", "ConsoleCapture", "LineSplitter"]

MAX_LINE = 64 * 1024

Emit = Callable[[str], None]
Write = Callable[[list[Any]], None]


class LineSplitter:
    """Text in, complete lines out (see the module docstring for ``\\r`` and long lines)."""

    def __init__(self, emit: Emit, max_line: int = MAX_LINE) -> None:
        self.emit = emit
        self.max_line = max_line
        self._parts: list[str] = []
        self._size = 0
        self._restart = False  # a "\r" was seen: the next text starts the line again
        self._lock = threading.Lock()

    def feed(self, text: str) -> None:
        with self._lock:
            for i, chunk in enumerate(text.split("\n")):
                if i:
                    self._end_line()
                for j, piece in enumerate(chunk.split("\r")):
                    if j:
                        self._restart = True
                    if piece:
                        self._append(piece)

    def _append(self, piece: str) -> None:
        if self._restart:
            self._parts, self._size, self._restart = [], 0, False
        while self._size + len(piece) > self.max_line:
            cut = self.max_line - self._size
            self._parts.append(piece[:cut])
            self._flush_parts()
            piece = piece[cut:]
        if piece:
            self._parts.append(piece)
            self._size += len(piece)

    def _flush_parts(self) -> None:
        line = "".join(self._parts)
        self._parts, self._size = [], 0
        self.emit(line)

    def _end_line(self) -> None:
        self._restart = False
        self._flush_parts()

    def close(self) -> None:
        """Write a pending partial line (a progress bar that never printed its newline)."""
        with self._lock:
            if self._parts:
                self._end_line()
            self._restart = False


class _Tee:
    """Stands in for ``sys.stdout``/``sys.stderr``: writes through, and copies to a splitter.

    Everything else (``fileno``, ``isatty``, ``encoding``, ``buffer`` ...) is the original
    stream's, so libraries that look at the terminal behave as before."""

    def __init__(self, original: TextIO, splitter: LineSplitter) -> None:
        self._original = original
        self._splitter = splitter
        self._active = True
        self._pid = os.getpid()

    def write(self, text: str) -> int:
        n = self._original.write(text)
        # A forked child (a DataLoader worker) inherits this tee but must not write into the
        # parent's spool: only the process that started the capture records.
        if self._active and isinstance(text, str) and text and os.getpid() == self._pid:
            with contextlib.suppress(Exception):  # capture must never break printing
                self._splitter.feed(text)
        return n

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        self._original.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._original, name)


class ConsoleCapture:
    """The plugin a run starts (``start``) and stops at finish (``stop``)."""

    STREAMS = ("stdout", "stderr")

    def __init__(self, write: Write, *, clock: Callable[[], float] = time.time,
                 max_line: int = MAX_LINE) -> None:
        self.write = write
        self.clock = clock
        self.max_line = max_line
        self._tees: dict[str, _Tee] = {}
        self.lines = 0

    def _emitter(self, stream: str) -> Emit:
        def emit(line: str) -> None:
            self.write(["o", stream, self.clock(), line])
            self.lines += 1
        return emit

    def start(self) -> ConsoleCapture:
        for stream in self.STREAMS:
            original = getattr(sys, stream)
            if original is None:  # pythonw, some daemons: nothing to tee
                continue
            tee = _Tee(original, LineSplitter(self._emitter(stream), self.max_line))
            self._tees[stream] = tee
            setattr(sys, stream, tee)
        return self

    def stop(self) -> None:
        for stream, tee in self._tees.items():
            tee._active = False
            tee._splitter.close()
            if getattr(sys, stream) is tee:
                setattr(sys, stream, tee._original)
            # else: something replaced sys.<stream> after us and may still hold our tee;
            # it stays in place, passing writes through only.
        self._tees = {}
