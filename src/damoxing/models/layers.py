"""Small pieces shared by several model families."""

from __future__ import annotations

from typing import Optional

from torch import nn

from damoxing.core.errors import ConfigError

ACTIVATIONS = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "silu": nn.SiLU,
    "leaky_relu": nn.LeakyReLU,
}


def dense_stack(in_features: int, hidden: list[int], activation: str, dropout: float, batch_norm: bool) -> nn.Sequential:
    """Linear -> [BatchNorm] -> activation -> [Dropout] for each hidden width."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers.append(nn.Linear(in_features, width))
        if batch_norm:
            layers.append(nn.BatchNorm1d(width))
        layers.append(ACTIVATIONS[activation]())
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        in_features = width
    return nn.Sequential(*layers)


def choose_architecture(architecture: str, input_shape: tuple[int, ...], conv_channels: Optional[list[int]]) -> str:
    """'conv' for images (C, H, W) and 'mlp' otherwise when `auto`; a clear error for conv on non-images.

    Shared by the generative families (vae, gan), which take both images and table rows.
    """
    if architecture == "auto":
        architecture = "conv" if len(input_shape) == 3 else "mlp"
    if architecture == "conv" and len(input_shape) != 3:
        raise ConfigError(f"model.architecture 'conv' needs images (C, H, W); this data has shape {tuple(input_shape)}. Use architecture: mlp (or auto).")
    if architecture == "conv" and not conv_channels:
        raise ConfigError("model.conv_channels must list at least one channel count for architecture 'conv', e.g. [32, 64].")
    return architecture
