"""Small helpers shared by the target steps (targets.py) and the fitted input transforms
(preprocess.py): what counts as a categorical column, a numpy scalar as plain JSON, and the checks a
saved transform runs when it is read back."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from damoxing.core.errors import ConfigError, DataError, choices_text, did_you_mean


def is_text_values(values: pd.Series) -> bool:
    return (
        pd.api.types.is_object_dtype(values.dtype)
        or pd.api.types.is_string_dtype(values.dtype)
        or isinstance(values.dtype, pd.CategoricalDtype)
    )


def is_categorical(values: pd.Series) -> bool:
    """Text, category or bool values: read as classes or one-hot categories, never as numbers."""
    return is_text_values(values) or pd.api.types.is_bool_dtype(values.dtype)


def plain_value(v: Any) -> Any:
    """A numpy / pandas scalar as the plain Python value JSON understands (1.0 -> 1)."""
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and v.is_integer() and math.isfinite(v):
        return int(v)
    if isinstance(v, (bool, int, float, str)) or v is None:
        return v
    return str(v)


def check_saved_type(d: dict, expected: str, cls: str) -> None:
    """A saved description read back must be of the transform's own type."""
    if not isinstance(d, dict) or d.get("type") != expected:
        got = d.get("type") if isinstance(d, dict) else type(d).__name__
        raise DataError(
            f"{cls}.from_dict got a '{got}' description, not '{expected}'; the saved "
            "preprocessing file does not belong to this kind of data."
        )


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(
            f"Invalid {name} '{value}'.{did_you_mean(value, choices)} "
            f"Valid values: {choices_text(choices)}."
        )
