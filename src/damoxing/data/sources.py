"""Read a data source into `RawData`: a table (pandas frame) or images (N, C, H, W) with labels.

Supported sources (`load_source(source, target=None, labels=None)`):

* `builtin:NAME` - scikit-learn's bundled data sets (see `damoxing.data.builtin`).
* `.csv` / `.csv.gz` and `.parquet` / `.pq` - a table. With `target=None` the target is the
  first column named `label`, `target`, `y` or `class` (exact name first, then ignoring case);
  if there is none, the LAST column is the target.
* `.npz` - images under key `x`/`X`/`images`/`data`, labels under `y`/`labels`/`label`/`target`
  (or from the `labels` argument when the archive has none). (N, H, W) gets a channel axis,
  (N, C, H, W) is kept, (N, H, W, C) with C in 1/3/4 (and dim 1 not in 1/3/4) is transposed to
  NCHW. A 2-D (N, F) array becomes a table with columns f0..f{F-1} plus `label` (no `label`
  column and `target=None` when there are no labels, e.g. data to predict on).
* `.npy` - an images (or 2-D feature) array shaped as for .npz; labels from the `labels`
  argument (a .npy or IDX labels file).
* MNIST IDX files (`*-idx3-ubyte`, `*.idx3-ubyte`, `*.idx`, optionally `.gz`), parsed here
  with numpy; labels from the `labels` argument (an idx1 file).
* `.txt` - a plain-text corpus (kind "corpus"): one unit per non-blank line; a folder of `.txt`
  files (and no IDX files) is a corpus of one unit per document (see `damoxing.data.text`).
* A folder holding `*images-idx3-ubyte[.gz]` with matching `*labels-idx1-ubyte[.gz]` (the MNIST
  download layout); when train and t10k files are both present they are concatenated, train
  first.

`fingerprint` is the first 16 hex characters of a sha256 over the bytes of every file read (for
built-ins: over the arrays), so a run can record exactly which data it saw.
"""

from __future__ import annotations

import gzip
import hashlib
import re
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from damoxing.core.errors import DataError, choices_text, did_you_mean
from damoxing.data.raw import RawData

TARGET_NAMES = ("label", "target", "y", "class")
IMAGE_KEYS = ("x", "X", "images", "data")
LABEL_KEYS = ("y", "labels", "label", "target")
SUPPORTED = (
    ".csv, .csv.gz, .parquet, .pq, .npz, .npy, MNIST IDX files (*-idx3-ubyte, *.idx3-ubyte, "
    "*.idx, optionally .gz), a folder of MNIST IDX files, a .txt corpus or a folder of .txt files, or 'builtin:NAME'"
)
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_IMG_FILE = re.compile(r"^(.*?)[-._]?images[-.]idx3-ubyte(\.gz)?$", re.IGNORECASE)
_LAB_FILE = re.compile(r"^(.*?)[-._]?labels[-.]idx1-ubyte(\.gz)?$", re.IGNORECASE)


# ----------------------------------------------------------------------------------- entry point


def load_source(source: str, target: str | None = None, labels: str | None = None) -> RawData:
    """Read `source` (a path or 'builtin:NAME'); see the module docstring for the formats.

    `target` names the target column of a table; `labels` is a separate labels file for image
    arrays (.npy, IDX). Every problem a user can cause raises `DataError`."""
    if not isinstance(source, str) or not source.strip():
        raise DataError(
            f"The data source is empty ({source!r}). Give a path to a data file or folder, or a "
            f"built-in set such as 'builtin:iris'. Supported: {SUPPORTED}."
        )
    source = source.strip()
    if source.startswith("builtin:"):
        from damoxing.data.builtin import load_builtin

        if labels is not None:
            raise DataError(
                f"A separate labels file ('{labels}') was given for '{source}', but built-in "
                "data sets carry their own labels. Remove the labels setting."
            )
        raw = load_builtin(source[len("builtin:") :])
        return _apply_target(raw, target, source)

    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(
            f"The data source '{source}' does not exist (looked for {path.absolute()}). Check the "
            "path (relative paths are read from the current folder) or use a built-in set such as "
            "'builtin:iris'."
        )
    if _is_corpus(path):
        return _load_corpus(path, source, target, labels)
    if path.is_dir():
        if labels is not None:
            raise DataError(
                f"A labels file ('{labels}') was given for the folder '{source}', but a folder of "
                "MNIST IDX files carries its own *labels-idx1-ubyte files. Remove the labels "
                "setting."
            )
        raw = _load_idx_folder(path, source)
        return _apply_target(raw, target, source)

    fmt = _file_format(path)
    if fmt is None:
        raise DataError(
            f"The data file '{source}' has a type damoxing cannot read (from its name "
            f"'{path.name}'). Supported: {SUPPORTED}."
        )
    if path.stat().st_size == 0:
        raise DataError(f"The data file '{source}' is empty (0 bytes); it holds no rows.")
    if fmt in ("csv", "parquet"):
        if labels is not None:
            raise DataError(
                f"A separate labels file ('{labels}') was given for the table '{source}', but a "
                "table keeps its target in a column: remove the labels setting and name the "
                "column with data.target instead."
            )
        frame = _read_csv(path, source) if fmt == "csv" else _read_parquet(path, source)
        frame.columns = [str(c) for c in frame.columns]
        target = _resolve_target(frame, target, source)
        return RawData("table", frame, None, None, target, source, _hash_files(path))
    if fmt == "npz":
        return _load_npz(path, source, target, labels)
    if fmt == "npy":
        arr = _read_npy(path, source)
        return _array_source(arr, None, path, source, target, labels)
    # IDX
    arr = _read_idx(path, source)
    if arr.ndim == 1:
        raise DataError(
            f"The IDX file '{source}' holds 1-D data ({arr.shape[0]} values), which looks like an "
            "IDX labels file. Give the images file (…-images-idx3-ubyte) as the source and this "
            "file as the labels."
        )
    return _array_source(arr, None, path, source, target, labels)


# --------------------------------------------------------------------------------------- helpers


def _file_format(path: Path) -> str | None:
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


def _is_corpus(path: Path) -> bool:
    """A .txt file, or a folder with .txt files and no IDX files."""
    if path.is_file():
        return _file_format(path) == "txt"
    has_idx = any(_file_format(p) == "idx" for p in path.iterdir() if p.is_file())
    return not has_idx and any(path.rglob("*.txt"))


def _load_corpus(path: Path, source: str, target: str | None, labels: str | None) -> RawData:
    from damoxing.data.text import read_corpus

    if target is not None or labels is not None:
        raise DataError(
            f"'{source}' is a plain-text corpus for language modelling; it has no target or labels. "
            "Remove data.target / data.labels (to classify texts, use a CSV/Parquet table with a text column and a label column)."
        )
    units, unit, files = read_corpus(path, source)
    return RawData("corpus", None, None, None, None, source, _hash_files(*files), texts=units, text_unit=unit)


def _hash_files(*paths: Path) -> str:
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def _list_text(items: list[str], limit: int = 30) -> str:
    """Quote items in their own order (a file's column order means something), at most `limit`."""
    shown = ", ".join(f"'{c}'" for c in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _read_csv(path: Path, source: str) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise DataError(
            f"The CSV file '{source}' is empty: it has no header and no rows."
        ) from None
    except pd.errors.ParserError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(
            f"The CSV file '{source}' could not be parsed: {first}. Check that every row has the "
            "same number of comma-separated fields as the header and that quotes are closed."
        ) from None
    except UnicodeDecodeError as e:
        raise DataError(
            f"The CSV file '{source}' is not UTF-8 text ({e.reason} at byte {e.start}). Save it as "
            "UTF-8 CSV."
        ) from None
    except (OSError, EOFError, zlib.error, ValueError) as e:
        raise DataError(f"The CSV file '{source}' could not be read: {e}.") from None
    if len(frame) == 0:
        raise DataError(
            f"The CSV file '{source}' has a header ({_list_text([str(c) for c in frame.columns])}) "
            "but no data rows."
        )
    return frame


def _read_parquet(path: Path, source: str) -> pd.DataFrame:
    import pyarrow
    import pyarrow.parquet as pq

    try:
        frame = pq.read_table(path).to_pandas()
    except (pyarrow.ArrowException, OSError, ValueError) as e:
        raise DataError(
            f"The Parquet file '{source}' could not be read: {e}. Check that it is a complete "
            "Parquet file (not a CSV renamed to .parquet)."
        ) from None
    if len(frame) == 0:
        raise DataError(
            f"The Parquet file '{source}' has columns "
            f"({_list_text([str(c) for c in frame.columns])}) but no rows."
        )
    return frame


def _resolve_target(frame: pd.DataFrame, target: str | None, source: str) -> str:
    columns = list(frame.columns)
    if target is not None:
        if target not in columns:
            raise DataError(
                f"The target column '{target}' is not in '{source}'."
                f"{did_you_mean(target, columns)} "
                f"Its columns are: {_list_text(columns)}. Set data.target to one of them."
            )
    else:
        target = next((c for c in TARGET_NAMES if c in columns), None)
        if target is None:
            lower = {c.lower(): c for c in columns}
            target = next((lower[c] for c in TARGET_NAMES if c in lower), columns[-1])
    # A one-column table is allowed here (a file to predict on for a one-feature model); the
    # training pipeline checks that features remain besides the target.
    return target


def _apply_target(raw: RawData, target: str | None, source: str) -> RawData:
    if target is None:
        return raw
    if raw.kind == "table":
        assert raw.frame is not None
        raw.target = _resolve_target(raw.frame, target, source)
        return raw
    if target != "label":
        raise DataError(
            f"data.target is '{target}', but '{source}' holds images whose labels are not a named "
            "column. Leave data.target unset (or 'label') for image data."
        )
    return raw


# ------------------------------------------------------------------------------- numpy archives


_OBJECT_ARRAY_HINT = (
    "holds Python objects (an object array: images of different shapes, or values saved with "
    "dtype=object), and damoxing never unpickles data, for safety. Save one numeric array whose "
    "items all have the same shape, (N, H, W), (N, C, H, W) or (N, H, W, C), and labels as numbers "
    "or as a plain string array (numpy.array(labels, dtype=str))."
)


def _read_npz_member(zf: zipfile.ZipFile, key: str, source: str) -> np.ndarray:
    member = key + ".npy"
    try:
        with zf.open(member) as f:
            return np.lib.format.read_array(f, allow_pickle=False)
    except ValueError as e:
        if "allow_pickle" not in str(e):
            raise DataError(f"The array '{key}' in '{source}' could not be read: {e}.") from None
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise DataError(f"The array '{key}' in '{source}' could not be read: {e}.") from None
    raise DataError(f"The array '{key}' in '{source}' {_OBJECT_ARRAY_HINT}")


def _load_npz(path: Path, source: str, target: str | None, labels: str | None) -> RawData:
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise DataError(
            f"The file '{source}' is not a valid .npz archive ({e}). Save it with numpy.savez."
        ) from None
    with zf:
        keys = [n[:-4] for n in zf.namelist() if n.endswith(".npy")]
        img_key = next((k for k in IMAGE_KEYS if k in keys), None)
        lab_key = next((k for k in LABEL_KEYS if k in keys), None)
        if img_key is None:
            raise DataError(
                f"'{source}' has no images array: it holds the keys {_list_text(keys) or 'none'}, "
                f"but damoxing looks for the images under {choices_text(IMAGE_KEYS)} (and labels "
                f"under {choices_text(LABEL_KEYS)}). Save it as numpy.savez(path, x=images, "
                "y=labels)."
            )
        images = _read_npz_member(zf, img_key, source)
        lab = None
        if lab_key is not None:
            if labels is not None:
                raise DataError(
                    f"'{source}' already holds labels under key '{lab_key}', and a separate "
                    f"labels file ('{labels}') was also given. Remove one of the two."
                )
            lab = _read_npz_member(zf, lab_key, source)
    return _array_source(images, lab, path, source, target, labels, img_key, lab_key)


def _read_npy(path: Path, source: str) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise DataError(f"'{source}' {_OBJECT_ARRAY_HINT}") from None
        raise DataError(f"'{source}' is not a valid .npy file: {e}.") from None
    except (OSError, EOFError) as e:
        raise DataError(f"'{source}' is not a valid .npy file: {e}.") from None


def _load_labels_file(labels: str) -> tuple[np.ndarray, Path]:
    path = Path(labels).expanduser()
    if not path.exists():
        raise DataError(
            f"The labels file '{labels}' does not exist (looked for {path.absolute()})."
        )
    if path.is_dir():
        raise DataError(f"The labels path '{labels}' is a folder; give a .npy or IDX labels file.")
    fmt = _file_format(path)
    if fmt == "npy":
        arr = _read_npy(path, labels)
    elif fmt == "idx":
        arr = _read_idx(path, labels)
    else:
        raise DataError(
            f"The labels file '{labels}' must be a .npy file or an IDX labels file "
            "(*-labels-idx1-ubyte, optionally .gz)."
        )
    return arr, path


def _array_source(
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
        lab, lab_path = _load_labels_file(labels)
        files.append(lab_path)
        lab_where = f"the labels file '{labels}'"
    else:
        lab_where = f"key '{lab_key}'"
    where = f"'{source}'" + (f" (key '{img_key}')" if img_key else "")
    arr = _shape_images(arr, where)
    n = int(arr.shape[0])
    if lab is not None:
        lab = _check_labels(lab, n, arr.shape, where, lab_where)
    fingerprint = _hash_files(*files)

    if arr.ndim == 2:
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
    raw = RawData("image", None, arr, lab, "label", source, fingerprint)
    return _apply_target(raw, target, source)


def _shape_images(arr: np.ndarray, where: str) -> np.ndarray:
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


def _check_labels(
    lab: np.ndarray, n: int, shape: tuple[int, ...], where: str, lab_where: str
) -> np.ndarray:
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


# ---------------------------------------------------------------------------------------- IDX


def _read_idx(path: Path, source: str) -> np.ndarray:
    raw = path.read_bytes()
    if path.name.lower().endswith(".gz"):
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(
                f"The file '{source}' is not a valid gzip file ({e}); it may be truncated. "
                "Download it again."
            ) from None
    if len(raw) < 4:
        raise DataError(
            f"The IDX file '{source}' is truncated: it holds {len(raw)} bytes, fewer than the "
            "4-byte header."
        )
    code, ndim = raw[2], raw[3]
    if raw[0] != 0 or raw[1] != 0 or code not in _IDX_DTYPES or ndim == 0:
        raise DataError(
            f"'{source}' is not an IDX file: its magic number is 0x{raw[:4].hex()}. IDX files "
            "start with two zero bytes, a type code (0x08 uint8, 0x09 int8, 0x0b int16, 0x0c "
            "int32, 0x0d float32, 0x0e float64) and the number of dimensions."
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(
            f"The IDX file '{source}' is truncated: its header names {ndim} dimensions "
            f"({header} bytes) but the file holds only {len(raw)} bytes."
        )
    dims = [int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4)]
    dtype = np.dtype(_IDX_DTYPES[code])
    count = int(np.prod(dims, dtype=np.int64))
    expected, actual = count * dtype.itemsize, len(raw) - header
    if actual != expected:
        problem = "is truncated" if actual < expected else "has trailing bytes"
        raise DataError(
            f"The IDX file '{source}' {problem}: its header says shape {tuple(dims)} of "
            f"{dtype.newbyteorder('=')} ({expected} bytes of data) but it holds {actual} bytes "
            "after the header. Download it again."
        )
    arr = np.frombuffer(raw, dtype, count=count, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="))


def _idx_folder_order(prefix: str) -> tuple[int, str]:
    p = prefix.lower()
    return (0 if "train" in p else 1 if ("t10k" in p or "test" in p) else 2, p)


def _load_idx_folder(folder: Path, source: str) -> RawData:
    images: dict[str, Path] = {}
    labels: dict[str, Path] = {}
    names = sorted(p.name for p in folder.iterdir() if p.is_file())
    for name in names:
        for pattern, found in ((_IMG_FILE, images), (_LAB_FILE, labels)):
            m = pattern.match(name)
            if m:
                prefix = m.group(1).lower()
                if prefix not in found or found[prefix].name.lower().endswith(".gz"):
                    found[prefix] = folder / name  # plain file wins over its .gz twin
    if not images:
        listing = _list_text(names, limit=10) if names else "nothing"
        raise DataError(
            f"The folder '{source}' holds no MNIST-style IDX images: damoxing reads a folder only "
            "when it holds files named like train-images-idx3-ubyte[.gz] with matching "
            f"train-labels-idx1-ubyte[.gz]. It holds: {listing}. To read another file, give its "
            "path instead of the folder."
        )
    missing = [images[p].name for p in images if p not in labels]
    if missing:
        raise DataError(
            f"The folder '{source}' has IDX images without a matching labels file: "
            f"{_list_text(missing)}. Each *images-idx3-ubyte file needs a *labels-idx1-ubyte file "
            "with the same prefix; labels files found: "
            f"{_list_text([p.name for p in labels.values()]) or 'none'}."
        )
    arrays, labs, files = [], [], []
    for prefix in sorted(images, key=_idx_folder_order):
        img_path, lab_path = images[prefix], labels[prefix]
        arr = _shape_images(_read_idx(img_path, str(img_path)), f"'{img_path}'")
        lab = _read_idx(lab_path, str(lab_path))
        lab = _check_labels(lab, arr.shape[0], arr.shape, f"'{img_path}'", f"'{lab_path}'")
        if arrays and arr.shape[1:] != arrays[0].shape[1:]:
            raise DataError(
                f"The IDX images in '{source}' have different sizes: '{files[0].name}' holds "
                f"{arrays[0].shape[1:]} images, '{img_path.name}' holds {arr.shape[1:]} (C, H, W)."
                " All image files in one folder must share one size."
            )
        arrays.append(arr)
        labs.append(lab)
        files += [img_path, lab_path]
    all_images = arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
    all_labels = labs[0] if len(labs) == 1 else np.concatenate(labs)
    return RawData("image", None, all_images, all_labels, "label", source, _hash_files(*files))
