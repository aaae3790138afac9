"""Differentially private training: `train.privacy` runs the one training loop as DP-SGD (opacus).

verbs/train.py checks the combination (`check_private`), replaces the layers DP-SGD cannot train
(models/private_layers.py) before the optimizer is built, and hands `fit` a `PrivateTraining`.
The loop calls it at three points and is otherwise unchanged:

    wrap(model, optimizers, batches, train, device)   after the optimizer is built: opacus's
        PrivacyEngine.make_private_with_epsilon attaches per-sample gradient hooks to the model
        itself (no wrapper, so its state_dict keeps its own names), wraps the optimizer
        (per-sample clipping to max_grad_norm, Gaussian noise sized for epsilon over the run's
        epochs) and turns the training rows into Poisson-sampled batches (each row joins each batch
        with probability batch_size / N). Returns the batches the loop iterates.
    step(standard_step)   the micro-batch work: a Poisson batch in one forward/backward, clipped,
        noised, applied; with physical_batch_size, cut into physical batches of that size, each
        clipped and accumulated, noise added once per logical batch (the skip-step signalling of
        opacus's BatchMemoryManager, driven from here because the loop counts logical batches).
    epoch_record()   {"epsilon": spent so far} for history.jsonl.

opacus's step and accountant run with trust/fast_dp.py's speed-ups: the same clipping, noise and
accounting with less fixed work per step (the cost of DP-SGD on a small model is mostly that work);
weights agree with plain opacus to float rounding (an nn.Linear's clipped sum is summed in another
order), and an opacus without the internals they build on runs its own way.

`summary()` is the manifest's privacy block: epsilon spent (and the target), delta, noise
multiplier, sample rate, max_grad_norm, accountant, replaced layers.
"""

from __future__ import annotations

import math
import warnings
from typing import Iterator, Optional

import torch

from damoxing.config import TrainConfig
from damoxing.core.console import warn
from damoxing.core.errors import ConfigError
from damoxing.models.protocols import OwnsUpdate


def auto_delta(n: int) -> float:
    """delta: auto: min(1e-5, 1 / (10 N)), below 1/N so no single row may leak outright."""
    return min(1e-5, 1.0 / (10 * n))


def check_private(train: TrainConfig, model: torch.nn.Module, n_train: int, world: int = 1) -> float:
    """Refuse combinations DP-SGD cannot honour, with the reason; the delta to train with."""
    privacy = train.privacy
    name = type(model).__name__
    refusals = []
    if isinstance(model, OwnsUpdate):
        refusals.append(f"model '{name}' runs its own update steps (e.g. a GAN's two players), so the per-sample clipping "
                        "and noise of DP-SGD cannot be put into them")
    if world > 1:
        refusals.append("DP-SGD here trains in one process; drop --nproc")
    if train.l1 or train.l2:
        refusals.append("train.l1/l2 penalties are not per-sample losses and would bypass the clipping; use optimizer.weight_decay")
    if train.clip_grad_norm:
        refusals.append("train.clip_grad_norm clips the batch gradient; DP-SGD clips each sample's (train.privacy.max_grad_norm)")
    if train.grad_accum_steps > 1:
        refusals.append("train.grad_accum_steps must be 1; use train.privacy.physical_batch_size to split batches for memory")
    if train.checkpoint_every is not None:
        refusals.append("train.checkpoint_every cannot resume the privacy accountant; drop it")
    if privacy.physical_batch_size is not None and privacy.physical_batch_size > train.batch_size:
        refusals.append(f"train.privacy.physical_batch_size ({privacy.physical_batch_size}) is larger than train.batch_size "
                        f"({train.batch_size}); it must be at most the batch it splits")
    if refusals:
        raise ConfigError("train.privacy cannot be used here: " + "; ".join(refusals) + ".")
    delta = auto_delta(n_train) if privacy.delta == "auto" else float(privacy.delta)
    if delta >= 1.0 / n_train:
        warn(f"train.privacy.delta is {delta:g}, not below 1/N = {1.0 / n_train:g} for {n_train} training rows: a mechanism "
             "that leaked one whole row would satisfy it. Use delta: auto (min(1e-5, 1/(10 N))).")
    return delta


class PrivateTraining:
    """DP-SGD for one run of `fit` (see the module docstring)."""

    def __init__(self, train: TrainConfig, delta: float, replaced: list[dict]):
        from opacus import PrivacyEngine

        from damoxing.trust.fast_dp import install

        install()  # opacus's step and accountant with less fixed work, the same numbers (trust/fast_dp.py)
        self.config, self.train, self.delta, self.replaced = train.privacy, train, delta, replaced
        with warnings.catch_warnings():  # "Secure RNG turned off": seeded noise is what makes a run reproducible
            warnings.simplefilter("ignore", UserWarning)
            self.engine = PrivacyEngine(accountant=self.config.accountant)
        self.optimizer, self.hooks, self.sample_rate = None, None, 0.0

    def wrap(self, model: torch.nn.Module, optimizers: dict, batches, train, device: torch.device) -> "PoissonBatches":
        """Per-sample gradients on `model`, the DP optimizer in optimizers["model"], Poisson batches."""
        from torch.utils.data import DataLoader, TensorDataset

        from damoxing.trust.fast_dp import one_blas_thread, speed_up

        n = len(train)
        rows = DataLoader(TensorDataset(torch.arange(n)), batch_size=self.train.batch_size,
                          generator=torch.Generator().manual_seed(self.train.seed))
        with warnings.catch_warnings(), one_blas_thread():  # the noise search's numpy (trust/fast_dp.py)
            warnings.filterwarnings("ignore", message=".*(Secure RNG|secure_mode|Optimal order).*")
            self.hooks, self.optimizer, loader = self.engine.make_private_with_epsilon(
                module=model, optimizer=optimizers["model"], data_loader=rows, target_epsilon=self.config.epsilon,
                target_delta=self.delta, epochs=self.train.epochs, max_grad_norm=self.config.max_grad_norm,
                noise_generator=torch.Generator(device=device).manual_seed(self.train.seed + 1), wrap_model=False)
        self.optimizer = speed_up(self.optimizer, self.hooks)
        optimizers["model"] = self.optimizer
        self.sample_rate = 1.0 / len(rows)  # opacus's: each row joins each batch with this probability
        warnings.filterwarnings("ignore", message="Full backward hook is firing")  # opacus's hooks on a first layer
        home = device if batches.path == "resident" else torch.device("cpu")  # streamed: too large for the device
        return PoissonBatches(loader, train.x.to(home), None if train.y is None else train.y.to(home), device, batches)

    def step(self, standard) -> "PrivateStep":
        return PrivateStep(standard, self.optimizer, self.config.physical_batch_size, self)

    def spent(self) -> float:
        from damoxing.trust.fast_dp import one_blas_thread

        if not len(self.engine.accountant):
            return 0.0
        with one_blas_thread():  # numpy's other BLAS threads would spin into the next epoch (trust/fast_dp.py)
            return float(self.engine.get_epsilon(self.delta))

    def epoch_record(self) -> dict:
        return {"epsilon": self.spent()}

    def close(self) -> None:
        """Remove the per-sample hooks: the model is a plain module again (evaluation, saving)."""
        if self.hooks is not None:
            self.hooks.cleanup()
            self.hooks = None

    def summary(self) -> dict:
        return {"epsilon": self.spent(), "target_epsilon": self.config.epsilon, "delta": self.delta,
                "noise_multiplier": float(self.optimizer.noise_multiplier), "sample_rate": self.sample_rate,
                "max_grad_norm": self.config.max_grad_norm, "accountant": self.config.accountant,
                "physical_batch_size": self.config.physical_batch_size,  # None: each Poisson batch in one pass
                "steps": int(sum(h[-1] for h in self.engine.accountant.history)),
                "replaced_layers": self.replaced}


class PoissonBatches:
    """The loop's batches, Poisson-sampled by opacus's DPDataLoader over row indices: as many
    batches per epoch as the plain loop would have, each of random size around batch_size."""

    def __init__(self, loader, x: torch.Tensor, y: Optional[torch.Tensor], device: torch.device, plain):
        self.loader, self.x, self.y, self.device, self.plain = loader, x, y, device, plain
        self.path, self.order_device = plain.path, plain.order_device

    def __len__(self) -> int:
        return len(self.loader)

    def batches(self, order: torch.Tensor, start: int = 0) -> Iterator[tuple[torch.Tensor, Optional[torch.Tensor]]]:
        for indices in self.loader.batch_sampler:  # opacus's Poisson sampler; the loop's permutation is unused
            # gathered here (no per-row collate); the row ids made on the host and copied without
            # blocking: a list turned into a tensor on a GPU directly is a synchronous copy each step
            rows = torch.as_tensor(indices, dtype=torch.long).to(self.x.device, non_blocking=True)
            x = self.x[rows].to(self.device, non_blocking=True)
            yield x, None if self.y is None else self.y[rows].to(self.device, non_blocking=True)

    def close(self) -> None:
        self.plain.close()


class PrivateStep:
    """A logical (Poisson) batch through one forward/backward, clipped, noised and applied; with
    train.privacy.physical_batch_size, cut into physical batches of that size: each one's
    per-sample gradients clipped and accumulated (a skipped optimizer step), the last one's step
    adds the noise and updates. Without it a Poisson batch is never cut, even when it comes out
    larger than train.batch_size (it does about half the time)."""

    def __init__(self, standard, optimizer, physical: Optional[int], owner: PrivateTraining):
        self.standard, self.optimizer, self.physical, self.owner = standard, optimizer, physical, owner

    def __call__(self, x: torch.Tensor, y: Optional[torch.Tensor], step: int, sync: bool) -> dict[str, torch.Tensor]:
        n = x.shape[0]
        if n == 0:  # an empty Poisson batch (vanishingly rare): nothing to learn from, but the step still counts
            self.owner.engine.accountant.step(noise_multiplier=self.optimizer.noise_multiplier, sample_rate=self.owner.sample_rate)
            return {"loss": torch.zeros((), device=x.device)}
        if self.physical is None or n <= self.physical:
            loss = self.standard.forward_backward(self.standard.module, x, y)
            self.standard.rates.set(step)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            return {"loss": loss.detach()}
        chunks = math.ceil(n / self.physical)
        total = torch.zeros((), device=x.device)
        for i in range(chunks):
            lo = i * self.physical
            xc, yc = x[lo:lo + self.physical], None if y is None else y[lo:lo + self.physical]
            loss = self.standard.forward_backward(self.standard.module, xc, yc)
            total = total + loss.detach() * xc.shape[0]
            if i < chunks - 1:
                self.optimizer.signal_skip_step(do_skip=True)  # clip and accumulate only
            else:
                self.standard.rates.set(step)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        return {"loss": total / n}


def prepare_private(train: TrainConfig, model: torch.nn.Module, n_train: int, world: int = 1) -> tuple[torch.nn.Module, PrivateTraining]:
    """For `damoxing train` with train.privacy: the checks, the model with DP-trainable layers
    (each replacement noted and recorded), and the PrivateTraining to hand `fit`."""
    from damoxing.core.console import note
    from damoxing.models.private_layers import replace_private_layers

    delta = check_private(train, model, n_train, world)
    model, replaced = replace_private_layers(model)
    for r in replaced:
        note(f"privacy: layer '{r['layer']}' {r['from']} -> {r['to']} (DP-SGD needs per-sample gradients)")
    return model, PrivateTraining(train, delta, replaced)
