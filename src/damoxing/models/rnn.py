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
from damoxing.models.export_view import ExportView, rows_and_steps
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

    def export_view(self) -> ExportView:
        """The packing-free twin; its time axis varies, except for cell `rnn` (nn.RNN has no exportable
        loop over time, so it is traced at the padded length every text is given)."""
        return rows_and_steps(PackingFreeRNN(self).eval(), f"the {self.config.cell.upper()} network (its packing-free path)",
                              varies=self.config.cell != "rnn")


class PackingFreeRNN(nn.Module):
    """An `RNN`'s forward without `pack_padded_sequence`, for the exporters; same weights, same outputs.

    The recurrence runs over the whole padded (B, T) batch, one layer and direction at a time:
      * forward direction: padding comes after a row's last real token, so the state at step len - 1
        is the packed final state; it is gathered there.
      * backward direction: it must start at the last real token. Reversing each row's valid prefix
        with one gather (index len-1-t for t < len, t after) puts the real tokens first, in reverse
        order; the reverse weights run forward over that, and the state at step len - 1 is the
        packed backward final state (its outputs, gathered back with the same index, are the packed
        backward outputs).
      * layer l + 1 reads layer l's [forward, backward] outputs; positions past a row's end feed
        only states past it, which are never read.
      * mean / max pooling mask the outputs past each row's end (the packed model's are zeros there).
    An empty text counts as one step, as the packed model (lengths clamped to 1) counts it.
    """

    def __init__(self, model: RNN):
        super().__init__()
        self.model = model
        rnn = model.rnn
        self.cells = nn.ModuleList(  # [layer][direction]
            nn.ModuleList(_one_direction(rnn, layer, reverse, rnn.input_size if layer == 0 else rnn.hidden_size * model.directions)
                          for reverse in (False, True)[: model.directions])
            for layer in range(rnn.num_layers))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T) token ids or (B, T, F) values -> (B, directions * hidden), as RNN.forward_features."""
        m = self.model
        h = m.drop(m.embed(x))  # (B, T, E)
        B, T = x.shape[0], x.shape[1]
        steps = torch.arange(T, device=x.device)
        if m.is_text:
            mask = x != m.pad_id
            lengths = mask.sum(1).clamp_min(1)  # (B,): the packed model packs an empty text as one step
        else:
            mask = torch.ones(B, T, dtype=torch.bool, device=x.device)
            lengths = torch.full((B,), T, dtype=torch.long, device=x.device)
        last = (lengths - 1).view(B, 1, 1)
        finals = []
        for layer, directions in enumerate(self.cells):
            outs = []
            for backward, cell in enumerate(directions):
                out, _ = cell(reverse_valid_prefix(h, lengths) if backward else h)  # (B, T, H); the returned state is past the padding
                if layer == len(self.cells) - 1:
                    finals.append(out.gather(1, last.expand(-1, -1, out.shape[2])).squeeze(1))  # (B, H) at each row's last step
                outs.append(reverse_valid_prefix(out, lengths) if backward else out)
            h = torch.cat(outs, dim=-1)  # (B, T, D * H)
            if layer < len(self.cells) - 1 and self.training and m.rnn.dropout:
                h = nn.functional.dropout(h, m.rnn.dropout, True)  # nn.LSTM's dropout between layers
        if m.config.pooling == "last":
            return torch.cat(finals, dim=-1)
        valid = (mask | (steps == 0)).unsqueeze(-1)  # (B, T, 1); an empty text pools its first step
        h = h * valid  # the packed model's outputs are zeros past each row's end
        if m.config.pooling == "mean":
            return h.sum(1) / valid.sum(1)
        return h.masked_fill(~valid, float("-inf")).amax(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.head(self.model.drop(self.forward_features(x)))  # (B, n_outputs)


def _one_direction(rnn: nn.RNNBase, layer: int, reverse: bool, input_size: int) -> nn.RNNBase:
    """A one-layer, one-direction cell of rnn's kind holding the (layer, direction) weights of `rnn` (shared, not copied)."""
    options = {"nonlinearity": rnn.nonlinearity} if isinstance(rnn, nn.RNN) else {}
    cell = type(rnn)(input_size, rnn.hidden_size, num_layers=1, batch_first=True, bias=rnn.bias, **options)
    suffix = f"_l{layer}" + ("_reverse" if reverse else "")
    for name in ("weight_ih", "weight_hh") + (("bias_ih", "bias_hh") if rnn.bias else ()):
        setattr(cell, f"{name}_l0", getattr(rnn, f"{name}{suffix}"))  # RNNBase.__setattr__ refreshes its flat weights
    return cell


def reverse_valid_prefix(h: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(B, T, E) -> each row's first lengths[b] steps in reverse order, the steps after them in place.

    The index is its own inverse, so applying this twice gives h back."""
    steps = torch.arange(h.shape[1], device=h.device).unsqueeze(0)  # (1, T)
    ends = lengths.unsqueeze(1)  # (B, 1)
    index = torch.where(steps < ends, ends - 1 - steps, steps)  # (B, T)
    return h.gather(1, index.unsqueeze(-1).expand(-1, -1, h.shape[2]))
