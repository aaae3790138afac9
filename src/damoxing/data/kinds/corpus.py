"""A plain-text corpus -> next-token blocks (N, block_size) for language modelling, split by line
or document (never inside one); the tokenizer is trained on the training units (`TextCodec`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np

from damoxing.core.console import warn
from damoxing.core.errors import ConfigError, DataError
from damoxing.data.kinds.base import DATA_KINDS, PreparedData, Preprocessing
from damoxing.data.kinds.text import TextCodecKind, text_codec
from damoxing.data.raw import RawData
from damoxing.data.schema import DataSchema, ModelNeeds
from damoxing.data.targets import choose_task, split_rows

NOT_FOR_PREDICTIONS = ("This run is a language model: it continues text rather than predicting a value per input. "
                       "Use `damoxing generate RUN --prompt TEXT`.")


@DATA_KINDS.register("corpus")
class CorpusKind(TextCodecKind):
    """A .txt corpus -> next-token blocks (N, block_size) for language modelling; nothing to predict per input."""

    name = "corpus"

    def prepare(self, raw: RawData, config, needs: ModelNeeds, base_dir: Optional[Path]) -> PreparedData:
        task = choose_task(None, config, ("language_modeling",), f"'{raw.source}' is a plain-text corpus, which is for task language_modeling, "
                           "not '{task}'. To classify texts, give a CSV/Parquet table with a text column and a label column.",
                           default="language_modeling")
        units, unit = raw.texts, raw.text_unit
        check_enough_units(units, unit, raw.source, config)
        splits = split_rows(len(units), config)
        split_units = {k: [units[i] for i in v] for k, v in splits.items()}
        # a line's newline is text the model writes, so the tokenizer learns it too (a char tokenizer would make it <unk>)
        codec = text_codec(config, needs, base_dir,
                           [u + "\n" for u in split_units["train"]] if unit == "line" else split_units["train"])
        block = block_size(config, needs)
        x, y, n_bytes = {}, {}, {}
        for k, part in split_units.items():
            if part:
                x[k], y[k], n_bytes[k] = codec.pack(part, block, unit)
            else:
                x[k], y[k], n_bytes[k] = np.zeros((0, block), np.int64), np.zeros((0, block), np.int64), 0
        schema = DataSchema(kind="corpus", task=task, input_shape=(block,), n_outputs=codec.vocab_size_, vocab_size=codec.vocab_size_,
                            pad_id=codec.pad_id_, extra={"eos_id": codec.eos_id_, "text_unit": unit})
        prep = Preprocessing(schema=schema, target=None, feature_columns=None, inputs=codec)
        summary = {"rows": len(units), "text_unit": unit, "split_rows": {k: len(v) for k, v in splits.items()},
                   "split_tokens": {k: int((v >= 0).sum()) for k, v in y.items()}, "split_bytes": n_bytes,
                   "split_blocks": {k: int(len(v)) for k, v in x.items()},
                   "tokenizer": {"kind": codec.kind, "vocab_size": codec.vocab_size_, "block_size": block}}
        if summary["split_tokens"]["train"] < 2 * block:
            warn(f"the training split has only {summary['split_tokens']['train']} tokens, under two blocks of {block}; the model will see very little text.")
        return PreparedData(task=task, preprocessing=prep, x=x, y=y, y_original=dict(y), indices=splits,
                            fingerprint=raw.fingerprint, source=raw.source, summary=summary)

    def transform_inputs(self, preprocessing: Preprocessing, data: Any) -> np.ndarray:
        raise DataError(NOT_FOR_PREDICTIONS)

    def read_inputs(self, path: Path, target: Optional[str]) -> tuple[Any, Optional[np.ndarray]]:
        raise DataError(NOT_FOR_PREDICTIONS)

    def saved_rows(self, raw: RawData, config, preprocessing: Preprocessing) -> tuple[list[str], None]:
        """The corpus's units (lines or documents); they are packed into blocks per split, not transformed row by row."""
        if raw.kind != "corpus":
            raise DataError(f"The run is a language model, but '{raw.source}' is no longer a text corpus.")
        return raw.texts, None


def check_enough_units(units: list[str], unit: str, source: str, config) -> None:
    """A corpus is split by unit into train/val/test, so it needs one unit per non-empty split."""
    s = config.data.split
    needed = 1 + (s.val > 0) + (s.test > 0)
    if len(units) < needed:
        raise DataError(f"The corpus '{source}' has {len(units)} {unit}(s), but it is split by {unit} into train/val/test, which needs "
                        f"at least {needed}. Add more {unit}s, or set data.split.val and data.split.test to 0.")


def block_size(config, needs: ModelNeeds) -> int:
    """data.block_size, else the model's context, else 128; a block must fit in the context."""
    context = needs.context_length
    block = config.data.block_size or context or 128
    if context is not None and block > context:
        raise ConfigError(f"data.block_size {block} is longer than the model's context (model.context_length {context}): a block "
                          f"must fit in the context. Use data.block_size <= {context}, or a larger model.context_length.")
    return block
