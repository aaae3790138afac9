"""MNIST IDX files (*-idx3-ubyte, *.idx3-ubyte, *.idx, optionally .gz), parsed with numpy, and a
folder in the MNIST download layout (*images-idx3-ubyte[.gz] with matching *labels-idx1-ubyte[.gz];
train files first, then t10k)."""

from __future__ import annotations

import gzip
import re
import zlib
from pathlib import Path

import numpy as np

from damoxing.core.errors import DataError
from damoxing.data.raw import RawData
from damoxing.data.sources.common import (
    check_labels,
    hash_files,
    list_text,
    shape_images,
)

_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_IMG_FILE = re.compile(r"^(.*?)[-._]?images[-.]idx3-ubyte(\.gz)?$", re.IGNORECASE)
_LAB_FILE = re.compile(r"^(.*?)[-._]?labels[-.]idx1-ubyte(\.gz)?$", re.IGNORECASE)


def read_idx_images(path: Path, source: str) -> np.ndarray:
    """An IDX file given as the source: images (or 2-D features), never a 1-D labels file."""
    arr = read_idx(path, source)
    if arr.ndim == 1:
        raise DataError(
            f"The IDX file '{source}' holds 1-D data ({arr.shape[0]} values), which looks like an "
            "IDX labels file. Give the images file (…-images-idx3-ubyte) as the source and this "
            "file as the labels."
        )
    return arr


def read_idx(path: Path, source: str) -> np.ndarray:
    """One IDX file (gzip or plain) -> its array in native byte order; a damaged file is a DataError."""
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


def load_idx_folder(folder: Path, source: str, labels: str | None) -> RawData:
    """Every images/labels pair of the folder, concatenated train first."""
    if labels is not None:
        raise DataError(
            f"A labels file ('{labels}') was given for the folder '{source}', but a folder of "
            "MNIST IDX files carries its own *labels-idx1-ubyte files. Remove the labels "
            "setting."
        )
    images, labels_files = _idx_pairs(folder, source)
    arrays, labs, files = [], [], []
    for prefix in sorted(images, key=_idx_folder_order):
        img_path, lab_path = images[prefix], labels_files[prefix]
        arr = shape_images(read_idx(img_path, str(img_path)), f"'{img_path}'")
        lab = read_idx(lab_path, str(lab_path))
        lab = check_labels(lab, arr.shape[0], arr.shape, f"'{img_path}'", f"'{lab_path}'")
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
    return RawData("image", None, all_images, all_labels, "label", source, hash_files(*files))


def _idx_pairs(folder: Path, source: str) -> tuple[dict[str, Path], dict[str, Path]]:
    """The folder's images and labels files by prefix ('train', 't10k', ...); each images file needs its labels."""
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
        listing = list_text(names, limit=10) if names else "nothing"
        raise DataError(
            f"The folder '{source}' holds no data damoxing reads from a folder. It reads a folder as "
            "a text corpus when it holds .txt documents (one unit per document), or as MNIST-style "
            "images when it holds files named like train-images-idx3-ubyte[.gz] with matching "
            f"train-labels-idx1-ubyte[.gz]. It holds: {listing}. To read another file, give its "
            "path instead of the folder."
        )
    missing = [images[p].name for p in images if p not in labels]
    if missing:
        raise DataError(
            f"The folder '{source}' has IDX images without a matching labels file: "
            f"{list_text(missing)}. Each *images-idx3-ubyte file needs a *labels-idx1-ubyte file "
            "with the same prefix; labels files found: "
            f"{list_text([p.name for p in labels.values()]) or 'none'}."
        )
    return images, labels


def _idx_folder_order(prefix: str) -> tuple[int, str]:
    p = prefix.lower()
    return (0 if "train" in p else 1 if ("t10k" in p or "test" in p) else 2, p)
