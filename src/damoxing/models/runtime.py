"""Where and how a model runs: the device, bf16 autocast, and outputs over many rows in batches."""

from __future__ import annotations

import contextlib

import torch

from damoxing.config import TrainConfig
from damoxing.core.errors import ConfigError


def pick_device(name: str) -> torch.device:
    """auto: cuda > mps > cpu; otherwise the device named, if present."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device is '{name}' but no CUDA device is available here. Use train.device: auto (or cpu).")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("train.device is 'mps' but MPS is not available here. Use train.device: auto (or cpu).")
    return torch.device(name)


def autocast_context(config: TrainConfig, device: torch.device):
    """bf16 autocast on CUDA by default (precision auto), on CPU only when asked (precision bf16)."""
    use_bf16 = config.precision == "bf16" or (config.precision == "auto" and device.type == "cuda")
    if use_bf16 and device.type in ("cuda", "cpu"):
        return lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


@torch.no_grad()
def model_outputs(model: torch.nn.Module, x: torch.Tensor, batch_size: int, autocast=contextlib.nullcontext) -> torch.Tensor:
    """Outputs for every row of x, in eval mode, in batches, on the model's device (x may be on the host)."""
    was_training = model.training
    model.eval()
    outs = []
    device = next(model.parameters(), x).device
    with autocast():
        for start in range(0, x.shape[0], batch_size):
            outs.append(model(x[start : start + batch_size].to(device, non_blocking=True)).float())
    model.train(was_training)
    return torch.cat(outs) if outs else torch.empty(0)
