"""The data kinds, one module each, registered in `DATA_KINDS` (see base.py for their surface), and
`choose_kind`: which kind a model reads the raw data as."""

from damoxing.core.errors import ConfigError, choices_text
from damoxing.data.kinds import corpus, image, sequence, table, text  # noqa: F401  (registration)
from damoxing.data.kinds.base import (
    DATA_KINDS,
    DataKind,
    PreparedData,
    Preprocessing,
    data_kind,
)
from damoxing.data.raw import RawData
from damoxing.data.schema import ModelNeeds
from damoxing.data.text import is_text_column

__all__ = ["DATA_KINDS", "DataKind", "PreparedData", "Preprocessing", "choose_kind", "data_kind"]


def choose_kind(raw: RawData, config, needs: ModelNeeds) -> DataKind:
    """How the model reads the raw data: a corpus as a corpus; a table or images as they are, as text, or as sequences.

    A text model (rnn, transformer, gpt) reads a table with a text column (data.text, or any text
    column among the inputs) as text, a table of numbers as one sequence per row (N, F) -> (N, F, 1)
    when it takes sequences; single-channel images (N, 1, H, W) are sequences of H steps with W
    features for a model that takes sequences but not images. Data no kind of the model fits keeps
    its own kind: create_model then names the models that take it."""
    return data_kind(_kind_name(raw, config, needs))


def _kind_name(raw: RawData, config, needs: ModelNeeds) -> str:
    if raw.kind == "corpus":
        return "corpus"
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
    return raw.kind
