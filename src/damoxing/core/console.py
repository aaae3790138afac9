"""Where damoxing talks to people: stderr for progress, notes and warnings; stdout for results."""

from __future__ import annotations

import sys

_quiet = False


def set_quiet(value: bool) -> None:
    global _quiet
    _quiet = value


def is_quiet() -> bool:
    return _quiet


def stderr_console():
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def note(message: str) -> None:
    """An informational line on stderr (silenced by --quiet)."""
    if not _quiet:
        print(message, file=sys.stderr)


def warn(message: str) -> None:
    """A warning on stderr; shown even with --quiet, since it says something about the result."""
    print(f"warning: {message}", file=sys.stderr)


def progress_bar():
    """A rich progress bar on stderr (None when quiet)."""
    if _quiet:
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
