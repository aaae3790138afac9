"""The Task base class and the task registry: what a model is trained to do, i.e. its loss, its
per-epoch metrics and its evaluation. A new task registers with `@TASKS.register(name)`."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from damoxing.config import TrainConfig
from damoxing.core.errors import ConfigError
from damoxing.core.registry import Registry

TASKS: Registry = Registry("task")

LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "cross_entropy": F.cross_entropy,
    "mse": F.mse_loss,
    "mae": F.l1_loss,
    "huber": F.huber_loss,
}


class Task:
    """Base task: `loss(model, x, y)` for training, metrics for evaluation."""

    name = "task"
    default_loss = "mse"
    allowed_losses: tuple[str, ...] = ("mse",)

    def __init__(self, train_config: TrainConfig):
        loss = self.default_loss if train_config.loss == "auto" else train_config.loss
        if loss not in self.allowed_losses:
            raise ConfigError(f"train.loss '{loss}' does not fit task '{self.name}'. Valid losses for it: {', '.join(self.allowed_losses)} (or auto).")
        self.loss_name = loss
        self.loss_fn = LOSSES[loss]

    def loss(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean loss of one batch and the model's outputs."""
        outputs = model(x)
        return self.loss_from_outputs(outputs, y), outputs

    def loss_from_outputs(self, outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.loss_fn(outputs, y)

    @torch.no_grad()
    def validation_metrics(self, model, x, y, batch_size: int, autocast) -> dict[str, torch.Tensor]:
        """Loss and cheap metrics over a whole split, as device scalars (the caller syncs once)."""
        from damoxing.models.runtime import model_outputs

        outputs = model_outputs(model, x, batch_size, autocast)
        return {"loss": self.loss_from_outputs(outputs, y), **self.epoch_metrics(outputs, y)}

    def epoch_metrics(self, outputs: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """Cheap metrics on device tensors, computed every epoch on the validation split."""
        return {}

    def predictions(self, outputs: torch.Tensor) -> np.ndarray:
        """Model outputs -> what metrics take (probabilities, values)."""
        return outputs.float().cpu().numpy()
