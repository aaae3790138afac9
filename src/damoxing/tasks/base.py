"""The Task base class and the task registry: what a model is trained to do, i.e. its loss, its
per-epoch metrics and its evaluation. A new task registers with `@TASKS.register(name)`.

Every task has the same surface:
    headline                      the one metric a run is summarised by
    validation_metric_names(...)  what `validation_metrics` computes each epoch (so `train.monitor`
                                  is checked against it before any work)
    loss(model, x, y)             one batch's mean loss, for the training loop
    validation_metrics(...)       the per-epoch numbers on the validation split
    evaluate(model, data, ...)    metrics.json: every split's metrics, the baseline's, intervals;
                                  used at the end of training and by `damoxing evaluate RUN` alike
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F

from damoxing.config import TrainConfig
from damoxing.core.errors import ConfigError, choices_text, did_you_mean
from damoxing.core.registry import Registry

TASKS: Registry = Registry("task")

LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "cross_entropy": F.cross_entropy,
    "mse": F.mse_loss,
    "mae": F.l1_loss,
    "huber": F.huber_loss,
}

SPLITS = ("val", "test")  # the splits evaluation reports, in metrics.json's order


@dataclass(frozen=True)
class EvaluationSettings:
    """How a run is evaluated: its config's `evaluate:` section, its seed and its evaluation batch size.

    Re-evaluating a saved run reads them back from its config.yaml, so the intervals come out the same."""

    bootstrap: int = 1000  # resamples for the test split's intervals; 0: none
    confidence: float = 0.95  # coverage of the intervals
    calibration_bins: int = 10
    seed: int = 0  # seeds the bootstrap (and the samples of a generative model)
    batch_size: int = 1024

    @classmethod
    def from_config(cls, config) -> "EvaluationSettings":
        e = config.evaluate
        return cls(bootstrap=e.bootstrap, confidence=e.confidence, calibration_bins=e.calibration_bins,
                   seed=config.train.seed, batch_size=config.train.eval_batch_size)


class Task:
    """Base task: `loss(model, x, y)` for training, metrics for evaluation (supervised tasks: metrics
    of the model's predictions beside a do-nothing baseline, bootstrap intervals on test)."""

    name = "task"
    headline = "loss"
    epoch_metric_names: tuple[str, ...] = ()  # what epoch_metrics returns, besides the loss
    default_loss = "mse"
    allowed_losses: tuple[str, ...] = ("mse",)

    def __init__(self, train_config: TrainConfig):
        loss = self.default_loss if train_config.loss == "auto" else train_config.loss
        if loss not in self.allowed_losses:
            raise ConfigError(f"train.loss '{loss}' does not fit task '{self.name}'. Valid losses for it: {', '.join(self.allowed_losses)} (or auto).")
        self.loss_name = loss
        self.loss_fn = LOSSES[loss]

    # -- what the task computes, declared ----------------------------------------------------
    @classmethod
    def validation_metric_names(cls, model_type: Optional[str] = None) -> tuple[str, ...]:
        """The names `validation_metrics` returns for a model of `model_type` (None: any family)."""
        return ("loss", *cls.epoch_metric_names)

    @classmethod
    def monitors(cls, model_type: Optional[str] = None) -> list[str]:
        """The values `train.monitor` may name for this task: val_<validation metric>, and train_loss."""
        return [f"val_{name}" for name in cls.validation_metric_names(model_type)] + ["train_loss"]

    # -- training ------------------------------------------------------------------------------
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

    # -- evaluation ----------------------------------------------------------------------------
    def predictions(self, outputs: torch.Tensor) -> np.ndarray:
        """Model outputs -> what metrics take (probabilities, values)."""
        return outputs.float().cpu().numpy()

    def decode(self, pred: np.ndarray, preprocessing) -> np.ndarray:
        """Predictions in the units metrics compare them in (regression: the target's own units)."""
        return pred

    def evaluate(self, model, data, settings: EvaluationSettings, autocast, splits=SPLITS,
                 predictions: Optional[dict] = None, decide: Optional[Callable[[str, np.ndarray], np.ndarray]] = None) -> dict[str, Any]:
        """metrics.json of a supervised run: for each split that has rows and targets its metrics
        ({split}), the baseline's (baseline.{split}, when the training targets are known), and for
        test the bootstrap intervals ({split}_ci, at coverage {split}_ci_level) and calibration.

        `data`: PreparedData (or the same fields: x, y_original, preprocessing). If `predictions` is
        a dict, the test split's targets and predictions are put in it as plain arrays. `decide`:
        (split, predictions) -> predictions, a run's post-processing applied before scoring (a mitigated
        run's group thresholds, inference/postprocess.py)."""
        from damoxing.evaluation.score import evaluate_predictions
        from damoxing.models.runtime import model_outputs

        device = next(model.parameters()).device
        train_targets = data.y_original.get("train")
        metrics: dict[str, Any] = {}
        for split in splits:
            if data.y_original.get(split) is None or len(data.x[split]) == 0:
                continue
            x = torch.as_tensor(data.x[split], device=device)
            pred = self.decode(self.predictions(model_outputs(model, x, settings.batch_size, autocast)), data.preprocessing)
            if decide is not None:
                pred = decide(split, pred)
            y_true = data.y_original[split]
            n_resamples = settings.bootstrap if split == "test" else 0
            result = evaluate_predictions(self, y_true, pred, data.preprocessing.schema, train_targets, n_resamples=n_resamples,
                                          seed=settings.seed, confidence=settings.confidence, calibration_bins=settings.calibration_bins)
            metrics[split] = result["metrics"]
            if "baseline" in result:
                metrics.setdefault("baseline", {})[split] = result["baseline"]
            if "ci" in result:
                metrics[f"{split}_ci"], metrics[f"{split}_ci_level"] = result["ci"], settings.confidence
            if split == "test" and "calibration" in result:
                metrics["test_calibration"] = result["calibration"]
            if split == "test" and predictions is not None:
                predictions["test"] = self.prediction_arrays(y_true, pred)
        return metrics

    def prediction_arrays(self, y_true: np.ndarray, pred: np.ndarray) -> dict[str, np.ndarray]:
        """Targets and predictions as plain numeric arrays for the run folder (predictions_test.npz)."""
        return {"y_true": np.asarray(y_true, dtype=np.float64), "y_pred": np.asarray(pred, dtype=np.float64)}


def one_split(metrics: dict, split: str) -> dict[str, Any]:
    """The entries of metrics.json about one split: {"split", "metrics", and where present "baseline",
    "reference", "ci", "ci_level" (the intervals' coverage), "calibration"}."""
    out: dict[str, Any] = {"split": split, "metrics": metrics[split]}
    for key in ("baseline", "reference"):
        if split in metrics.get(key, {}):
            out[key] = metrics[key][split]
    for suffix in ("ci", "ci_level", "calibration"):
        if f"{split}_{suffix}" in metrics:
            out[suffix] = metrics[f"{split}_{suffix}"]
    return out


def headline_metric(task: str) -> str:
    """The one metric a run of `task` is summarised by (the task's own `headline`; loss for an unknown task)."""
    return TASKS.get(task).headline if task in TASKS else "loss"


def known_task(config) -> Optional[str]:
    """The task a config fixes before any data is read: the model family's own (vae, gan: generation),
    else `task:`; None when the data decides."""
    from damoxing.models import family_task

    return family_task(config.model.type) or config.task


def check_monitor(monitor: str, task: str, model_type: Optional[str] = None) -> None:
    """A ConfigError unless `train.monitor` names something task `task` computes (with a `model_type` model)."""
    valid = TASKS.get(task).monitors(model_type)
    if monitor not in valid:
        raise ConfigError(f"train.monitor is '{monitor}', which task '{task}' does not compute.{did_you_mean(monitor, valid)} "
                          f"Valid monitors for {task}: {choices_text(valid)}.")


def all_monitors() -> list[str]:
    """Every value `train.monitor` may take for some task and model family (the config's Literal)."""
    names: list[str] = []
    for _, task in TASKS.items():
        names += [m for m in task.monitors() if m not in names]
    return names
