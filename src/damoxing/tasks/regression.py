"""Regression: mse/mae/huber on (optionally standardized) targets; mse and r2 each epoch."""

from __future__ import annotations

import torch.nn.functional as F

from damoxing.evaluation import metrics as M
from damoxing.tasks.base import TASKS, Task


@TASKS.register("regression")
class Regression(Task):
    name = "regression"
    headline = "r2"
    epoch_metric_names = ("mse", "r2")
    default_loss = "mse"
    allowed_losses = ("mse", "mae", "huber")

    def loss_from_outputs(self, outputs, y):
        return self.loss_fn(outputs.reshape(y.shape).float(), y)

    def epoch_metrics(self, outputs, y):
        outputs = outputs.reshape(y.shape).float()
        mse = F.mse_loss(outputs, y)
        return {"mse": mse, "r2": 1 - mse / y.var(unbiased=False).clamp_min(1e-12)}

    def decode(self, pred, preprocessing):
        """Model outputs in training units -> values in the target's own units (the target scaler undone)."""
        return preprocessing.decode_regression(pred)

    def metrics(self, y_true, pred, class_names=None) -> dict:
        return M.regression_metrics(y_true, pred)

    def baseline(self, y_train, y_true, n_outputs, class_names=None) -> dict:
        return M.baseline_regression(y_train, y_true)
