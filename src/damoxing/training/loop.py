"""The training loop: one function, `fit`, read top to bottom.

Data that fits lives on the training device and is shuffled and indexed there (no per-sample
Python); data that does not streams through a DataLoader (training/batches.py). Either way the
loop sees an iterator of (x, y) micro-batches on the device. It does no host sync per step: the
LossWindow (training/state.py) keeps batch losses as device tensors and reads them once per
`log_every` steps, which is also where a NaN/inf loss is caught and named by its exact step. With
several processes (torchrun) the model is wrapped in DDP or FSDP (training/distributed.py) and each
process takes its shard of the same permutation. Everything the loop carries is one LoopState,
which is also what a checkpoint holds (training/checkpoint.py writes it with the model, the
optimizers and the random generators), so a run continues bit for bit from `checkpoints.resume`.

The work of a micro-batch is chosen once, before the loop (training/step.py):

    StandardStep    the task's loss (+ L1/L2), backward, accumulation over grad_accum_steps,
                    gradient clipping, the optimizer step; torch.compile where it pays
    OwnUpdateStep   a model that owns its update (models/protocols.py's OwnsUpdate)

That is the one extension point, for a model with more than one optimizer (a GAN's two players):
if the model defines

    configure_optimizers(config: TrainConfig, build_optimizer) -> dict[str, torch.optim.Optimizer]
    train_step(x, optimizers, autocast) -> dict[str, torch.Tensor]   # {"loss": ..., other parts}

the loop builds the optimizers with the first, and for each batch calls the second instead of
its own forward/backward/step. The loop still shuffles and batches, sets every optimizer's
learning rate from the schedule before the step, counts steps, catches NaN/inf, and keeps the
returned device scalars until the log interval. "loss" becomes `train_loss` in the history and
every other part `train_<name>` (e.g. train_d_loss, train_g_loss); validation is still the task's.
A model may also group its parameters (GroupsParameters: a pretrained model's head lr and
layer-wise decay); the schedule then scales every group alike.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

from damoxing.config import TrainConfig
from damoxing.core.console import note
from damoxing.core.errors import ConfigError
from damoxing.models.protocols import CutsPadding, GroupsParameters, OwnsUpdate, TrainsOnFeatures
from damoxing.models.runtime import autocast_context
from damoxing.training import distributed as dist
from damoxing.training.batches import (
    TrainBatches,
    choose_path,
    fits_on_device,
    make_batches,
)
from damoxing.training.checkpoint import (
    Checkpointer,
    Session,
    capture_state,
    restore_state,
)
from damoxing.training.optim import LearningRates, PlateauScale, build_optimizer
from damoxing.training.progress import EpochLog
from damoxing.training.state import Diverged, EarlyStopping, LoopState, LossWindow
from damoxing.training.step import choose_step


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


class StopTraining(Exception):
    """Raised by an `on_epoch_end` callback to end training after this epoch, the run saved as
    usual; `reason` becomes the run's `stopped` (e.g. 'pruned' for a tuning trial)."""

    def __init__(self, message: str, reason: str = "stopped"):
        super().__init__(message)
        self.reason = reason


def place(model, train: Split, val: Optional[Split], config: TrainConfig, device, ctx):
    """The model and the data on the device, and the model wrapped for several processes:
    (model, module to train, module to evaluate, train, val, batches, strategy)."""
    configure_cuda(config, device)
    model, train, val = on_features(model, train, val, config, device)
    channels_last = use_channels_last(model, train.x, config, device)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    batches, val = place_data(train, val, config, device, ctx, channels_last, text_lengths(model, train))
    n_params = sum(p.numel() for p in model.parameters())
    strategy = dist.choose_strategy(config.distributed, n_params, config.fsdp_min_params) if ctx.active else "single"
    dist.require_supported(strategy, config.l1, config.l2)
    module = dist.wrap_model(model, strategy, device, ctx)  # the model itself with one process
    eval_module = module if strategy == "fsdp" else model  # FSDP's forward gathers shards: every process runs it
    return model, module, eval_module, train, val, batches, strategy


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
    private=None,
) -> FitResult:
    """Train `model` on `train`, monitoring `val`; returns the history and why it stopped.

    The model ends with the best epoch's weights (by `config.monitor`) when `restore_best` is on.
    With `checkpoints`, writes resumable checkpoints and, if it holds one, continues from it.
    `private` (trust/privacy.py's PrivateTraining, train.privacy) makes it DP-SGD: it wraps the
    optimizer and the batches before the loop, the step, and adds the epsilon spent to each epoch.
    """
    # -- the model and the data on the device; with several processes, DDP or FSDP around the model
    ctx = dist.current()
    torch.manual_seed(config.seed + ctx.rank)  # dropout differs per process; rank 0 matches a single process
    model, module, eval_module, train, val, batches, strategy = place(model, train, val, config, device, ctx)

    # -- optimizers, learning rates and the step function, chosen once; the state, fresh or resumed
    monitor = config.monitor if val is not None else "train_loss"
    direction = monitor_direction(monitor, config.monitor_mode)
    state = LoopState(EarlyStopping.from_config(config.early_stopping, direction), PlateauScale(config.schedule, direction),
                      LossWindow(config.grad_accum_steps, ctx.active))
    shuffle = torch.Generator(device=batches.order_device).manual_seed(config.seed)  # the same permutation in every process
    session = Session(module, build_optimizers(model, module, config, ctx), shuffle, batches, device, ctx)
    if private is not None:  # DP-SGD: per-sample clipping and noise, Poisson-sampled batches
        batches = private.wrap(model, session.optimizers, batches, train, device)
    micro_batches, accum = len(batches), config.grad_accum_steps
    rates = LearningRates(session.optimizers.values(), config, math.ceil(micro_batches / accum), state.plateau)
    autocast = autocast_context(config, device)
    step = choose_step(model, module, task, session.optimizers, config, autocast, rates, device)
    step = private.step(step) if private is not None else step
    start_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}  # kept if epoch 1 diverges
    result = FitResult(monitor=monitor, data_path=batches.path, strategy=strategy)
    if checkpoints is not None and checkpoints.resume is not None:
        restore_state(checkpoints.resume, session)
        state.load_checkpoint(checkpoints.resume, device, batches.order_device)
        rates.regroup()  # loading the optimizers' state replaced their param group dicts
        result.resumed_from = {"epoch": state.epoch, "micro": state.micro, "step": state.step}
    clock, bar = Stopwatch(state.elapsed), StepBar(progress, rates.total_steps, state.step, config.epochs)

    try:
        for epoch in range(state.epoch, config.epochs + 1):
            # -- an epoch: micro-batches in this epoch's order, an optimizer step every `accum` of them
            epoch_start = time.perf_counter()
            module.train()
            if state.order is None:  # a checkpoint taken mid-epoch brings its epoch's order back
                state.order = torch.randperm(len(train), device=batches.order_device, generator=shuffle)
            checkpoint_after_epoch, rows = False, 0
            for micro, (xb, yb) in enumerate(batches.batches(state.order, state.micro), start=state.micro):
                last_micro = micro == micro_batches - 1
                sync = last_micro or (micro + 1) % accum == 0  # the last micro-batch of an optimizer step
                state.losses.add(step(xb, yb, state.step, sync), xb.shape[0])
                rows += xb.shape[0]
                if not sync:
                    continue
                state.step += 1
                state.samples_seen += rows * ctx.world
                rows = 0
                if state.step % config.log_every == 0 or last_micro:  # the interval's one host sync; NaN/inf raise
                    bar.show(state.step, epoch, state.losses.read(state.step, epoch))
                if checkpoints is not None and checkpoints.due_after_step(state.step):
                    if last_micro:
                        checkpoint_after_epoch = True  # written after this epoch's bookkeeping, below
                    else:
                        save_checkpoint(checkpoints, session, state, clock, epoch, micro + 1)

            # -- the epoch's end: validate, record, keep the best epoch, stop early, checkpoint
            state.order, state.micro = None, 0
            record = {"epoch": epoch, **state.losses.epoch_means(), "lr": rates.current}
            if val is not None:
                record.update(validate(eval_module, val, task, config, autocast, device))
            record["seconds"] = time.perf_counter() - epoch_start
            if private is not None:
                record.update(private.epoch_record())
            state.history.append(record)
            score = monitored(record, monitor)
            if config.schedule.name == "reduce_on_plateau":  # other schedules never cut the lr on a plateau
                state.plateau.update(score)
            if state.early.improved(score, epoch) and config.restore_best:
                state.best_weights = dist.full_state_dict(module)
            bar.show(state.step, epoch, record["train_loss"], f"{monitor} {score:.4f}")
            bar.lines.after_epoch(record, monitor, state.early.best_score, state.early.best_epoch)
            if on_epoch_end is not None:
                on_epoch_end(record)
            if state.early.should_stop:
                result.stopped = "early_stopping"
                result.message = f"stopped early at epoch {epoch}: {monitor} did not improve for {state.early.patience} epochs"
                break
            if checkpoints is not None and epoch < config.epochs and (checkpoints.due_after_epoch(epoch) or checkpoint_after_epoch):
                save_checkpoint(checkpoints, session, state, clock, epoch + 1, 0)
    except Diverged as diverged:
        result.stopped, result.message = "diverged", divergence_message(diverged)
    except StopTraining as stop:  # an on_epoch_end callback ended the run (e.g. a pruned tuning trial)
        result.stopped, result.message = stop.reason, str(stop)
    except KeyboardInterrupt:
        result.stopped = "interrupted"
        result.message = f"interrupted by the user after {len(state.history)} complete epochs"
    finally:
        batches.close()

    # -- the weights to end with, and what happened
    keep_final_weights(model, module, state.best_weights, start_weights if result.stopped == "diverged" else None)
    result.history, result.steps, result.samples_seen = state.history, state.step, state.samples_seen
    result.best_score, result.best_epoch = state.early.best_score, state.early.best_epoch
    result.train_seconds = clock.seconds()
    return result


def on_features(model: torch.nn.Module, train: Split, val: Optional[Split], config: TrainConfig,
                device: torch.device) -> tuple[torch.nn.Module, Split, Optional[Split]]:
    """A frozen encoder under a head (TrainsOnFeatures) runs once: each split becomes its features
    and the head alone trains on them (its parameters are the model's, so the model ends trained).
    Anything else is returned as it is."""
    head = model.frozen_head() if isinstance(model, TrainsOnFeatures) else None
    if head is None:
        return model, train, val
    started = time.perf_counter()
    model.to(device)
    train = Split(model.features(train.x, config.eval_batch_size), train.y)
    if val is not None:
        val = Split(model.features(val.x, config.eval_batch_size), val.y)
    rows = len(train) + (len(val) if val is not None else 0)
    note(f"frozen encoder: features of {rows:,} rows computed once in {time.perf_counter() - started:.1f} s; the head trains on them")
    return head, train, val


def text_lengths(model: torch.nn.Module, train: Split) -> Optional[torch.Tensor]:
    """Real tokens per training text when the model cuts each batch to its longest (CutsPadding):
    the batches are then grouped by length. None for anything else."""
    if not isinstance(model, CutsPadding) or model.pad_id is None or train.x.dim() != 2 or train.x.is_floating_point():
        return None
    return (train.x != model.pad_id).sum(1)


def place_data(train: Split, val: Optional[Split], config: TrainConfig, device: torch.device, ctx,
               channels_last: bool, lengths: Optional[torch.Tensor] = None) -> tuple[TrainBatches, Optional[Split]]:
    """The training batches, resident on the device or streamed (chosen by size), and the
    validation split: on the device unless it alone would not fit (the tasks then move batches)."""
    path, why = choose_path(config, train.nbytes + (val.nbytes if val is not None else 0), device)
    batches = make_batches(train.x, train.y, path, config, device, ctx.rank, ctx.world, channels_last, lengths)
    if val is not None and len(val):
        val = val.to(device) if path == "resident" or fits_on_device(val.nbytes, device) else val
    else:
        val = None
    where = f"on {device}" if path == "resident" else f"through a DataLoader, {batches.workers} worker process(es)"
    note(f"data: {len(train):,} training rows {path} {where} ({why})")
    return batches, val


def build_optimizers(model: torch.nn.Module, module: torch.nn.Module, config: TrainConfig, ctx) -> dict[str, torch.optim.Optimizer]:
    """The optimizers of a model that owns its update (OwnsUpdate), else one over the trained
    module's parameters: in the model's own groups when it declares them (GroupsParameters)."""
    if isinstance(model, OwnsUpdate):
        if config.grad_accum_steps > 1:
            raise ConfigError(f"train.grad_accum_steps must be 1 for model '{type(model).__name__}', which runs its own update steps.")
        if ctx.active:
            raise ConfigError(f"Model '{type(model).__name__}' runs its own update steps, which train in one process only; drop --nproc.")
        return model.configure_optimizers(config, build_optimizer)
    core = dist.unwrap(module)  # the model itself, or its sharded copy under FSDP
    params = core.param_groups(config.optimizer) if isinstance(core, GroupsParameters) else module.parameters()
    return {"model": build_optimizer(params, config.optimizer)}


def monitored(record: dict, monitor: str) -> float:
    """The epoch's value of train.monitor; a ConfigError naming the valid monitors if it has none."""
    score = record.get(monitor)
    if score is None:
        valid = sorted(k for k in record if k.startswith("val_"))
        raise ConfigError(f"train.monitor '{monitor}' is not computed for this task. Valid monitors: {', '.join(valid) or 'train_loss'}.")
    return score


def save_checkpoint(checkpoints: Checkpointer, session: Session, state: LoopState, clock: "Stopwatch", epoch: int, micro: int) -> None:
    """A checkpoint to continue from `micro` micro-batches into `epoch` (micro 0: the epoch's start)."""
    state.epoch, state.micro, state.elapsed = epoch, micro, clock.seconds()
    tensors, meta = capture_state(session)
    loop_tensors, loop = state.to_checkpoint()
    checkpoints.save({**tensors, **loop_tensors}, {**meta, "loop": loop})


def keep_final_weights(model: torch.nn.Module, module: torch.nn.Module, best: Optional[dict], fallback: Optional[dict]) -> None:
    """End with the best epoch's weights (restore_best), else `fallback` (the start, after a
    divergence: never NaN weights), else the trained ones, gathered whole from a sharded copy."""
    weights = best if best is not None else fallback
    if weights is None and module is not model and dist.is_sharded(module):
        weights = dist.full_state_dict(module)
    if weights is not None:
        model.load_state_dict(weights)


def divergence_message(diverged: Diverged) -> str:
    return (f"The training loss became {diverged.value} at step {diverged.step} (epoch {diverged.epoch}). "
            "Try a lower train.optimizer.lr, gradient clipping (train.clip_grad_norm: 1.0), "
            "or check the data for extreme values.")


class Stopwatch:
    """Training seconds: those before this session (a resumed run's) plus this session's so far."""

    def __init__(self, before: float = 0.0):
        self.before, self.started = before, time.perf_counter()

    def seconds(self) -> float:
        return self.before + time.perf_counter() - self.started


class StepBar:
    """The progress bar's one line: steps done, the epoch, its running loss (nothing when quiet);
    in a log (stderr not a terminal), one plain line per epoch instead (training/progress.py)."""

    def __init__(self, progress, total_steps: int, completed: int, epochs: int):
        self.progress, self.epochs = progress, epochs
        self.lines = EpochLog(epochs, total_steps)
        self.task = progress.add_task("training", total=total_steps, completed=completed) if progress is not None else None

    def show(self, step: int, epoch: int, loss: float, extra: str = "") -> None:
        if self.task is not None:
            text = f"epoch {epoch}/{self.epochs} loss {loss:.4f}" + (f" {extra}" if extra else "")
            self.progress.update(self.task, completed=step, description=text)
        elif not extra:  # within an epoch: a line now and then for a log (the epoch's own line follows at its end)
            self.lines.during_epoch(step, epoch, loss)

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
