"""The training loop: one function, read top to bottom.

Data that fits lives on the training device and is shuffled and indexed there (no per-sample
Python); data that does not streams through a DataLoader (data/batching.py). Either way the loop
sees an iterator of (x, y) batches on the device. It does no host sync per step: batch losses are
kept as device tensors and read once per `log_every` steps, which is also where a NaN/inf loss is
caught and named by its exact step. With several processes (torchrun) the model is wrapped in DDP
or FSDP (train/distributed.py) and each process takes its shard of the same permutation; with
`checkpoints` the loop writes resumable checkpoints and can continue from one (train/checkpoint.py).

One extension point, for a model that owns its update (a GAN's two players, each with its own
optimizer): if the model defines

    configure_optimizers(config: TrainConfig, build_optimizer) -> dict[str, torch.optim.Optimizer]
    train_step(x, optimizers, autocast) -> dict[str, torch.Tensor]   # {"loss": ..., other parts}

the loop builds the optimizers with the first, and for each batch calls the second instead of its
own forward/backward/step. The loop still shuffles and batches, sets every optimizer's learning
rate from the schedule before the step, counts steps, catches NaN/inf, and keeps the returned
device scalars until the log interval (no host sync per step). "loss" becomes `train_loss` in the
history and every other part `train_<name>` (e.g. train_d_loss, train_g_loss); validation is
still the task's.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import torch

from damoxing.config import TrainConfig
from damoxing.core.console import note, warn
from damoxing.core.errors import ConfigError
from damoxing.models.runtime import autocast_context
from damoxing.training import distributed as dist
from damoxing.training.batches import choose_path, fits_on_device, make_batches
from damoxing.training.checkpoint import Checkpointer, capture_state, restore_state
from damoxing.training.optim import SCHEDULES, PlateauScale, build_optimizer


@dataclass
class Split:
    """One split of prepared data, as tensors on the training device."""

    x: torch.Tensor  # (N, ...) model inputs
    y: Optional[torch.Tensor]  # (N,) class ids / (N,) or (N, T) targets / None for self-supervised tasks

    def __len__(self) -> int:
        return self.x.shape[0]

    def to(self, device) -> "Split":
        return Split(self.x.to(device), None if self.y is None else self.y.to(device))

    @property
    def nbytes(self) -> int:
        return self.x.nbytes + (0 if self.y is None else self.y.nbytes)


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
    data_path: str = "resident"  # resident | streamed
    strategy: str = "single"  # single | ddp | fsdp
    resumed_from: Optional[dict] = None  # {"epoch", "step"} of the checkpoint this run continued from


def monitor_direction(monitor: str, mode: str) -> str:
    if mode != "auto":
        return mode
    from damoxing.evaluation.metrics import metric_direction

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


def fit(
    model: torch.nn.Module,
    train: Split,
    val: Optional[Split],
    task,
    config: TrainConfig,
    device: torch.device,
    progress=None,
    on_epoch_end: Optional[Callable[[dict], None]] = None,
    checkpoints: Optional[Checkpointer] = None,
) -> FitResult:
    """Train `model` on `train`, monitoring `val`; returns the history and why it stopped.

    The model ends with the best epoch's weights (by `config.monitor`) when `restore_best` is on.
    With `checkpoints`, writes resumable checkpoints and, if it holds one, continues from it.
    """
    ctx = dist.current()
    torch.manual_seed(config.seed + ctx.rank)  # dropout differs per process; rank 0 matches a single process
    configure_cuda(config, device)
    channels_last = use_channels_last(model, train.x, config, device)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    data_path, why = choose_path(config, train.nbytes + (val.nbytes if val is not None else 0), device)
    batches = make_batches(train.x, train.y, data_path, config, device, ctx.rank, ctx.world, channels_last)
    if val is not None and len(val):  # on the device unless it alone would not fit (the tasks then move batches)
        val = val.to(device) if data_path == "resident" or fits_on_device(val.nbytes, device) else val
    else:
        val = None
    where = f"on {device}" if data_path == "resident" else f"through a DataLoader, {batches.workers} worker process(es)"
    note(f"data: {len(train):,} training rows {data_path} {where} ({why})")
    generator = torch.Generator(device=batches.order_device).manual_seed(config.seed)  # the same permutation in every process
    strategy = dist.choose_strategy(config.distributed, sum(p.numel() for p in model.parameters()), config.fsdp_min_params) if ctx.active else "single"
    dist.require_supported(strategy, config.l1, config.l2)
    train_module = dist.wrap_model(model, strategy, device, ctx)  # model itself with one process
    eval_module = train_module if strategy == "fsdp" else model  # FSDP's forward gathers shards: every process runs it
    owns_update = hasattr(model, "train_step")  # the extension point in the module docstring
    if owns_update:
        if config.grad_accum_steps > 1:
            raise ConfigError(f"train.grad_accum_steps must be 1 for model '{type(model).__name__}', which runs its own update steps.")
        if ctx.active:
            raise ConfigError(f"Model '{type(model).__name__}' runs its own update steps, which train in one process only; drop --nproc.")
        optimizers = model.configure_optimizers(config, build_optimizer)
    else:
        # a model may group its parameters (pretrained: a head lr, layer-wise lr decay); the schedule scales every group alike
        core = dist.unwrap(train_module)  # the model itself, or its sharded copy under FSDP
        params = core.param_groups(config.optimizer) if hasattr(core, "param_groups") else train_module.parameters()
        optimizer = build_optimizer(params, config.optimizer)
        optimizers = {"model": optimizer}
    param_groups = [group for opt in optimizers.values() for group in opt.param_groups]
    base_lrs = [group["lr"] for group in param_groups]
    autocast = autocast_context(config, device)
    step_model = maybe_compile(train_module, config, device)

    n, accum = len(train), config.grad_accum_steps
    micro_batches = len(batches)
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
    result = FitResult(monitor=monitor, data_path=data_path, strategy=strategy)
    best_state = None
    start_state = {k: v.detach().clone() for k, v in model.state_dict().items()}  # the fallback if epoch 1 diverges
    epochs_without_improvement = 0
    step = 0
    start_epoch, start_micro, order = 1, 0, None
    part_names = ["loss"]  # what each window entry holds; a train_step model may report more parts
    window: list[torch.Tensor] = []  # device loss scalars (train_step: (P,) loss first, then parts); read once per log interval
    window_sizes: list[int] = []
    epoch_sums, epoch_count = np.zeros(len(part_names)), 0  # size-weighted loss sums (float64) and rows, this epoch
    elapsed_before = 0.0
    if checkpoints is not None and checkpoints.resume is not None:
        loop, best_state, order, window, epoch_sums = restore_state(
            checkpoints.resume, train_module, list(optimizers.values()), generator, batches, device, ctx)
        start_epoch, start_micro, step = loop["epoch"], loop["micro"], loop["step"]
        result.history, result.best_score, result.best_epoch = loop["history"], loop["best_score"], loop["best_epoch"]
        result.samples_seen, elapsed_before = loop["samples_seen"], loop["elapsed"]
        epochs_without_improvement, epoch_count = loop["epochs_without_improvement"], loop["epoch_count"]
        window_sizes, part_names = loop["window_sizes"], loop["part_names"]
        plateau.load_state_dict(loop["plateau"])
        param_groups = [group for opt in optimizers.values() for group in opt.param_groups]  # loading replaced the dicts
        result.resumed_from = {"epoch": start_epoch, "micro": start_micro, "step": step}
    compile_pending = step_model is not train_module

    def forward_backward(module, xb, yb):
        """One micro-batch: its loss (a device scalar), gradients accumulated."""
        with autocast():
            loss, _ = task.loss(module, xb, yb)
            if config.l1 or config.l2:
                loss = loss + penalty(train_module, config.l1, config.l2)
        (loss / accum if accum > 1 else loss).backward()
        return loss

    def save_checkpoint(epoch: int, micro: int) -> None:
        """A checkpoint after `micro` batches of `epoch` (micro 0: the epoch is complete)."""
        loop = {"epoch": epoch, "micro": micro, "step": step, "history": result.history, "best_score": result.best_score,
                "best_epoch": result.best_epoch, "samples_seen": result.samples_seen,
                "elapsed": elapsed_before + time.perf_counter() - started, "epochs_without_improvement": epochs_without_improvement,
                "epoch_count": epoch_count, "window_sizes": window_sizes, "part_names": part_names,
                "plateau": plateau.state_dict()}
        tensors, meta = capture_state(train_module, list(optimizers.values()), generator, batches, device, ctx, loop, best_state,
                                      order if micro else None, window, epoch_sums)
        checkpoints.save(tensors, meta)

    started = time.perf_counter()
    bar = progress.add_task("training", total=total_steps, completed=step) if progress is not None else None

    try:
        for epoch in range(start_epoch, config.epochs + 1):
            epoch_start = time.perf_counter()
            train_module.train()
            if order is None:  # a checkpoint taken mid-epoch brings its epoch's order back
                order = torch.randperm(n, device=batches.order_device, generator=generator)
            checkpoint_pending = False
            for micro, (xb, yb) in enumerate(batches.batches(order, start_micro), start=start_micro):
                last_micro = micro == micro_batches - 1
                if owns_update:  # the model runs its own forward/backward/step on its own optimizers
                    set_learning_rates(step)
                    parts = model.train_step(xb, optimizers, autocast)
                    if step == 0:
                        part_names = ["loss"] + [k for k in parts if k != "loss"]
                        epoch_sums = np.zeros(len(part_names))
                    window.append(torch.stack([parts[k].detach().float() for k in part_names]))
                    window_sizes.append(xb.shape[0])
                else:
                    sync = last_micro or (micro + 1) % accum == 0  # the last micro-batch of an optimizer step
                    with dist.no_sync(train_module, sync):
                        if compile_pending:  # compile errors surface at the first call: fall back to eager
                            loss, step_model = first_step(forward_backward, step_model, train_module, optimizer, xb, yb)
                            compile_pending = False
                        else:
                            loss = forward_backward(step_model, xb, yb)
                    window.append(loss.detach())  # a scalar; the flush makes it a (1,) row
                    window_sizes.append(xb.shape[0])
                    if not sync:
                        continue
                    set_learning_rates(step)
                    if config.clip_grad_norm:
                        torch.nn.utils.clip_grad_norm_(train_module.parameters(), config.clip_grad_norm)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                step += 1
                result.samples_seen += (sum(window_sizes[-accum:]) if accum > 1 else xb.shape[0]) * ctx.world
                if step % config.log_every == 0 or last_micro:
                    losses = torch.stack(window).reshape(len(window), -1).float()  # (W, P)
                    if ctx.active:  # each micro-batch's mean over every process's rows: the same numbers everywhere
                        sizes = torch.tensor(window_sizes, dtype=losses.dtype, device=losses.device)[:, None]
                        packed = dist.all_reduce_sum(torch.cat([losses * sizes, sizes], dim=1))
                        losses = packed[:, :-1] / packed[:, -1:]
                    # the one host sync of this interval; numpy from here: a few small arrays, no per-op dispatch
                    losses = losses.cpu().double().numpy()
                    bad = ~np.isfinite(losses).all(axis=1)
                    if bad.any():
                        first = int(bad.nonzero()[0][0])
                        bad_step = step - math.ceil(len(window) / accum) + first // accum + 1
                        value = losses[first][~np.isfinite(losses[first])][0]
                        raise _Diverged(epoch, bad_step, float(value))
                    sizes = np.asarray(window_sizes, dtype=np.float64)
                    epoch_sums += (losses * sizes[:, None]).sum(0)
                    epoch_count += int(sizes.sum())
                    window.clear()
                    window_sizes.clear()
                    if bar is not None:
                        progress.update(bar, completed=step, description=f"epoch {epoch}/{config.epochs} loss {float(epoch_sums[0]) / epoch_count:.4f}")
                if checkpoints is not None and checkpoints.due_after_step(step):
                    if last_micro:
                        checkpoint_pending = True  # written after this epoch's bookkeeping, below
                    else:
                        save_checkpoint(epoch, micro + 1)

            order, start_micro = None, 0
            means = (epoch_sums / max(1, epoch_count)).tolist()
            record = {"epoch": epoch, "train_loss": means[0], **{f"train_{k}": v for k, v in zip(part_names[1:], means[1:])},
                      "lr": param_groups[0]["lr"]}
            epoch_sums, epoch_count = np.zeros(len(part_names)), 0
            if val is not None:
                record.update(validate(eval_module, val, task, config, autocast, device))
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
                    best_state = dist.full_state_dict(train_module)
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
            if checkpoints is not None and epoch < config.epochs and (checkpoints.due_after_epoch(epoch) or checkpoint_pending):
                save_checkpoint(epoch + 1, 0)
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
    finally:
        batches.close()

    if result.stopped == "diverged" and best_state is None:
        best_state = start_state  # never leave NaN weights behind
    if best_state is None and train_module is not model and dist.is_sharded(train_module):
        best_state = dist.full_state_dict(train_module)  # the sharded copy's final weights, whole
    if best_state is not None:
        model.load_state_dict(best_state)
    result.steps = step
    result.train_seconds = elapsed_before + time.perf_counter() - started
    return result


class _Diverged(Exception):
    def __init__(self, epoch: int, step: int, value: float):
        self.epoch, self.step, self.value = epoch, step, value


def validate(model, val: Split, task, config: TrainConfig, autocast, device: torch.device) -> dict[str, float]:
    """val_loss and the task's cheap metrics on the whole validation split (one host sync).

    With several processes each one computes them over the whole split and rank 0's numbers are
    broadcast, so every process takes the same early-stopping and best-epoch decisions."""
    y = None if val.y is None else val.y.to(device)
    metrics = task.validation_metrics(model, val.x, y, config.eval_batch_size, autocast)
    values = dist.broadcast(torch.stack([v.float() for v in metrics.values()]))
    return {f"val_{k}": v for k, v in zip(metrics, values.cpu().tolist())}


def configure_cuda(config: TrainConfig, device: torch.device) -> None:
    """TF32 for float32 matmuls and convolutions on CUDA (train.tf32); nothing elsewhere."""
    if device.type != "cuda" or not config.tf32:
        return
    try:  # torch >= 2.9: per-backend precision (the allow_tf32 flags warn there)
        torch.backends.cuda.matmul.fp32_precision = "tf32"
        torch.backends.cudnn.conv.fp32_precision = "tf32"
    except AttributeError:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def use_channels_last(model: torch.nn.Module, x: torch.Tensor, config: TrainConfig, device: torch.device) -> bool:
    """channels_last for conv nets on images: on CUDA by default (faster convolutions), anywhere when 'on'."""
    if config.channels_last == "off" or x.dim() != 4:
        return False
    has_conv = any(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    return has_conv and (config.channels_last == "on" or device.type == "cuda")


def maybe_compile(model: torch.nn.Module, config: TrainConfig, device: torch.device):
    """torch.compile where it pays (CUDA by default). Compilation is lazy: its errors surface at the
    first call, where `first_step` catches them and falls back to eager."""
    if config.compile == "off" or (config.compile == "auto" and device.type != "cuda"):
        return model
    try:
        return torch.compile(model)
    except Exception as error:  # noqa: BLE001 - e.g. an unsupported Python: run eager
        warn(f"torch.compile is unavailable ({_first_line(error)}); training without it.")
        return model


def first_step(forward_backward, step_model, eager_model, optimizer, xb, yb):
    """The first micro-batch through the compiled model; if compiling fails (a missing C++ compiler,
    an unsupported op), warn and redo it eagerly. Returns (loss, the model to use from now on)."""
    try:
        return forward_backward(step_model, xb, yb), step_model
    except Exception as error:  # noqa: BLE001 - any compiler failure means: run eager
        warn(f"torch.compile failed at the first step ({_first_line(error)}); training continues without it. "
             "Set train.compile: off to skip the attempt.")
        optimizer.zero_grad(set_to_none=True)
        return forward_backward(eager_model, xb, yb), eager_model


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__
