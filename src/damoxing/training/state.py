"""What the training loop carries from step to step, and across a checkpoint.

`LoopState` is the loop's memory and the checkpoint's format at once: where the loop is (epoch,
micro-batch, step), what it has measured (history, samples seen, seconds), the epoch's
permutation and the best epoch's weights. `to_checkpoint()` turns it into tensors + JSON and
`load_checkpoint()` reads both back; nothing else saves or restores the loop's state (the model,
optimizers and random generators are captured by training/checkpoint.py).

Three small parts own a piece of it each, with a state_dict()/load_state_dict() pair:

    LossWindow     the training losses of the current log interval, kept on the device and read
                   with one host sync per interval (all-reduced across processes, checked for
                   NaN/inf, folded into the epoch's sums)
    EarlyStopping  the best score of the monitored metric, its epoch, the epochs since; whether to stop
    PlateauScale   reduce-on-plateau's learning-rate multiplier (training/optim.py)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import torch

from damoxing.training import distributed as dist
from damoxing.training.checkpoint import Checkpoint, CheckpointError
from damoxing.training.optim import PlateauScale

LOOP_VERSION = 2  # the layout of meta["loop"]; checkpoints written before LoopState have no "version" (1)


class Diverged(Exception):
    """A training loss became NaN or infinite; `step` is the optimizer step (1-based) that produced it."""

    def __init__(self, epoch: int, step: int, value: float):
        super().__init__(f"loss {value} at step {step} (epoch {epoch})")
        self.epoch, self.step, self.value = epoch, step, value


class LossWindow:
    """Training losses per micro-batch, kept on the device until the log interval.

    A row is one micro-batch's loss: a device scalar from the standard step, or a vector (loss
    first, then the other parts) from a model that owns its update (a GAN's d_loss and g_loss).
    `read()` is the interval's one host sync; it also sums the rows into the epoch's size-weighted
    totals, which `epoch_means()` turns into the history's train_loss (and train_<part>).
    """

    def __init__(self, accum: int = 1, distributed: bool = False):
        self.accum, self.distributed = accum, distributed
        self.part_names: Optional[list[str]] = None  # known at the first row: ["loss"] or "loss" + a model's parts
        self.rows: list[torch.Tensor] = []  # device scalars or (P,) vectors, not read yet
        self.sizes: list[int] = []  # samples in each row's micro-batch
        self.sums: Optional[np.ndarray] = None  # (P,) float64: this epoch's size-weighted loss sums so far
        self.count = 0  # samples summed into `sums`

    def add(self, losses: dict[str, torch.Tensor], size: int) -> None:
        """One micro-batch's detached losses ({"loss": ...} and any other parts) and its row count."""
        if self.part_names is None:
            self.part_names = ["loss"] + [k for k in losses if k != "loss"]
        if len(self.part_names) == 1:
            self.rows.append(losses["loss"])  # a scalar; read() makes it a (1,) row
        else:
            self.rows.append(torch.stack([losses[k].float() for k in self.part_names]))
        self.sizes.append(size)

    def read(self, step: int, epoch: int) -> float:
        """Fold the unread rows into the epoch's sums: the one host sync of a log interval.

        With several processes each row becomes the mean over every process's rows of that
        micro-batch, so every process holds the same numbers. Returns the epoch's mean loss so far.
        Raises Diverged naming the optimizer step of the first non-finite loss."""
        losses = torch.stack(self.rows).reshape(len(self.rows), -1).float()  # (W, P)
        if self.distributed:
            sizes = torch.tensor(self.sizes, dtype=losses.dtype, device=losses.device)[:, None]
            packed = dist.all_reduce_sum(torch.cat([losses * sizes, sizes], dim=1))
            losses = packed[:, :-1] / packed[:, -1:]
        losses = losses.cpu().double().numpy()  # numpy from here: a few small arrays, no per-op dispatch
        bad = ~np.isfinite(losses).all(axis=1)
        if bad.any():
            first = int(bad.nonzero()[0][0])
            bad_step = step - math.ceil(len(self.rows) / self.accum) + first // self.accum + 1
            raise Diverged(epoch, bad_step, float(losses[first][~np.isfinite(losses[first])][0]))
        sizes = np.asarray(self.sizes, dtype=np.float64)
        window_sums = (losses * sizes[:, None]).sum(0)  # (P,)
        self.sums = window_sums if self.sums is None else self.sums + window_sums
        self.count += int(sizes.sum())
        self.rows.clear()
        self.sizes.clear()
        return float(self.sums[0]) / self.count

    def epoch_means(self) -> dict[str, float]:
        """{"train_loss": ..., "train_<part>": ...} over the epoch's read rows; starts the next epoch's sums."""
        names = self.part_names or ["loss"]
        sums = self.sums if self.sums is not None else np.zeros(len(names))
        means = (sums / max(1, self.count)).tolist()
        self.sums, self.count = None, 0
        return {f"train_{name}": value for name, value in zip(names, means)}

    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """(tensors, JSON): unread rows as loop/window (W,) or (W, P), the epoch's sums as loop/epoch_sums."""
        names = self.part_names or ["loss"]
        tensors = {"loop/epoch_sums": torch.from_numpy(self.sums.copy() if self.sums is not None else np.zeros(len(names)))}
        if self.rows:
            tensors["loop/window"] = torch.stack(self.rows)
        return tensors, {"part_names": self.part_names, "sizes": list(self.sizes), "count": self.count}

    def load_state_dict(self, tensors: dict[str, torch.Tensor], state: dict[str, Any], device: torch.device) -> None:
        self.part_names = state["part_names"]
        self.rows = list(tensors["loop/window"].to(device).unbind()) if "loop/window" in tensors else []
        self.sizes = list(state["sizes"])
        self.sums = tensors["loop/epoch_sums"].numpy().copy() if state["count"] else None
        self.count = int(state["count"])


class EarlyStopping:
    """The best score of the monitored metric, and whether training should stop.

    `improved(score, epoch)` records an epoch's score and says whether it beat the best by more than
    `min_delta` in `direction` ("min" or "max"); `should_stop` once `patience` epochs in a row did
    not (never when patience is None: the best epoch is still tracked, for restore_best)."""

    def __init__(self, direction: str, patience: Optional[int] = None, min_delta: float = 0.0):
        self.direction, self.patience, self.min_delta = direction, patience, min_delta
        self.best_score: Optional[float] = None
        self.best_epoch = 0
        self.epochs_without_improvement = 0

    @classmethod
    def from_config(cls, config, direction: str) -> "EarlyStopping":
        """From train.early_stopping (None: track the best epoch, never stop)."""
        return cls(direction, config.patience, config.min_delta) if config is not None else cls(direction)

    def improved(self, score: float, epoch: int) -> bool:
        best = self.best_score
        better = best is None or (score < best - self.min_delta if self.direction == "min" else score > best + self.min_delta)
        if better:
            self.best_score, self.best_epoch, self.epochs_without_improvement = score, epoch, 0
        else:
            self.epochs_without_improvement += 1
        return better

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.epochs_without_improvement >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {"best_score": self.best_score, "best_epoch": self.best_epoch, "epochs_without_improvement": self.epochs_without_improvement}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_score, self.best_epoch = state["best_score"], state["best_epoch"]
        self.epochs_without_improvement = state["epochs_without_improvement"]


@dataclass
class LoopState:
    """Everything the loop must carry to the next step and through a checkpoint.

    `epoch` and `micro` say where a run continues: at `epoch`, after `micro` of its micro-batches
    (0: at its start). They are where the loop started, and are set whenever a checkpoint is
    written; `step` and `samples_seen` count as it goes. `order` is the permutation of the epoch
    under way; `best_weights` the best epoch's weights so far (when restore_best); `elapsed` the
    training seconds before this session, or up to the last checkpoint."""

    early: EarlyStopping
    plateau: PlateauScale
    losses: LossWindow
    epoch: int = 1
    micro: int = 0
    step: int = 0
    samples_seen: int = 0
    elapsed: float = 0.0
    history: list[dict] = field(default_factory=list)
    order: Optional[torch.Tensor] = None
    best_weights: Optional[dict[str, torch.Tensor]] = None

    def to_checkpoint(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """(tensors, JSON for meta["loop"]): best/<name>, data/order, loop/window, loop/epoch_sums + the rest."""
        tensors, losses = self.losses.state_dict()
        if self.best_weights is not None:
            tensors.update({f"best/{k}": v for k, v in self.best_weights.items()})
        if self.order is not None:
            tensors["data/order"] = self.order
        meta = {"version": LOOP_VERSION, "epoch": self.epoch, "micro": self.micro, "step": self.step,
                "samples_seen": self.samples_seen, "elapsed": self.elapsed, "history": self.history,
                "early": self.early.state_dict(), "plateau": self.plateau.state_dict(), "losses": losses}
        return tensors, meta

    def load_checkpoint(self, checkpoint: Checkpoint, device: torch.device, order_device: torch.device) -> None:
        """Continue from `checkpoint` (this version's, or one written before LoopState existed)."""
        loop = checkpoint.meta.get("loop")
        version = loop.get("version", 1) if isinstance(loop, dict) else None
        if version not in (1, LOOP_VERSION):
            raise CheckpointError(f"The checkpoint '{checkpoint.path}' holds the training loop's state in a layout this damoxing "
                                  f"does not know (version {version!r}; this damoxing reads 1 and {LOOP_VERSION}). "
                                  "It cannot be resumed; start the run again without --resume.")
        try:
            loop = upgrade_version_1(loop) if version == 1 else loop
            self.epoch, self.micro, self.step = int(loop["epoch"]), int(loop["micro"]), int(loop["step"])
            self.samples_seen, self.elapsed, self.history = int(loop["samples_seen"]), float(loop["elapsed"]), list(loop["history"])
            self.early.load_state_dict(loop["early"])
            self.plateau.load_state_dict(loop["plateau"])
            self.losses.load_state_dict(checkpoint.tensors, loop["losses"], device)
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"The checkpoint '{checkpoint.path}' is incomplete: the training loop's state lacks or garbles "
                                  f"{e}. It cannot be resumed; start the run again without --resume.") from None
        tensors = checkpoint.tensors
        self.order = tensors["data/order"].to(order_device) if "data/order" in tensors else None
        self.best_weights = checkpoint.group("best") or None


def upgrade_version_1(loop: dict[str, Any]) -> dict[str, Any]:
    """meta["loop"] as written before LoopState (one flat dict, no "version") in today's layout;
    the tensors (best/, data/order, loop/window, loop/epoch_sums) kept their names."""
    return {
        **{k: loop[k] for k in ("epoch", "micro", "step", "samples_seen", "elapsed", "history")},
        "early": {k: loop[k] for k in ("best_score", "best_epoch", "epochs_without_improvement")},
        "plateau": loop["plateau"],
        "losses": {"part_names": loop["part_names"], "sizes": loop["window_sizes"], "count": loop["epoch_count"]},
    }
