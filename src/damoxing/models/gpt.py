"""GPT: a decoder-only causal transformer language model, nanoGPT style, read top to bottom:
attention -> MLP -> block -> config -> model.

On a corpus (kind "corpus") it is a language model: logits (B, T, vocab) for the next token at
every position. On labelled texts (kind "text") the same body feeds a classification/regression
head through the hidden state of the last real token (or the mean over real tokens), which is how
a pretrained `gpt` is fine-tuned (`model.init_from`). Attention is
`torch.nn.functional.scaled_dot_product_attention`, so the fused kernels run on GPU. Generation
keeps a key/value cache and never looks further back than the context length.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import ClassVar, Literal, Optional

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from damoxing.config import ModelConfigBase
from damoxing.core.errors import ConfigError
from damoxing.models.export_view import ExportView, rows_and_steps
from damoxing.models.registry import MODELS


class KVCache:
    """Keys and values of every layer for the tokens seen so far: (1, heads, context, head_size) each."""

    def __init__(self, n_layers: int, n_heads: int, context: int, head_size: int, device, dtype):
        shape = (n_layers, 1, n_heads, context, head_size)
        self.keys = torch.zeros(shape, device=device, dtype=dtype)
        self.values = torch.zeros(shape, device=device, dtype=dtype)
        self.length = 0


class CausalSelfAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, dropout: float, bias: bool):
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=bias)
        self.proj = nn.Linear(d_model, d_model, bias=bias)
        self.dropout = dropout
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, cache: Optional[KVCache] = None, layer: int = 0) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
        causal = True
        if cache is not None:  # generation: attend to the cached past plus these T new tokens
            start = cache.length
            if start and T > 1:
                raise ValueError("after the prompt, a cached step takes one token at a time")
            cache.keys[layer, :, :, start : start + T] = k
            cache.values[layer, :, :, start : start + T] = v
            k, v = cache.keys[layer, :, :, : start + T], cache.values[layer, :, :, : start + T]
            causal = start == 0  # one new token after a prefix may see all of it
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=causal)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # re-assemble the heads side by side
        return self.resid_dropout(self.proj(y))


class MLP(nn.Module):
    def __init__(self, d_model: int, dropout: float, bias: bool):
        super().__init__()
        self.fc = nn.Linear(d_model, 4 * d_model, bias=bias)
        self.proj = nn.Linear(4 * d_model, d_model, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    """Pre-norm transformer block: x + attention(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, d_model: int, n_heads: int, dropout: float, bias: bool):
        super().__init__()
        self.ln_1 = nn.LayerNorm(d_model, bias=bias)
        self.attn = CausalSelfAttention(d_model, n_heads, dropout, bias)
        self.ln_2 = nn.LayerNorm(d_model, bias=bias)
        self.mlp = MLP(d_model, dropout, bias)

    def forward(self, x: torch.Tensor, cache: Optional[KVCache] = None, layer: int = 0) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), cache, layer)
        return x + self.mlp(self.ln_2(x))


class GPTConfig(ModelConfigBase):
    type: Literal["gpt"] = "gpt"
    layers: Optional[int] = Field(None, ge=1)
    heads: Optional[int] = Field(None, ge=1)
    d_model: Optional[int] = Field(None, ge=8, description="width of the residual stream; a multiple of heads")
    context_length: Optional[int] = Field(None, ge=2, description="the most tokens the model sees at once (learned positions)")
    dropout: Optional[float] = Field(None, ge=0, lt=1)
    bias: bool = Field(True, description="biases in linear layers and layer norms (GPT-2 has them)")
    tie_embeddings: bool = Field(True, description="the output layer reuses the token embedding matrix (GPT-2)")
    pooling: Literal["last", "mean"] = Field("last", description="classification/regression on text: the last real token's state, or the mean over real tokens")
    PRESETS: ClassVar[dict] = {
        "tiny": {"layers": 2, "heads": 2, "d_model": 64, "context_length": 64, "dropout": 0.0},
        "small": {"layers": 4, "heads": 4, "d_model": 256, "context_length": 256, "dropout": 0.1},
        "base": {"layers": 12, "heads": 12, "d_model": 768, "context_length": 1024, "dropout": 0.1},  # GPT-2 small
    }


@MODELS.register("gpt")
class GPT(nn.Module):
    config_class = GPTConfig
    input_kinds = frozenset({"corpus", "text"})

    def __init__(self, config: GPTConfig, vocab_size: int, n_outputs: Optional[int] = None, pad_id: Optional[int] = None):
        """n_outputs None: a language model (logits over the vocabulary); else a head of n_outputs on pooled states."""
        super().__init__()
        if config.d_model % config.heads:
            raise ConfigError(f"model.d_model ({config.d_model}) must be a multiple of model.heads ({config.heads}).")
        self.config, self.vocab_size, self.pad_id = config, vocab_size, pad_id
        self.context_length = config.context_length
        self.wte = nn.Embedding(vocab_size, config.d_model)
        self.wpe = nn.Embedding(config.context_length, config.d_model)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config.d_model, config.heads, config.dropout, config.bias) for _ in range(config.layers))
        self.ln_f = nn.LayerNorm(config.d_model, bias=config.bias)
        # tied: logits use wte.weight directly, so the state dict holds the matrix once (safetensors refuses shared tensors)
        self.lm_head = None if config.tie_embeddings else nn.Linear(config.d_model, vocab_size, bias=False)
        self.head = nn.Linear(config.d_model, n_outputs) if n_outputs is not None else None
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2: residual projections scaled down with depth
            if name.endswith("proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.layers))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    @classmethod
    def from_config(cls, config: GPTConfig, schema) -> "GPT":
        if not schema.vocab_size:
            raise ConfigError("model.type 'gpt' needs token ids with a known vocabulary (a text column or a .txt corpus).")
        length = schema.input_shape[0]
        if length > config.context_length:
            what = "data.block_size" if schema.kind == "corpus" else "the padded text length (data.tokenizer.max_length)"
            raise ConfigError(f"{what} is {length} tokens, longer than the model's context (model.context_length {config.context_length}). "
                              f"Use at most {config.context_length}, or a larger model.context_length.")
        lm = schema.task == "language_modeling"
        return cls(config, schema.vocab_size, None if lm else schema.n_outputs, schema.pad_id)

    def forward_features(self, idx: torch.Tensor, cache: Optional[KVCache] = None) -> torch.Tensor:
        """Token ids (B, T) -> final hidden states (B, T, d_model)."""
        T = idx.shape[1]
        start = cache.length if cache is not None else 0
        if start + T > self.context_length:
            raise ValueError(f"{start + T} tokens exceed the context length {self.context_length}")
        pos = torch.arange(start, start + T, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))  # (B, T, C)
        for layer, block in enumerate(self.blocks):
            x = block(x, cache, layer)
        if cache is not None:
            cache.length += T
        return self.ln_f(x)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Hidden states (..., d_model) -> next-token logits (..., vocab)."""
        return self.lm_head(hidden) if self.lm_head is not None else F.linear(hidden, self.wte.weight)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """(B, T) ids -> (B, T, vocab) next-token logits, or (B, n_outputs) with a head."""
        hidden = self.forward_features(idx)
        if self.head is None:
            return self.logits(hidden)
        return self.head(self._pool(hidden, idx))

    def export_view(self) -> ExportView:
        """The full-sequence forward: (B, T) ids -> logits at every position (language model) or the head's
        outputs; T up to the context. Generation's key/value cache is not part of the graph."""
        what = "the language model (next-token logits at every position)" if self.head is None else "the gpt with its head"
        return rows_and_steps(self, what, most=self.context_length)

    def _pool(self, hidden: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """(B, T, C) -> (B, C) over real tokens: right padding means the last real one is at length - 1."""
        real = (idx != self.pad_id) if self.pad_id is not None else torch.ones_like(idx, dtype=torch.bool)
        if self.config.pooling == "mean":
            weights = real.unsqueeze(-1).to(hidden.dtype)
            return (hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)
        last = (real.sum(1) - 1).clamp_min(0)  # an all-padding text falls back to position 0
        return hidden[torch.arange(idx.shape[0], device=idx.device), last]

    # -- generation -----------------------------------------------------------------------------

    def new_cache(self, device) -> KVCache:
        c = self.config
        return KVCache(c.layers, c.heads, self.context_length, c.d_model // c.heads, device, self.wte.weight.dtype)

    @torch.no_grad()
    def generate_tokens(self, prompt: list[int], max_new_tokens: int, pick: Callable[[torch.Tensor], int]) -> Iterator[int]:
        """Yield up to max_new_tokens ids after `prompt`; `pick(logits (vocab,)) -> id` chooses each one.

        The prompt is cropped to the last context_length tokens. Keys and values are cached, so each
        new token costs one position; when the context is full, the cache is rebuilt from the most
        recent half context (learned positions cannot slide), never from more than the context.
        """
        if self.head is not None:
            raise ConfigError("This gpt has a classification/regression head, not a language-model head; it cannot generate text.")
        self.eval()
        device = self.wte.weight.device
        tokens = list(prompt)[-self.context_length :]
        cache = self.new_cache(device)
        hidden = self.forward_features(torch.tensor([tokens], device=device), cache)
        for _ in range(max_new_tokens):
            next_id = pick(self.logits(hidden[0, -1]).float())
            yield next_id
            tokens.append(next_id)
            if cache.length >= self.context_length:
                keep = tokens[-max(1, self.context_length // 2) :]
                cache = self.new_cache(device)
                hidden = self.forward_features(torch.tensor([keep], device=device), cache)
            else:
                hidden = self.forward_features(torch.tensor([[next_id]], device=device), cache)
