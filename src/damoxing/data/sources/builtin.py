"""Built-in data sets: scikit-learn's bundled ones only, so nothing is ever downloaded.

`builtin:digits` in a config becomes `load_builtin("digits")`. Feature columns get snake_case
names ("sepal length (cm)" -> "sepal_length_cm"); classification targets of iris, wine and
breast_cancer are class-name strings (e.g. "setosa", "malignant") so label decoding is visible.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

from damoxing.core.errors import DataError, choices_text, did_you_mean
from damoxing.data.raw import RawData


@dataclass(frozen=True)
class BuiltinInfo:
    """One built-in data set: what it is, before it is loaded."""

    name: str
    kind: str  # "table" | "image"
    task: str  # "classification" | "regression"
    description: str
    loader: str  # name of the scikit-learn loader in sklearn.datasets


BUILTINS: dict[str, BuiltinInfo] = {
    "digits": BuiltinInfo(
        "digits", "table", "classification",
        "8x8 hand-written digits 0-9 as 64 pixel columns (pixel_0..pixel_63, values 0-16).",
        "load_digits",
    ),
    "digits_images": BuiltinInfo(
        "digits_images", "image", "classification",
        "The same 8x8 hand-written digits as 1x8x8 images (values 0-16) with labels 0-9.",
        "load_digits",
    ),
    "iris": BuiltinInfo(
        "iris", "table", "classification",
        "Iris flowers: 4 measurements, 3 species (setosa, versicolor, virginica).",
        "load_iris",
    ),
    "wine": BuiltinInfo(
        "wine", "table", "classification",
        "Wine chemical analysis: 13 measurements, 3 cultivars (class_0, class_1, class_2).",
        "load_wine",
    ),
    "breast_cancer": BuiltinInfo(
        "breast_cancer", "table", "classification",
        "Breast cancer (Wisconsin) tumour measurements: 30 features, malignant or benign.",
        "load_breast_cancer",
    ),
    "diabetes": BuiltinInfo(
        "diabetes", "table", "regression",
        "Diabetes progression one year after baseline (float column 'target') from 10 features.",
        "load_diabetes",
    ),
}


def _snake(name: str) -> str:
    return re.sub(r"[^0-9a-zA-Z]+", "_", name).strip("_").lower()


@lru_cache(maxsize=None)
def _bunch(loader: str) -> Any:
    import sklearn.datasets

    fn: Callable[..., Any] = getattr(sklearn.datasets, loader)
    if loader == "load_diabetes":
        return fn(scaled=False)  # raw values; damoxing's preprocessing does the scaling
    return fn()


def _fingerprint(name: str, *arrays: np.ndarray) -> str:
    h = hashlib.sha256(name.encode())
    for a in arrays:
        if a.dtype.kind in "OUS":
            h.update("\0".join(str(v) for v in a.ravel()).encode())
        else:
            h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def load_builtin(name: str) -> RawData:
    """Load a built-in data set by name (see `BUILTINS`); an unknown name lists the valid ones."""

    if name not in BUILTINS:
        raise DataError(
            f"Unknown built-in data set 'builtin:{name}'.{did_you_mean(name, BUILTINS)} "
            f"Valid built-in names: {choices_text(BUILTINS)} (write them as 'builtin:NAME')."
        )
    info = BUILTINS[name]
    bunch = _bunch(info.loader)
    data = np.array(bunch.data)  # a copy: callers may edit what they get, never the cache
    y = np.array(bunch.target)
    source = f"builtin:{name}"

    if name == "digits_images":
        images = data.reshape(-1, 1, 8, 8).astype(np.float32)
        labels = y.astype(np.int64)
        return RawData(
            kind="image", frame=None, images=images, labels=labels, target="label",
            source=source, fingerprint=_fingerprint(name, images, labels),
        )

    if name == "digits":
        columns = [f"pixel_{i}" for i in range(data.shape[1])]
    else:
        columns = [_snake(c) for c in bunch.feature_names]
    frame = pd.DataFrame(data, columns=columns)
    if info.task == "regression":
        target = "target"
        frame[target] = y.astype(np.float64)
    elif name == "digits":
        target = "label"
        frame[target] = y.astype(np.int64)
    else:
        target = "label"
        frame[target] = np.asarray(bunch.target_names)[y].astype(object)
    return RawData(
        kind="table", frame=frame, images=None, labels=None, target=target,
        source=source, fingerprint=_fingerprint(name, data, np.asarray(frame[target])),
    )


def list_builtins() -> list[dict]:
    """One dict per built-in: name, kind, task, rows, shape, n_classes (None for regression),
    description. Loads each set (all are small and bundled with scikit-learn)."""
    out = []
    for name, info in BUILTINS.items():
        raw = load_builtin(name)
        if raw.kind == "image":
            assert raw.images is not None and raw.labels is not None
            rows = int(raw.images.shape[0])
            shape = "x".join(str(d) for d in raw.images.shape[1:])
            y = raw.labels
        else:
            assert raw.frame is not None and raw.target is not None
            rows = len(raw.frame)
            shape = f"{raw.frame.shape[1] - 1} features"
            y = raw.frame[raw.target].to_numpy()
        n_classes = int(len(np.unique(y))) if info.task == "classification" else None
        out.append(
            {
                "name": name,
                "kind": info.kind,
                "task": info.task,
                "rows": rows,
                "shape": shape,
                "n_classes": n_classes,
                "description": info.description,
            }
        )
    return out
