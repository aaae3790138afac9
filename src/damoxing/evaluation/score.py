"""Evaluate a model's predictions on one split: its metrics, the trivial baseline's, and intervals."""

from __future__ import annotations

from typing import Optional

import numpy as np

from damoxing.evaluation import metrics as M


def evaluate_predictions(task, y_true: np.ndarray, pred: np.ndarray, schema, train_targets: Optional[np.ndarray],
                         n_resamples: int = 1000, seed: int = 0, confidence: float = 0.95,
                         calibration_bins: int = M.ECE_BINS) -> dict:
    """{"metrics": ..., "baseline": ... (if train targets are known), "ci": bootstrap intervals,
    "calibration": reliability-diagram bins (classification)}.

    y_true/pred: class ids and (N, K) probabilities for classification; values in target units for regression.
    """
    out: dict = {"metrics": task.metrics(y_true, pred, schema.class_names)}
    if train_targets is not None:
        out["baseline"] = task.baseline(train_targets, y_true, schema.n_outputs, schema.class_names)
    if len(y_true) >= 2 and n_resamples > 0:
        out["ci"] = M.bootstrap_ci(task.name, y_true, pred, n_resamples=n_resamples, seed=seed, confidence=confidence)
    if task.name == "classification":
        out["calibration"] = M.calibration_curve(y_true, pred, n_bins=calibration_bins)
    return out
