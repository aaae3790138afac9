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
    config = resolve_size(config)
    check_model_memory(family, config, schema)
    return family.from_config(config, schema)


WARN_SHARE = 0.25  # float32 weights above this share of available memory: warn (training needs ~4x: grads, Adam's two moments)


def check_model_memory(family, config, schema) -> None:
    """Refuse a model whose float32 weights alone would not fit in available memory; warn above WARN_SHARE of it.

    The model is built on torch's meta device first: shapes only, no memory, so the count is exact and costs
    milliseconds even for a model of 10^14 parameters. A family that reads a checkpoint (pretrained) is skipped:
    its size is what is on disk."""
    import torch

    if isinstance(config, ReadsTokenizer):
        return
    try:
        with torch.device("meta"):
            params = sum(p.numel() for p in family.from_config(config, schema).parameters())
    except Exception:  # a family that cannot be built on meta is checked by building it for real
        return
    need, available = params * 4, available_memory()
    if available is None or need <= WARN_SHARE * available:
        return
    what = (f"model.type '{config.type}' as configured has {params:,} parameters: {need / 2**30:,.1f} GiB of float32 weights "
            f"(training needs about 4x that for gradients and optimizer state), and this machine has {available / 2**30:,.1f} GiB "
            "of memory available")
    if need > available:
        raise ConfigError(f"{what}. Make it smaller (fewer or narrower layers: model.hidden, conv_channels, d_model, layers) "
                          "or use a smaller model.size.")
    from damoxing.core.console import warn

    warn(f"{what}; it may run out of memory.")


def available_memory() -> int | None:
    """Bytes of memory available now (psutil, else the free physical pages), None when unknown."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        import os

        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


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
