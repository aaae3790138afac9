"""The target, in steps every data kind runs the same way: drop rows whose target is missing,
choose and check the task (a single class is refused for every kind), encode class labels, split the
rows (stratified by class), scale a regression target on the training split, count the classes.

* `infer_task`, `check_target_for_task`, `drop_missing_target` - decide and check the target.
* `LabelEncoder` - class labels <-> int64 indices; `TargetScaler` - regression targets. Both are
  saved as JSON with the run (`to_dict` / `from_dict`).
* `drop_missing_targets`, `choose_task`, `split_rows`, `fit_targets` -> `Targets` - the steps a
  data kind's `prepare` calls, each written once here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import pandas as pd

from damoxing.core.console import warn
from damoxing.core.errors import ConfigError, DataError, choices_text, did_you_mean
from damoxing.data.split import split_indices
from damoxing.data.values import check_saved_type, is_categorical, plain_value

TASKS = ("classification", "regression")  # the tasks that predict a target
MAX_CLASSES_FOR_INTEGERS = 20


def _name(values: pd.Series) -> str:
    return f"'{values.name}'" if values.name is not None else "the target"


# ------------------------------------------------------------------------- deciding and checking


def infer_task(values: pd.Series) -> str:
    """'classification' for text/category/bool targets and for integer(-valued) targets with at
    most 20 distinct values; 'regression' for other numbers. Missing values are ignored."""
    values = pd.Series(values)
    if is_categorical(values):
        return "classification"
    present = values.dropna()
    if len(present) == 0:
        raise DataError(f"The target column {_name(values)} has no values (every row is missing).")
    if not pd.api.types.is_numeric_dtype(present.dtype):
        return "classification"
    arr = present.to_numpy(dtype=np.float64)
    integer_valued = pd.api.types.is_integer_dtype(present.dtype) or bool(
        np.all(np.isfinite(arr)) and np.all(arr == np.round(arr))
    )
    if integer_valued and len(np.unique(arr)) <= MAX_CLASSES_FOR_INTEGERS:
        return "classification"
    return "regression"


def check_target_for_task(values: pd.Series, task: str) -> None:
    """Raise DataError when the target cannot serve `task` (e.g. text with regression)."""
    values = pd.Series(values)
    if task not in TASKS:
        raise ConfigError(
            f"Unknown task '{task}'.{did_you_mean(task, TASKS)} Valid tasks: {choices_text(TASKS)}."
        )
    present = values.dropna()
    if len(present) == 0:
        raise DataError(f"The target column {_name(values)} has no values (every row is missing).")
    if task == "regression":
        numeric_objects = pd.api.types.is_object_dtype(values.dtype) and pd.api.types.infer_dtype(
            present, skipna=True
        ) in ("integer", "floating", "mixed-integer-float", "decimal")
        if is_categorical(values) and not numeric_objects:
            examples = ", ".join(repr(v) for v in list(pd.unique(present))[:5])
            raise DataError(
                f"The target column {_name(values)} holds text or categories (e.g. {examples}), "
                "but the task is 'regression', which predicts numbers. Set task: classification "
                "to predict these classes, or convert the column to numbers in the file."
            )
    elif task == "classification" and len(present) > 0:
        n_classes = len(pd.unique(present))
        if n_classes < 2:
            raise DataError(
                f"The target column {_name(values)} has only one class ({plain_value(present.iloc[0])!r}) in "
                f"{len(present)} rows; classification needs at least two."
            )


def drop_missing_target(frame: pd.DataFrame, target: str) -> tuple[pd.DataFrame, int]:
    """Drop rows whose target is missing (the caller warns with the count). Index is reset."""
    if target not in frame.columns:
        cols = [str(c) for c in frame.columns]
        raise DataError(
            f"The target column '{target}' is not in the data.{did_you_mean(target, cols)} "
            f"Columns: {', '.join(repr(c) for c in cols)}."
        )
    missing = frame[target].isna().to_numpy()
    n = int(missing.sum())
    if n == len(frame):
        raise DataError(
            f"Every one of the {n} rows has a missing value in the target column '{target}'; "
            "there is nothing to learn from."
        )
    if n == 0:
        return frame, 0
    return frame.loc[~missing].reset_index(drop=True), n

# ------------------------------------------------------------------------ labels and target scale


def _missing(v: Any) -> bool:
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def _sort_key(v: Any) -> tuple:
    if isinstance(v, bool):
        return (0, int(v), "")
    if isinstance(v, (int, float)):
        return (1, v, "")
    return (2, 0, str(v))


class LabelEncoder:
    """Class labels <-> indices 0..K-1. `classes_` holds the sorted original values as plain
    Python (ints stay ints - 1.0 becomes 1 -, strings stay strings)."""

    def fit(self, values: Any) -> LabelEncoder:
        series = pd.Series(np.asarray(values, dtype=object).ravel())
        if series.isna().any():
            raise DataError(
                f"The labels contain {int(series.isna().sum())} missing value(s); drop those rows "
                "before encoding labels."
            )
        if len(series) == 0:
            raise DataError("There are no labels to learn classes from (0 rows).")
        unique = {plain_value(v) for v in series}
        self.classes_: list[Any] = sorted(unique, key=_sort_key)
        return self

    @property
    def n_classes(self) -> int:
        return len(self.classes_)

    def transform(self, values: Any) -> np.ndarray:
        if not hasattr(self, "classes_"):
            raise RuntimeError("LabelEncoder.transform called before fit")
        lookup = {c: i for i, c in enumerate(self.classes_)}
        items = np.asarray(values, dtype=object).ravel()
        out = np.empty(len(items), dtype=np.int64)
        for i, v in enumerate(items):
            idx = None if _missing(v) else lookup.get(plain_value(v))
            if idx is None:
                known = self.classes_[:20]
                more = f" and {len(self.classes_) - 20} more" if len(self.classes_) > 20 else ""
                raise DataError(
                    f"Unknown label {v!r}: it was not among the labels seen in training. Known "
                    f"labels: {', '.join(repr(k) for k in known)}{more}."
                )
            out[i] = idx
        return out

    def inverse_transform(self, indices: Any) -> np.ndarray:
        idx = np.asarray(indices, dtype=np.int64).ravel()
        if idx.size and (idx.min() < 0 or idx.max() >= len(self.classes_)):
            raise DataError(
                f"Class index out of range: indices must be 0..{len(self.classes_) - 1}, got "
                f"{int(idx.min())}..{int(idx.max())}."
            )
        kinds = {type(c) for c in self.classes_}
        table = np.array(self.classes_, dtype=object if len(kinds) > 1 else None)
        return table[idx]

    def to_dict(self) -> dict[str, Any]:
        return {"type": "labels", "version": 1, "classes_": list(self.classes_)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LabelEncoder:
        check_saved_type(d, "labels", cls.__name__)
        obj = cls()
        obj.classes_ = list(d["classes_"])
        return obj


class TargetScaler:
    """Regression targets: (y - mean) / std learned on the training split (std 0 -> 1)."""

    def fit(self, values: Any) -> TargetScaler:
        y = _target_floats(values)
        if len(y) == 0:
            raise DataError("There are no target values to fit the target scaler on (0 rows).")
        self.mean_ = float(y.mean())
        std = float(y.std())
        self.std_ = std if std > 0 and math.isfinite(std) else 1.0
        return self

    def transform(self, values: Any) -> np.ndarray:
        return ((_target_floats(values) - self.mean_) / self.std_).astype(np.float32)

    def inverse_transform(self, values: Any) -> np.ndarray:
        return np.asarray(values, dtype=np.float64).ravel() * self.std_ + self.mean_

    def to_dict(self) -> dict[str, Any]:
        return {"type": "target_scaler", "version": 1, "mean_": self.mean_, "std_": self.std_}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TargetScaler:
        check_saved_type(d, "target_scaler", cls.__name__)
        obj = cls()
        obj.mean_ = float(d["mean_"])
        obj.std_ = float(d["std_"])
        return obj


def _target_floats(values: Any) -> np.ndarray:
    series = pd.Series(np.asarray(values, dtype=object).ravel())
    y = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64)
    bad = series[np.isnan(y) & series.notna().to_numpy()]
    if len(bad):
        examples = ", ".join(repr(v) for v in list(pd.unique(bad))[:5])
        raise DataError(
            f"The regression target holds values that are not numbers (e.g. {examples}). Convert "
            "the column to numbers, or use task: classification."
        )
    if np.isnan(y).any():
        raise DataError(
            f"The regression target has {int(np.isnan(y).sum())} missing value(s); drop those rows "
            "first."
        )
    return y


# ---------------------------------------------------------------------------- the steps of a kind


def drop_missing_targets(frame: pd.DataFrame, target: str) -> tuple[pd.DataFrame, int]:
    """`drop_missing_target`, warning with the count of rows dropped."""
    frame, n_dropped = drop_missing_target(frame, target)
    if n_dropped:
        warn(f"dropped {n_dropped} row(s) whose target '{target}' is missing.")
    return frame, n_dropped


def choose_task(values: Optional[pd.Series], config, allowed: tuple[str, ...], refusal: str,
                default: Optional[str] = None) -> str:
    """The task: config.task, else `default`, else inferred from the target values; checked against them.

    Args:
        values: the target values (None when the data has none, e.g. a corpus).
        allowed: the tasks this kind of data serves; another one raises DataError(refusal), where
            '{task}' in `refusal` is replaced by the task.
    """
    task = config.task or default or infer_task(values)
    if task not in allowed:
        raise DataError(refusal.replace("{task}", task))
    if task in TASKS:
        check_target_for_task(values, task)  # e.g. text with regression, or a single class
    return task


def split_rows(n: int, config, stratify_by: Optional[np.ndarray] = None) -> dict[str, np.ndarray]:
    """Train/val/test row indices from data.split; stratified by `stratify_by` (class labels) when given."""
    s = config.data.split
    labels = stratify_by if s.stratify else None
    train, val, test = split_indices(n, labels, val=s.val, test=s.test, stratify=s.stratify, seed=s.seed)
    if len(train) == 0:
        raise DataError(f"The training split is empty ({n} rows, val {s.val}, test {s.test}). Use more data or smaller data.split fractions.")
    return {"train": train, "val": val, "test": test}


@dataclass
class Targets:
    """The rows' split and their targets as metrics want them and as the model trains on them.

    Attributes:
        task: classification | regression | generation | language_modeling.
        splits: split name -> row indices.
        labels: the class encoding (classification), fitted on every row so each split has its classes.
        scaler: the regression target's scaling, fitted on the training split.
        y_original: (N,) class ids or values in the target's units; None without a target.
        y_model: (N,) what the model trains on (scaled for regression); None without a target.
    """

    task: str
    splits: dict[str, np.ndarray]
    labels: Optional[LabelEncoder] = None
    scaler: Optional[TargetScaler] = None
    y_original: Optional[np.ndarray] = None
    y_model: Optional[np.ndarray] = None

    @property
    def n_outputs(self) -> int:
        return len(self.labels.classes_) if self.labels else 1

    @property
    def class_names(self) -> Optional[list[str]]:
        return [str(c) for c in self.labels.classes_] if self.labels else None

    def class_counts(self) -> dict[str, int]:
        """Rows of each class in the training split ({} without classes)."""
        if self.labels is None:
            return {}
        counts = np.bincount(self.y_original[self.splits["train"]], minlength=len(self.labels.classes_))
        return {str(c): int(n) for c, n in zip(self.labels.classes_, counts)}


def fit_targets(values: np.ndarray, task: str, config) -> Targets:
    """Encode (classification) or scale (regression) the target and split the rows, fitted on train.

    `values` is one target per row, already checked by `choose_task`; classes are stratified by
    their original values, which name them in a split error."""
    labels = LabelEncoder().fit(values) if task == "classification" else None
    splits = split_rows(len(values), config, values if labels else None)
    y_original = labels.transform(values) if labels else np.asarray(values, dtype=np.float32)
    scaler = TargetScaler().fit(y_original[splits["train"]]) if (task == "regression" and config.data.preprocess.scale_target) else None
    y_model = y_original if scaler is None else scaler.transform(y_original).astype(np.float32)
    return Targets(task, splits, labels, scaler, y_original, y_model)


def without_targets(n: int, task: str, config) -> Targets:
    """Rows with nothing to predict (a generative model learns the inputs alone): only the split."""
    return Targets(task, split_rows(n, config))
