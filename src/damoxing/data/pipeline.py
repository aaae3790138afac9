"""From a data config to tensors: load the source, split, fit preprocessing on train, transform.

`prepare_data` is the only entry point the API uses; `Preprocessing` is everything fitted on
the training split that a saved run needs to turn new raw inputs into model inputs and model
outputs back into original label values. It is saved as JSON (preprocessing.json), never pickled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd

from damoxing.console import warn
from damoxing.data.preprocess import (
    ImagePreprocessor,
    LabelEncoder,
    TabularPreprocessor,
    TargetScaler,
    check_target_for_task,
    drop_missing_target,
    infer_task,
)
from damoxing.data.schema import DataSchema
from damoxing.data.sources import RawData, load_source
from damoxing.data.split import split_indices
from damoxing.errors import DataError, choices_text, did_you_mean

INPUT_CODECS = {"table": TabularPreprocessor, "image": ImagePreprocessor}


@dataclass
class Preprocessing:
    """Fitted transforms of one run: raw inputs -> model inputs, model outputs -> predictions."""

    schema: DataSchema
    target: Optional[str]
    feature_columns: Optional[list[str]]
    inputs: Any  # TabularPreprocessor | ImagePreprocessor (text codecs register in INPUT_CODECS)
    labels: Optional[LabelEncoder] = None
    target_scaler: Optional[TargetScaler] = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": self.schema.to_dict(),
            "target": self.target,
            "feature_columns": self.feature_columns,
            "inputs": {"kind": self.schema.kind, **self.inputs.to_dict()},
            "labels": self.labels.to_dict() if self.labels else None,
            "target_scaler": self.target_scaler.to_dict() if self.target_scaler else None,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Preprocessing":
        schema = DataSchema.from_dict(d["schema"])
        inputs = dict(d["inputs"])
        codec = INPUT_CODECS[inputs.pop("kind")]
        return cls(
            schema=schema,
            target=d["target"],
            feature_columns=d["feature_columns"],
            inputs=codec.from_dict(inputs),
            labels=LabelEncoder.from_dict(d["labels"]) if d.get("labels") else None,
            target_scaler=TargetScaler.from_dict(d["target_scaler"]) if d.get("target_scaler") else None,
        )

    # -- raw -> model -------------------------------------------------------------------------
    def transform_inputs(self, data: Any) -> np.ndarray:
        """DataFrame / dict of columns / array (table); array N x H x W or N x C x H x W (image)."""
        if self.schema.kind == "table":
            return self.inputs.transform(self._as_frame(data))
        if self.schema.kind == "image":
            images = np.asarray(data)
            if images.ndim == 3:
                images = images[:, None]
            return self.inputs.transform(images)
        return self.inputs.transform(data)

    def _as_frame(self, data: Any) -> pd.DataFrame:
        if isinstance(data, pd.DataFrame):
            return data
        if isinstance(data, dict):
            return pd.DataFrame(data)
        array = np.asarray(data)
        if array.ndim == 1:
            array = array[None, :]
        if array.ndim != 2 or array.shape[1] != len(self.feature_columns):
            raise DataError(
                f"An input array must have shape (N, {len(self.feature_columns)}) with columns in the order "
                f"{self.feature_columns}; got shape {array.shape}. Or pass a DataFrame / dict with those column names."
            )
        return pd.DataFrame(array, columns=self.feature_columns)

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


def resolve_path(source: str, base_dir: Optional[Path]) -> str:
    """A relative path is taken from the working directory, else from the config file's folder."""
    if source.startswith("builtin:") or Path(source).is_absolute() or Path(source).exists() or base_dir is None:
        return source
    candidate = base_dir / source
    return str(candidate) if candidate.exists() else source


def prepare_data(config, base_dir: Optional[Path] = None) -> PreparedData:
    """Config -> model-ready arrays for train/val/test plus the fitted Preprocessing."""
    data_cfg = config.data
    config = _task_of_model(config)
    source = resolve_path(data_cfg.source, base_dir)
    labels = resolve_path(data_cfg.labels, base_dir) if data_cfg.labels else None
    raw = load_source(source, data_cfg.target, labels)
    if raw.kind == "table":
        return _prepare_table(raw, config)
    if raw.kind == "image":
        return _prepare_images(raw, config)
    raise DataError(f"Data of kind '{raw.kind}' from '{data_cfg.source}' is not supported by this task.")


def _task_of_model(config):
    """A family that always does one task (vae, gan: generation) sets it; labels in the data are then ignored."""
    from damoxing.errors import ConfigError
    from damoxing.models import family_task

    fixed = family_task(config.model.type)
    if fixed is None or config.task == fixed:
        return config
    if config.task is not None:
        raise ConfigError(f"task is '{config.task}', but model.type '{config.model.type}' does '{fixed}'. Set task: {fixed} (or leave it out).")
    return config.model_copy(update={"task": fixed})


def _split(n: int, labels: Optional[np.ndarray], config, task: str) -> dict[str, np.ndarray]:
    s = config.data.split
    stratify_labels = labels if (task == "classification" and s.stratify) else None
    train, val, test = split_indices(n, stratify_labels, val=s.val, test=s.test, stratify=s.stratify, seed=s.seed)
    if len(train) == 0:
        raise DataError(f"The training split is empty ({n} rows, val {s.val}, test {s.test}). Use more data or smaller data.split fractions.")
    return {"train": train, "val": val, "test": test}


def _prepare_table(raw: RawData, config) -> PreparedData:
    frame, target = raw.frame, raw.target
    if config.task == "generation":
        return _prepare_table_generation(raw, config)
    frame, n_dropped = drop_missing_target(frame, target)
    if n_dropped:
        warn(f"dropped {n_dropped} row(s) whose target '{target}' is missing.")
    if len(frame) == 0:
        raise DataError(f"'{raw.source}' has no rows with a value in the target column '{target}'.")
    task = config.task or infer_task(frame[target])
    if task not in ("classification", "regression"):
        raise DataError(f"task '{task}' needs text or images; '{raw.source}' is a table. Use task classification or regression.")
    check_target_for_task(frame[target], task)
    features = config.data.features or [c for c in frame.columns if c != target]
    missing = [c for c in features if c not in frame.columns]
    if missing:
        raise DataError(
            f"data.features names column(s) {missing} that '{raw.source}' does not have.{did_you_mean(missing[0], frame.columns)} "
            f"Its columns: {choices_text(map(str, frame.columns))}."
        )
    if not features:
        raise DataError(f"'{raw.source}' has no input columns besides the target '{target}'.")
    frame = frame.reset_index(drop=True)
    target_values = frame[target].to_numpy()

    labels = LabelEncoder().fit(target_values) if task == "classification" else None
    y_all = labels.transform(target_values) if labels else target_values.astype(np.float32)
    idx = _split(len(frame), target_values if labels else None, config, task)  # original values name the class in errors

    p = config.data.preprocess
    inputs = TabularPreprocessor(numeric_impute=p.numeric_impute, scaling=p.scaling, categorical=p.categorical,
                                 max_categories=p.max_categories).fit(frame.iloc[idx["train"]], features)
    scaler = TargetScaler().fit(y_all[idx["train"]]) if (task == "regression" and p.scale_target) else None
    n_outputs = len(labels.classes_) if labels else 1
    if labels is not None and n_outputs < 2:
        raise DataError(f"The target '{target}' has a single class ({labels.classes_[0]!r}); classification needs at least two.")
    schema = DataSchema(kind="table", task=task, input_shape=(len(inputs.feature_names_out_),), n_outputs=n_outputs,
                        class_names=[str(c) for c in labels.classes_] if labels else None,
                        feature_names=list(inputs.feature_names_out_))
    prep = Preprocessing(schema=schema, target=target, feature_columns=list(features), inputs=inputs, labels=labels,
                         target_scaler=scaler)
    x_all = inputs.transform(frame)
    y_model = y_all if labels else (scaler.transform(y_all).astype(np.float32) if scaler else y_all)
    summary = {
        "rows": len(frame) + n_dropped, "rows_dropped_missing_target": n_dropped, "columns": len(features),
        "missing_values": {c: int(v) for c, v in frame[features].isna().sum().items() if v},
    }
    return _assemble(task, prep, x_all, y_model, y_all, idx, raw, summary)


def _prepare_table_generation(raw: RawData, config) -> PreparedData:
    """A table for a generative model: the rows are what is modelled, there is no target.

    Columns: data.features, else every column except data.target or a column named like a label
    (label/target/y/class), which stays out as the images' labels do.
    """
    frame = raw.frame.reset_index(drop=True)
    label_like = config.data.target or (raw.target if str(raw.target).lower() in ("label", "target", "y", "class") else None)
    features = config.data.features or [c for c in frame.columns if c != label_like]
    missing = [c for c in features if c not in frame.columns]
    if missing:
        raise DataError(f"data.features names column(s) {missing} that '{raw.source}' does not have.{did_you_mean(missing[0], frame.columns)} "
                        f"Its columns: {choices_text(map(str, frame.columns))}.")
    idx = _split(len(frame), None, config, "generation")
    p = config.data.preprocess
    inputs = TabularPreprocessor(numeric_impute=p.numeric_impute, scaling=p.scaling, categorical=p.categorical,
                                 max_categories=p.max_categories).fit(frame.iloc[idx["train"]], features)
    schema = DataSchema(kind="table", task="generation", input_shape=(len(inputs.feature_names_out_),), n_outputs=1,
                        feature_names=list(inputs.feature_names_out_))
    prep = Preprocessing(schema=schema, target=None, feature_columns=list(features), inputs=inputs)
    summary = {"rows": len(frame), "columns": len(features)}
    return _assemble("generation", prep, inputs.transform(frame), None, None, idx, raw, summary)


def _prepare_images(raw: RawData, config) -> PreparedData:
    images, values = raw.images, raw.labels
    task = config.task or ("classification" if values is not None else "generation")
    if task == "generation":
        values = None  # a generative model learns the images alone; their labels are not used
    if task in ("classification", "regression") and values is None:
        raise DataError(f"'{raw.source}' holds images but no labels; task '{task}' needs them. Give data.labels (a .npy or IDX labels file) or store them under 'y' in the .npz.")
    if values is not None and task == "classification":
        labels = LabelEncoder().fit(values)
        y_all = labels.transform(values)
    else:
        labels, y_all = None, (values.astype(np.float32) if values is not None else None)
    idx = _split(len(images), values if labels else None, config, task)
    inputs = ImagePreprocessor(mode=config.data.preprocess.image).fit(images[idx["train"]])
    scaler = TargetScaler().fit(y_all[idx["train"]]) if (task == "regression" and config.data.preprocess.scale_target) else None
    n_outputs = len(labels.classes_) if labels else 1
    schema = DataSchema(kind="image", task=task, input_shape=tuple(int(d) for d in images.shape[1:]), n_outputs=n_outputs,
                        class_names=[str(c) for c in labels.classes_] if labels else None)
    prep = Preprocessing(schema=schema, target=raw.target, feature_columns=None, inputs=inputs, labels=labels, target_scaler=scaler)
    x_all = inputs.transform(images)
    y_model = None if y_all is None else (y_all if labels or scaler is None else scaler.transform(y_all).astype(np.float32))
    summary = {"rows": len(images), "image_shape": list(images.shape[1:])}
    return _assemble(task, prep, x_all, y_model, y_all, idx, raw, summary)


def _assemble(task, prep, x_all, y_model, y_all, idx, raw: RawData, summary) -> PreparedData:
    x = {k: x_all[v] for k, v in idx.items()}
    y = {k: (None if y_model is None else y_model[v]) for k, v in idx.items()}
    y_orig = {k: (None if y_all is None else y_all[v]) for k, v in idx.items()}
    summary["split_rows"] = {k: int(len(v)) for k, v in idx.items()}
    if prep.labels is not None:
        counts = np.bincount(y_all[idx["train"]], minlength=len(prep.labels.classes_))
        summary["train_class_counts"] = {str(c): int(n) for c, n in zip(prep.labels.classes_, counts)}
    return PreparedData(task=task, preprocessing=prep, x=x, y=y, y_original=y_orig, indices=idx,
                        fingerprint=raw.fingerprint, source=raw.source, summary=summary)
