"""Pruning of mlp and cnn models: structured (a smaller dense model) or unstructured (zeroed weights).

    pruned = prune(model, model_config, sparsity=0.5, structured=True)
    pruned.config      # the model config with the new widths: hidden / conv_channels / dense
    pruned.state       # weights for a model built from pruned.config (the normal registry builds it)
    pruned.masks       # unstructured only: {parameter name: 0/1 mask} kept during fine-tuning

Structured: in every hidden layer (an mlp's hidden widths; a cnn's conv channels and dense widths;
never the output layer) the units with the lowest importance are removed, where a unit's importance
is the L2 norm of its incoming weights (times |gamma| of the batch norm after it) times the L2 norm
of the outgoing weights that read it (Li et al. 2017's filter norm, weighted by how much the next
layer uses the unit). The next layer loses the matching input columns (a cnn's first dense layer:
the unit's H' x W' block of the flattened features). The result has fewer FLOPs and parameters
for real: it is a plain dense model of the smaller widths.

Unstructured: in every weight matrix / filter bank the weights of smallest magnitude are set to zero
(biases and norm scales are kept). The tensors keep their shapes, so the file, the FLOPs of a dense
kernel and the speed do not change; the report says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import nn

from damoxing.core.errors import UserError

PRUNABLE = ("mlp", "cnn")
WEIGHTED = (nn.Linear, nn.Conv2d)
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


@dataclass
class Pruned:
    """A pruned model: its config, its weights, the masks that keep zeros zero (unstructured) and what changed."""

    config: object
    state: dict[str, torch.Tensor]
    masks: dict[str, torch.Tensor] = field(default_factory=dict)
    widths: dict[str, list] = field(default_factory=dict)


def check_sparsity(sparsity: float) -> None:
    if not (isinstance(sparsity, (int, float)) and 0.0 < float(sparsity) < 1.0):
        raise UserError(f"--sparsity is {sparsity}; it is the share of neurons / channels (or weights) removed, a number strictly between "
                        "0 and 1 (e.g. 0.5 removes half).")


def prune(model: nn.Module, model_config, sparsity: float, structured: bool = True) -> Pruned:
    """The pruned weights and config of an mlp or cnn (model: the run's torch model, model_config: its config)."""
    check_sparsity(sparsity)
    if model_config.type not in PRUNABLE:
        raise UserError(f"Pruning removes neurons / channels of {', '.join(PRUNABLE)} models; this model is '{model_config.type}'.")
    if not structured:
        return _magnitude(model, model_config, sparsity)
    chain = _chain(model)
    keep = [_keep(chain, i, sparsity) for i in range(len(chain) - 1)]  # the output layer keeps every unit
    state = {}
    for i, (name, layer, norm) in enumerate(chain):
        rows = keep[i] if i < len(keep) else None
        cols = _input_columns(chain, i, keep[i - 1]) if i > 0 else None
        weight = layer.weight.detach()
        if rows is not None:
            weight = weight.index_select(0, rows)
        if cols is not None:
            weight = weight.index_select(1, cols)
        state[f"{name}.weight"] = weight.clone()
        if layer.bias is not None:
            state[f"{name}.bias"] = (layer.bias.detach() if rows is None else layer.bias.detach().index_select(0, rows)).clone()
        if norm is not None:
            norm_name, norm_module = norm
            for key, value in norm_module.state_dict().items():
                state[f"{norm_name}.{key}"] = value.clone() if value.dim() == 0 else value.index_select(0, rows).clone()
    widths = [int(k.numel()) for k in keep]
    return Pruned(_with_widths(model_config, chain, widths), state, widths=_width_report(model_config, chain, widths))


def _chain(model: nn.Module) -> list[tuple[str, nn.Module, Optional[tuple[str, nn.Module]]]]:
    """The weighted layers in forward order (an mlp: body then head; a cnn: convs, dense, head), each with the
    batch norm that follows it, if any."""
    chain: list = []
    for name, module in model.named_modules():
        if isinstance(module, WEIGHTED):
            chain.append([name, module, None])
        elif isinstance(module, NORMS) and chain:
            chain[-1][2] = (name, module)
    return [tuple(entry) for entry in chain]


def _spatial(chain, i: int) -> int:
    """Input columns per unit of layer i-1 that layer i reads: 1, or H' x W' where a conv's maps are flattened."""
    previous, layer = chain[i - 1][1], chain[i][1]
    if isinstance(previous, nn.Conv2d) and isinstance(layer, nn.Linear):
        return layer.in_features // previous.out_channels
    return 1


def _input_columns(chain, i: int, kept: torch.Tensor) -> torch.Tensor:
    block = _spatial(chain, i)
    if block == 1:
        return kept
    return (kept[:, None] * block + torch.arange(block)).reshape(-1)  # channel-major flattening: (C, H', W')


def _keep(chain, i: int, sparsity: float) -> torch.Tensor:
    """Indices (sorted) of the units of layer i to keep: the most important ceil((1 - sparsity) x width), at least 1."""
    name, layer, norm = chain[i]
    weight = layer.weight.detach()
    units = weight.shape[0]
    incoming = weight.reshape(units, -1).norm(dim=1)
    if norm is not None and norm[1].weight is not None:
        incoming = incoming * norm[1].weight.detach().abs()
    following = chain[i + 1][1].weight.detach()
    block = _spatial(chain, i + 1)
    outgoing = following.reshape(following.shape[0], units, block, -1).transpose(0, 1).reshape(units, -1).norm(dim=1)
    importance = incoming * outgoing
    count = max(1, math.ceil(units * (1.0 - sparsity)))
    return torch.sort(torch.topk(importance, count).indices).values


def _with_widths(model_config, chain, widths: list[int]):
    """The model config with the hidden layers' new widths (conv channels first, then dense widths)."""
    convs = sum(isinstance(layer, nn.Conv2d) for _, layer, _ in chain[:-1])
    if model_config.type == "cnn":
        return model_config.model_copy(update={"conv_channels": widths[:convs], "dense": widths[convs:]})
    return model_config.model_copy(update={"hidden": widths})


def _width_report(model_config, chain, widths: list[int]) -> dict[str, list]:
    before = [layer.out_channels if isinstance(layer, nn.Conv2d) else layer.out_features for _, layer, _ in chain[:-1]]
    return {"layers": [name for name, _, _ in chain[:-1]], "before": before, "after": widths}


def _magnitude(model: nn.Module, model_config, sparsity: float) -> Pruned:
    """Unstructured: the smallest-magnitude `sparsity` share of each weight matrix / filter bank set to zero."""
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    masks = {}
    for name, _layer, _ in _chain(model):
        weight = state[f"{name}.weight"]
        count = int(round(weight.numel() * sparsity))
        if count == 0:
            continue
        threshold = weight.abs().reshape(-1).kthvalue(count).values
        mask = (weight.abs() > threshold).to(weight.dtype)
        state[f"{name}.weight"] = weight * mask
        masks[f"{name}.weight"] = mask
    zeros = sum(int((m == 0).sum()) for m in masks.values())
    total = sum(m.numel() for m in masks.values())
    return Pruned(model_config, state, masks, widths={"weights_zeroed": zeros, "weights": total})


def keep_masked(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """Keep pruned weights at zero while the model fine-tunes: before every forward, each masked weight is
    multiplied by its mask (the optimizer's updates to zeroed weights are undone before they are used)."""
    parameters = dict(model.named_parameters())
    by_module: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}
    for key, mask in masks.items():
        module_name = key.rsplit(".", 1)[0]
        by_module.setdefault(module_name, []).append((parameters[key], mask))
    for name, module in model.named_modules():
        if name in by_module:
            pairs = by_module[name]

            def apply(_module, _inputs, pairs=pairs):
                with torch.no_grad():
                    for parameter, mask in pairs:
                        parameter.mul_(mask.to(parameter.device))

            module.register_forward_pre_hook(apply)
