"""The model registry and the single factory, `create_model(config, schema)`."""

from __future__ import annotations

from damoxing.core.errors import ConfigError, choices_text
from damoxing.core.registry import Registry
from damoxing.data.schema import ModelNeeds

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
    return getattr(MODELS.get(model_type), "task", None) if model_type in MODELS else None


def resolve_size(config):
    """Fill every option left unset (None) from the family's `size` preset."""
    presets = getattr(type(config), "PRESETS", {})
    values = presets.get(config.size, {})
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
                      task=getattr(family, "task", None), context_length=getattr(config, "context_length", None),
                      tokenizer_path=getattr(config, "tokenizer_path", None), init_from=getattr(config, "init_from", None))
