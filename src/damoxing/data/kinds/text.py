"""Texts: a table's text column -> token ids (N, T), padded and truncated to one length, for text
classification or regression (`TextCodec`: a tokenizer trained on the training texts, or the one of
model.init_from's run, data.tokenizer.path or a pretrained checkpoint)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd

from damoxing.core.console import note, warn
from damoxing.core.errors import ConfigError, DataError, choices_text, did_you_mean
from damoxing.data.kinds.base import (
    DATA_KINDS,
    DataKind,
    PreparedData,
    Preprocessing,
    assemble,
)
from damoxing.data.kinds.table import TABLE_FILES, kept_rows, read_table_inputs
from damoxing.data.raw import RawData
from damoxing.data.schema import DataSchema, ModelNeeds
from damoxing.data.sources import resolve_path
from damoxing.data.targets import TASKS, choose_task, drop_missing_targets, fit_targets
from damoxing.data.text import TextCodec, as_texts, find_text_column


class TextCodecKind(DataKind):
    """What the text and corpus kinds share: a TextCodec, saved with its tokenizer.json beside preprocessing.json."""

    codec = TextCodec

    def codec_from_dict(self, d: dict[str, Any], folder: Optional[Path]) -> TextCodec:
        return TextCodec.from_dict(d, folder)

    def codec_files(self, codec: TextCodec) -> dict[str, str]:
        return codec.files()


@DATA_KINDS.register("text")
class TextKind(TextCodecKind):
    """A table's text column -> token ids (N, T); its target column -> classes or values."""

    name = "text"

    def prepare(self, raw: RawData, config, needs: ModelNeeds, base_dir: Optional[Path]) -> PreparedData:
        if raw.kind != "table":
            raise DataError(f"Text models read text from a CSV/Parquet column or a .txt corpus; '{raw.source}' holds {raw.kind} data.")
        column = find_text_column(raw.frame, raw.target, config.data.text, config.data.features, raw.source)
        frame, n_dropped = drop_missing_targets(raw.frame, raw.target)
        task = choose_task(frame[raw.target], config, TASKS, "task '{task}' on a table of texts is not supported: use classification or regression here, "
                           "and a .txt file (or a folder of them) for language_modeling.")
        frame = frame.reset_index(drop=True)
        texts = texts_of(frame, column)
        targets = fit_targets(frame[raw.target].to_numpy(), task, config)
        train_texts = [texts[i] for i in targets.splits["train"]]
        codec = text_codec(config, needs, base_dir, train_texts)
        check_max_length(config, needs)
        codec.fit_length(train_texts, cap=needs.context_length)
        x_all = codec.transform(texts)
        schema = DataSchema(kind="text", task=task, input_shape=(codec.max_length_,), n_outputs=targets.n_outputs,
                            class_names=targets.class_names, vocab_size=codec.vocab_size_, pad_id=codec.pad_id_)
        prep = Preprocessing(schema=schema, target=raw.target, feature_columns=[column], inputs=codec, labels=targets.labels,
                             target_scaler=targets.scaler)
        lengths = (x_all != codec.pad_id_).sum(axis=1)
        summary = {"rows": len(frame) + n_dropped, "rows_dropped_missing_target": n_dropped, "text_column": column,
                   "tokenizer": {"kind": codec.kind, "vocab_size": codec.vocab_size_, "max_length": codec.max_length_},
                   "texts_truncated": int((lengths >= codec.max_length_).sum())}
        return assemble(targets, prep, x_all, raw, summary)

    def transform_inputs(self, preprocessing: Preprocessing, data: Any) -> np.ndarray:
        """A DataFrame / dict (its text column), a list or array of strings, or one string."""
        column = preprocessing.feature_columns[0]
        if isinstance(data, (pd.DataFrame, dict)):
            if column not in data:
                found = [str(c) for c in (data.columns if isinstance(data, pd.DataFrame) else data)]
                raise DataError(f"The input has no text column '{column}' (the column this model was trained on).{did_you_mean(column, found)} "
                                f"Its columns: {choices_text(found)}. Or pass a list of strings.")
            return preprocessing.inputs.transform(as_texts(data[column]))
        return preprocessing.inputs.transform(as_texts(data))

    def read_inputs(self, path: Path, target: Optional[str]) -> tuple[Any, Optional[np.ndarray]]:
        """A CSV/Parquet table holding the text column -> (DataFrame, its target column or None)."""
        if not path.name.lower().endswith(TABLE_FILES):
            raise DataError(f"Input '{path}' must be a .csv or .parquet table with the text column, for a model trained on texts.")
        return read_table_inputs(path, target)

    def saved_rows(self, raw: RawData, config, preprocessing: Preprocessing) -> tuple[list[str], Optional[np.ndarray]]:
        frame, values = kept_rows(raw, preprocessing)
        return as_texts(frame[preprocessing.feature_columns[0]]), values


def texts_of(frame: pd.DataFrame, column: str) -> list[str]:
    """The text column as strings; a missing text is read as an empty one (with a warning)."""
    n_missing = int(frame[column].isna().sum())
    if n_missing:
        warn(f"{n_missing} row(s) have no text in '{column}'; they are read as empty texts.")
    return as_texts(frame[column])


def text_codec(config, needs: ModelNeeds, base_dir: Optional[Path], train_texts: list[str]) -> TextCodec:
    """The tokenizer named by data.tokenizer.path, else the one of model.init_from's run, else one trained on train_texts."""
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


def check_max_length(config, needs: ModelNeeds) -> None:
    """data.tokenizer.max_length must fit in the model's context."""
    context, max_length = needs.context_length, config.data.tokenizer.max_length
    if context is not None and max_length and max_length > context:
        raise ConfigError(f"data.tokenizer.max_length {max_length} is longer than the model's context "
                          f"(model.context_length {context}). Use a max_length of at most {context}, or a larger context_length.")
