"""What a model family exports: the `ExportView` its `export_view()` returns (models/protocols.py: Exportable).

`damoxing export` (deploy/export.py) turns a run's model into an ONNX graph or a torch.export
program. What goes into the graph is the family's call, not the exporter's: each family's
`export_view()` says which module to trace (itself; a packing-free twin for `rnn`; the decoder of
a `vae`, the generator of a `gan`; a copy with LoRA adapters merged for `pretrained`), what it
reads (the data's preprocessed rows, or latent vectors z ~ N(0, I)), and which input axes may vary
(always the batch; the sequence axis of token and step inputs, up to the longest the model reads).
The exporter asks `isinstance(model, protocols.Exportable)` and never names a family.

The view's module shares the model's weights (or holds a merged copy); it is traced in eval mode,
so dropout is off and batch norm uses its running statistics.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from torch import nn

INPUTS = ("rows", "latent")  # the data's preprocessed rows | z ~ N(0, I), shaped (B, latent_dim)


@dataclass(frozen=True)
class Axis:
    """One input axis that may vary in the exported graph (torch.export.Dim(name, min=2, max=most)).

    The exporters specialize an axis whose example size is 0 or 1, so the traced minimum is 2;
    the graphs still run at 1 (checked after every export)."""

    name: str
    most: Optional[int] = None  # the longest the model takes (a positions table's length), None: unbounded


BATCH = Axis("batch")


@dataclass
class ExportView:
    """What to export of a model, and how to feed it.

    Attributes:
        module: forward(one tensor) -> one tensor; traced by the exporter (eval mode).
        what: a few words for export.json, e.g. "the classifier", "the decoder (z -> x)".
        input: "rows" (the run's preprocessed inputs: float32, or int64 token ids) or "latent".
        axes: input axis index -> Axis for every axis that may vary; the rest stay as traced.
        latent_dim: the width of z when input is "latent".
    """

    module: "nn.Module"
    what: str
    input: str = "rows"
    axes: dict[int, Axis] = field(default_factory=lambda: {0: BATCH})
    latent_dim: Optional[int] = None

    def __post_init__(self):
        if self.input not in INPUTS:
            raise ValueError(f"ExportView.input must be one of {INPUTS}, got {self.input!r}")
        if self.input == "latent" and not self.latent_dim:
            raise ValueError("an ExportView of latent inputs needs latent_dim")
        if self.axes.get(0) != BATCH:
            raise ValueError("axis 0 of an exported input is always the batch")


def rows_and_steps(module: "nn.Module", what: str, varies: bool = True, most: Optional[int] = None) -> ExportView:
    """The view of a model over (B, T[, F]) token or step inputs: batch and, if `varies`, T up to `most` vary."""
    axes = {0: BATCH, 1: Axis("seq", most)} if varies else {0: BATCH}
    return ExportView(module, what, axes=axes)
