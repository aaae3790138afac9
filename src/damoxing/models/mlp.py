"""Multi-layer perceptron (seed 002's `Net`: Linear -> ReLU -> Linear), for tables or flattened images."""

from __future__ import annotations

import math
from typing import ClassVar, Literal, Optional

import torch
from pydantic import Field
from torch import nn

from damoxing.config import ModelConfigBase, Widths
from damoxing.models.export_view import ExportView
from damoxing.models.layers import dense_stack
from damoxing.models.registry import MODELS


class MLPConfig(ModelConfigBase):
    type: Literal["mlp"] = "mlp"
    hidden: Optional[Widths] = Field(None, description="hidden layer widths, e.g. [128]")
    activation: Literal["relu", "gelu", "tanh", "sigmoid", "silu", "leaky_relu"] = "relu"
    dropout: Optional[float] = Field(None, ge=0, lt=1)
    batch_norm: bool = False
    PRESETS: ClassVar[dict] = {
        "tiny": {"hidden": [16], "dropout": 0.0},
        "small": {"hidden": [128], "dropout": 0.0},
        "base": {"hidden": [512, 256], "dropout": 0.1},
    }


@MODELS.register("mlp")
class MLP(nn.Module):
    config_class = MLPConfig
    input_kinds = frozenset({"table", "image"})

    def __init__(self, in_features: int, n_outputs: int, hidden: list[int], activation: str, dropout: float, batch_norm: bool):
        super().__init__()
        self.body = dense_stack(in_features, hidden, activation, dropout, batch_norm)
        self.head = nn.Linear(hidden[-1] if hidden else in_features, n_outputs)

    @classmethod
    def from_config(cls, config: MLPConfig, schema) -> "MLP":
        return cls(math.prod(schema.input_shape), schema.n_outputs, config.hidden, config.activation, config.dropout, config.batch_norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x.flatten(1)))  # (B, F) -> (B, n_outputs)

    def export_view(self) -> ExportView:
        return ExportView(self, "the multi-layer perceptron")
