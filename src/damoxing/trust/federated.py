"""Federated averaging over simulated clients, in one process, seeded (`train.federated`).

The training split is partitioned across `clients` (iid: shuffled evenly; dirichlet: for each
label, the clients' shares drawn from Dirichlet(alpha), so a small alpha gives each client few
labels). Each round the server samples `fraction` of the clients; each trains a copy of the global
model on its own rows for `local_epochs` with the loop's own step (training/step.py's
StandardStep: the task's loss, penalties, clipping, the optimizer), fedprox adding
mu/2 ||w - w_global||^2 to its loss; the server then averages the returned weights by client size.

    secure_aggregation   each client adds pairwise masks to what it sends (+m_ij for j > i, -m_ji
                         for j < i, from a seed the pair shares); the masks cancel in the sum, so
                         the server only learns the sum. (A simulation of the arithmetic in float64,
                         not a cryptographic protocol.)
    train.privacy        client-level DP-FedAvg: each client's update (its weights minus the
                         global ones) is clipped to max_grad_norm, the server averages the sampled
                         clients' updates and adds Gaussian noise of std z * max_grad_norm / m;
                         z is chosen by opacus's RDP accountant so the `rounds` rounds at sample
                         rate m / clients spend epsilon, which is recorded round by round.

The test split is partitioned the same way (iid, or the same label shares), and the final model is
scored on each client's part: the mean, the worst client and the spread go into metrics.json.
"""

from __future__ import annotations

import copy
import math
import time
from typing import Optional

import numpy as np
import torch

from damoxing.config import TrainConfig
from damoxing.core.errors import ConfigError
from damoxing.models.protocols import OwnsUpdate
from damoxing.models.runtime import autocast_context
from damoxing.training.loop import FitResult, Split, monitor_direction, monitored, validate
from damoxing.training.optim import LearningRates, PlateauScale, build_optimizer
from damoxing.training.state import EarlyStopping
from damoxing.training.step import StandardStep


def split_by_shares(y: np.ndarray, classes: np.ndarray, shares: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """Rows of each label cut among the clients in proportion to that label's row of `shares`."""
    parts: list[list[int]] = [[] for _ in range(shares.shape[1])]
    for k, c in enumerate(classes):
        rows = rng.permutation(np.flatnonzero(y == c))
        cuts = np.round(np.cumsum(shares[k])[:-1] * len(rows)).astype(int)
        for client, chunk in enumerate(np.split(rows, cuts)):
            parts[client].extend(chunk.tolist())
    return [np.array(sorted(p), dtype=np.int64) for p in parts]


def partition(y: Optional[np.ndarray], n: int, clients: int, kind: str, alpha: float, rng: np.random.Generator,
              shares: Optional[np.ndarray] = None) -> tuple[list[np.ndarray], Optional[np.ndarray]]:
    """(each client's row indices, the label shares a dirichlet partition drew): every client gets a row."""
    if kind == "iid":
        return np.array_split(rng.permutation(n), clients), None
    classes = np.unique(y)
    if shares is None:
        shares = rng.dirichlet(np.full(clients, alpha), size=len(classes))
    parts = split_by_shares(y, classes, shares, rng)
    for i, part in enumerate(parts):  # an empty client takes one row from the largest
        if len(part) == 0:
            big = max(range(clients), key=lambda j: len(parts[j]))
            parts[i], parts[big] = parts[big][-1:], parts[big][:-1]
    return parts, shares


def weighted_average(states: list[dict[str, torch.Tensor]], weights: list[float]) -> dict[str, torch.Tensor]:
    """The weights of `states` averaged with `weights` (client sizes), in float64, back in each tensor's dtype."""
    total = float(sum(weights))
    return {k: restore_dtype(sum(s[k].double() * w for s, w in zip(states, weights)) / total, states[0][k]) for k in states[0]}


def restore_dtype(value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return value.to(like.dtype) if like.is_floating_point() else value.round().to(like.dtype)


def pair_masks(i: int, j: int, shapes: dict[str, torch.Size], seed: int, device) -> dict[str, torch.Tensor]:
    """The masks clients i < j share: the same numbers on both sides, from the pair's seed."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + i * 1009 + j)
    return {k: (torch.rand(shape, generator=generator, dtype=torch.float64) * 2e3 - 1e3).to(device) for k, shape in shapes.items()}


def secure_sum(contributions: list[dict[str, torch.Tensor]], seed: int) -> dict[str, torch.Tensor]:
    """The sum of the clients' contributions, computed from masked messages only: client i sends
    its contribution + sum_{j>i} m_ij - sum_{j<i} m_ji; the server adds the messages and the masks cancel."""
    shapes = {k: v.shape for k, v in contributions[0].items()}
    device = next(iter(contributions[0].values())).device
    messages = []
    for i, own in enumerate(contributions):
        message = {k: v.double().clone() for k, v in own.items()}
        for j in range(len(contributions)):
            if j != i:
                masks = pair_masks(min(i, j), max(i, j), shapes, seed, device)
                for k in message:
                    message[k] += masks[k] if i < j else -masks[k]
        messages.append(message)
    return {k: sum(m[k] for m in messages) for k in shapes}


def plain_sum(contributions: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {k: sum(c[k].double() for c in contributions) for k in contributions[0]}


class ProxTask:
    """fedprox: the task's loss plus mu/2 ||w - w_global||^2 over the trainable weights."""

    def __init__(self, task, model: torch.nn.Module, global_state: dict[str, torch.Tensor], mu: float):
        self.task, self.mu = task, mu
        self.anchors = [(p, global_state[name].detach()) for name, p in model.named_parameters() if p.requires_grad]

    def loss(self, module, x, y):
        loss, outputs = self.task.loss(module, x, y)
        prox = sum((p - g).pow(2).sum() for p, g in self.anchors)
        return loss + 0.5 * self.mu * prox, outputs


class Federation:
    """One federated run: the partition, the rounds, the server's aggregation, the per-client scores."""

    def __init__(self, train: TrainConfig, model: torch.nn.Module, splits: dict[str, Split], task, device: torch.device, world: int = 1):
        self.config, self.fed, self.task, self.device = train, train.federated, task, device
        check_federated(train, model, splits["train"], task, world)
        self.rng = np.random.default_rng(train.seed)
        y = None if splits["train"].y is None else splits["train"].y.numpy()
        self.parts, self.shares = partition(y, len(splits["train"]), self.fed.clients, self.fed.partition, self.fed.alpha, self.rng)
        self.per_round = max(1, round(self.fed.fraction * self.fed.clients))
        self.autocast = autocast_context(train, device)
        self.private = None
        if train.privacy is not None:  # client-level DP-FedAvg
            self.private = ClientPrivacy(train, self.per_round / self.fed.clients)

    def fit(self, model: torch.nn.Module, train: Split, val: Optional[Split], progress=None) -> FitResult:
        """`rounds` rounds of sampling, local training and averaging; the history has one row per round."""
        model.to(self.device)
        train, val = train.to(self.device), (val.to(self.device) if val is not None and len(val) else None)
        monitor = self.config.monitor if val is not None else "train_loss"
        early = EarlyStopping.from_config(self.config.early_stopping, monitor_direction(monitor, self.config.monitor_mode))
        result, best, started = FitResult(monitor=monitor, strategy="federated"), None, time.perf_counter()
        local = copy.deepcopy(model)
        bar = progress.add_task("federated rounds", total=self.fed.rounds) if progress is not None else None
        torch.manual_seed(self.config.seed)
        for rnd in range(1, self.fed.rounds + 1):
            round_start = time.perf_counter()
            chosen = np.sort(self.rng.choice(self.fed.clients, self.per_round, replace=False))
            global_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            states, sizes, losses = [], [], []
            for client in chosen:
                rows = torch.as_tensor(self.parts[client], device=self.device)
                state, loss, steps = self.local_train(local, global_state, train.x[rows], None if train.y is None else train.y[rows])
                states.append(state)
                sizes.append(len(rows))
                losses.append(loss)
                result.steps += steps
                result.samples_seen += len(rows) * self.fed.local_epochs
            model.load_state_dict(self.aggregate(global_state, states, sizes, rnd))
            record = {"epoch": rnd, "round": rnd, "train_loss": float(np.average(losses, weights=sizes)), "clients": len(chosen),
                      "lr": self.config.optimizer.lr}
            if val is not None:
                record.update(validate(model, val, self.task, self.config, self.autocast, self.device))
            if self.private is not None:
                record["epsilon"] = self.private.spent()
            record["seconds"] = time.perf_counter() - round_start
            result.history.append(record)
            if early.improved(monitored(record, monitor), rnd) and self.config.restore_best:
                best = {k: v.detach().clone() for k, v in model.state_dict().items()}
            if bar is not None:
                progress.update(bar, completed=rnd, description=f"round {rnd}/{self.fed.rounds} loss {record['train_loss']:.4f}")
            if early.should_stop:
                result.stopped, result.message = "early_stopping", f"stopped early at round {rnd}: {monitor} did not improve for {early.patience} rounds"
                break
        if best is not None:
            model.load_state_dict(best)
        result.best_score, result.best_epoch = early.best_score, early.best_epoch
        result.train_seconds = time.perf_counter() - started
        return result

    def local_train(self, local: torch.nn.Module, global_state: dict, x: torch.Tensor, y: Optional[torch.Tensor]) -> tuple[dict, float, int]:
        """One client's local epochs from the global weights: (its weights, its mean loss, its steps)."""
        local.load_state_dict(global_state)
        local.train()
        optimizer = build_optimizer(local.parameters(), self.config.optimizer)  # a fresh optimizer each round, as in FedAvg
        n, batch = x.shape[0], self.config.batch_size
        rates = LearningRates([optimizer], self.config, math.ceil(n / batch), PlateauScale(self.config.schedule, "min"))
        task = ProxTask(self.task, local, global_state, self.fed.mu) if self.fed.algorithm == "fedprox" else self.task
        step = StandardStep(local, local, task, optimizer, self.config, self.autocast, rates)
        total, steps = torch.zeros((), device=x.device), 0
        for _ in range(self.fed.local_epochs):
            order = torch.randperm(n, device=x.device)
            for lo in range(0, n, batch):
                rows = order[lo:lo + batch]
                total += step(x[rows], None if y is None else y[rows], steps, True)["loss"] * rows.numel()
                steps += 1
        return {k: v.detach().clone() for k, v in local.state_dict().items()}, float(total) / (n * self.fed.local_epochs), steps

    def aggregate(self, global_state: dict, states: list[dict], sizes: list[int], rnd: int) -> dict[str, torch.Tensor]:
        """The server's new global weights from what the sampled clients send (masked when secure)."""
        add = (lambda parts: secure_sum(parts, self.config.seed * 100_003 + rnd)) if self.fed.secure_aggregation else plain_sum
        if self.private is not None:
            return self.private.aggregate(global_state, states, add)
        summed = add([{k: v.double() * n for k, v in s.items()} for s, n in zip(states, sizes)])
        return {k: restore_dtype(v / float(sum(sizes)), global_state[k]) for k, v in summed.items()}

    def client_scores(self, model: torch.nn.Module, test: Split) -> dict:
        """The final model scored on each client's part of the test split: mean, worst, spread, per client."""
        from damoxing.evaluation.metrics import metric_direction

        y = None if test.y is None else test.y.numpy()
        parts, _ = partition(y, len(test), self.fed.clients, self.fed.partition, self.fed.alpha,
                             np.random.default_rng(self.config.seed + 1), self.shares)
        model.to(self.device).eval()
        scores: dict[str, list[float]] = {}
        for rows in parts:
            idx = torch.as_tensor(rows)
            yb = None if test.y is None else test.y[idx].to(self.device)
            values = self.task.validation_metrics(model, test.x[idx].to(self.device), yb, self.config.eval_batch_size, self.autocast)
            for name, value in values.items():
                scores.setdefault(name, []).append(float(value))
        summary = {}
        for name, values in scores.items():
            worst = min(values) if metric_direction(name) == "max" else max(values)
            summary[name] = {"mean": float(np.mean(values)), "worst": worst, "spread": max(values) - min(values), "per_client": values}
        return {"clients": self.fed.clients, "test_rows_per_client": [len(p) for p in parts], "metrics": summary}

    def summary(self) -> dict:
        block = {**self.fed.model_dump(mode="json"), "clients_per_round": self.per_round,
                 "train_rows_per_client": [len(p) for p in self.parts]}
        if self.private is not None:
            block["privacy"] = self.private.summary()
        return block


def check_federated(train: TrainConfig, model: torch.nn.Module, rows: Split, task, world: int) -> None:
    """Refuse what a simulated federation cannot do, with the reason."""
    fed, name, refusals = train.federated, type(model).__name__, []
    if isinstance(model, OwnsUpdate):
        refusals.append(f"model '{name}' runs its own update steps (e.g. a GAN's two players); federated clients train with the standard step")
    if world > 1:
        refusals.append("the federation is simulated in one process; drop --nproc")
    if train.grad_accum_steps > 1:
        refusals.append("train.grad_accum_steps must be 1 (each client steps on its own batches)")
    if train.checkpoint_every is not None:
        refusals.append("train.checkpoint_every cannot resume a federation; drop it")
    if fed.clients > len(rows):
        refusals.append(f"train.federated.clients is {fed.clients}, more than the {len(rows)} training rows; every client needs at least one row")
    if fed.partition == "dirichlet" and (rows.y is None or rows.y.is_floating_point()):
        refusals.append("partition: dirichlet splits by class label, and this task has none; use partition: iid")
    if refusals:
        raise ConfigError("train.federated cannot be used here: " + "; ".join(refusals) + ".")


class ClientPrivacy:
    """Client-level DP-FedAvg: clip each sampled client's update, average, add Gaussian noise;
    epsilon by opacus's RDP accountant over `rounds` rounds at sample rate m / clients."""

    def __init__(self, train: TrainConfig, sample_rate: float):
        from opacus.accountants import RDPAccountant
        from opacus.accountants.utils import get_noise_multiplier

        self.privacy, self.rounds, self.sample_rate = train.privacy, train.federated.rounds, sample_rate
        clients = train.federated.clients
        self.delta = min(1e-5, 1.0 / (10 * clients)) if self.privacy.delta == "auto" else float(self.privacy.delta)
        self.noise_multiplier = float(get_noise_multiplier(target_epsilon=self.privacy.epsilon, target_delta=self.delta,
                                                           sample_rate=sample_rate, steps=self.rounds, accountant="rdp"))
        self.accountant = RDPAccountant()
        self.generator = torch.Generator().manual_seed(train.seed + 7)

    def aggregate(self, global_state: dict, states: list[dict], add) -> dict[str, torch.Tensor]:
        clip = self.privacy.max_grad_norm
        updates = []
        for state in states:
            update = {k: state[k].double() - global_state[k].double() for k in state if global_state[k].is_floating_point()}
            norm = math.sqrt(sum(float(u.pow(2).sum()) for u in update.values()))
            updates.append({k: u * min(1.0, clip / (norm + 1e-12)) for k, u in update.items()})
        summed, m = add(updates), len(states)
        std = self.noise_multiplier * clip / m
        new = {k: v.clone() for k, v in global_state.items()}
        for k, total in summed.items():
            noise = torch.randn(total.shape, generator=self.generator, dtype=torch.float64).to(total.device) * std
            new[k] = restore_dtype(global_state[k].double() + total / m + noise, global_state[k])
        self.accountant.step(noise_multiplier=self.noise_multiplier, sample_rate=self.sample_rate)
        return new

    def spent(self) -> float:
        return float(self.accountant.get_epsilon(self.delta))

    def summary(self) -> dict:
        return {"level": "client", "epsilon": self.spent(), "target_epsilon": self.privacy.epsilon, "delta": self.delta,
                "noise_multiplier": self.noise_multiplier, "sample_rate": self.sample_rate,
                "max_grad_norm": self.privacy.max_grad_norm, "accountant": "rdp", "rounds": self.rounds}
