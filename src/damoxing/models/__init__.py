"""Model families. Each file defines one family and registers it with `@MODELS.register(name)`.

A registered model class has:
    config_class: its pydantic options (with `type: Literal[name]` and `size` presets)
    input_kinds:  the data kinds it accepts (e.g. {"table"}, {"image"})
    from_config(config, schema) -> nn.Module: builds itself from the data's schema.
    task (optional): the one task the family does whatever the data holds (vae, gan: "generation").
`create_model(config, schema)` is the single factory.
"""

from __future__ import annotations

import importlib

from damoxing.errors import ConfigError, choices_text
from damoxing.registry import Registry

MODELS: Registry = Registry("model")

# Importing a family registers it. Order = order in listings and in the JSON schema.
_FAMILIES = ["linear", "mlp", "cnn", "rnn", "transformer", "gpt", "vae", "gan", "pretrained"]
for _name in _FAMILIES:
    importlib.import_module(f"damoxing.models.{_name}")


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
