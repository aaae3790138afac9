"""Where damoxing talks to people: stderr for progress, notes and warnings; stdout for results.

On a terminal, training shows a rich progress bar. When stderr is not a terminal (a log file, CI,
nohup, a scheduler) a bar would print nothing until the end, so instead each stage of the work
(`stage`) and each epoch (training/progress.py) print one plain line as they happen.

Notes, stage lines and the progress bar can be silenced for a block of work, `with quiet(True): ...`: the
setting belongs to that block (and to its thread or task: a context variable), so a quiet call
leaves nothing behind for the next one.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from contextvars import ContextVar

_QUIET: ContextVar[bool] = ContextVar("quiet", default=False)


@contextlib.contextmanager
def quiet(value: bool = True) -> Iterator[None]:
    """No notes and no progress bar inside the block when `value` (warnings still show); the
    setting from before the block comes back after it, on an error too."""
    token = _QUIET.set(value)
    try:
        yield
    finally:
        _QUIET.reset(token)


def is_quiet() -> bool:
    return _QUIET.get()


def stderr_console():
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def stderr_is_terminal() -> bool:
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


def log_lines() -> bool:
    """Whether progress is written as plain lines (stderr is not a terminal, and not quiet)."""
    return not _QUIET.get() and not stderr_is_terminal()


def stage(what: str) -> None:
    """A line as a stage of the work starts (loading, preparing, training, evaluating, writing), for
    logs: only when stderr is not a terminal, where nothing else would show that work is going on."""
    if log_lines():
        print(f"[{time.strftime('%H:%M:%S')}] {what}", file=sys.stderr, flush=True)


def note(message: str) -> None:
    """An informational line on stderr (silenced by --quiet)."""
    if not _QUIET.get():
        print(message, file=sys.stderr)


def warn(message: str) -> None:
    """A warning on stderr; shown even with --quiet, since it says something about the result."""
    print(f"warning: {message}", file=sys.stderr)


def progress_bar():
    """A rich progress bar on stderr (None when quiet, or when stderr is not a terminal: plain lines then)."""
    if _QUIET.get() or not stderr_is_terminal():
        return None
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("steps"),
        TimeElapsedColumn(), TimeRemainingColumn(), console=stderr_console(), transient=False,
    )
