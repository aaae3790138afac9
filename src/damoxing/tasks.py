"""Tasks: what a model is trained to do, i.e. its loss, its per-epoch metrics and its evaluation.

The loop asks the task for a batch's loss; evaluation asks it for metrics and the trivial
baseline. A new task (language modelling, generation) registers here with `@TASKS.register`.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from damoxing.config import TrainConfig
from damoxing.data.text import IGNORE_INDEX
from damoxing.errors import ConfigError
from damoxing.evaluate import metrics as M
from damoxing.registry import Registry

TASKS: Registry = Registry("task")

LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "cross_entropy": F.cross_entropy,
    "mse": F.mse_loss,
    "mae": F.l1_loss,
    "huber": F.huber_loss,
}


class Task:
    """Base task: `loss(model, x, y)` for training, metrics for evaluation."""

    name = "task"
    default_loss = "mse"
    allowed_losses: tuple[str, ...] = ("mse",)

    def __init__(self, train_config: TrainConfig):
        loss = self.default_loss if train_config.loss == "auto" else train_config.loss
        if loss not in self.allowed_losses:
            raise ConfigError(f"train.loss '{loss}' does not fit task '{self.name}'. Valid losses for it: {', '.join(self.allowed_losses)} (or auto).")
        self.loss_name = loss
        self.loss_fn = LOSSES[loss]

    def loss(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean loss of one batch and the model's outputs."""
        outputs = model(x)
        return self.loss_from_outputs(outputs, y), outputs

    def loss_from_outputs(self, outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.loss_fn(outputs, y)

    @torch.no_grad()
    def validation_metrics(self, model, x, y, batch_size: int, autocast) -> dict[str, torch.Tensor]:
        """Loss and cheap metrics over a whole split, as device scalars (the caller syncs once)."""
        from damoxing.train.loop import model_outputs

        outputs = model_outputs(model, x, batch_size, autocast)
        return {"loss": self.loss_from_outputs(outputs, y), **self.epoch_metrics(outputs, y)}

    def epoch_metrics(self, outputs: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """Cheap metrics on device tensors, computed every epoch on the validation split."""
        return {}

    def predictions(self, outputs: torch.Tensor) -> np.ndarray:
        """Model outputs -> what metrics take (probabilities, values)."""
        return outputs.float().cpu().numpy()


@TASKS.register("classification")
class Classification(Task):
    name = "classification"
    default_loss = "cross_entropy"
    allowed_losses = ("cross_entropy",)

    def epoch_metrics(self, outputs, y):
        return {"accuracy": (outputs.argmax(-1) == y).float().mean()}

    def predictions(self, outputs):
        return torch.softmax(outputs.float(), dim=-1).cpu().numpy()  # (N, K) probabilities

    def metrics(self, y_true: np.ndarray, pred: np.ndarray, class_names=None) -> dict:
        return M.classification_metrics(y_true, pred, class_names)

    def baseline(self, y_train: np.ndarray, y_true: np.ndarray, n_outputs: int, class_names=None) -> dict:
        return M.baseline_classification(y_train, y_true, n_outputs, class_names)


@TASKS.register("regression")
class Regression(Task):
    name = "regression"
    default_loss = "mse"
    allowed_losses = ("mse", "mae", "huber")

    def loss_from_outputs(self, outputs, y):
        return self.loss_fn(outputs.reshape(y.shape).float(), y)

    def epoch_metrics(self, outputs, y):
        outputs = outputs.reshape(y.shape).float()
        mse = F.mse_loss(outputs, y)
        return {"mse": mse, "r2": 1 - mse / y.var(unbiased=False).clamp_min(1e-12)}

    def metrics(self, y_true, pred, class_names=None) -> dict:
        return M.regression_metrics(y_true, pred)

    def baseline(self, y_train, y_true, n_outputs, class_names=None) -> dict:
        return M.baseline_regression(y_train, y_true)


@TASKS.register("language_modeling")
class LanguageModeling(Task):
    """Next-token prediction: x (B, T) token ids, y (B, T) the token after each (IGNORE_INDEX past the end).

    The loss is the mean cross-entropy per target token; perplexity = exp(loss); bits per byte =
    total nats / ln 2 / the UTF-8 bytes of the split's text, which compares across tokenizers.
    """

    name = "language_modeling"
    default_loss = "cross_entropy"
    allowed_losses = ("cross_entropy",)

    def loss_from_outputs(self, outputs, y):
        return F.cross_entropy(outputs.flatten(0, 1).float(), y.flatten(), ignore_index=IGNORE_INDEX)

    @torch.no_grad()
    def token_loss_sum(self, model, x, y, batch_size: int, autocast) -> tuple[torch.Tensor, torch.Tensor]:
        """(sum of token nats, number of target tokens) over a split, as device scalars; never holds all logits."""
        was_training = model.training
        model.eval()
        total = torch.zeros((), device=x.device)  # float32: MPS has no float64, and per-batch sums keep it precise
        count = torch.zeros((), device=x.device, dtype=torch.int64)
        # a batch of logits is (B, T, V): keep it near 64M values whatever the vocabulary
        rows = max(1, min(batch_size, 64_000_000 // max(1, x.shape[1] * self._vocab(model))))
        for start in range(0, x.shape[0], rows):
            xb, yb = x[start : start + rows], y[start : start + rows]
            with autocast():
                logits = model(xb)
            total += F.cross_entropy(logits.flatten(0, 1).float(), yb.flatten(), ignore_index=IGNORE_INDEX, reduction="sum")
            count += (yb != IGNORE_INDEX).sum()
        model.train(was_training)
        return total, count

    @staticmethod
    def _vocab(model) -> int:
        return int(getattr(model, "vocab_size", 50_000))

    def validation_metrics(self, model, x, y, batch_size, autocast):
        total, count = self.token_loss_sum(model, x, y, batch_size, autocast)
        loss = (total / count.clamp_min(1)).float()
        return {"loss": loss, "perplexity": loss.exp()}

    def epoch_metrics(self, outputs, y):
        return {"perplexity": self.loss_from_outputs(outputs, y).exp()}

    @staticmethod
    def summarize(nats: float, tokens: int, n_bytes: int) -> dict:
        """loss (nats per token), perplexity and bits per byte from a split's totals."""
        loss = nats / max(tokens, 1)
        return {"loss": loss, "perplexity": float(np.exp(min(loss, 700.0))), "bits_per_byte": float(nats / np.log(2) / n_bytes) if n_bytes else None,
                "tokens": int(tokens), "bytes": int(n_bytes)}

    def evaluate_split(self, model, x, y, n_bytes: int, batch_size: int, autocast) -> dict:
        total, count = self.token_loss_sum(model, x, y, batch_size, autocast)
        return self.summarize(float(total), int(count), n_bytes)

    def unigram_baseline(self, train_targets: np.ndarray, targets: np.ndarray, vocab_size: int, n_bytes: int) -> dict:
        """The same metrics for a unigram model: token frequencies of the training split, add-one smoothed."""
        train = train_targets[train_targets != IGNORE_INDEX]
        counts = np.bincount(train, minlength=vocab_size).astype(np.float64) + 1.0
        log_p = np.log(counts / counts.sum())
        test = targets[targets != IGNORE_INDEX]
        return self.summarize(float(-log_p[test].sum()), len(test), n_bytes)
@TASKS.register("generation")
class Generation(Task):
    """Generative models (vae, gan): no labels; the model defines its own losses.

    The model provides `losses(x, generator) -> ({"loss", ...parts}, outputs)` and
    `sample(n, generator) -> (n, *input_shape)`. Validation and evaluation report the mean of every
    loss part over the split and the quality of as many samples as the split has rows (at most
    2048, fixed seed): `frechet_distance` and `diversity` (evaluate/generation.py).
    """

    name = "generation"

    def __init__(self, train_config: TrainConfig):
        if train_config.loss != "auto":
            raise ConfigError(f"train.loss is '{train_config.loss}', but generative models (vae, gan) define their own loss; leave train.loss at auto.")
        self.loss_name = "model"
        self.seed = train_config.seed

    def loss(self, model, x, y=None):
        parts, outputs = model.losses(x)
        return parts["loss"], outputs  # outputs: reconstructions (vae) or fakes (gan), shaped like x

    @torch.no_grad()
    def validation_metrics(self, model, x, y, batch_size: int, autocast) -> dict[str, torch.Tensor]:
        from damoxing.evaluate.generation import MAX_SAMPLES, sample_quality

        was_training = model.training
        model.eval()
        generator = torch.Generator(device=x.device).manual_seed(self.seed)  # the same noise every epoch
        sums: dict[str, torch.Tensor] = {}
        with autocast():
            for start in range(0, x.shape[0], batch_size):
                xb = x[start : start + batch_size]
                parts, _ = model.losses(xb, generator=generator)
                for name, value in parts.items():
                    sums[name] = sums.get(name, 0) + value.float() * xb.shape[0]
        samples = draw_samples(model, min(x.shape[0], MAX_SAMPLES), self.seed, batch_size, autocast)
        model.train(was_training)
        metrics = {name: total / x.shape[0] for name, total in sums.items()}
        metrics.update({k: v.to(x.device) for k, v in sample_quality(samples, x[:MAX_SAMPLES]).items()})
        return metrics

    def evaluate(self, model, splits: dict[str, np.ndarray], device, batch_size: int, autocast) -> dict:
        """metrics.json for a generative run: per split the model's numbers, a baseline's, a reference's.

        baseline: a generator that draws every pixel/feature independently from a normal with the
        training split's per-position mean and std (what is left without modelling any
        correlation), plus, for a model with a reconstruction loss, the loss of reconstructing
        every input as the training mean (KL 0: a decoder that ignores z). reference: the
        training images themselves scored as if generated, i.e. what a generator that
        reproduces the training data would get (diversity about 1, a small frechet_distance).
        """
        from damoxing.evaluate.generation import MAX_SAMPLES, sample_quality

        train = torch.as_tensor(splits["train"], device=device)
        mean, std = train.mean(0), train.std(0, unbiased=False)
        out: dict = {}
        for split in ("val", "test"):
            if split not in splits or len(splits[split]) < 2:
                continue
            x = torch.as_tensor(splits[split], device=device)
            metrics = {k: float(v) for k, v in self.validation_metrics(model, x, None, batch_size, autocast).items()}
            n = min(x.shape[0], MAX_SAMPLES)
            g = torch.Generator().manual_seed(self.seed)
            independent = mean + std * torch.randn(n, *mean.shape, generator=g).to(device)
            baseline = {k: float(v) for k, v in sample_quality(independent, x).items()}
            if "recon" in metrics:
                recon = float((x - mean).pow(2).flatten(1).sum(1).mean())
                baseline.update({"loss": recon, "recon": recon, "kl": 0.0})
            picked = torch.randperm(train.shape[0], generator=g)[:n].to(device)
            out[split] = metrics
            out.setdefault("baseline", {})[split] = baseline
            out.setdefault("reference", {})[split] = {k: float(v) for k, v in sample_quality(train[picked], x).items()}
        return out


@torch.no_grad()
def draw_samples(model, n: int, seed: int, batch_size: int = 1024, autocast=None) -> torch.Tensor:
    """n samples (n, *input_shape) from a generative model in eval mode, on its device, as float32.

    The noise comes from one CPU generator seeded with `seed`: the same seed and batch size give
    the same samples on any device.
    """
    import contextlib

    was_training = model.training
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    chunks = []
    with (autocast or contextlib.nullcontext)():
        for start in range(0, n, batch_size):
            chunks.append(model.sample(min(batch_size, n - start), generator).float())
    model.train(was_training)
    return torch.cat(chunks)
