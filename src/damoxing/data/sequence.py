"""Numeric sequences (N, T) or (N, T, F) -> float32 (N, T, F), standardized per feature on the training split."""

from __future__ import annotations

from typing import Any

import numpy as np

from damoxing.core.errors import DataError


def as_sequences(values: Any, where: str = "the sequences") -> np.ndarray:
    """An array (N, T) or (N, T, F) of numbers -> (N, T, F); a (N, T) array is one feature per step."""
    array = np.asarray(values)
    if array.dtype.kind not in "biuf":
        raise DataError(f"{where} have dtype {array.dtype}; sequences must be numbers.")
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[0] == 0 or array.shape[1] == 0:
        raise DataError(f"{where} have shape {array.shape}; sequences must be an array (N, T) or (N, T, F) with N, T >= 1.")
    if not np.isfinite(array).all():
        raise DataError(f"{where} hold {int((~np.isfinite(array)).sum())} NaN or infinite value(s); fill or drop them first.")
    return array


class SequencePreprocessor:
    """(x - mean) / std per feature, with mean and std over every step of every training sequence."""

    def fit(self, sequences: np.ndarray) -> "SequencePreprocessor":
        x = as_sequences(sequences, "The training sequences").astype(np.float64)
        self.shape_ = [int(d) for d in x.shape[1:]]
        self.mean_ = x.mean(axis=(0, 1)).tolist()
        std = x.std(axis=(0, 1))
        std[~(std > 0)] = 1.0  # a constant feature becomes 0, never NaN
        self.std_ = std.tolist()
        return self

    def transform(self, sequences: Any) -> np.ndarray:
        x = as_sequences(sequences)
        if list(x.shape[1:]) != self.shape_:
            raise DataError(f"The sequences have (T, F) = {tuple(x.shape[1:])}, but the model was trained on {tuple(self.shape_)}: "
                            "give the same number of steps and features (pad or cut the sequences first).")
        mean = np.asarray(self.mean_, dtype=np.float32)
        std = np.asarray(self.std_, dtype=np.float32)
        return ((x.astype(np.float32) - mean) / std).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "sequence", "version": 1, "shape_": self.shape_, "mean_": self.mean_, "std_": self.std_}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SequencePreprocessor":
        if not isinstance(d, dict) or d.get("type") != "sequence":
            raise DataError("SequencePreprocessor.from_dict got a description of another kind of data; the saved preprocessing does not fit.")
        obj = cls()
        obj.shape_ = [int(v) for v in d["shape_"]]
        obj.mean_ = [float(v) for v in d["mean_"]]
        obj.std_ = [float(v) for v in d["std_"]]
        return obj
