"""Recurrent networks: a plain RNN, LSTM or GRU over token ids (text) or numeric sequences.

Text goes through an embedding (the padding id embeds to zeros), numeric sequences (B, T, F)
through a linear projection. Padded texts are packed, so the recurrence stops at each text's last
real token and padding never reaches the pooled state: `last` is the final hidden state (both
directions when bidirectional), `mean` and `max` pool the outputs over real tokens only.
"""

from __future__ import annotations

from typing import ClassVar, Literal, Optional

import torch
from pydantic import Field
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from damoxing.config import ModelConfigBase
from damoxing.core.errors import ConfigError
from damoxing.models.registry import MODELS

CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


class RNNConfig(ModelConfigBase):
    type: Literal["rnn"] = "rnn"
    cell: Literal["rnn", "lstm", "gru"] = Field("lstm", description="rnn: tanh recurrence; lstm and gru: gated, for longer memory")
    layers: Optional[int] = Field(None, ge=1)
    hidden: Optional[int] = Field(None, ge=1, description="hidden state size per direction")
    embedding_dim: Optional[int] = Field(None, ge=1, description="token embedding width (text) or input projection width (sequences)")
    bidirectional: bool = False
    dropout: Optional[float] = Field(None, ge=0, lt=1, description="on the inputs, between layers and before the head")
    pooling: Literal["last", "mean", "max"] = Field("last", description="how the states over time become one vector")
    PRESETS: ClassVar[dict] = {
        "tiny": {"layers": 1, "hidden": 32, "embedding_dim": 32, "dropout": 0.0},
        "small": {"layers": 2, "hidden": 128, "embedding_dim": 128, "dropout": 0.1},
        "base": {"layers": 2, "hidden": 512, "embedding_dim": 256, "dropout": 0.2},
    }


@MODELS.register("rnn")
class RNN(nn.Module):
    config_class = RNNConfig
    input_kinds = frozenset({"text", "sequence"})

    def __init__(self, config: RNNConfig, n_outputs: int, vocab_size: Optional[int] = None, pad_id: Optional[int] = None,
                 n_features: Optional[int] = None):
        """Text: vocab_size and pad_id; numeric sequences: n_features."""
        super().__init__()
        self.config, self.pad_id = config, pad_id
        if vocab_size is not None:
            self.embed = nn.Embedding(vocab_size, config.embedding_dim, padding_idx=pad_id)
        else:
            self.embed = nn.Linear(n_features, config.embedding_dim)
        self.is_text = vocab_size is not None
        self.drop = nn.Dropout(config.dropout)
        self.rnn = CELLS[config.cell](config.embedding_dim, config.hidden, num_layers=config.layers, batch_first=True,
                                      bidirectional=config.bidirectional, dropout=config.dropout if config.layers > 1 else 0.0)
        self.directions = 2 if config.bidirectional else 1
        self.head = nn.Linear(self.directions * config.hidden, n_outputs)

    @classmethod
    def from_config(cls, config: RNNConfig, schema) -> "RNN":
        if schema.kind == "text":
            if schema.pad_id is None or not schema.vocab_size:
                raise ConfigError("model.type 'rnn' on text needs token ids with a vocabulary and a padding id.")
            return cls(config, schema.n_outputs, vocab_size=schema.vocab_size, pad_id=schema.pad_id)
        return cls(config, schema.n_outputs, n_features=schema.input_shape[-1])

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T) token ids or (B, T, F) values -> (B, directions * hidden)."""
        h = self.drop(self.embed(x))  # (B, T, E)
        mask = (x != self.pad_id) if self.is_text else None
        if mask is None:
            out, state = self.rnn(h)
        else:
            # packing needs the lengths on the CPU (one small copy per batch); it is what keeps padding out of the states
            lengths = mask.sum(1).clamp_min(1).cpu()
            packed, state = self.rnn(pack_padded_sequence(h, lengths, batch_first=True, enforce_sorted=False))
            out, _ = pad_packed_sequence(packed, batch_first=True, total_length=x.shape[1])  # (B, T, D * H), zeros past the end
        if self.config.pooling == "last":
            h_n = state[0] if isinstance(state, tuple) else state  # (layers * D, B, H); an LSTM also returns its cell state
            return torch.cat(list(h_n[-self.directions :]), dim=-1)  # the top layer, every direction
        valid = (mask if mask is not None else torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)).unsqueeze(-1)
        valid = valid | (torch.arange(x.shape[1], device=x.device) == 0).view(1, -1, 1)  # an empty text pools its first step
        if self.config.pooling == "mean":
            return (out * valid).sum(1) / valid.sum(1)
        return out.masked_fill(~valid, float("-inf")).amax(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(self.forward_features(x)))  # (B, n_outputs)
