"""Language modelling: next-token cross-entropy; perplexity and bits per byte beside a unigram baseline."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from damoxing.data.text import IGNORE_INDEX
from damoxing.models.protocols import LanguageModel
from damoxing.tasks.base import SPLITS, TASKS, EvaluationSettings, Task


@TASKS.register("language_modeling")
class LanguageModeling(Task):
    """Next-token prediction: x (B, T) token ids, y (B, T) the token after each (IGNORE_INDEX past the end).

    The loss is the mean cross-entropy per target token; perplexity = exp(loss); bits per byte =
    total nats / ln 2 / the UTF-8 bytes of the split's text, which compares across tokenizers.
    """

    name = "language_modeling"
    headline = "perplexity"
    epoch_metric_names = ("perplexity",)
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
        return int(model.vocab_size) if isinstance(model, LanguageModel) else 50_000

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

    def evaluate(self, model, data, settings: EvaluationSettings, autocast, splits=SPLITS, predictions=None) -> dict:
        """metrics.json of a language model: loss, perplexity and bits per byte of each split that has
        text, and the same for a unigram model of the training tokens (baseline.{split}).

        `data`: PreparedData of a corpus (x, y token blocks per split; summary["split_bytes"])."""
        device = next(model.parameters()).device
        metrics: dict = {}
        for split in splits:
            if split not in data.x or len(data.x[split]) == 0:
                continue
            n_bytes = data.summary["split_bytes"][split]
            x, y = torch.as_tensor(data.x[split], device=device), torch.as_tensor(data.y[split], device=device)
            metrics[split] = self.evaluate_split(model, x, y, n_bytes, settings.batch_size, autocast)
            baseline = self.unigram_baseline(data.y["train"], data.y[split], data.preprocessing.schema.vocab_size, n_bytes)
            metrics.setdefault("baseline", {})[split] = baseline
        return metrics

    def unigram_baseline(self, train_targets: np.ndarray, targets: np.ndarray, vocab_size: int, n_bytes: int) -> dict:
        """The same metrics for a unigram model: token frequencies of the training split, add-one smoothed."""
        train = train_targets[train_targets != IGNORE_INDEX]
        counts = np.bincount(train, minlength=vocab_size).astype(np.float64) + 1.0
        log_p = np.log(counts / counts.sum())
        test = targets[targets != IGNORE_INDEX]
        return self.summarize(float(-log_p[test].sum()), len(test), n_bytes)
