"""A saved run's data, rebuilt: the source read again, the run's fitted preprocessing applied (never
refitted) and its saved split indices taken, so re-evaluating a run sees exactly the arrays its
training saw.

The rows the split indices count are those `prepare_data` kept (each data kind's `saved_rows`): a
table (or a table of texts or of sequences) without the rows whose target is missing, an image array
as it is, a corpus by its units (lines or documents). Each split is then transformed the way
training transformed it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from damoxing.core.errors import DataError
from damoxing.data.pipeline import PreparedData, Preprocessing, resolve_path
from damoxing.data.raw import RawData
from damoxing.data.sources import load_source


def rebuild_data(config, preprocessing: Preprocessing, indices: dict[str, np.ndarray], base_dir: Optional[Path] = None) -> PreparedData:
    """Model-ready arrays of every saved split of a run, from its resolved config, its fitted
    Preprocessing (preprocessing.json) and its split indices (splits.npz).

    `base_dir`: the folder the run's config file was in (relative sources are looked for there too).
    A source that changed since the run was trained (see the fingerprint) may no longer hold the
    rows the indices name: an index past the end is a DataError."""
    source = resolve_path(config.data.source, base_dir)
    labels = resolve_path(config.data.labels, base_dir) if config.data.labels else None
    raw = load_source(source, config.data.target, labels)
    schema = preprocessing.schema
    if schema.kind == "corpus":
        return _corpus(raw, preprocessing, indices)
    inputs, values = preprocessing.kind.saved_rows(raw, config, preprocessing)
    n = len(values) if values is not None else len(inputs)
    for split, rows in indices.items():
        if len(rows) and int(rows.max()) >= n:
            raise DataError(f"The run's {split} split names row {int(rows.max())}, but '{raw.source}' now has {n} usable rows: "
                            "the data changed since the run was trained. Evaluate on a labelled file with --data instead.")
    x_all = preprocessing.inputs.transform(inputs)
    y_all = None if values is None else _original_targets(values, preprocessing)
    y_model = None if y_all is None else _model_targets(y_all, preprocessing)
    return PreparedData(
        task=schema.task, preprocessing=preprocessing,
        x={k: x_all[v] for k, v in indices.items()},
        y={k: None if y_model is None else y_model[v] for k, v in indices.items()},
        y_original={k: None if y_all is None else y_all[v] for k, v in indices.items()},
        indices=dict(indices), fingerprint=raw.fingerprint, source=raw.source,
        summary={"split_rows": {k: int(len(v)) for k, v in indices.items()}},
    )


def _original_targets(values: np.ndarray, preprocessing: Preprocessing) -> np.ndarray:
    """Targets as metrics take them: class ids, or values in the target's own units (float32, as in training)."""
    if preprocessing.labels is not None:
        return preprocessing.labels.transform(values)
    return np.asarray(values, dtype=np.float32)


def _model_targets(y_all: np.ndarray, preprocessing: Preprocessing) -> np.ndarray:
    """Targets in model units: class ids, or values through the fitted target scaler."""
    if preprocessing.labels is not None or preprocessing.target_scaler is None:
        return y_all
    return preprocessing.target_scaler.transform(y_all).astype(np.float32)


def _corpus(raw: RawData, preprocessing: Preprocessing, indices: dict[str, np.ndarray]) -> PreparedData:
    """A corpus's saved splits of units (lines or documents), each packed into blocks with the run's tokenizer."""
    units, _ = preprocessing.kind.saved_rows(raw, None, preprocessing)
    unit = raw.text_unit
    block = preprocessing.schema.input_shape[0]
    x, y, n_bytes = {}, {}, {}
    for split, rows in indices.items():
        if len(rows) and int(rows.max()) >= len(units):
            raise DataError(f"The run's {split} split names {unit} {int(rows.max())}, but '{raw.source}' now has {len(units)}: "
                            "the text changed since the run was trained. Evaluate on a text file with --data instead.")
        part = [units[i] for i in rows]
        if part:
            x[split], y[split], n_bytes[split] = preprocessing.inputs.pack(part, block, unit)
        else:
            x[split], y[split], n_bytes[split] = np.zeros((0, block), np.int64), np.zeros((0, block), np.int64), 0
    return PreparedData(task=preprocessing.schema.task, preprocessing=preprocessing, x=x, y=y, y_original=dict(y),
                        indices=dict(indices), fingerprint=raw.fingerprint, source=raw.source,
                        summary={"split_rows": {k: int(len(v)) for k, v in indices.items()}, "split_bytes": n_bytes})
