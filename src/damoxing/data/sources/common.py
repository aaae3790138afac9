"""What every source family shares: the file format from a name, the fingerprint, the target of
a table, and shaping an array into images (N, C, H, W) with one label per row."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pandas as pd

from damoxing.core.errors import DataError, did_you_mean
from damoxing.data.raw import RawData

TARGET_NAMES = ("label", "target", "y", "class")


def file_format(path: Path) -> str | None:
    """'csv' | 'parquet' | 'npz' | 'npy' | 'idx' | 'txt' from the file's name, or None."""
    name = path.name.lower()
    inner = name[:-3] if name.endswith(".gz") else name
    if inner.endswith(".csv"):
        return "csv"
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.endswith(".npz"):
        return "npz"
    if name.endswith(".npy"):
        return "npy"
    if re.search(r"[-.]idx\d-ubyte$", inner) or inner.endswith(".idx"):
        return "idx"
    if name.endswith(".txt"):
        return "txt"
    return None


def hash_files(*paths: Path) -> str:
    """The first 16 hex characters of a sha256 over the bytes of every file, in order."""
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def list_text(items: list[str], limit: int = 30) -> str:
    """Quote items in their own order (a file's column order means something), at most `limit`."""
    shown = ", ".join(f"'{c}'" for c in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


# ------------------------------------------------------------------------------------ the target


def resolve_target(frame: pd.DataFrame, target: str | None, source: str) -> str:
    """The target column: `target` (which must exist), else label/target/y/class, else the last column."""
    columns = list(frame.columns)
    if target is not None:
        if target not in columns:
            raise DataError(
                f"The target column '{target}' is not in '{source}'."
                f"{did_you_mean(target, columns)} "
                f"Its columns are: {list_text(columns)}. Set data.target to one of them."
            )
    else:
        target = next((c for c in TARGET_NAMES if c in columns), None)
        if target is None:
            lower = {c.lower(): c for c in columns}
            target = next((lower[c] for c in TARGET_NAMES if c in lower), columns[-1])
    # A one-column table is allowed here (a file to predict on for a one-feature model); the
    # training pipeline checks that features remain besides the target.
    return target


def apply_target(raw: RawData, target: str | None, source: str) -> RawData:
    """Set data.target on a table; images accept only 'label' (their labels are not a named column)."""
    if target is None:
        return raw
    if raw.kind == "table":
        assert raw.frame is not None
        raw.target = resolve_target(raw.frame, target, source)
        return raw
    if target != "label":
        raise DataError(
            f"data.target is '{target}', but '{source}' holds images whose labels are not a named "
            "column. Leave data.target unset (or 'label') for image data."
        )
    return raw


# ------------------------------------------------------------------------------ images and labels


def shape_images(arr: np.ndarray, where: str) -> np.ndarray:
    """(N, H, W) gets a channel axis, (N, H, W, C) becomes (N, C, H, W), (N, F) stays a table."""
    if arr.dtype.kind not in "biuf":
        raise DataError(
            f"The images in {where} have dtype {arr.dtype}; damoxing needs numbers (uint8 or "
            "float pixel values)."
        )
    if arr.ndim not in (2, 3, 4):
        raise DataError(
            f"The array in {where} has shape {arr.shape}; damoxing reads (N, H, W), (N, C, H, W) "
            "or (N, H, W, C) as images and (N, F) as a table of features."
        )
    if arr.shape[0] == 0:
        raise DataError(f"The array in {where} has shape {arr.shape}: it holds no rows.")
    if arr.ndim == 3:
        return arr[:, None, :, :]
    if arr.ndim == 4 and arr.shape[1] not in (1, 3, 4) and arr.shape[3] in (1, 3, 4):
        return np.ascontiguousarray(arr.transpose(0, 3, 1, 2))
    return arr


def check_labels(
    lab: np.ndarray, n: int, shape: tuple[int, ...], where: str, lab_where: str
) -> np.ndarray:
    """One label per row: (N,) or (N, 1) with N the number of images."""
    if lab.ndim == 2 and lab.shape[1] == 1:
        lab = lab[:, 0]
    if lab.ndim != 1:
        raise DataError(
            f"The labels in {lab_where} have shape {lab.shape}; damoxing needs one label per row, "
            f"shape ({n},). If they are one-hot, save labels.argmax(axis=1) instead."
        )
    if lab.shape[0] != n:
        raise DataError(
            f"The array in {where} holds {n} rows (shape {tuple(shape)}) but {lab_where} holds "
            f"{lab.shape[0]} labels (shape {lab.shape}). There must be exactly one label per row."
        )
    return lab
