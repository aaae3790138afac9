"""numpy files: .npz archives and .npy arrays -> images (N, C, H, W) with labels, or a table of
features when the array is 2-D (N, F). Read with allow_pickle=False: damoxing never unpickles data."""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from damoxing.core.errors import DataError, choices_text
from damoxing.data.raw import RawData
from damoxing.data.sources.common import (
    apply_target,
    check_labels,
    file_format,
    hash_files,
    list_text,
    shape_images,
)
from damoxing.data.sources.idx import read_idx

IMAGE_KEYS = ("x", "X", "images", "data")
LABEL_KEYS = ("y", "labels", "label", "target")
INPUT_KEYS = ("x", "X", "data", "features")  # the rows of a table to predict on, in an .npz

OBJECT_ARRAY_HINT = (
    "holds Python objects (an object array: images of different shapes, or values saved with "
    "dtype=object), and damoxing never unpickles data, for safety. Save one numeric array whose "
    "items all have the same shape, (N, H, W), (N, C, H, W) or (N, H, W, C), and labels as numbers "
    "or as a plain string array (numpy.array(labels, dtype=str))."
)


def read_npz_member(zf: zipfile.ZipFile, key: str, source: str) -> np.ndarray:
    member = key + ".npy"
    try:
        with zf.open(member) as f:
            return np.lib.format.read_array(f, allow_pickle=False)
    except ValueError as e:
        if "allow_pickle" not in str(e):
            raise DataError(f"The array '{key}' in '{source}' could not be read: {e}.") from None
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise DataError(f"The array '{key}' in '{source}' could not be read: {e}.") from None
    raise DataError(f"The array '{key}' in '{source}' {OBJECT_ARRAY_HINT}")


def open_npz(path: Path, source: str) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise DataError(
            f"The file '{source}' is not a valid .npz archive ({e}). Save it with numpy.savez."
        ) from None


def npz_keys(zf: zipfile.ZipFile) -> list[str]:
    return [n[:-4] for n in zf.namelist() if n.endswith(".npy")]


def load_npz(path: Path, source: str, target: str | None, labels: str | None) -> RawData:
    """Images under x/X/images/data, labels under y/labels/label/target (or from the labels file)."""
    with open_npz(path, source) as zf:
        keys = npz_keys(zf)
        img_key = next((k for k in IMAGE_KEYS if k in keys), None)
        lab_key = next((k for k in LABEL_KEYS if k in keys), None)
        if img_key is None:
            raise DataError(
                f"'{source}' has no images array: it holds the keys {list_text(keys) or 'none'}, "
                f"but damoxing looks for the images under {choices_text(IMAGE_KEYS)} (and labels "
                f"under {choices_text(LABEL_KEYS)}). Save it as numpy.savez(path, x=images, "
                "y=labels)."
            )
        images = read_npz_member(zf, img_key, source)
        lab = None
        if lab_key is not None:
            if labels is not None:
                raise DataError(
                    f"'{source}' already holds labels under key '{lab_key}', and a separate "
                    f"labels file ('{labels}') was also given. Remove one of the two."
                )
            lab = read_npz_member(zf, lab_key, source)
    return array_source(images, lab, path, source, target, labels, img_key, lab_key)


def load_npy(path: Path, source: str, target: str | None, labels: str | None) -> RawData:
    """One array; its labels (if any) come from the labels file."""
    return array_source(read_npy(path, source), None, path, source, target, labels)


def read_npy(path: Path, source: str) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise DataError(f"'{source}' {OBJECT_ARRAY_HINT}") from None
        raise DataError(f"'{source}' is not a valid .npy file: {e}.") from None
    except (OSError, EOFError) as e:
        raise DataError(f"'{source}' is not a valid .npy file: {e}.") from None


def read_input_arrays(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """An .npz of table rows to predict on: (rows under x/X/data/features, targets under y/labels/label/target or None)."""
    with open_npz(path, str(path)) as zf:
        keys = npz_keys(zf)
        x_key = next((k for k in INPUT_KEYS if k in keys), None)
        if x_key is None:
            raise DataError(f"'{path}' has arrays {keys}; put the input rows under 'x'.")
        y_key = next((k for k in LABEL_KEYS if k in keys), None)
        return read_npz_member(zf, x_key, str(path)), (read_npz_member(zf, y_key, str(path)) if y_key else None)


def load_labels_file(labels: str) -> tuple[np.ndarray, Path]:
    """A separate labels file: a .npy array or an IDX labels file."""
    path = Path(labels).expanduser()
    if not path.exists():
        raise DataError(
            f"The labels file '{labels}' does not exist (looked for {path.absolute()})."
        )
    if path.is_dir():
        raise DataError(f"The labels path '{labels}' is a folder; give a .npy or IDX labels file.")
    fmt = file_format(path)
    if fmt == "npy":
        arr = read_npy(path, labels)
    elif fmt == "idx":
        arr = read_idx(path, labels)
    else:
        raise DataError(
            f"The labels file '{labels}' must be a .npy file or an IDX labels file "
            "(*-labels-idx1-ubyte, optionally .gz)."
        )
    return arr, path


def array_source(
    arr: np.ndarray,
    lab: np.ndarray | None,
    path: Path,
    source: str,
    target: str | None,
    labels: str | None,
    img_key: str | None = None,
    lab_key: str | None = None,
) -> RawData:
    """Shape an images (or 2-D features) array plus optional labels into RawData."""
    files = [path]
    if labels is not None:
        lab, lab_path = load_labels_file(labels)
        files.append(lab_path)
        lab_where = f"the labels file '{labels}'"
    else:
        lab_where = f"key '{lab_key}'"
    where = f"'{source}'" + (f" (key '{img_key}')" if img_key else "")
    arr = shape_images(arr, where)
    n = int(arr.shape[0])
    if lab is not None:
        lab = check_labels(lab, n, arr.shape, where, lab_where)
    fingerprint = hash_files(*files)
    if arr.ndim == 2:
        return _feature_table(arr, lab, source, target, fingerprint)
    raw = RawData("image", None, arr, lab, "label", source, fingerprint)
    return apply_target(raw, target, source)


def _feature_table(arr: np.ndarray, lab: np.ndarray | None, source: str, target: str | None, fingerprint: str) -> RawData:
    """A 2-D (N, F) array as a table: columns f0..f{F-1}, plus 'label' when there are labels."""
    frame = pd.DataFrame(arr, columns=[f"f{i}" for i in range(arr.shape[1])])
    tgt = None
    if lab is not None:
        frame["label"] = lab
        tgt = "label"
    if target is not None and target != tgt:
        raise DataError(
            f"The target column '{target}' is not in '{source}', a 2-D array read as a table "
            f"with columns f0..f{arr.shape[1] - 1}"
            + (" and 'label' (the labels)." if tgt else " and no labels.")
            + " Leave data.target unset for array files."
        )
    return RawData("table", frame, None, None, tgt, source, fingerprint)
