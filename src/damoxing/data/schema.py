"""DataSchema: what a model needs to know about the data to build itself."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Optional


@dataclass
class DataSchema:
    """The shape of prepared inputs and outputs, saved with the run so a model can be rebuilt.

    Attributes:
        kind: "table" (N, F) | "image" (N, C, H, W) | "text" (N, T) token ids | "sequence" (N, T, F)
              | "corpus" (N, T) token blocks for language modelling.
        task: classification | regression | language_modeling | generation.
        input_shape: one sample's shape, e.g. (64,) or (1, 8, 8) or (T,).
        n_outputs: classes for classification, target columns for regression, vocabulary for LM.
        class_names: original label values as strings (classification).
        feature_names: model input columns after preprocessing (table).
        vocab_size: tokenizer vocabulary (text / corpus).
        pad_id: padding token id (text).
    """

    kind: str
    task: str
    input_shape: tuple[int, ...]
    n_outputs: int
    class_names: Optional[list[str]] = None
    feature_names: Optional[list[str]] = None
    vocab_size: Optional[int] = None
    pad_id: Optional[int] = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_shape"] = list(self.input_shape)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DataSchema":
        d = dict(d)
        d["input_shape"] = tuple(d["input_shape"])
        return cls(**d)


@dataclass(frozen=True)
class ModelNeeds:
    """What preparing data must know about the model, handed in by the caller (data never imports models).

    Attributes:
        type: the model family's name (for messages).
        input_kinds: the data kinds the family takes ("table", "image", "text", "corpus", "sequence").
        text_models: every family that reads text (named when data.text is set for a model that does not).
        task: the one task the family always does (vae, gan: "generation"), else None (the data decides).
        context_length: the longest token sequence the model takes (gpt), bounding block_size and max_length.
        tokenizer_path: a pretrained checkpoint's own tokenizer, which its text must be read with.
        init_from: the run the model starts from; its tokenizer is reused so token ids match its weights.
    """

    type: str
    input_kinds: frozenset[str]
    text_models: tuple[str, ...] = ()
    task: Optional[str] = None
    context_length: Optional[int] = None
    tokenizer_path: Optional[str] = None
    init_from: Optional[str] = None
