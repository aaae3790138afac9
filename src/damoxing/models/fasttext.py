"""A bag of embeddings (fastText-style) for classifying and regressing texts: a strong, fast
baseline on small data.

Each text becomes the mean of its tokens' embeddings and, with `ngrams: 2`, of its adjacent token
pairs' embeddings, the pairs hashed into `buckets` rows (Joulin et al., "Bag of Tricks for
Efficient Text Classification", 2016). Dropout, then one linear layer. There is no attention and
no order beyond the pairs, so it trains fast on a CPU and has few ways to overfit a small data set.
"""

from __future__ import annotations

from typing import ClassVar, Literal, Optional

import torch
from pydantic import Field
from torch import nn

from damoxing.config import ModelConfigBase
from damoxing.core.errors import ConfigError
from damoxing.models.export_view import ExportView, rows_and_steps
from damoxing.models.registry import MODELS

PAIR_PRIME = 1_000_003  # pair (a, b) -> (a * PAIR_PRIME + b) mod buckets


class FastTextConfig(ModelConfigBase):
    type: Literal["fasttext"] = "fasttext"
    dim: Optional[int] = Field(None, ge=2, description="width of every token's (and pair's) embedding")
    ngrams: Optional[Literal[1, 2]] = Field(None, description="1: tokens only; 2: tokens and adjacent token pairs (hashed)")
    buckets: Optional[int] = Field(None, ge=1, description="rows of the hashed pair embedding (ngrams: 2)")
    dropout: Optional[float] = Field(None, ge=0, lt=1, description="dropout on the averaged text vector")
    PRESETS: ClassVar[dict] = {
        "tiny": {"dim": 8, "ngrams": 2, "buckets": 64, "dropout": 0.0},
        "small": {"dim": 64, "ngrams": 2, "buckets": 20_000, "dropout": 0.3},
        "base": {"dim": 128, "ngrams": 2, "buckets": 200_000, "dropout": 0.3},
    }


@MODELS.register("fasttext")
class FastText(nn.Module):
    config_class = FastTextConfig
    input_kinds = frozenset({"text"})

    def __init__(self, config: FastTextConfig, n_outputs: int, vocab_size: int, pad_id: int, length: int):
        super().__init__()
        self.config, self.pad_id, self.length = config, pad_id, length
        self.tokens = nn.Embedding(vocab_size, config.dim, padding_idx=pad_id)
        self.pairs = nn.Embedding(config.buckets, config.dim) if config.ngrams == 2 else None
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.dim, n_outputs)
        nn.init.uniform_(self.tokens.weight, -1.0 / config.dim, 1.0 / config.dim)  # fastText's initialisation
        with torch.no_grad():
            self.tokens.weight[pad_id].zero_()
        if self.pairs is not None:
            nn.init.uniform_(self.pairs.weight, -1.0 / config.dim, 1.0 / config.dim)

    @classmethod
    def from_config(cls, config: FastTextConfig, schema) -> "FastText":
        if schema.pad_id is None or not schema.vocab_size:
            raise ConfigError("model.type 'fasttext' needs token ids with a vocabulary and a padding id (text data).")
        return cls(config, schema.n_outputs, schema.vocab_size, schema.pad_id, schema.input_shape[0])

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T) right-padded token ids -> (B, dim): the mean of the real tokens' (and pairs') embeddings."""
        real = (x != self.pad_id).unsqueeze(-1).float()  # (B, T, 1)
        total = (self.tokens(x) * real).sum(1)
        count = real.sum(1)
        if self.pairs is not None:  # with one column the pairs are empty and add nothing (no branch on the length: exportable)
            # each token with the next one (rolled, the last position masked): no slices of the length
            # axis, whose contiguity checks would pin an exported graph's length
            not_last = (torch.arange(x.shape[1], device=x.device) < x.shape[1] - 1).view(1, -1, 1)
            both = real * torch.roll(real, -1, 1) * not_last  # (B, T, 1): both tokens of the pair are real
            ids = torch.remainder(x * PAIR_PRIME + torch.roll(x, -1, 1), self.pairs.num_embeddings)
            total = total + (self.pairs(ids) * both).sum(1)
            count = count + both.sum(1)
        return total / count.clamp_min(1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(self.forward_features(x)))  # (B, n_outputs)

    def export_view(self) -> ExportView:
        """Batch and length vary (a bag has no positions table: any length up to the data's)."""
        return rows_and_steps(self, "the bag-of-embeddings text model")
