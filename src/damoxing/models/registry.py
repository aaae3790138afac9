"""The model registry and the single factory, `create_model(config, schema)`."""

from __future__ import annotations

from damoxing.core.errors import ConfigError, choices_text
from damoxing.core.registry import Registry
from damoxing.data.schema import ModelNeeds
from damoxing.models.protocols import DoesOneTask, HasContextLength, ReadsTokenizer

MODELS: Registry = Registry("model")


def create_model(config, schema):
    """Build the model named by `config.type` for data described by `schema`."""
    family = MODELS.get(config.type)
    if schema.kind not in family.input_kinds:
        fits = [name for name, f in MODELS.items() if schema.kind in f.input_kinds]
        raise ConfigError(
            f"model.type '{config.type}' takes {choices_text(family.input_kinds)} data, but "
            f"data.source gives '{schema.kind}' data. Models that take {schema.kind} data: {choices_text(fits)}."
        )
    return family.from_config(resolve_size(config), schema)


def family_task(model_type: str):
    """The task a family always does (e.g. "generation" for vae and gan), or None if the data decides."""
    family = MODELS.get(model_type) if model_type in MODELS else None
    return family.task if isinstance(family, DoesOneTask) else None


def resolve_size(config):
    """Fill every option left unset (None) from the family's `size` preset."""
    values = type(config).PRESETS.get(config.size, {})
    updates = {k: v for k, v in values.items() if getattr(config, k) is None}
    return config.model_copy(update=updates) if updates else config


def count_parameters(model) -> tuple[int, int]:
    """(total, trainable) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable


def data_needs(config) -> ModelNeeds:
    """What preparing data must know about the model `config` describes (its size preset applied)."""
    config = resolve_size(config)
    family = MODELS.get(config.type)
    return ModelNeeds(type=config.type, input_kinds=frozenset(family.input_kinds),
                      text_models=tuple(name for name, f in MODELS.items() if "text" in f.input_kinds),
                      task=family_task(config.type),
                      context_length=config.context_length if isinstance(config, HasContextLength) else None,
                      tokenizer_path=config.tokenizer_path if isinstance(config, ReadsTokenizer) else None,
                      init_from=config.init_from)
