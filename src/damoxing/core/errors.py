"""User-facing errors: one clear paragraph, no traceback.

Anything a user can get wrong (config, data, files, requests) raises `UserError`; the CLI prints
its message and exits with code 2. Everything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """A mistake in what the user asked for; the message names it and says what would be valid."""

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(UserError):
    """The config (YAML file, overrides or dict) is invalid."""


class DataError(UserError):
    """The data cannot be read or does not fit the config."""


class RunFolderError(UserError):
    """A path given as a run folder is not a valid damoxing run."""


class TrainingDiverged(UserError):
    """The loss became NaN or infinite; the best weights so far were kept."""


class TrainingInterrupted(UserError):
    """Ctrl-C during training: what was trained is saved (or the checkpoint kept for --resume); exit 130."""

    exit_code = 130


def did_you_mean(value: str, choices: Iterable[str]) -> str:
    """Return ' Did you mean 'x'?' for a near miss, else ''."""
    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" Did you mean '{close[0]}'?" if close else ""


def choices_text(choices: Iterable[str]) -> str:
    """Format valid choices as: 'a', 'b', 'c'."""
    return ", ".join(f"'{c}'" for c in sorted(choices))
