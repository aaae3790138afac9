"""Training settings chosen from the data when a table model's config leaves them unset.

With only a source and a target, a table classifier or regressor trains until validation stops
improving: an epoch budget that scales with the data (about STEP_BUDGET optimizer steps, between
MIN_EPOCHS and MAX_EPOCHS epochs), early stopping with a patience of a quarter of that budget
(between MIN_PATIENCE and MAX_PATIENCE epochs), and the best epoch's
weights restored (train.restore_best, on by default); the batch size and Adam's learning rate
follow the number of training rows. Anything the config sets is kept as written; an explicit
`train.epochs` means exactly that many epochs, with early stopping only if `train.early_stopping`
is set too. The chosen values are written into the run's resolved config.yaml. docs/defaults.md
is the one page that lists every default; keep it in step with the numbers here.
"""

from __future__ import annotations

import math
from typing import Any

from damoxing.config import EarlyStoppingConfig, TrainConfig

AUTO_KINDS = frozenset({"table"})  # images, text and sequences keep the fixed TrainConfig defaults
AUTO_TASKS = frozenset({"classification", "regression"})
ROWS_PER_STEP = 100  # batch size: about 100 optimizer steps per epoch ...
MIN_BATCH, MAX_BATCH = 32, 512  # ... as a power of two in this range
BASE_LR, BASE_BATCH, MAX_LR = 1e-3, 32, 3e-3  # Adam's lr: 1e-3 at batch 32, square-root scaled with the batch
STEP_BUDGET = 10_000  # epochs: about this many optimizer steps ...
MIN_EPOCHS, MAX_EPOCHS = 20, 300  # ... within this range (early stopping usually ends far sooner)
MIN_PATIENCE, MAX_PATIENCE = 5, 20  # early stopping: a quarter of the epoch budget, in this range


def auto_batch_size(n_rows: int) -> int:
    """A power of two near n_rows / ROWS_PER_STEP, clamped to [MIN_BATCH, MAX_BATCH]."""
    target = max(n_rows / ROWS_PER_STEP, 1.0)
    return int(min(MAX_BATCH, max(MIN_BATCH, 2 ** round(math.log2(target)))))


def auto_lr(batch_size: int) -> float:
    """Adam's learning rate for a batch size: BASE_LR at BASE_BATCH, square-root scaled, at most MAX_LR."""
    return float(f"{min(MAX_LR, BASE_LR * math.sqrt(batch_size / BASE_BATCH)):.2g}")


def auto_epochs(n_rows: int, batch_size: int, grad_accum_steps: int = 1) -> int:
    """Epochs for about STEP_BUDGET optimizer steps, clamped to [MIN_EPOCHS, MAX_EPOCHS]."""
    steps_per_epoch = max(1, math.ceil(math.ceil(n_rows / batch_size) / grad_accum_steps))
    return int(min(MAX_EPOCHS, max(MIN_EPOCHS, math.ceil(STEP_BUDGET / steps_per_epoch))))


def auto_patience(epochs: int) -> int:
    """Epochs without a better validation score before stopping: a quarter of the budget, in [MIN_PATIENCE, MAX_PATIENCE]."""
    return int(min(MAX_PATIENCE, max(MIN_PATIENCE, epochs // 4)))


def choose_train_defaults(train: TrainConfig, n_train: int, kind: str, task: str) -> tuple[TrainConfig, dict[str, Any]]:
    """`train` with its unset batch size, learning rate, epochs and early stopping chosen from
    `n_train` training rows (tables only), and {dotted key: chosen value} for the log and manifest.

    Unset means absent from the config as written (pydantic's fields_set): a value equal to the
    default but written out is the user's and is kept."""
    if kind not in AUTO_KINDS or task not in AUTO_TASKS:
        return train, {}
    explicit, chosen = train.model_fields_set, {}
    updates: dict[str, Any] = {}
    if "batch_size" not in explicit:
        updates["batch_size"] = chosen["batch_size"] = auto_batch_size(n_train)
    batch_size = updates.get("batch_size", train.batch_size)
    optimizer = train.optimizer
    if "lr" not in optimizer.model_fields_set and optimizer.name in ("adam", "adamw"):
        chosen["optimizer.lr"] = auto_lr(batch_size)
        updates["optimizer"] = optimizer.model_copy(update={"lr": chosen["optimizer.lr"]})
    if "epochs" not in explicit:
        updates["epochs"] = chosen["epochs"] = auto_epochs(n_train, batch_size, train.grad_accum_steps)
        if "early_stopping" not in explicit:
            chosen["early_stopping.patience"] = auto_patience(updates["epochs"])
            updates["early_stopping"] = EarlyStoppingConfig(patience=chosen["early_stopping.patience"])
    return (train.model_copy(update=updates) if updates else train), chosen


def describe_chosen(chosen: dict[str, Any], n_train: int) -> str:
    """The log line saying which settings were chosen automatically."""
    parts = [f"{key} {value}" for key, value in chosen.items()]
    return (f"train settings chosen automatically for {n_train:,} training rows: {', '.join(parts)} "
            "(set them under train: to fix them; docs/defaults.md explains each)")
