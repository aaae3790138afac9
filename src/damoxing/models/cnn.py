"""Convolutional network for images: conv blocks, then dense layers, then the head.

Seed 000's CNN is `conv_channels: [32, 64], pool_every: 1, dense: [128]` (conv-pool-conv-pool-FC:
421,642 parameters on 28x28x1 input), seed 001's Keras CNN is `conv_channels: [32, 64, 64],
padding: valid, dense: [64]` with a pool after each of the first two convs (`pool_every: 1`,
`pool_last: false`: 93,322 parameters on 28x28x1). `resize_to` resizes the input first (Keras's
`Resizing` layer), so a 28x28 architecture runs on other image sizes (8x8 digits) unchanged. The
flatten size is computed by running a dummy input through the conv blocks, never hard-coded.
"""

from __future__ import annotations

from typing import ClassVar, Literal, Optional

import torch
from pydantic import Field
from torch import nn

from damoxing.config import ModelConfigBase, Widths
from damoxing.core.errors import ConfigError
from damoxing.models.export_view import ExportView
from damoxing.models.layers import ACTIVATIONS, dense_stack
from damoxing.models.registry import MODELS


class CNNConfig(ModelConfigBase):
    type: Literal["cnn"] = "cnn"
    conv_channels: Optional[Widths] = Field(None, description="output channels of each conv layer")
    kernel_size: int = Field(3, ge=1)
    padding: Literal["same", "valid"] = "same"
    resize_to: Optional[int] = Field(None, ge=1, description="resize input images to N x N (bilinear) before the first conv; default: as they are")
    pool: Literal["max", "avg", "none"] = "max"
    pool_every: int = Field(1, ge=1, description="a 2x2 pool after every N conv layers")
    pool_last: bool = Field(True, description="pool after the last conv block too")
    batch_norm: bool = False
    activation: Literal["relu", "gelu", "tanh", "sigmoid", "silu", "leaky_relu"] = "relu"
    dense: Optional[Widths] = Field(None, description="dense layer widths after flattening")
    dropout: Optional[float] = Field(None, ge=0, lt=1)
    PRESETS: ClassVar[dict] = {
        "tiny": {"conv_channels": [8], "dense": [16], "dropout": 0.0},
        "small": {"conv_channels": [32, 64], "dense": [128], "dropout": 0.0},
        "base": {"conv_channels": [64, 128, 256], "dense": [256], "dropout": 0.2},
    }


@MODELS.register("cnn")
class CNN(nn.Module):
    config_class = CNNConfig
    input_kinds = frozenset({"image"})

    def __init__(self, input_shape: tuple[int, int, int], n_outputs: int, config: CNNConfig):
        super().__init__()
        in_channels, height, width = input_shape
        layers: list[nn.Module] = []
        if config.resize_to is not None:  # parameter-free: the convs then see resize_to x resize_to maps
            layers.append(nn.Upsample(size=(config.resize_to, config.resize_to), mode="bilinear", align_corners=False))
        n_conv = len(config.conv_channels)
        for i, out_channels in enumerate(config.conv_channels):
            layers.append(nn.Conv2d(in_channels, out_channels, config.kernel_size, padding=config.padding))
            if config.batch_norm:
                layers.append(nn.BatchNorm2d(out_channels))
            layers.append(ACTIVATIONS[config.activation]())
            is_last = i == n_conv - 1
            if config.pool != "none" and (i + 1) % config.pool_every == 0 and (config.pool_last or not is_last):
                layers.append(nn.MaxPool2d(2) if config.pool == "max" else nn.AvgPool2d(2))
            in_channels = out_channels
        self.features = nn.Sequential(*layers)
        try:
            with torch.no_grad():  # the flatten size, from the real input shape
                flat = self.features(torch.zeros(1, *input_shape)).numel()
        except RuntimeError as e:
            raise ConfigError(
                f"The conv stack ({config.conv_channels}, kernel {config.kernel_size}, padding {config.padding}) shrinks the "
                f"{height}x{width} input to nothing ({str(e).splitlines()[0]}). Use padding: same, fewer conv layers, "
                "a larger pool_every, or resize_to (e.g. 28) to enlarge the images first."
            ) from None
        self.dense = dense_stack(flat, config.dense, config.activation, config.dropout, False)
        self.head = nn.Linear(config.dense[-1] if config.dense else flat, n_outputs)

    @classmethod
    def from_config(cls, config: CNNConfig, schema) -> "CNN":
        return cls(tuple(schema.input_shape), schema.n_outputs, config)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).flatten(1)  # (B, C, H, W) -> (B, C' * H' * W')

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dense(self.forward_features(x)))  # (B, n_outputs)

    def export_view(self) -> ExportView:
        return ExportView(self, "the convolutional network")
