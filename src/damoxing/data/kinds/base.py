"""A data kind: how one kind of model input is prepared, read back for predictions and saved.

Each kind (table, image, text, corpus, sequence) is one small class with the same surface,
registered by name in `DATA_KINDS` where it is defined:

    prepare(raw, config, needs, base_dir) -> PreparedData   fit on the training split only
    transform_inputs(preprocessing, data) -> np.ndarray     raw prediction inputs -> model inputs
    read_inputs(path, target) -> (inputs, targets or None)  a file of prediction inputs
    saved_rows(raw, config, preprocessing) -> (inputs, targets or None)
                                                            the rows `prepare` kept, read again for a saved run
    codec_from_dict(d, folder) -> the fitted input codec    preprocessing.json's "inputs"
    codec_files(codec) -> {file name: text}                 files kept beside preprocessing.json

`Preprocessing` (everything fitted that a saved run needs) and `PreparedData` (the arrays of every
split) live here, beside the registry their kinds dispatch through.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Optional

import numpy as np

from damoxing.core.registry import Registry
from damoxing.data.raw import RawData
from damoxing.data.schema import DataSchema, ModelNeeds
from damoxing.data.targets import LabelEncoder, Targets, TargetScaler


class DataKind(ABC):
    """The surface every data kind has; a kind keeps no state (one instance serves every run)."""

    name: ClassVar[str]
    codec: ClassVar[Any]  # the fitted input transform's class: fit on train, transform, to_dict / from_dict

    @abstractmethod
    def prepare(self, raw: RawData, config, needs: ModelNeeds, base_dir: Optional[Path]) -> "PreparedData":
        """Raw data -> model-ready arrays of every split, with everything fitted on the training split."""

    def transform_inputs(self, preprocessing: "Preprocessing", data: Any) -> np.ndarray:
        """Raw prediction inputs (as a user passes them to `predict`) -> model inputs."""
        return preprocessing.inputs.transform(data)

    @abstractmethod
    def read_inputs(self, path: Path, target: Optional[str]) -> tuple[Any, Optional[np.ndarray]]:
        """A file of prediction inputs (it exists) -> (raw inputs for transform_inputs, targets or None)."""

    @abstractmethod
    def saved_rows(self, raw: RawData, config, preprocessing: "Preprocessing") -> tuple[Any, Optional[np.ndarray]]:
        """Every row `prepare` kept, in its order, from the source read again for a saved run (saved.py):
        (inputs for preprocessing.inputs.transform, target values or None), so saved split indices name the same rows."""

    def codec_from_dict(self, d: dict[str, Any], folder: Optional[Path]) -> Any:
        """The fitted input codec from its saved description (`folder`: the run folder, for its files)."""
        return self.codec.from_dict(d)

    def codec_files(self, codec: Any) -> dict[str, str]:
        """Files the codec keeps beside preprocessing.json (a text codec's tokenizer.json)."""
        return {}


DATA_KINDS: Registry[type[DataKind]] = Registry("data kind")


def data_kind(name: str) -> DataKind:
    """The registered kind called `name` (an unknown name lists the valid ones)."""
    return DATA_KINDS.get(name)()


@dataclass
class Preprocessing:
    """Fitted transforms of one run: raw inputs -> model inputs, model outputs -> predictions.

    Saved as preprocessing.json (never pickled): {"schema", "target", "feature_columns", "inputs":
    {"kind": ..., **codec.to_dict()}, "labels", "target_scaler"}."""

    schema: DataSchema
    target: Optional[str]
    feature_columns: Optional[list[str]]
    inputs: Any  # the kind's codec: TabularPreprocessor | ImagePreprocessor | TextCodec | SequencePreprocessor
    labels: Optional[LabelEncoder] = None
    target_scaler: Optional[TargetScaler] = None

    @property
    def kind(self) -> DataKind:
        return data_kind(self.schema.kind)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": self.schema.to_dict(),
            "target": self.target,
            "feature_columns": self.feature_columns,
            "inputs": {"kind": self.schema.kind, **self.inputs.to_dict()},
            "labels": self.labels.to_dict() if self.labels else None,
            "target_scaler": self.target_scaler.to_dict() if self.target_scaler else None,
        }

    def files(self) -> dict[str, str]:
        """Files the input codec keeps beside preprocessing.json (a text codec's tokenizer.json)."""
        return self.kind.codec_files(self.inputs)

    @classmethod
    def from_dict(cls, d: dict[str, Any], folder: Optional[Path] = None) -> "Preprocessing":
        """`folder`: the run folder, for codecs that keep files there (tokenizer.json)."""
        inputs = dict(d["inputs"])
        kind = data_kind(inputs.pop("kind"))
        return cls(
            schema=DataSchema.from_dict(d["schema"]),
            target=d["target"],
            feature_columns=d["feature_columns"],
            inputs=kind.codec_from_dict(inputs, folder),
            labels=LabelEncoder.from_dict(d["labels"]) if d.get("labels") else None,
            target_scaler=TargetScaler.from_dict(d["target_scaler"]) if d.get("target_scaler") else None,
        )

    # -- raw -> model -------------------------------------------------------------------------
    def transform_inputs(self, data: Any) -> np.ndarray:
        """DataFrame / dict of columns / array (table); array N x H x W or N x C x H x W (image); texts; sequences."""
        return self.kind.transform_inputs(self, data)

    def transform_targets(self, values: Any) -> np.ndarray:
        if self.labels is not None:
            return self.labels.transform(np.asarray(values))
        y = np.asarray(values, dtype=np.float32)
        return self.target_scaler.transform(y).astype(np.float32) if self.target_scaler else y

    # -- model -> predictions -----------------------------------------------------------------
    def decode_regression(self, outputs: np.ndarray) -> np.ndarray:
        """Model outputs (N, T) in training units -> predictions in the target's own units."""
        out = outputs.reshape(outputs.shape[0], -1)
        if out.shape[1] == 1:
            out = out[:, 0]
        return self.target_scaler.inverse_transform(out) if self.target_scaler else out

    def decode_labels(self, class_ids: np.ndarray) -> np.ndarray:
        return self.labels.inverse_transform(class_ids)


@dataclass
class PreparedData:
    """Arrays of every split (model-ready), the fitted preprocessing and what was learned about the data."""

    task: str
    preprocessing: Preprocessing
    x: dict[str, np.ndarray]  # split -> model inputs
    y: dict[str, Optional[np.ndarray]]  # split -> targets in model units
    y_original: dict[str, Optional[np.ndarray]]  # split -> targets as metrics want them (class ids / original units)
    indices: dict[str, np.ndarray]  # split -> row indices into the source
    fingerprint: str
    source: str
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def schema(self) -> DataSchema:
        return self.preprocessing.schema


def assemble(targets: Targets, preprocessing: Preprocessing, x_all: np.ndarray, raw: RawData,
             summary: dict[str, Any]) -> PreparedData:
    """Cut the model inputs and targets of every row into the splits; add split sizes and class counts to the summary."""
    splits = targets.splits
    x = {k: x_all[v] for k, v in splits.items()}
    y = {k: (None if targets.y_model is None else targets.y_model[v]) for k, v in splits.items()}
    y_original = {k: (None if targets.y_original is None else targets.y_original[v]) for k, v in splits.items()}
    summary["split_rows"] = {k: int(len(v)) for k, v in splits.items()}
    if targets.labels is not None:
        summary["train_class_counts"] = targets.class_counts()
    return PreparedData(task=targets.task, preprocessing=preprocessing, x=x, y=y, y_original=y_original, indices=splits,
                        fingerprint=raw.fingerprint, source=raw.source, summary=summary)

