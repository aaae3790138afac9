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

from damoxing.core.console import warn
from damoxing.core.errors import ConfigError, DataError, choices_text, did_you_mean
from damoxing.data.preprocess import (
    ImagePreprocessor,
    LabelEncoder,
    TabularPreprocessor,
    TargetScaler,
    check_target_for_task,
    drop_missing_target,
    infer_task,
)
from damoxing.data.schema import DataSchema, ModelNeeds
from damoxing.data.sequence import SequencePreprocessor
from damoxing.data.sources import RawData, load_source
from damoxing.data.split import split_indices
from damoxing.data.text import TextCodec, as_texts, find_text_column, is_text_column

INPUT_CODECS = {"table": TabularPreprocessor, "image": ImagePreprocessor, "text": TextCodec, "corpus": TextCodec,
                "sequence": SequencePreprocessor}


@dataclass
class Preprocessing:
    """Fitted transforms of one run: raw inputs -> model inputs, model outputs -> predictions."""

    schema: DataSchema
    target: Optional[str]
    feature_columns: Optional[list[str]]
    inputs: Any  # TabularPreprocessor | ImagePreprocessor | TextCodec | SequencePreprocessor (see INPUT_CODECS)
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

    def files(self) -> dict[str, str]:
        """Files the input codec keeps beside preprocessing.json (a text codec's tokenizer.json)."""
        return self.inputs.files() if hasattr(self.inputs, "files") else {}

    @classmethod
    def from_dict(cls, d: dict[str, Any], folder: Optional[Path] = None) -> "Preprocessing":
        """`folder`: the run folder, for codecs that keep files there (`reads_files`, e.g. tokenizer.json)."""
        schema = DataSchema.from_dict(d["schema"])
        inputs = dict(d["inputs"])
        codec = INPUT_CODECS[inputs.pop("kind")]
        return cls(
            schema=schema,
            target=d["target"],
            feature_columns=d["feature_columns"],
            inputs=codec.from_dict(inputs, folder) if getattr(codec, "reads_files", False) else codec.from_dict(inputs),
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
        if self.schema.kind == "text":
            return self.inputs.transform(self._texts(data))
        if self.schema.kind == "corpus":
            raise DataError("This run is a language model: it continues text rather than predicting a value per input. Use `damoxing generate RUN --prompt TEXT`.")
        return self.inputs.transform(data)

    def _texts(self, data: Any) -> list[str]:
        """A DataFrame / dict (its text column), a list or array of strings, or one string."""
        column = self.feature_columns[0]
        if isinstance(data, (pd.DataFrame, dict)):
            if column not in data:
                found = [str(c) for c in (data.columns if isinstance(data, pd.DataFrame) else data)]
                raise DataError(f"The input has no text column '{column}' (the column this model was trained on).{did_you_mean(column, found)} "
                                f"Its columns: {choices_text(found)}. Or pass a list of strings.")
            return as_texts(data[column])
        return as_texts(data)

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


def prepare_data(config, needs: ModelNeeds, base_dir: Optional[Path] = None) -> PreparedData:
    """Config -> model-ready arrays for train/val/test plus the fitted Preprocessing.

    `needs` says what the model takes (models.data_needs(config.model)); `base_dir` is the config
    file's folder, where relative paths are also looked for."""
    data_cfg = config.data
    config = _task_of_model(config, needs)
    source = resolve_path(data_cfg.source, base_dir)
    labels = resolve_path(data_cfg.labels, base_dir) if data_cfg.labels else None
    raw = load_source(source, data_cfg.target, labels)
    if raw.kind == "corpus":
        return _prepare_corpus(raw, config, needs, base_dir)
    kind = _model_data_kind(raw, config, needs)
    if kind == "text":
        return _prepare_text(raw, config, needs, base_dir)
    if kind == "sequence":
        return _prepare_sequences(raw, config)
    if raw.kind == "table":
        return _prepare_table(raw, config)
    if raw.kind == "image":
        return _prepare_images(raw, config)
    raise DataError(f"Data of kind '{raw.kind}' from '{data_cfg.source}' is not supported by this task.")


def _task_of_model(config, needs: ModelNeeds):
    """A family that always does one task (vae, gan: generation) sets it; labels in the data are then ignored."""
    fixed = needs.task
    if fixed is None or config.task == fixed:
        return config
    if config.task is not None:
        raise ConfigError(f"task is '{config.task}', but model.type '{needs.type}' does '{fixed}'. Set task: {fixed} (or leave it out).")
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
    features = _without_excluded(features, config.data.exclude, frame, raw.source)
    if not features:
        raise DataError(f"'{raw.source}' has no input columns besides the target '{target}'"
                        + (f" and the excluded {config.data.exclude}." if config.data.exclude else "."))
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


def _without_excluded(features: list[str], exclude: list[str], frame: pd.DataFrame, source: str) -> list[str]:
    """The input columns less data.exclude; every excluded column must exist (a typo would silently keep it in)."""
    unknown = [c for c in exclude if c not in frame.columns]
    if unknown:
        raise DataError(f"data.exclude names column(s) {unknown} that '{source}' does not have.{did_you_mean(unknown[0], frame.columns)} "
                        f"Its columns: {choices_text(map(str, frame.columns))}.")
    return [c for c in features if c not in set(exclude)]


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
    features = _without_excluded(features, config.data.exclude, frame, raw.source)
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


# ------------------------------------------------------------------------- text and sequences


def _model_data_kind(raw: RawData, config, needs: ModelNeeds) -> str:
    """How a table or image source is read for this model: as it is, as text, or as sequences.

    A text model (rnn, transformer, gpt) reads a table with a text column (data.text, or the only
    input column) as text; a table of numbers as one sequence per row (N, F) -> (N, F, 1); and
    single-channel images (N, 1, H, W) as sequences of H steps with W features."""
    kinds = needs.input_kinds
    if config.data.text is not None and "text" not in kinds:
        raise ConfigError(f"data.text names a text column, but model.type '{needs.type}' does not read text. Models that do: {choices_text(needs.text_models)}.")
    if raw.kind in kinds:
        return raw.kind
    if raw.kind == "table" and "text" in kinds:
        features = config.data.features or [c for c in raw.frame.columns if c != raw.target]
        if config.data.text is not None or any(is_text_column(raw.frame[c]) for c in features if c in raw.frame) or "sequence" not in kinds:
            return "text"
        return "sequence"
    if raw.kind == "image" and "sequence" in kinds:
        return "sequence"
    return raw.kind  # create_model names the models that take this kind


def _text_codec(config, needs: ModelNeeds, base_dir: Optional[Path], train_texts: list[str]) -> TextCodec:
    """The tokenizer named by data.tokenizer.path, else the one of model.init_from's run, else one trained on train_texts."""
    from damoxing.core.console import note

    tok = config.data.tokenizer
    path = tok.path
    init_from = needs.init_from
    if path is None and init_from is not None:
        run = Path(resolve_path(init_from, base_dir))
        if (run / "tokenizer.json").exists():
            path = str(run)
            note(f"using the tokenizer of {run} (model.init_from), so token ids match its weights")
    if path is None and needs.tokenizer_path:  # a pretrained checkpoint reads text with its own tokenizer
        path = needs.tokenizer_path
    if path is not None:
        return TextCodec.from_pretrained(resolve_path(path, base_dir), max_length=tok.max_length)
    return TextCodec(tok.kind, tok.vocab_size, tok.min_frequency, tok.lowercase, tok.max_length).fit(train_texts)


def _split_targets(values: np.ndarray, task: str, config):
    """Split rows (stratified by class) and encode a classification/regression target, fitted on train.

    Returns (split indices, label encoder or None, y for metrics, y for the model, target scaler or None)."""
    labels = LabelEncoder().fit(values) if task == "classification" else None
    if labels is not None and len(labels.classes_) < 2:
        raise DataError(f"The target has a single class ({labels.classes_[0]!r}); classification needs at least two.")
    idx = _split(len(values), values if labels else None, config, task)
    y_all = labels.transform(values) if labels else np.asarray(values, dtype=np.float32)
    scaler = TargetScaler().fit(y_all[idx["train"]]) if (task == "regression" and config.data.preprocess.scale_target) else None
    y_model = y_all if labels or scaler is None else scaler.transform(y_all).astype(np.float32)
    return idx, labels, y_all, y_model, scaler


def _prepare_text(raw: RawData, config, needs: ModelNeeds, base_dir: Optional[Path]) -> PreparedData:
    """A table with a text column -> token ids (N, T) for text classification or regression."""
    if raw.kind != "table":
        raise DataError(f"Text models read text from a CSV/Parquet column or a .txt corpus; '{raw.source}' holds {raw.kind} data.")
    column = find_text_column(raw.frame, raw.target, config.data.text, config.data.features, raw.source)
    frame, n_dropped = drop_missing_target(raw.frame, raw.target)
    if n_dropped:
        warn(f"dropped {n_dropped} row(s) whose target '{raw.target}' is missing.")
    task = config.task or infer_task(frame[raw.target])
    if task not in ("classification", "regression"):
        raise DataError(f"task '{task}' on a table of texts is not supported: use classification or regression here, "
                        "and a .txt file (or a folder of them) for language_modeling.")
    check_target_for_task(frame[raw.target], task)
    frame = frame.reset_index(drop=True)
    n_missing = int(frame[column].isna().sum())
    if n_missing:
        warn(f"{n_missing} row(s) have no text in '{column}'; they are read as empty texts.")
    texts = as_texts(frame[column])
    idx, labels, y_all, y_model, scaler = _split_targets(frame[raw.target].to_numpy(), task, config)
    codec = _text_codec(config, needs, base_dir, [texts[i] for i in idx["train"]])
    context = needs.context_length
    if context is not None and config.data.tokenizer.max_length and config.data.tokenizer.max_length > context:
        raise ConfigError(f"data.tokenizer.max_length {config.data.tokenizer.max_length} is longer than the model's context "
                          f"(model.context_length {context}). Use a max_length of at most {context}, or a larger context_length.")
    codec.fit_length([texts[i] for i in idx["train"]], cap=context)
    x_all = codec.transform(texts)
    n_outputs = len(labels.classes_) if labels else 1
    schema = DataSchema(kind="text", task=task, input_shape=(codec.max_length_,), n_outputs=n_outputs,
                        class_names=[str(c) for c in labels.classes_] if labels else None,
                        vocab_size=codec.vocab_size_, pad_id=codec.pad_id_)
    prep = Preprocessing(schema=schema, target=raw.target, feature_columns=[column], inputs=codec, labels=labels, target_scaler=scaler)
    lengths = (x_all != codec.pad_id_).sum(axis=1)
    summary = {"rows": len(frame) + n_dropped, "rows_dropped_missing_target": n_dropped, "text_column": column,
               "tokenizer": {"kind": codec.kind, "vocab_size": codec.vocab_size_, "max_length": codec.max_length_},
               "texts_truncated": int((lengths >= codec.max_length_).sum())}
    return _assemble(task, prep, x_all, y_model, y_all, idx, raw, summary)


def _prepare_corpus(raw: RawData, config, needs: ModelNeeds, base_dir: Optional[Path]) -> PreparedData:
    """A plain-text corpus -> next-token blocks (N, block_size); split by line/document, never inside one."""
    task = config.task or "language_modeling"
    if task != "language_modeling":
        raise DataError(f"'{raw.source}' is a plain-text corpus, which is for task language_modeling, not '{task}'. "
                        "To classify texts, give a CSV/Parquet table with a text column and a label column.")
    units, unit = raw.texts, raw.text_unit
    s = config.data.split
    needed = 1 + (s.val > 0) + (s.test > 0)
    if len(units) < needed:
        raise DataError(f"The corpus '{raw.source}' has {len(units)} {unit}(s), but it is split by {unit} into train/val/test, which needs "
                        f"at least {needed}. Add more {unit}s, or set data.split.val and data.split.test to 0.")
    idx = _split(len(units), None, config, task)
    split_units = {k: [units[i] for i in v] for k, v in idx.items()}
    # a line's newline is text the model writes, so the tokenizer learns it too (a char tokenizer would make it <unk>)
    codec = _text_codec(config, needs, base_dir, [u + "\n" for u in split_units["train"]] if unit == "line" else split_units["train"])
    context = needs.context_length
    block = config.data.block_size or context or 128
    if context is not None and block > context:
        raise ConfigError(f"data.block_size {block} is longer than the model's context (model.context_length {context}): a block "
                          f"must fit in the context. Use data.block_size <= {context}, or a larger model.context_length.")
    x, y, n_bytes = {}, {}, {}
    for k, part in split_units.items():
        if part:
            x[k], y[k], n_bytes[k] = codec.pack(part, block, unit)
        else:
            x[k], y[k], n_bytes[k] = np.zeros((0, block), np.int64), np.zeros((0, block), np.int64), 0
    schema = DataSchema(kind="corpus", task=task, input_shape=(block,), n_outputs=codec.vocab_size_, vocab_size=codec.vocab_size_,
                        pad_id=codec.pad_id_, extra={"eos_id": codec.eos_id_, "text_unit": unit})
    prep = Preprocessing(schema=schema, target=None, feature_columns=None, inputs=codec)
    summary = {"rows": len(units), "text_unit": unit, "split_rows": {k: len(v) for k, v in idx.items()},
               "split_tokens": {k: int((v >= 0).sum()) for k, v in y.items()}, "split_bytes": n_bytes,
               "split_blocks": {k: int(len(v)) for k, v in x.items()},
               "tokenizer": {"kind": codec.kind, "vocab_size": codec.vocab_size_, "block_size": block}}
    if summary["split_tokens"]["train"] < 2 * block:
        warn(f"the training split has only {summary['split_tokens']['train']} tokens, under two blocks of {block}; the model will see very little text.")
    return PreparedData(task=task, preprocessing=prep, x=x, y=y, y_original=dict(y), indices=idx,
                        fingerprint=raw.fingerprint, source=raw.source, summary=summary)


def _prepare_sequences(raw: RawData, config) -> PreparedData:
    """Numeric sequences -> float32 (N, T, F): an array (N, T) / (N, T, F) from .npz/.npy, or a numeric table (one row per sequence)."""
    if raw.kind == "image":
        if raw.images.shape[1] != 1:
            raise DataError(f"'{raw.source}' holds an array of shape {raw.images.shape}; sequences must be (N, T) or (N, T, F).")
        sequences, values, target = raw.images[:, 0], raw.labels, raw.target
    elif raw.target is None:
        sequences, values, target = None, None, None
    else:  # a numeric table: each row is one sequence of its feature columns, one value per step
        frame, n_dropped = drop_missing_target(raw.frame, raw.target)
        if n_dropped:
            warn(f"dropped {n_dropped} row(s) whose target '{raw.target}' is missing.")
        features = _without_excluded(config.data.features or [c for c in frame.columns if c != raw.target], config.data.exclude, frame, raw.source)
        sequences, values, target = frame[features].to_numpy(dtype=np.float64), frame[raw.target].to_numpy(), raw.target
    if values is None:
        raise DataError(f"'{raw.source}' holds sequences but no labels; sequence classification/regression needs them (store them under 'y' in the .npz).")
    task = config.task or infer_task(pd.Series(values))
    if task not in ("classification", "regression"):
        raise DataError(f"task '{task}' on numeric sequences is not supported: use classification or regression.")
    check_target_for_task(pd.Series(values), task)
    sequences = np.asarray(sequences)
    idx, labels, y_all, y_model, scaler = _split_targets(values, task, config)
    codec = SequencePreprocessor().fit(sequences[idx["train"]])
    x_all = codec.transform(sequences)
    schema = DataSchema(kind="sequence", task=task, input_shape=tuple(x_all.shape[1:]), n_outputs=len(labels.classes_) if labels else 1,
                        class_names=[str(c) for c in labels.classes_] if labels else None)
    prep = Preprocessing(schema=schema, target=target, feature_columns=None, inputs=codec, labels=labels, target_scaler=scaler)
    summary = {"rows": len(sequences), "steps": int(x_all.shape[1]), "features": int(x_all.shape[2])}
    return _assemble(task, prep, x_all, y_model, y_all, idx, raw, summary)
