"""Input transforms fitted on the training split only and saved as JSON (never pickle).

* `TabularPreprocessor` - impute, scale, encode categories -> float32 (N, F).
* `ImagePreprocessor` - scale to [0, 1] and normalise per channel -> float32 (N, C, H, W).
(The target's transforms, `LabelEncoder` and `TargetScaler`, are in targets.py.)

Every fitted object has `to_dict()` (JSON-able: `json.dumps` works) and `from_dict(d)`, which
gives back an object with identical transforms. Learned state ends in `_` (sklearn style) and
`__init__` only stores its arguments.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np
import pandas as pd

from damoxing.core.errors import ConfigError, DataError, did_you_mean
from damoxing.data.columns import date_parts, has_times, parse_dates
from damoxing.data.values import (
    check_choice,
    check_saved_type,
    is_categorical,
    is_text_values,
)

UNKNOWN = "<unknown>"  # the bucket of runs saved before "<other>"
OTHER = "<other>"  # the one-hot bucket of rare and unseen categories


# --------------------------------------------------------------------------------------- tables


class TabularPreprocessor:
    """Numeric columns: impute (mean/median), then scale (standard/minmax/none).
    Categorical columns (object/string/category/bool): impute the most frequent value, keep the
    `max_categories` most frequent categories seen at least `min_category_count` times, encode
    one-hot (plus a `col=<other>` column for the rest and for values never seen) or ordinal
    (0 = other, 1..K = the kept categories in sorted order). Categories are compared as text, so 1
    and "1" are the same category.
    `fit(..., kinds)` can name each column's kind (data/columns.py decides them): "numeric" on text
    reads numbers (the rest become missing), "categorical" on numbers reads them as categories,
    "date" parses the column with its saved format into year, month, day of week, day of year (and
    hour) columns, each imputed and scaled like a number."""

    def __init__(
        self,
        numeric_impute: str = "mean",
        scaling: str = "standard",
        categorical: str = "onehot",
        max_categories: int = 100,
        min_category_count: int = 1,
    ):
        self.numeric_impute = numeric_impute
        self.scaling = scaling
        self.categorical = categorical
        self.max_categories = max_categories
        self.min_category_count = min_category_count

    def _check_params(self) -> None:
        check_choice("numeric_impute", self.numeric_impute, ("mean", "median"))
        check_choice("scaling", self.scaling, ("standard", "minmax", "none"))
        check_choice("categorical", self.categorical, ("onehot", "ordinal"))
        if not isinstance(self.max_categories, int) or self.max_categories < 1:
            raise ConfigError(
                f"max_categories must be a whole number >= 1, got {self.max_categories!r}."
            )

    # -- fit ------------------------------------------------------------------------------------

    def fit(self, frame: pd.DataFrame, feature_columns: list[str], kinds: Optional[dict[str, str]] = None,
            date_formats: Optional[dict[str, Optional[str]]] = None) -> TabularPreprocessor:
        """`kinds`: column -> numeric | categorical | date (default: categorical for text and bools, else
        numeric); `date_formats`: a date column's strftime format (None: any format pandas reads)."""
        self._check_params()
        feature_columns = list(feature_columns)
        if not feature_columns:
            raise DataError("There are no feature columns to preprocess; the table needs at "
                            "least one column besides the target.")
        self._check_columns(frame, feature_columns)
        if len(frame) == 0:
            raise DataError("The training split has no rows, so preprocessing cannot be fitted.")
        kinds, date_formats = kinds or {}, date_formats or {}
        self.columns_: list[dict[str, Any]] = [
            self._fit_date(frame[c], c, date_formats.get(c)) if kinds.get(c) == "date"
            else self._fit_column(frame[c], c, kinds.get(c)) for c in feature_columns
        ]
        self.feature_names_out_ = self._names_out()
        return self

    def _fit_column(self, values: pd.Series, name: str, kind: Optional[str] = None) -> dict[str, Any]:
        if kind == "categorical" or (kind is None and is_categorical(values)):
            text = _as_text(values).dropna()
            counts = text.value_counts()
            # most frequent first, ties broken by value so the result never depends on row order
            ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
            impute = ranked[0][0] if ranked else OTHER
            kept = sorted(k for k, n in ranked[: self.max_categories] if n >= self.min_category_count)
            return {"name": name, "kind": "categorical", "impute": impute, "categories": kept,
                    "bucket": OTHER, "other": len(ranked) - len(kept), **_category_facts(values)}
        if kind == "numeric" and is_text_values(values):
            return {**self._fit_numbers(pd.to_numeric(values.astype(object), errors="coerce"), name), "coerce": True}
        if kind == "numeric" and pd.api.types.is_bool_dtype(values.dtype):
            values = values.astype(float)
        if not pd.api.types.is_numeric_dtype(values.dtype):
            raise DataError(
                f"The feature column '{name}' has type {values.dtype}, which damoxing cannot use "
                "as a feature; convert it to numbers or text first (or leave it out of "
                "data.features)."
            )
        return self._fit_numbers(values, name)

    def _fit_numbers(self, values: pd.Series, name: str) -> dict[str, Any]:
        x = _as_float(values, name)
        impute, offset, scale = self._fit_scale(x)
        return {"name": name, "kind": "numeric", "impute": impute, "offset": offset, "scale": scale,
                **_number_facts(x, typed_int=pd.api.types.is_integer_dtype(values.dtype))}

    def _fit_scale(self, x: np.ndarray) -> tuple[float, float, float]:
        """(impute, offset, scale) of one column of numbers (NaN = missing)."""
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
        return impute, offset, scale

    def _fit_date(self, values: pd.Series, name: str, date_format: Optional[str]) -> dict[str, Any]:
        stamps = parse_dates(values, date_format)
        parts = ["year", "month", "day_of_week", "day_of_year"] + (["hour"] if has_times(stamps) else [])
        fitted = [self._fit_scale(column) for column in date_parts(stamps, parts).T]
        return {"name": name, "kind": "date", "format": date_format, "parts": parts,
                "impute": [f[0] for f in fitted], "offset": [f[1] for f in fitted], "scale": [f[2] for f in fitted],
                "missing": _rate(stamps.isna().to_numpy())}

    def column_width(self, column: dict[str, Any]) -> int:
        """How many model inputs one fitted column becomes."""
        if column["kind"] == "date":
            return len(column["parts"])
        if column["kind"] == "numeric" or self.categorical == "ordinal":
            return 1
        return len(column["categories"]) + 1

    def _names_out(self) -> list[str]:
        names = []
        for col in self.columns_:
            if col["kind"] == "date":
                names += [f"{col['name']}.{part}" for part in col["parts"]]
            elif col["kind"] == "numeric" or self.categorical == "ordinal":
                names.append(col["name"])
            else:
                names += [f"{col['name']}={c}" for c in col["categories"]]
                names.append(f"{col['name']}={col.get('bucket', UNKNOWN)}")
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
            if col["kind"] == "date":
                x = date_parts(parse_dates(values, col["format"]), col["parts"])
                x = np.where(np.isnan(x), np.asarray(col["impute"]), x)
                blocks.append((x - np.asarray(col["offset"])) / np.asarray(col["scale"]))
                continue
            if col["kind"] == "numeric":
                if col.get("coerce") and is_categorical(values):
                    values = pd.to_numeric(values.astype(object), errors="coerce")  # as in training: non-numbers are missing
                elif is_categorical(values) and not pd.api.types.is_bool_dtype(values.dtype):
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

    def imputed_cells(self, frame: pd.DataFrame) -> dict[str, dict[str, Any]]:
        """Cells of new rows that hold a value `transform` reads as missing and imputes: in a numeric
        column, +-inf and (a column read with `coerce`) text that is not a number; in a date column,
        text that is not a date in its format. {column: {"count", "examples"}} (columns with none left out)."""
        found: dict[str, dict[str, Any]] = {}
        for col in getattr(self, "columns_", []):
            if col["kind"] == "categorical" or col["name"] not in frame.columns:
                continue
            values = frame[col["name"]]
            present = values.notna().to_numpy()
            if col["kind"] == "date":
                lost = present & parse_dates(values, col["format"]).isna().to_numpy()
            elif is_categorical(values) and not pd.api.types.is_bool_dtype(values.dtype):
                numbers = pd.to_numeric(values.astype(object), errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
                if not col.get("coerce") and (present & np.isnan(numbers)).any():
                    return {}  # text in a column of numbers: transform refuses the rows with its own message
                lost = present & ~np.isfinite(numbers)
            else:
                numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
                lost = present & np.isinf(numbers)
            if lost.any():
                found[str(col["name"])] = {"count": int(lost.sum()), "examples": [str(v) for v in pd.unique(values[lost])[:3]]}
        return found

    def inverse_transform(self, x: np.ndarray, seed: Optional[int] = None) -> pd.DataFrame:
        """Model-space rows (N, F) -> a table in the original columns, the inverse of `transform`.

        Numbers: scaling undone, clipped to the range seen in training, whole-number columns
        rounded (and typed Int64); categories: the one-hot block's largest entry (ordinal: the
        nearest code), decoded to the category ("<other>" for the bucket of rare values), typed back
        to bool or numbers when the column held them; dates: year and day of year (and hour) put
        back together, written in the column's own format. `seed` (not None): each column's values
        are made missing at the rate its training rows had (independently of the other columns).
        Preprocessing saved before these facts were recorded decodes without rounding, clipping or
        missing values."""
        if not hasattr(self, "columns_"):
            raise RuntimeError("TabularPreprocessor.inverse_transform called before fit")
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(self.feature_names_out_):
            raise DataError(f"inverse_transform needs rows of {len(self.feature_names_out_)} model inputs, got shape {x.shape}.")
        rng = None if seed is None else np.random.default_rng(seed)
        out, start = {}, 0
        for col in self.columns_:
            width = self.column_width(col)
            block = x[:, start : start + width]
            start += width
            values = (_decode_date(block, col) if col["kind"] == "date"
                      else _decode_number(block[:, 0], col) if col["kind"] == "numeric"
                      else _decode_category(block, col, self.categorical))
            rate = col.get("missing", 0.0)
            if rng is not None and rate > 0:
                values = values.mask(rng.random(len(values)) < rate)
            out[col["name"]] = values
        return pd.DataFrame(out)

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
            # written only when set, so preprocessing saved before it existed reads back and writes the same JSON
            **({"min_category_count": self.min_category_count} if self.min_category_count != 1 else {}),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TabularPreprocessor:
        check_saved_type(d, "tabular", cls.__name__)
        obj = cls(d["numeric_impute"], d["scaling"], d["categorical"], d["max_categories"], d.get("min_category_count", 1))
        obj.columns_ = [dict(c) for c in d["columns_"]]
        obj.feature_names_out_ = obj._names_out()
        return obj


def _as_text(values: pd.Series) -> pd.Series:
    """Non-missing values as str (1 -> '1', True -> 'True'); missing stays NaN."""
    obj = values.astype(object)
    return obj.where(obj.isna(), obj.map(str))


def _rate(missing: np.ndarray) -> float:
    return float(missing.mean()) if len(missing) else 0.0


def _number_facts(x: np.ndarray, typed_int: bool) -> dict[str, Any]:
    """What decoding needs of a numeric column's training values (NaN = missing): the missing rate,
    the range, whether every value is a whole number, and whether the column was typed as integers
    (a column of whole numbers read as floats, e.g. 0.0/1.0 or integers with a gap, stays floats)."""
    present = x[~np.isnan(x)]
    if len(present) == 0:
        return {"missing": 1.0}
    return {"missing": _rate(np.isnan(x)), "min": float(present.min()), "max": float(present.max()),
            "integer": bool(np.all(present == np.round(present))), "values": "int" if typed_int else "float"}


def _category_facts(values: pd.Series) -> dict[str, Any]:
    """A categorical column's missing rate and the type its values had (text, bool, int or float)."""
    kind = ("bool" if pd.api.types.is_bool_dtype(values.dtype) else "int" if pd.api.types.is_integer_dtype(values.dtype)
            else "float" if pd.api.types.is_numeric_dtype(values.dtype) else "text")
    return {"missing": _rate(values.isna().to_numpy()), "values": kind}


def _decode_number(x: np.ndarray, col: dict[str, Any]) -> pd.Series:
    """Scaling undone, clipped to the training range; whole-number columns rounded (Int64 when they were typed so)."""
    x = x * col["scale"] + col["offset"]
    if "min" in col:
        x = np.clip(x, col["min"], col["max"])
    if col.get("integer"):
        x = np.round(x)
        return pd.Series(x).astype("Int64") if col.get("values") == "int" else pd.Series(x)
    return pd.Series(x)


def _decode_category(block: np.ndarray, col: dict[str, Any], encoding: str) -> pd.Series:
    cats = list(col["categories"])
    lowest = 1 if cats and not col.get("other", 1) else 0  # the bucket only where training had rare values to put in it
    if encoding == "ordinal":  # 0 = the bucket, 1..K = the kept categories
        idx = np.clip(np.round(block[:, 0]), lowest, len(cats)).astype(int) - 1
    else:
        idx = block[:, : len(cats) + 1 - lowest].argmax(axis=1)
        idx[idx == len(cats)] = -1
    bucket = col.get("bucket", UNKNOWN)
    text = np.array([cats[i] if i >= 0 else bucket for i in idx], dtype=object)
    values = pd.Series(text, dtype=object)
    kind = col.get("values", "text")
    if kind == "bool":
        return values.map({"True": True, "False": False}).astype(object)
    if kind in ("int", "float"):
        numbers = pd.to_numeric(values, errors="coerce")  # the bucket has no number: missing
        return numbers.astype("Int64") if kind == "int" else numbers
    return values


def _decode_date(block: np.ndarray, col: dict[str, Any]) -> pd.Series:
    parts = {p: block[:, i] * col["scale"][i] + col["offset"][i] for i, p in enumerate(col["parts"])}
    year = np.clip(np.round(parts["year"]), 1678, 2261).astype(int)  # pandas' timestamp range
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    day = np.clip(np.round(parts["day_of_year"]), 1, 365 + leap).astype(int)
    hour = np.clip(np.round(parts["hour"]), 0, 23).astype(int) if "hour" in parts else np.zeros(len(year), dtype=int)
    stamps = (pd.to_datetime(pd.Series(year).astype(str), format="%Y")
              + pd.to_timedelta(day - 1, unit="D") + pd.to_timedelta(hour, unit="h"))
    fmt = col.get("format") or ("%Y-%m-%d %H:%M:%S" if "hour" in parts else "%Y-%m-%d")
    return stamps.dt.strftime(fmt).astype(object)


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
        check_choice("image normalisation mode", self.mode, self.MODES)
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
        check_saved_type(d, "image", cls.__name__)
        obj = cls(d["mode"])
        obj.scale_ = float(d["scale_"])
        obj.shape_ = [int(v) for v in d["shape_"]]
        obj.mean_ = [float(v) for v in d["mean_"]]
        obj.std_ = [float(v) for v in d["std_"]]
        return obj


def _chunks(images: np.ndarray, size: int = 4096):
    for start in range(0, images.shape[0], size):
        yield images[start : start + size]
