"""The training loop: one function, read top to bottom.

Data lives on the training device and is shuffled and indexed there (no per-sample Python, no
DataLoader for in-memory data). The loop does no host sync per step: batch losses are kept as
device tensors and read once per `log_every` steps, which is also where a NaN/inf loss is caught
and named by its exact step.

One extension point, for a model that owns its update (a GAN's two players, each with its own
optimizer): if the model defines

    configure_optimizers(config: TrainConfig) -> dict[str, torch.optim.Optimizer]
    train_step(x, optimizers, autocast) -> dict[str, torch.Tensor]   # {"loss": ..., other parts}

the loop builds the optimizers with the first, and for each batch calls the second instead of its
own forward/backward/step. The loop still shuffles and batches, sets every optimizer's learning
rate from the schedule before the step, counts steps, catches NaN/inf, and keeps the returned
device scalars until the log interval (no host sync per step). "loss" becomes `train_loss` in the
history and every other part `train_<name>` (e.g. train_d_loss, train_g_loss); validation is
still the task's.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

from damoxing.config import TrainConfig
from damoxing.errors import ConfigError
from damoxing.train.optim import SCHEDULES, PlateauScale, build_optimizer


@dataclass
class Split:
    """One split of prepared data, as tensors on the training device."""

    x: torch.Tensor  # (N, ...) model inputs
    y: Optional[torch.Tensor]  # (N,) class ids / (N,) or (N, T) targets / None for self-supervised tasks

    def __len__(self) -> int:
        return self.x.shape[0]

    def to(self, device) -> "Split":
        return Split(self.x.to(device), None if self.y is None else self.y.to(device))


@dataclass
class FitResult:
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    best_score: Optional[float] = None
    monitor: str = "val_loss"
    stopped: str = "completed"  # completed | early_stopping | diverged | interrupted
    message: str = ""
    steps: int = 0
    samples_seen: int = 0
    train_seconds: float = 0.0


def pick_device(name: str) -> torch.device:
    """auto: cuda > mps > cpu; otherwise the device named, if present."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device is '{name}' but no CUDA device is available here. Use train.device: auto (or cpu).")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("train.device is 'mps' but MPS is not available here. Use train.device: auto (or cpu).")
    return torch.device(name)


def autocast_context(config: TrainConfig, device: torch.device):
    """bf16 autocast on CUDA by default (precision auto), on CPU only when asked (precision bf16)."""
    use_bf16 = config.precision == "bf16" or (config.precision == "auto" and device.type == "cuda")
    if use_bf16 and device.type in ("cuda", "cpu"):
        return lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


def monitor_direction(monitor: str, mode: str) -> str:
    if mode != "auto":
        return mode
    from damoxing.evaluate.metrics import metric_direction

    name = monitor.removeprefix("val_").removeprefix("train_")
    return metric_direction(name)


def penalty(model: torch.nn.Module, l1: float, l2: float) -> torch.Tensor:
    """L1/L2 penalty on weight matrices (not biases or norm scales)."""
    weights = [p for p in model.parameters() if p.requires_grad and p.dim() > 1]
    total = torch.zeros((), device=weights[0].device)
    for w in weights:
        if l1:
            total = total + l1 * w.abs().sum()
        if l2:
            total = total + l2 * w.pow(2).sum()
    return total


@torch.no_grad()
def model_outputs(model: torch.nn.Module, x: torch.Tensor, batch_size: int, autocast=contextlib.nullcontext) -> torch.Tensor:
    """Outputs for every row of x, in eval mode, in batches; stays on x's device."""
    was_training = model.training
    model.eval()
    outs = []
    with autocast():
        for start in range(0, x.shape[0], batch_size):
            outs.append(model(x[start : start + batch_size]).float())
    model.train(was_training)
    return torch.cat(outs) if outs else torch.empty(0)


def fit(
    model: torch.nn.Module,
    train: Split,
    val: Optional[Split],
    task,
    config: TrainConfig,
    device: torch.device,
    progress=None,
    on_epoch_end: Optional[Callable[[dict], None]] = None,
) -> FitResult:
    """Train `model` on `train`, monitoring `val`; returns the history and why it stopped.

    The model ends with the best epoch's weights (by `config.monitor`) when `restore_best` is on.
    """
    torch.manual_seed(config.seed)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    model.to(device)
    train, val = train.to(device), (val.to(device) if val is not None and len(val) else None)
    owns_update = hasattr(model, "train_step")  # the extension point in the module docstring
    if owns_update:
        if config.grad_accum_steps > 1:
            raise ConfigError(f"train.grad_accum_steps must be 1 for model '{type(model).__name__}', which runs its own update steps.")
        optimizers = model.configure_optimizers(config)
    else:
        # a model may group its parameters (pretrained: a head lr, layer-wise lr decay); the schedule scales every group alike
        params = model.param_groups(config.optimizer) if hasattr(model, "param_groups") else model.parameters()
        optimizer = build_optimizer(params, config.optimizer)
        optimizers = {"model": optimizer}
    param_groups = [group for opt in optimizers.values() for group in opt.param_groups]
    base_lrs = [group["lr"] for group in param_groups]
    autocast = autocast_context(config, device)
    step_model = maybe_compile(model, config, device)

    n, batch_size, accum = len(train), config.batch_size, config.grad_accum_steps
    micro_batches = math.ceil(n / batch_size)
    steps_per_epoch = math.ceil(micro_batches / accum)
    total_steps = steps_per_epoch * config.epochs
    warmup_steps = round(config.schedule.warmup_epochs * steps_per_epoch)
    schedule = SCHEDULES.get(config.schedule.name)

    monitor = config.monitor if val is not None else "train_loss"
    direction = monitor_direction(monitor, config.monitor_mode)
    plateau = PlateauScale(config.schedule, direction)

    def set_learning_rates(step: int) -> None:
        factor = schedule(step, total_steps, warmup_steps, config.schedule, steps_per_epoch) * plateau.scale
        for group, base_lr in zip(param_groups, base_lrs):
            group["lr"] = max(base_lr * factor, config.schedule.min_lr if factor < 1 else 0.0)

    early = config.early_stopping
    result = FitResult(monitor=monitor)
    best_state = None
    start_state = {k: v.detach().clone() for k, v in model.state_dict().items()}  # the fallback if epoch 1 diverges
    epochs_without_improvement = 0
    step = 0
    part_names = ["loss"]  # what each window entry holds; a train_step model may report more parts
    started = time.perf_counter()
    bar = progress.add_task("training", total=total_steps) if progress is not None else None

    try:
        for epoch in range(1, config.epochs + 1):
            epoch_start = time.perf_counter()
            model.train()
            order = torch.randperm(n, device=device, generator=generator)
            window: list[torch.Tensor] = []  # (P,) device vectors: loss first, then parts; read once per log interval
            window_sizes: list[int] = []
            epoch_sums, epoch_count = torch.zeros(len(part_names), dtype=torch.float64), 0
            for micro, start in enumerate(range(0, n, batch_size)):
                index = order[start : start + batch_size]
                xb = train.x[index]
                yb = train.y[index] if train.y is not None else None
                last_micro = micro == micro_batches - 1
                if owns_update:  # the model runs its own forward/backward/step on its own optimizers
                    set_learning_rates(step)
                    parts = model.train_step(xb, optimizers, autocast)
                    if step == 0:
                        part_names = ["loss"] + [k for k in parts if k != "loss"]
                        epoch_sums = torch.zeros(len(part_names), dtype=torch.float64)
                    window.append(torch.stack([parts[k].detach().float() for k in part_names]))
                    window_sizes.append(index.shape[0])
                else:
                    with autocast():
                        loss, _ = task.loss(step_model, xb, yb)
                        if config.l1 or config.l2:
                            loss = loss + penalty(model, config.l1, config.l2)
                    (loss / accum if accum > 1 else loss).backward()
                    window.append(loss.detach().float().reshape(1))
                    window_sizes.append(index.shape[0])
                    if (micro + 1) % accum and not last_micro:
                        continue
                    set_learning_rates(step)
                    if config.clip_grad_norm:
                        torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip_grad_norm)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                step += 1
                result.samples_seen += sum(window_sizes[-accum:]) if accum > 1 else index.shape[0]
                if step % config.log_every == 0 or last_micro:
                    losses = torch.stack(window).double().cpu()  # (W, P); the one host sync of this interval
                    bad = ~torch.isfinite(losses).all(dim=1)
                    if bad.any():
                        first = int(bad.nonzero()[0, 0])
                        bad_step = step - math.ceil(len(window) / accum) + first // accum + 1
                        value = losses[first][~torch.isfinite(losses[first])][0]
                        raise _Diverged(epoch, bad_step, float(value))
                    sizes = torch.tensor(window_sizes, dtype=torch.float64)
                    epoch_sums += (losses * sizes[:, None]).sum(0)
                    epoch_count += int(sizes.sum())
                    window.clear()
                    window_sizes.clear()
                    if bar is not None:
                        progress.update(bar, completed=step, description=f"epoch {epoch}/{config.epochs} loss {float(epoch_sums[0]) / epoch_count:.4f}")

            means = (epoch_sums / max(1, epoch_count)).tolist()
            record = {"epoch": epoch, "train_loss": means[0], **{f"train_{k}": v for k, v in zip(part_names[1:], means[1:])},
                      "lr": param_groups[0]["lr"]}
            if val is not None:
                record.update(validate(model, val, task, config, autocast))
            record["seconds"] = time.perf_counter() - epoch_start
            result.history.append(record)

            score = record.get(monitor)
            if score is None:
                valid = sorted(k for k in record if k.startswith("val_"))
                raise ConfigError(f"train.monitor '{monitor}' is not computed for this task. Valid monitors: {', '.join(valid) or 'train_loss'}.")
            if config.schedule.name == "reduce_on_plateau":  # other schedules never cut the lr on a plateau
                plateau.update(score)
            min_delta = early.min_delta if early else 0.0
            improved = result.best_score is None or (
                score < result.best_score - min_delta if direction == "min" else score > result.best_score + min_delta
            )
            if improved:
                result.best_score, result.best_epoch = score, epoch
                epochs_without_improvement = 0
                if config.restore_best:
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                epochs_without_improvement += 1
            if bar is not None:
                progress.update(bar, completed=step, description=f"epoch {epoch}/{config.epochs} loss {record['train_loss']:.4f} {monitor} {score:.4f}")
            if on_epoch_end is not None:
                on_epoch_end(record)
            if early and epochs_without_improvement >= early.patience:
                result.stopped = "early_stopping"
                result.message = f"stopped early at epoch {epoch}: {monitor} did not improve for {early.patience} epochs"
                break
    except _Diverged as d:
        result.stopped = "diverged"
        result.message = (
            f"The training loss became {d.value} at step {d.step} (epoch {d.epoch}). "
            "Try a lower train.optimizer.lr, gradient clipping (train.clip_grad_norm: 1.0), "
            "or check the data for extreme values."
        )
    except KeyboardInterrupt:
        result.stopped = "interrupted"
        result.message = f"interrupted by the user after {len(result.history)} complete epochs"

    if result.stopped == "diverged" and best_state is None:
        best_state = start_state  # never leave NaN weights behind
    if best_state is not None:
        model.load_state_dict(best_state)
    result.steps = step
    result.train_seconds = time.perf_counter() - started
    return result


class _Diverged(Exception):
    def __init__(self, epoch: int, step: int, value: float):
        self.epoch, self.step, self.value = epoch, step, value


def validate(model, val: Split, task, config: TrainConfig, autocast) -> dict[str, float]:
    """val_loss and the task's cheap metrics on the whole validation split (one host sync)."""
    metrics = task.validation_metrics(model, val.x, val.y, config.eval_batch_size, autocast)
    values = torch.stack([v.float() for v in metrics.values()]).cpu().tolist()
    return {f"val_{k}": v for k, v in zip(metrics, values)}


def maybe_compile(model: torch.nn.Module, config: TrainConfig, device: torch.device):
    """torch.compile where it pays (CUDA by default); falls back to eager if compilation fails."""
    if config.compile == "off" or (config.compile == "auto" and device.type != "cuda"):
        return model
    try:
        return torch.compile(model)
    except Exception:  # noqa: BLE001 - any compiler failure means: run eager
        return model
