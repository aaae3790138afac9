"""Optimizers and learning-rate schedules, one registry each.

Schedules are pure functions `(step, total_steps, warmup_steps, config) -> lr multiplier`;
`LearningRates` sets `lr = base_lr * multiplier * plateau_scale` before every optimizer step, which
keeps the whole schedule visible in one place instead of stacking torch schedulers.
"""

from __future__ import annotations

import math

import torch

from damoxing.config import OptimizerConfig, ScheduleConfig, TrainConfig
from damoxing.core.registry import Registry

OPTIMIZERS: Registry = Registry("optimizer")
SCHEDULES: Registry = Registry("schedule")


def _fused_ok(params) -> bool:
    return all(p.is_cuda for p in params)


@OPTIMIZERS.register("sgd")
def sgd(params, config: OptimizerConfig) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov and config.momentum > 0,
                           weight_decay=config.weight_decay)


@OPTIMIZERS.register("adam")
def adam(params, config: OptimizerConfig) -> torch.optim.Optimizer:
    params = list(params)
    return torch.optim.Adam(params, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay,
                            fused=_fused_ok(_flat(params)) or None)


@OPTIMIZERS.register("adamw")
def adamw(params, config: OptimizerConfig) -> torch.optim.Optimizer:
    params = list(params)
    return torch.optim.AdamW(params, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay,
                             fused=_fused_ok(_flat(params)) or None)


def _flat(params) -> list[torch.Tensor]:
    """Parameters out of a list that may hold param-group dicts."""
    out = []
    for p in params:
        out.extend(p["params"] if isinstance(p, dict) else [p])
    return out


def build_optimizer(params, config: OptimizerConfig) -> torch.optim.Optimizer:
    params = [p for p in params if (isinstance(p, dict) or p.requires_grad)]
    return OPTIMIZERS.get(config.name)(params, config)


def warmup_factor(step: int, warmup_steps: int) -> float:
    return min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0


@SCHEDULES.register("constant")
def constant(step: int, total_steps: int, warmup_steps: int, config: ScheduleConfig, steps_per_epoch: int = 1) -> float:
    return warmup_factor(step, warmup_steps)


@SCHEDULES.register("reduce_on_plateau")
def reduce_on_plateau(step: int, total_steps: int, warmup_steps: int, config: ScheduleConfig, steps_per_epoch: int = 1) -> float:
    return warmup_factor(step, warmup_steps)  # the plateau part is epoch-level state, kept by the loop


@SCHEDULES.register("step")
def step_decay(step: int, total_steps: int, warmup_steps: int, config: ScheduleConfig, steps_per_epoch: int = 1) -> float:
    epoch = step // max(1, steps_per_epoch)
    return warmup_factor(step, warmup_steps) * config.gamma ** (epoch // config.step_epochs)


@SCHEDULES.register("cosine")
def cosine(step: int, total_steps: int, warmup_steps: int, config: ScheduleConfig, steps_per_epoch: int = 1) -> float:
    """Linear warm-up, then half a cosine from 1 down to 0 over the remaining steps."""
    if step < warmup_steps:
        return warmup_factor(step, warmup_steps)
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


@SCHEDULES.register("linear")
def linear_decay(step: int, total_steps: int, warmup_steps: int, config: ScheduleConfig, steps_per_epoch: int = 1) -> float:
    """Linear warm-up, then linear decay to 0."""
    if step < warmup_steps:
        return warmup_factor(step, warmup_steps)
    return max(0.0, 1.0 - (step - warmup_steps) / max(1, total_steps - warmup_steps))


class PlateauScale:
    """reduce-on-plateau as a multiplier: after `patience` epochs without improvement, scale *= factor."""

    def __init__(self, config: ScheduleConfig, mode: str):
        self.config, self.mode = config, mode
        self.scale, self.best, self.bad_epochs = 1.0, None, 0

    def update(self, value: float) -> None:
        better = self.best is None or (value < self.best if self.mode == "min" else value > self.best)
        if better:
            self.best, self.bad_epochs = value, 0
            return
        self.bad_epochs += 1
        if self.bad_epochs > self.config.patience:
            self.scale *= self.config.factor
            self.bad_epochs = 0

    def state_dict(self) -> dict:
        return {"scale": self.scale, "best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict) -> None:
        self.scale, self.best, self.bad_epochs = state["scale"], state["best"], state["bad_epochs"]


class LearningRates:
    """Sets every optimizer param group's lr before an optimizer step: its base lr times the
    schedule's multiplier at that step times the plateau scale, floored at schedule.min_lr once
    the multiplier is below 1. Base lrs are read once, from the optimizers as built (param groups
    may differ: a pretrained model's head lr, layer-wise decay)."""

    def __init__(self, optimizers, config: TrainConfig, steps_per_epoch: int, plateau: PlateauScale):
        self.optimizers, self.config, self.plateau = list(optimizers), config.schedule, plateau
        self.schedule = SCHEDULES.get(config.schedule.name)
        self.steps_per_epoch, self.total_steps = steps_per_epoch, steps_per_epoch * config.epochs
        self.warmup_steps = round(config.schedule.warmup_epochs * steps_per_epoch)
        self.groups = [group for optimizer in self.optimizers for group in optimizer.param_groups]
        self.base_lrs = [group["lr"] for group in self.groups]

    def regroup(self) -> None:
        """Follow the optimizers' param groups again: loading an optimizer's state replaces their dicts."""
        self.groups = [group for optimizer in self.optimizers for group in optimizer.param_groups]

    def set(self, step: int) -> None:
        factor = self.schedule(step, self.total_steps, self.warmup_steps, self.config, self.steps_per_epoch) * self.plateau.scale
        floor = self.config.min_lr if factor < 1 else 0.0
        for group, base_lr in zip(self.groups, self.base_lrs):
            group["lr"] = max(base_lr * factor, floor)

    @property
    def current(self) -> float:
        """The first param group's lr (the one the history records)."""
        return self.groups[0]["lr"]
