"""Transformer encoder (BERT-like) for classifying or regressing texts and numeric sequences.

Tokens are embedded (numeric steps projected), a position encoding is added (fixed sinusoids or
learned), then pre-norm blocks of multi-head self-attention and a feed-forward layer. Attention
runs through `torch.nn.functional.scaled_dot_product_attention` with a padding mask, so padded
positions are never attended to and the fused kernels run on GPU. The sequence becomes one vector
through a learned [CLS] vector put in front (pooling `cls`) or the mean over real tokens (`mean`).
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal, Optional

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from damoxing.config import ModelConfigBase
from damoxing.core.errors import ConfigError
from damoxing.models.export_view import ExportView, rows_and_steps
from damoxing.models.registry import MODELS


def sinusoidal_positions(length: int, d_model: int) -> torch.Tensor:
    """(length, d_model) fixed encodings of "Attention is all you need": sin on even, cos on odd dims."""
    position = torch.arange(length, dtype=torch.float32).unsqueeze(1)
    frequency = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
    table = torch.zeros(length, d_model)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency)[:, : d_model // 2]
    return table


class SelfAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, dropout: float):
        super().__init__()
        self.n_heads, self.dropout = n_heads, dropout
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
        """x (B, T, C); mask (B, 1, 1, T) True where a key may be attended to, or None."""
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class EncoderBlock(nn.Module):
    """Pre-norm: x + attention(ln(x)), then x + feed_forward(ln(x))."""

    def __init__(self, d_model: int, n_heads: int, ff_size: int, dropout: float):
        super().__init__()
        self.ln_1 = nn.LayerNorm(d_model)
        self.attn = SelfAttention(d_model, n_heads, dropout)
        self.ln_2 = nn.LayerNorm(d_model)
        self.ff = nn.Sequential(nn.Linear(d_model, ff_size), nn.GELU(), nn.Linear(ff_size, d_model))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
        x = x + self.drop(self.attn(self.ln_1(x), mask))
        return x + self.drop(self.ff(self.ln_2(x)))


class TransformerConfig(ModelConfigBase):
    type: Literal["transformer"] = "transformer"
    d_model: Optional[int] = Field(None, ge=8, description="width of every token's vector; a multiple of heads")
    heads: Optional[int] = Field(None, ge=1)
    layers: Optional[int] = Field(None, ge=1)
    ff_size: Optional[int] = Field(None, ge=1, description="hidden width of each block's feed-forward layer")
    dropout: Optional[float] = Field(None, ge=0, lt=1)
    positional: Literal["sinusoidal", "learned"] = "sinusoidal"
    pooling: Literal["cls", "mean"] = Field("cls", description="cls: a learned vector in front of the sequence; mean: over real tokens")
    PRESETS: ClassVar[dict] = {
        "tiny": {"d_model": 32, "heads": 2, "layers": 1, "ff_size": 64, "dropout": 0.0},
        "small": {"d_model": 128, "heads": 4, "layers": 2, "ff_size": 512, "dropout": 0.1},
        "base": {"d_model": 768, "heads": 12, "layers": 12, "ff_size": 3072, "dropout": 0.1},  # BERT-base shape
    }


@MODELS.register("transformer")
class TransformerEncoder(nn.Module):
    config_class = TransformerConfig
    input_kinds = frozenset({"text", "sequence"})

    def __init__(self, config: TransformerConfig, n_outputs: int, length: int, vocab_size: Optional[int] = None,
                 pad_id: Optional[int] = None, n_features: Optional[int] = None):
        """Text: vocab_size and pad_id; numeric sequences: n_features. `length`: the input's T."""
        super().__init__()
        if config.d_model % config.heads:
            raise ConfigError(f"model.d_model ({config.d_model}) must be a multiple of model.heads ({config.heads}).")
        self.config, self.pad_id, self.is_text = config, pad_id, vocab_size is not None
        d = config.d_model
        self.embed = nn.Embedding(vocab_size, d, padding_idx=pad_id) if self.is_text else nn.Linear(n_features, d)
        self.cls = nn.Parameter(torch.zeros(1, 1, d)) if config.pooling == "cls" else None
        positions = length + (1 if self.cls is not None else 0)
        if config.positional == "learned":
            self.positions = nn.Parameter(torch.randn(positions, d) * 0.02)
        else:  # a fixed table: rebuilt from the shape, so not part of the saved weights
            self.register_buffer("positions", sinusoidal_positions(positions, d), persistent=False)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(EncoderBlock(d, config.heads, config.ff_size, config.dropout) for _ in range(config.layers))
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, n_outputs)

    @classmethod
    def from_config(cls, config: TransformerConfig, schema) -> "TransformerEncoder":
        length = schema.input_shape[0]
        if schema.kind == "text":
            if schema.pad_id is None or not schema.vocab_size:
                raise ConfigError("model.type 'transformer' on text needs token ids with a vocabulary and a padding id.")
            return cls(config, schema.n_outputs, length, vocab_size=schema.vocab_size, pad_id=schema.pad_id)
        return cls(config, schema.n_outputs, length, n_features=schema.input_shape[-1])

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T) token ids or (B, T, F) values -> (B, d_model)."""
        h = self.embed(x)  # (B, T, C)
        B, T = h.shape[:2]
        real = (x != self.pad_id) if self.is_text else torch.ones(B, T, dtype=torch.bool, device=h.device)
        real = real | (torch.arange(T, device=h.device) == 0)  # an all-padding text still attends to its first position
        if self.cls is not None:
            h = torch.cat([self.cls.expand(B, -1, -1), h], dim=1)
            real = torch.cat([torch.ones(B, 1, dtype=torch.bool, device=h.device), real], dim=1)
        h = self.drop(h + self.positions[: h.shape[1]])
        mask = real[:, None, None, :] if self.is_text else None  # (B, 1, 1, T): broadcast over heads and queries
        for block in self.blocks:
            h = block(h, mask)
        h = self.ln_f(h)
        if self.cls is not None:
            return h[:, 0]
        weights = real.unsqueeze(-1).to(h.dtype)
        return (h * weights).sum(1) / weights.sum(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))  # (B, n_outputs)

    def private_hint(self) -> Optional[str]:
        """Why train.privacy refuses this encoder, and the option that makes it trainable. The
        [CLS] vector is a parameter of the encoder itself, which also holds the fixed position
        table (a buffer): opacus has no per-sample gradient for a layer with both. With mean
        pooling every parameter sits in a layer it knows (embedding or linear, layer norms, the
        attention's linear maps); with learned positions (no buffer) opacus differentiates the
        whole encoder per sample through functorch, which is correct but slow."""
        if self.cls is None or self.config.positional == "learned":
            return None
        return ("the transformer's [CLS] vector is a parameter of the encoder itself, beside its fixed position table, and "
                "DP-SGD has no per-sample gradient for that; set model.pooling: mean to train it with differential privacy")

    def export_view(self) -> ExportView:
        """Batch and length vary; a sequence may be as long as the positions table (less the [CLS] slot)."""
        return rows_and_steps(self, "the transformer encoder", most=self.positions.shape[0] - (1 if self.cls is not None else 0))
