"""Layers differential privacy cannot train, replaced by ones it can (opacus's ModuleValidator.fix).

DP-SGD needs each sample's own gradient. BatchNorm mixes the samples of a batch, so it becomes
GroupNorm; nn.LSTM / nn.GRU / nn.MultiheadAttention have fused kernels opacus cannot look into, so
they become opacus's DPLSTM / DPGRU / DPMultiheadAttention (same parameters, unfused). A run trained
with `train.privacy` holds the replaced architecture's weights; since its config.yaml records
`train.privacy`, the predictor applies the same replacement before loading them
(inference/predictor.py), so the run loads through the normal registry.
"""

from __future__ import annotations

import logging

import torch

from damoxing.core.errors import ConfigError


SAME_WEIGHTS = (torch.nn.LSTM, torch.nn.GRU)  # opacus's DPLSTM/DPGRU: the same parameters under the same names, unfused


def replace_private_layers(model: torch.nn.Module, for_loading: bool = False) -> tuple[torch.nn.Module, list[dict]]:
    """(the model with DP-compatible layers, [{"layer", "from", "to"}] for every replaced one).

    `for_loading`: only the replacements that change the weights (norms, attention); an LSTM/GRU
    trained as DPLSTM/DPGRU loads into the plain torch layer (`private_state_dict` saves its weights
    under nn.LSTM's names). Raises ConfigError naming each layer opacus still cannot train after
    the replacement, and why; with the model's `private_hint()` (a family's own way out, e.g. the
    transformer's options that make it trainable) when it has one."""
    from opacus.validators import ModuleValidator

    before = {name: type(module).__name__ for name, module in model.named_modules()}
    logging.getLogger("opacus").setLevel(logging.WARNING)  # fix() logs every replacement at INFO
    if for_loading:
        fixers = dict(ModuleValidator.FIXERS)
        for kind in SAME_WEIGHTS:
            ModuleValidator.FIXERS.pop(kind, None)
        try:
            return (ModuleValidator.fix(model) if ModuleValidator.validate(model, strict=False) else model), []
        finally:
            ModuleValidator.FIXERS.clear()
            ModuleValidator.FIXERS.update(fixers)
    fixed = ModuleValidator.fix(model) if ModuleValidator.validate(model, strict=False) else model
    replaced = [{"layer": name, "from": before[name], "to": type(module).__name__}
                for name, module in fixed.named_modules() if name in before and before[name] != type(module).__name__]
    replaced = [r for r in replaced if not any(r["layer"].startswith(o["layer"] + ".") for o in replaced if o is not r)]
    from opacus.grad_sample import GradSampleModule

    errors = ModuleValidator.validate(fixed, strict=False) + GradSampleModule.validate(fixed, strict=False)
    if errors:
        reasons = "; ".join(reason(e) for e in errors[:5])
        hint = getattr(model, "private_hint", lambda: None)()  # the family's own way out, if it has one
        raise ConfigError(f"train.privacy: model '{type(model).__name__}' cannot be trained with differential privacy: {reasons}. "
                          + (f"{hint}; or drop train.privacy." if hint else
                             "DP-SGD needs each sample's own gradient; use a family built from standard layers "
                             "(linear, mlp, cnn, rnn), or drop train.privacy."))
    return fixed, replaced


def private_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The weights to save: a DPLSTM/DPGRU lists each of its parameters twice (nn.LSTM's name and
    its own submodule's, one tensor); the first name, nn.LSTM's, is kept."""
    seen, out = set(), {}
    for name, tensor in model.state_dict().items():
        key = (tensor.data_ptr(), tuple(tensor.shape), tensor.dtype) if tensor.numel() else (name,)
        if key not in seen:
            seen.add(key)
            out[name] = tensor
    return out


def reason(error: Exception) -> str:
    """opacus's complaint in one line: what it refuses and which module (its repr cut to the name)."""
    text = " ".join(str(error).split()).replace("buffersthat", "buffers that")
    what, _, module = text.partition("(:")
    return f"{what.strip()} ({module.split('(')[0]})" if module else what[:300]
