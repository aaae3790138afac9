"""Numeric sequences -> float32 (N, T, F), standardized per feature on the training split
(`SequencePreprocessor`): an array (N, T) / (N, T, F) from .npz/.npy, single-channel images read
as H steps of W features, or a numeric table read as one sequence per row."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd

from damoxing.core.errors import DataError
from damoxing.data.kinds.base import (
    DATA_KINDS,
    DataKind,
    PreparedData,
    Preprocessing,
    assemble,
)
from damoxing.data.kinds.table import kept_rows, select_features
from damoxing.data.raw import RawData
from damoxing.data.schema import DataSchema, ModelNeeds
from damoxing.data.sequence import SequencePreprocessor
from damoxing.data.sources import load_source
from damoxing.data.targets import TASKS, choose_task, drop_missing_targets, fit_targets


@DATA_KINDS.register("sequence")
class SequenceKind(DataKind):
    """Numeric sequences -> standardized float32 (N, T, F); one class or value per sequence."""

    name = "sequence"
    codec = SequencePreprocessor

    def prepare(self, raw: RawData, config, needs: ModelNeeds, base_dir: Optional[Path]) -> PreparedData:
        sequences, values, target = sequences_of(raw, config)
        if values is None:
            raise DataError(f"'{raw.source}' holds sequences but no labels; sequence classification/regression needs them (store them under 'y' in the .npz).")
        task = choose_task(pd.Series(values, name=target), config, TASKS,
                           "task '{task}' on numeric sequences is not supported: use classification or regression.")
        targets = fit_targets(values, task, config)
        codec = SequencePreprocessor().fit(sequences[targets.splits["train"]])
        x_all = codec.transform(sequences)
        schema = DataSchema(kind="sequence", task=task, input_shape=tuple(x_all.shape[1:]), n_outputs=targets.n_outputs,
                            class_names=targets.class_names)
        prep = Preprocessing(schema=schema, target=target, feature_columns=None, inputs=codec, labels=targets.labels,
                             target_scaler=targets.scaler)
        summary = {"rows": len(sequences), "steps": int(x_all.shape[1]), "features": int(x_all.shape[2])}
        return assemble(targets, prep, x_all, raw, summary)

    def read_inputs(self, path: Path, target: Optional[str]) -> tuple[Any, Optional[np.ndarray]]:
        """An .npz (sequences under 'x', labels optionally under 'y') or .npy array -> (sequences, labels or None)."""
        if not path.name.lower().endswith((".npz", ".npy")):
            raise DataError(f"Input '{path}' must be an .npz (sequences under 'x', labels optionally under 'y') or .npy array, for a model trained on sequences.")
        raw = load_source(str(path))
        if raw.kind == "image":
            return raw.images[:, 0], raw.labels
        frame = raw.frame
        return frame.drop(columns=[raw.target]).to_numpy() if raw.target else frame.to_numpy(), (frame[raw.target].to_numpy() if raw.target else None)

    def saved_rows(self, raw: RawData, config, preprocessing: Preprocessing) -> tuple[np.ndarray, Optional[np.ndarray]]:
        if raw.kind == "image":  # (N, 1, T, F) single-channel arrays are read as (N, T, F) sequences
            return raw.images[:, 0], raw.labels
        frame, values = kept_rows(raw, preprocessing)
        return frame[select_features(frame, raw.target, config, raw.source)].to_numpy(dtype=np.float64), values


def sequences_of(raw: RawData, config) -> tuple[Optional[np.ndarray], Optional[np.ndarray], Optional[str]]:
    """(sequences, one target per sequence or None, the target's name) of images (N, 1, T, F) or a numeric table."""
    if raw.kind == "image":
        if raw.images.shape[1] != 1:
            raise DataError(f"'{raw.source}' holds an array of shape {raw.images.shape}; sequences must be (N, T) or (N, T, F).")
        return raw.images[:, 0], raw.labels, raw.target
    if raw.target is None:
        return None, None, None
    # a numeric table: each row is one sequence of its feature columns, one value per step
    frame, _ = drop_missing_targets(raw.frame, raw.target)
    features = select_features(frame, raw.target, config, raw.source)
    return frame[features].to_numpy(dtype=np.float64), frame[raw.target].to_numpy(), raw.target
