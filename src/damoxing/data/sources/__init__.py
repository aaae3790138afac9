"""Read a data source into `RawData`: a table (pandas frame), images (N, C, H, W) with labels, or a
text corpus. One module per source family, one entry point:

`load_source(source, target=None, labels=None)` reads

* `builtin:NAME` - scikit-learn's bundled data sets (builtin.py).
* `.csv` / `.csv.gz` and `.parquet` / `.pq` - a table (tables.py). With `target=None` the target is
  the first column named `label`, `target`, `y` or `class` (exact name first, then ignoring case);
  if there is none, the LAST column is the target.
* `.npz` - images under key `x`/`X`/`images`/`data`, labels under `y`/`labels`/`label`/`target`
  (or from the `labels` argument when the archive has none). (N, H, W) gets a channel axis,
  (N, C, H, W) is kept, (N, H, W, C) with C in 1/3/4 (and dim 1 not in 1/3/4) is transposed to
  NCHW. A 2-D (N, F) array becomes a table with columns f0..f{F-1} plus `label` (no `label`
  column and `target=None` when there are no labels, e.g. data to predict on) (arrays.py).
* `.npy` - an images (or 2-D feature) array shaped as for .npz; labels from the `labels`
  argument (a .npy or IDX labels file) (arrays.py).
* MNIST IDX files (`*-idx3-ubyte`, `*.idx3-ubyte`, `*.idx`, optionally `.gz`), parsed with numpy;
  labels from the `labels` argument (an idx1 file); a folder holding `*images-idx3-ubyte[.gz]` with
  matching `*labels-idx1-ubyte[.gz]` (the MNIST download layout), train files first (idx.py).
* `.txt` - a plain-text corpus (kind "corpus"): one unit per non-blank line; a folder of `.txt`
  files (and no IDX files) is a corpus of one unit per document (text.py).

`fingerprint` is the first 16 hex characters of a sha256 over the bytes of every file read (for
built-ins: over the arrays), so a run can record exactly which data it saw.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from damoxing.core.errors import DataError
from damoxing.data.raw import RawData
from damoxing.data.sources.arrays import array_source, load_npy, load_npz
from damoxing.data.sources.builtin import load_builtin
from damoxing.data.sources.common import apply_target, file_format
from damoxing.data.sources.idx import load_idx_folder, read_idx_images
from damoxing.data.sources.tables import load_table
from damoxing.data.sources.text import is_corpus, load_corpus

__all__ = ["RawData", "load_source", "resolve_path", "SUPPORTED"]

SUPPORTED = (
    ".csv, .csv.gz, .parquet, .pq, .npz, .npy, MNIST IDX files (*-idx3-ubyte, *.idx3-ubyte, "
    "*.idx, optionally .gz), a folder of MNIST IDX files, a .txt corpus or a folder of .txt files, or 'builtin:NAME'"
)


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
        return _load_builtin_source(source, target, labels)
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(
            f"The data source '{source}' does not exist (looked for {path.absolute()}). Check the "
            "path (relative paths are read from the current folder) or use a built-in set such as "
            "'builtin:iris'."
        )
    if is_corpus(path):
        return load_corpus(path, source, target, labels)
    if path.is_dir():
        return apply_target(load_idx_folder(path, source, labels), target, source)
    return _load_file(path, source, target, labels)


def _load_builtin_source(source: str, target: str | None, labels: str | None) -> RawData:
    if labels is not None:
        raise DataError(
            f"A separate labels file ('{labels}') was given for '{source}', but built-in "
            "data sets carry their own labels. Remove the labels setting."
        )
    return apply_target(load_builtin(source[len("builtin:") :]), target, source)


def _load_file(path: Path, source: str, target: str | None, labels: str | None) -> RawData:
    """One data file, read by the family its name says."""
    fmt = file_format(path)
    if fmt is None:
        raise DataError(
            f"The data file '{source}' has a type damoxing cannot read (from its name "
            f"'{path.name}'). Supported: {SUPPORTED}."
        )
    if path.stat().st_size == 0:
        raise DataError(f"The data file '{source}' is empty (0 bytes); it holds no rows.")
    if fmt in ("csv", "parquet"):
        return load_table(path, fmt, source, target, labels)
    if fmt == "npz":
        return load_npz(path, source, target, labels)
    if fmt == "npy":
        return load_npy(path, source, target, labels)
    return array_source(read_idx_images(path, source), None, path, source, target, labels)  # IDX


def resolve_path(source: str, base_dir: Optional[Path]) -> str:
    """A relative path is taken from the working directory, else from the config file's folder."""
    if source.startswith("builtin:") or Path(source).is_absolute() or Path(source).exists() or base_dir is None:
        return source
    candidate = base_dir / source
    return str(candidate) if candidate.exists() else source
