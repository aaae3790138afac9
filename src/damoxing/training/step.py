"""The work of one micro-batch, chosen once before the loop: the standard step, or the model's own.

Both are called as `step(x, y, step_index, sync)`: `step_index` is the number of optimizer steps
taken so far (it sets the learning rate), `sync` says the micro-batch is the last of an optimizer
step. Both return the micro-batch's losses as detached device tensors, {"loss": ..., other parts},
for the loop's LossWindow; neither reads a value back to the host.

StandardStep   forward and backward under the task's loss (plus the L1/L2 penalty), the loss
               divided by the accumulation count; on the last micro-batch of a step: the
               learning rate, gradient clipping, the optimizer step. A compiled model that fails
               to compile at the first call falls back to eager, with a warning.
OwnUpdateStep  a model that owns its update (models/protocols.py: OwnsUpdate, e.g. a GAN's two
               players) runs its own forward/backward/step on the optimizers it configured; the
               loop still sets their learning rates first.
"""

from __future__ import annotations

from typing import Optional

import torch

from damoxing.config import TrainConfig
from damoxing.core.console import warn
from damoxing.models.protocols import OwnsUpdate
from damoxing.training import distributed as dist
from damoxing.training.optim import LearningRates


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


class StandardStep:
    """forward -> backward (accumulated) -> on a step's last micro-batch: lr, clip, optimizer step.

    Args:
        module: what is trained (the model, DDP around it, or its sharded copy).
        compiled: `module` through torch.compile, or `module` itself.
    """

    def __init__(self, module: torch.nn.Module, compiled: torch.nn.Module, task, optimizer: torch.optim.Optimizer,
                 config: TrainConfig, autocast, rates: LearningRates):
        self.module, self.forward_module, self.task, self.optimizer = module, compiled, task, optimizer
        self.config, self.autocast, self.rates = config, autocast, rates
        self.accum = config.grad_accum_steps
        self.compile_pending = compiled is not module  # compile errors surface at the first call

    def __call__(self, x: torch.Tensor, y: Optional[torch.Tensor], step: int, sync: bool) -> dict[str, torch.Tensor]:
        with dist.no_sync(self.module, sync):  # DDP all-reduces gradients once per optimizer step
            loss = self.first_call(x, y) if self.compile_pending else self.forward_backward(self.forward_module, x, y)
        if sync:
            self.rates.set(step)
            if self.config.clip_grad_norm:
                torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.config.clip_grad_norm)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        return {"loss": loss.detach()}

    def forward_backward(self, module: torch.nn.Module, x: torch.Tensor, y: Optional[torch.Tensor]) -> torch.Tensor:
        """One micro-batch: its loss (a device scalar), gradients accumulated."""
        with self.autocast():
            loss, _ = self.task.loss(module, x, y)
            if self.config.l1 or self.config.l2:
                loss = loss + penalty(self.module, self.config.l1, self.config.l2)
        (loss / self.accum if self.accum > 1 else loss).backward()
        return loss

    def first_call(self, x: torch.Tensor, y: Optional[torch.Tensor]) -> torch.Tensor:
        """The first micro-batch through the compiled model; if compiling fails (a missing C++
        compiler, an unsupported op), warn and redo it eagerly, and stay eager from then on."""
        self.compile_pending = False
        try:
            return self.forward_backward(self.forward_module, x, y)
        except Exception as error:  # noqa: BLE001 - any compiler failure means: run eager
            warn(f"torch.compile failed at the first step ({first_line(error)}); training continues without it. "
                 "Set train.compile: off to skip the attempt.")
            self.optimizer.zero_grad(set_to_none=True)
            self.forward_module = self.module
            return self.forward_backward(self.module, x, y)


class OwnUpdateStep:
    """A model that owns its update: `model.train_step(x, optimizers, autocast)` for every batch,
    after the loop has set its optimizers' learning rates."""

    def __init__(self, model: OwnsUpdate, optimizers: dict[str, torch.optim.Optimizer], autocast, rates: LearningRates):
        self.model, self.optimizers, self.autocast, self.rates = model, optimizers, autocast, rates

    def __call__(self, x: torch.Tensor, y: Optional[torch.Tensor], step: int, sync: bool) -> dict[str, torch.Tensor]:
        self.rates.set(step)
        parts = self.model.train_step(x, self.optimizers, self.autocast)
        return {name: value.detach() for name, value in parts.items()}


def choose_step(model: torch.nn.Module, module: torch.nn.Module, task, optimizers: dict[str, torch.optim.Optimizer],
                config: TrainConfig, autocast, rates: LearningRates, device: torch.device):
    """The model's own update if it declares one (OwnsUpdate), else the standard step (compiled where it pays)."""
    if isinstance(model, OwnsUpdate):
        return OwnUpdateStep(model, optimizers, autocast, rates)
    return StandardStep(module, maybe_compile(module, config, device), task, optimizers["model"], config, autocast, rates)


def maybe_compile(model: torch.nn.Module, config: TrainConfig, device: torch.device) -> torch.nn.Module:
    """torch.compile where it pays (CUDA by default). Compilation is lazy: its errors surface at the
    first call, where StandardStep.first_call catches them and falls back to eager."""
    if config.compile == "off" or (config.compile == "auto" and device.type != "cuda"):
        return model
    try:
        return torch.compile(model)
    except Exception as error:  # noqa: BLE001 - e.g. an unsupported Python: run eager
        warn(f"torch.compile is unavailable ({first_line(error)}); training without it.")
        return model


def first_line(error: Exception) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__
