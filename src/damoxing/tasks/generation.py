"""Generation (vae, gan): the model's own losses, and sample quality beside trivial generators."""

from __future__ import annotations

import torch

from damoxing.config import TrainConfig
from damoxing.core.errors import ConfigError
from damoxing.tasks.base import SPLITS, TASKS, EvaluationSettings, Task


@TASKS.register("generation")
class Generation(Task):
    """Generative models (vae, gan): no labels; the model defines its own losses.

    The model provides `losses(x, generator) -> ({"loss", ...parts}, outputs)` and
    `sample(n, generator) -> (n, *input_shape)`. Validation and evaluation report the mean of every
    loss part over the split and the quality of as many samples as the split has rows (at most
    2048, fixed seed): `frechet_distance` and `diversity` (evaluate/generation.py).
    """

    name = "generation"
    headline = "frechet_distance"

    @classmethod
    def validation_metric_names(cls, model_type=None) -> tuple[str, ...]:
        """loss, the family's loss parts (Generative.loss_parts, e.g. vae: recon, kl), and sample quality.

        model_type None: every generative family's parts (what some generative model computes)."""
        from damoxing.models import MODELS
        from damoxing.models.protocols import Generative
        from damoxing.models.registry import family_task

        families = [MODELS.get(model_type)] if model_type in MODELS else [f for name, f in MODELS.items() if family_task(name) == cls.name]
        parts = [p for family in families if isinstance(family, Generative) for p in family.loss_parts]
        return ("loss", *dict.fromkeys(parts), "frechet_distance", "diversity")

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
        from damoxing.evaluation.generation import MAX_SAMPLES, sample_quality

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

    def evaluate(self, model, data, settings: EvaluationSettings, autocast, splits=SPLITS, predictions=None) -> dict:
        """metrics.json for a generative run: per split the model's numbers, a baseline's, a reference's.

        baseline: a generator that draws every pixel/feature independently from a normal with the
        training split's per-position mean and std (what is left without modelling any
        correlation), plus, for a model with a reconstruction loss, the loss of reconstructing
        every input as the training mean (KL 0: a decoder that ignores z). reference: the
        training images themselves scored as if generated, i.e. what a generator that
        reproduces the training data would get (diversity about 1, a small frechet_distance).
        `data`: PreparedData (or anything with x: split -> inputs, including "train").
        """
        from damoxing.evaluation.generation import MAX_SAMPLES, sample_quality

        device = next(model.parameters()).device
        train = torch.as_tensor(data.x["train"], device=device)
        mean, std = train.mean(0), train.std(0, unbiased=False)
        out: dict = {}
        for split in splits:
            if split not in data.x or len(data.x[split]) < 2:
                continue
            x = torch.as_tensor(data.x[split], device=device)
            metrics = {k: float(v) for k, v in self.validation_metrics(model, x, None, settings.batch_size, autocast).items()}
            n = min(x.shape[0], MAX_SAMPLES)
            g = torch.Generator().manual_seed(settings.seed)
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
