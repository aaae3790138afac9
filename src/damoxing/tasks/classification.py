"""Classification: cross-entropy on class ids; accuracy each epoch; probabilities for metrics."""

from __future__ import annotations

import numpy as np
import torch

from damoxing.evaluation import metrics as M
from damoxing.tasks.base import TASKS, Task


@TASKS.register("classification")
class Classification(Task):
    name = "classification"
    headline = "accuracy"
    epoch_metric_names = ("accuracy",)
    default_loss = "cross_entropy"
    allowed_losses = ("cross_entropy",)

    def epoch_metrics(self, outputs, y):
        return {"accuracy": (outputs.argmax(-1) == y).float().mean()}

    def predictions(self, outputs):
        return torch.softmax(outputs.float(), dim=-1).cpu().numpy()  # (N, K) probabilities

    def metrics(self, y_true: np.ndarray, pred: np.ndarray, class_names=None) -> dict:
        return M.classification_metrics(y_true, pred, class_names)

    def baseline(self, y_train: np.ndarray, y_true: np.ndarray, n_outputs: int, class_names=None) -> dict:
        return M.baseline_classification(y_train, y_true, n_outputs, class_names)

    def prediction_arrays(self, y_true, pred):
        """y_true (class ids), proba (N, K) and pred (argmax) for the run folder."""
        pred = np.asarray(pred)
        return {"y_true": np.asarray(y_true).astype(np.int64), "proba": pred.astype(np.float32), "pred": pred.argmax(axis=1).astype(np.int64)}
