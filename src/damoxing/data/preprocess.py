"""Preprocessing fitted on the training split only and saved as JSON (never pickle).

* `infer_task`, `check_target_for_task`, `drop_missing_target` - decide and check the target.
* `TabularPreprocessor` - impute, scale, encode categories -> float32 (N, F).
* `ImagePreprocessor` - scale to [0, 1] and normalise per channel -> float32 (N, C, H, W).
* `LabelEncoder` - class labels <-> int64 indices; `TargetScaler` - regression targets.

Every fitted object has `to_dict()` (JSON-able: `json.dumps` works) and `from_dict(d)`, which
gives back an object with identical transforms. Learned state ends in `_` (sklearn style) and
`__init__` only stores its arguments.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from damoxing.core.errors import ConfigError, DataError, choices_text, did_you_mean

TASKS = ("classification", "regression")
MAX_CLASSES_FOR_INTEGERS = 20
UNKNOWN = "<unknown>"


# ------------------------------------------------------------------------------------ the target


def _is_text(values: pd.Series) -> bool:
    return (
        pd.api.types.is_object_dtype(values.dtype)
        or pd.api.types.is_string_dtype(values.dtype)
        or isinstance(values.dtype, pd.CategoricalDtype)
    )


def _is_categorical(values: pd.Series) -> bool:
    return _is_text(values) or pd.api.types.is_bool_dtype(values.dtype)


def _name(values: pd.Series) -> str:
    return f"'{values.name}'" if values.name is not None else "the target"


def infer_task(values: pd.Series) -> str:
    """'classification' for text/category/bool targets and for integer(-valued) targets with at
    most 20 distinct values; 'regression' for other numbers. Missing values are ignored."""
    values = pd.Series(values)
    if _is_categorical(values):
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
        if _is_categorical(values) and not numeric_objects:
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
                f"The target column {_name(values)} has only one class ({present.iloc[0]!r}) in "
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


# ------------------------------------------------------------------------------------ JSON utils


def _py(v: Any) -> Any:
    """A numpy / pandas scalar as the plain Python value JSON understands."""
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and v.is_integer() and math.isfinite(v):
        return int(v)
    if isinstance(v, (bool, int, float, str)) or v is None:
        return v
    return str(v)


def _check_type(d: dict, expected: str, cls: str) -> None:
    if not isinstance(d, dict) or d.get("type") != expected:
        got = d.get("type") if isinstance(d, dict) else type(d).__name__
        raise DataError(
            f"{cls}.from_dict got a '{got}' description, not '{expected}'; the saved "
            "preprocessing file does not belong to this kind of data."
        )


def _choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(
            f"Invalid {name} '{value}'.{did_you_mean(value, choices)} "
            f"Valid values: {choices_text(choices)}."
        )


# --------------------------------------------------------------------------------------- tables


class TabularPreprocessor:
    """Numeric columns: impute (mean/median), then scale (standard/minmax/none).
    Categorical columns (object/string/category/bool): impute the most frequent value, keep the
    `max_categories` most frequent categories, encode one-hot (plus a `col=<unknown>` column) or
    ordinal (0 = unknown, 1..K = the kept categories in sorted order). Categories are compared as
    text, so 1 and "1" are the same category."""

    def __init__(
        self,
        numeric_impute: str = "mean",
        scaling: str = "standard",
        categorical: str = "onehot",
        max_categories: int = 100,
    ):
        self.numeric_impute = numeric_impute
        self.scaling = scaling
        self.categorical = categorical
        self.max_categories = max_categories

    def _check_params(self) -> None:
        _choice("numeric_impute", self.numeric_impute, ("mean", "median"))
        _choice("scaling", self.scaling, ("standard", "minmax", "none"))
        _choice("categorical", self.categorical, ("onehot", "ordinal"))
        if not isinstance(self.max_categories, int) or self.max_categories < 1:
            raise ConfigError(
                f"max_categories must be a whole number >= 1, got {self.max_categories!r}."
            )

    # -- fit ------------------------------------------------------------------------------------

    def fit(self, frame: pd.DataFrame, feature_columns: list[str]) -> TabularPreprocessor:
        self._check_params()
        feature_columns = list(feature_columns)
        if not feature_columns:
            raise DataError("There are no feature columns to preprocess; the table needs at "
                            "least one column besides the target.")
        self._check_columns(frame, feature_columns)
        if len(frame) == 0:
            raise DataError("The training split has no rows, so preprocessing cannot be fitted.")
        self.columns_: list[dict[str, Any]] = [
            self._fit_column(frame[c], c) for c in feature_columns
        ]
        self.feature_names_out_ = self._names_out()
        return self

    def _fit_column(self, values: pd.Series, name: str) -> dict[str, Any]:
        if _is_categorical(values):
            text = _as_text(values).dropna()
            counts = text.value_counts()
            # most frequent first, ties broken by value so the result never depends on row order
            ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
            impute = ranked[0][0] if ranked else UNKNOWN
            kept = sorted(k for k, _ in ranked[: self.max_categories])
            return {"name": name, "kind": "categorical", "impute": impute, "categories": kept}
        if not pd.api.types.is_numeric_dtype(values.dtype):
            raise DataError(
                f"The feature column '{name}' has type {values.dtype}, which damoxing cannot use "
                "as a feature; convert it to numbers or text first (or leave it out of "
                "data.features)."
            )
        x = _as_float(values, name)
        present = x[~np.isnan(x)]
        if len(present) == 0:
            impute = 0.0  # an all-missing column: every value becomes 0
        elif self.numeric_impute == "median":
            impute = float(np.median(present))
        else:
            impute = float(np.mean(present))
        x = np.where(np.isnan(x), impute, x)
        if self.scaling == "standard":
            offset, scale = float(x.mean()), float(x.std())
        elif self.scaling == "minmax":
            offset, scale = float(x.min()), float(x.max() - x.min())
        else:
            offset, scale = 0.0, 1.0
        if not math.isfinite(scale) or scale == 0.0:
            scale = 1.0  # a constant column becomes 0, never NaN
        return {"name": name, "kind": "numeric", "impute": impute, "offset": offset, "scale": scale}

    def _names_out(self) -> list[str]:
        names = []
        for col in self.columns_:
            if col["kind"] == "numeric" or self.categorical == "ordinal":
                names.append(col["name"])
            else:
                names += [f"{col['name']}={c}" for c in col["categories"]]
                names.append(f"{col['name']}={UNKNOWN}")
        return names

    # -- transform ------------------------------------------------------------------------------

    @property
    def feature_columns_(self) -> list[str]:
        return [c["name"] for c in self.columns_]

    def _check_columns(self, frame: pd.DataFrame, expected: list[str]) -> None:
        present = set(frame.columns)
        missing = [c for c in expected if c not in present]
        if missing:
            hint = did_you_mean(missing[0], [str(c) for c in frame.columns])
            raise DataError(
                f"The data is missing the feature column(s) {', '.join(repr(c) for c in missing)}."
                f"{hint} The model expects these columns: "
                f"{', '.join(repr(c) for c in expected)} (any order; extra columns are ignored)."
            )

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        if not hasattr(self, "columns_"):
            raise RuntimeError("TabularPreprocessor.transform called before fit")
        self._check_columns(frame, self.feature_columns_)
        blocks: list[np.ndarray] = []
        for col in self.columns_:
            values = frame[col["name"]]
            if col["kind"] == "numeric":
                if _is_categorical(values) and not pd.api.types.is_bool_dtype(values.dtype):
                    values = self._text_to_number(values, col["name"])
                x = _as_float(values, col["name"])
                x = np.where(np.isnan(x), col["impute"], x)
                blocks.append(((x - col["offset"]) / col["scale"])[:, None])
                continue
            text = _as_text(values).fillna(col["impute"]).to_numpy(dtype=object)
            cats = col["categories"]
            if self.categorical == "ordinal":
                lookup = {c: i + 1 for i, c in enumerate(cats)}
                blocks.append(np.array([lookup.get(t, 0) for t in text], dtype=np.float64)[:, None])
            else:
                lookup = {c: i for i, c in enumerate(cats)}
                idx = np.array([lookup.get(t, len(cats)) for t in text], dtype=np.int64)
                onehot = np.zeros((len(text), len(cats) + 1))
                onehot[np.arange(len(text)), idx] = 1.0
                blocks.append(onehot)
        if not blocks:
            return np.zeros((len(frame), 0), dtype=np.float32)
        return np.hstack(blocks).astype(np.float32)

    @staticmethod
    def _text_to_number(values: pd.Series, name: str) -> pd.Series:
        converted = pd.to_numeric(values.astype(object), errors="coerce")
        bad = values[converted.isna() & values.notna()]
        if len(bad):
            examples = ", ".join(repr(v) for v in list(pd.unique(bad))[:5])
            raise DataError(
                f"The feature column '{name}' was numeric in the training data but now holds "
                f"text that is not a number (e.g. {examples}). Fix or remove those values, or "
                "leave them empty to be imputed."
            )
        return converted

    def fit_transform(self, frame: pd.DataFrame, feature_columns: list[str]) -> np.ndarray:
        return self.fit(frame, feature_columns).transform(frame)

    # -- JSON -----------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "tabular",
            "version": 1,
            "numeric_impute": self.numeric_impute,
            "scaling": self.scaling,
            "categorical": self.categorical,
            "max_categories": self.max_categories,
            "columns_": [dict(c) for c in self.columns_],
            "feature_names_out_": list(self.feature_names_out_),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TabularPreprocessor:
        _check_type(d, "tabular", cls.__name__)
        obj = cls(d["numeric_impute"], d["scaling"], d["categorical"], d["max_categories"])
        obj.columns_ = [dict(c) for c in d["columns_"]]
        obj.feature_names_out_ = obj._names_out()
        return obj


def _as_text(values: pd.Series) -> pd.Series:
    """Non-missing values as str (1 -> '1', True -> 'True'); missing stays NaN."""
    obj = values.astype(object)
    return obj.where(obj.isna(), obj.map(str))


def _as_float(values: pd.Series, name: str) -> np.ndarray:
    try:
        x = pd.to_numeric(values).to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError) as e:
        raise DataError(f"The feature column '{name}' could not be read as numbers: {e}.") from None
    x = x.copy()
    x[~np.isfinite(x)] = np.nan  # inf is treated as missing
    return x


# --------------------------------------------------------------------------------------- images


class ImagePreprocessor:
    """Images (N, C, H, W) -> float32. The scale is learned on the training split: 255 for uint8,
    the observed maximum when it is above 1 (e.g. 16), else 1.

    mode 'none': values unchanged (only cast to float32); 'minmax': divided by the scale, so
    [0, 1]; 'standard': divided by the scale, then per channel (x - mean) / std with mean and std
    measured on the scaled training images."""

    MODES = ("standard", "minmax", "none")

    def __init__(self, mode: str = "standard"):
        self.mode = mode

    def fit(self, images: np.ndarray) -> ImagePreprocessor:
        _choice("image normalisation mode", self.mode, self.MODES)
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[0] == 0:
            raise DataError(
                f"Images must be an array (N, C, H, W) with N >= 1; got shape {images.shape}."
            )
        if images.dtype == np.uint8:
            scale = 255.0
        else:
            top = float(np.nanmax(images))
            scale = top if math.isfinite(top) and top > 1.0 else 1.0
        self.scale_ = scale
        self.shape_ = [int(d) for d in images.shape[1:]]
        c = images.shape[1]
        total = np.zeros(c)
        count = images.shape[0] * images.shape[2] * images.shape[3]
        for chunk in _chunks(images):
            total += (chunk.astype(np.float64) / scale).sum(axis=(0, 2, 3))
        mean = total / count
        sq = np.zeros(c)
        for chunk in _chunks(images):
            sq += (((chunk.astype(np.float64) / scale) - mean[None, :, None, None]) ** 2).sum(
                axis=(0, 2, 3)
            )
        std = np.sqrt(sq / count)
        std[~(std > 0)] = 1.0
        self.mean_ = [float(v) for v in mean]
        self.std_ = [float(v) for v in std]
        return self

    def transform(self, images: np.ndarray) -> np.ndarray:
        if not hasattr(self, "scale_"):
            raise RuntimeError("ImagePreprocessor.transform called before fit")
        images = np.asarray(images)
        if images.ndim != 4 or list(images.shape[1:]) != self.shape_:
            got = tuple(images.shape[1:]) if images.ndim == 4 else tuple(images.shape)
            raise DataError(
                f"The images have shape (C, H, W) = {got}, but the model was trained on "
                f"{tuple(self.shape_)}. Resize them (and match the channel count) first."
            )
        out = images.astype(np.float32)
        if self.mode == "none":
            return out
        out /= np.float32(self.scale_)
        if self.mode == "standard":
            mean = np.asarray(self.mean_, dtype=np.float32)[None, :, None, None]
            std = np.asarray(self.std_, dtype=np.float32)[None, :, None, None]
            out -= mean
            out /= std
        return out

    def inverse_transform(self, images: np.ndarray) -> np.ndarray:
        """Model-space images (N, C, H, W) -> the data's own units (e.g. 0-255 or 0-16), as float32."""
        if not hasattr(self, "scale_"):
            raise RuntimeError("ImagePreprocessor.inverse_transform called before fit")
        out = np.array(images, dtype=np.float32)
        if self.mode == "none":
            return out
        if self.mode == "standard":
            out *= np.asarray(self.std_, dtype=np.float32)[None, :, None, None]
            out += np.asarray(self.mean_, dtype=np.float32)[None, :, None, None]
        out *= np.float32(self.scale_)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "image",
            "version": 1,
            "mode": self.mode,
            "scale_": self.scale_,
            "shape_": list(self.shape_),
            "mean_": list(self.mean_),
            "std_": list(self.std_),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ImagePreprocessor:
        _check_type(d, "image", cls.__name__)
        obj = cls(d["mode"])
        obj.scale_ = float(d["scale_"])
        obj.shape_ = [int(v) for v in d["shape_"]]
        obj.mean_ = [float(v) for v in d["mean_"]]
        obj.std_ = [float(v) for v in d["std_"]]
        return obj


def _chunks(images: np.ndarray, size: int = 4096):
    for start in range(0, images.shape[0], size):
        yield images[start : start + size]


# --------------------------------------------------------------------------------------- labels


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
        unique = {_py(v) for v in series}
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
            idx = None if _missing(v) else lookup.get(_py(v))
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
        _check_type(d, "labels", cls.__name__)
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
        _check_type(d, "target_scaler", cls.__name__)
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
