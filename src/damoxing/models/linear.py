"""Linear models: linear regression, logistic (binary) and softmax (multi-class) regression.

One affine map from features to outputs; the task's loss makes it what it is (MSE -> linear
regression, cross-entropy -> logistic/softmax regression).
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
from torch import nn

from damoxing.config import ModelConfigBase
from damoxing.models.export_view import ExportView
from damoxing.models.registry import MODELS


class LinearConfig(ModelConfigBase):
    type: Literal["linear"] = "linear"
    PRESETS: ClassVar[dict] = {}


@MODELS.register("linear")
class LinearModel(nn.Module):
    config_class = LinearConfig
    input_kinds = frozenset({"table", "image"})

    def __init__(self, in_features: int, n_outputs: int):
        super().__init__()
        self.linear = nn.Linear(in_features, n_outputs)

    @classmethod
    def from_config(cls, config: LinearConfig, schema) -> "LinearModel":
        return cls(math.prod(schema.input_shape), schema.n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))  # (B, F) -> (B, n_outputs)

    def export_view(self) -> ExportView:
        return ExportView(self, "the linear model")
