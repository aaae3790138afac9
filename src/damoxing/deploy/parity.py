"""The parity check: does an exported model give the outputs of the model it came from?

Both run on the same inputs - the run's own test rows (or, for a decoder / generator, latent
vectors), at batch 1, batch 3 and the whole split, and for inputs whose length varies also at
lengths other than the traced one - and two numbers are kept for every input shape:

    max_abs_diff   the largest |reference - exported| over every output value
    agreement      classifiers and language models: the share of predictions (argmax over the
                   last axis) that are the same; other outputs (values, samples): the share of rows
                   whose every value is within the tolerance

The export passes when max_abs_diff <= tolerance (1e-4 by default: float32 exports measure 1e-8 to
1e-6) and agreement is 1.0 on every input. `check_parity` is also what a quantized model is held to,
with a looser tolerance and a required agreement of the caller's choosing.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional

import numpy as np
import torch

TOLERANCE = 1e-4
LARGEST_BATCH = 512  # the whole split runs in batches of at most this many rows (memory: attention grows with B * T^2)


@dataclass
class ShapeCheck:
    """One input shape: its batch and length, and how far the outputs were apart."""

    shape: list[int]
    max_abs_diff: float
    agreement: float


@dataclass
class Parity:
    """The parity of an exported model with its reference, over several input shapes.

    Attributes:
        reference: what the outputs were compared with (e.g. "the run's torch model, eager, float32, CPU").
        candidate: what was checked (e.g. "onnxruntime 1.32.0 on model.onnx").
        inputs: where the inputs came from (e.g. "the run's test split: 120 rows").
        agreement_of: "predictions (argmax)" or "rows within tolerance".
        tolerance, min_agreement: the thresholds the check was held to.
        checks: one ShapeCheck per input shape.
        error: why the candidate could not run an input, if it could not.
    """

    reference: str
    candidate: str
    inputs: str
    agreement_of: str
    tolerance: float = TOLERANCE
    min_agreement: float = 1.0
    checks: list[ShapeCheck] = field(default_factory=list)
    error: Optional[str] = None

    @property
    def max_abs_diff(self) -> float:
        return max((c.max_abs_diff for c in self.checks), default=math.inf)

    @property
    def agreement(self) -> float:
        return min((c.agreement for c in self.checks), default=0.0)

    @property
    def passed(self) -> bool:
        return self.error is None and bool(self.checks) and self.max_abs_diff <= self.tolerance and self.agreement >= self.min_agreement

    def summary(self) -> str:
        """One line: the verdict and its two numbers."""
        if self.error:
            return f"parity check FAILED: {self.error}"
        shapes = ", ".join("x".join(map(str, c.shape)) for c in self.checks)
        verdict = "passed" if self.passed else "FAILED"
        return (f"parity check {verdict}: max abs diff {self.max_abs_diff:.2e} (tolerance {self.tolerance:g}), "
                f"{self.agreement_of} agreement {self.agreement:.4f} (required {self.min_agreement:g}) over inputs {shapes}")

    def to_dict(self) -> dict:
        return {**{k: v for k, v in asdict(self).items() if k != "checks"}, "max_abs_diff": _json_float(self.max_abs_diff),
                "agreement": self.agreement, "passed": self.passed,
                "checks": [{**asdict(c), "max_abs_diff": _json_float(c.max_abs_diff)} for c in self.checks]}


def parity_inputs(rows: torch.Tensor, varying: list[int]) -> list[torch.Tensor]:
    """The inputs a check runs: the first 1 and 3 rows and every row (in batches of at most
    LARGEST_BATCH), and, for each varying axis besides the batch, the first 3 rows cut to half its
    length and to length 1."""
    n = rows.shape[0]
    inputs = [rows[:b] for b in sorted({1, min(3, n)})]
    inputs += [rows[start : start + LARGEST_BATCH] for start in range(0, n, LARGEST_BATCH)]
    for axis in varying:
        length = rows.shape[axis]
        for shorter in sorted({max(1, length // 2), 1} - {length}, reverse=True):
            inputs.append(rows[: min(3, n)].narrow(axis, 0, shorter))
    return [x for x in inputs if x.shape[0]]


@torch.no_grad()
def check_parity(reference: Callable[[torch.Tensor], torch.Tensor], candidate: Callable[[torch.Tensor], torch.Tensor],
                 inputs: list[torch.Tensor], classes: bool, *, reference_name: str, candidate_name: str, inputs_name: str,
                 tolerance: float = TOLERANCE, min_agreement: float = 1.0) -> Parity:
    """Run `reference` and `candidate` on every input and compare (see the module docstring).

    Args:
        reference, candidate: a batch (B, ...) -> outputs (B, ...); torch modules or anything called alike.
        inputs: the batches to run (`parity_inputs`).
        classes: outputs are class scores over the last axis (agreement of argmax), else values.
    Returns:
        a Parity; a candidate that raises on an input ends the check with `error` set (not passed).
    """
    parity = Parity(reference_name, candidate_name, inputs_name, "predictions (argmax)" if classes else "rows within tolerance",
                    tolerance, min_agreement)
    for x in inputs:
        want = reference(x).detach().float().cpu().numpy()
        try:
            got = candidate(x).detach().float().cpu().numpy()
        except Exception as e:  # noqa: BLE001 - an ONNX Runtime or torch.export failure is the check's result
            parity.error = f"{candidate_name} could not run an input of shape {list(x.shape)}: {type(e).__name__}: {_first_line(e)}"
            return parity
        if got.shape != want.shape:
            parity.error = f"{candidate_name} gave outputs of shape {list(got.shape)} for an input of shape {list(x.shape)}; the reference gave {list(want.shape)}"
            return parity
        parity.checks.append(_compare(want, got, classes, tolerance, list(x.shape)))
    return parity


def _compare(want: np.ndarray, got: np.ndarray, classes: bool, tolerance: float, shape: list[int]) -> ShapeCheck:
    both_nan = np.isnan(want) & np.isnan(got)
    diff = np.where(both_nan, 0.0, np.abs(want.astype(np.float64) - got.astype(np.float64)))
    diff = np.nan_to_num(diff, nan=math.inf)
    worst = float(diff.max()) if diff.size else 0.0
    if classes:
        agreement = float((want.argmax(-1) == got.argmax(-1)).mean()) if want.size else 1.0
    else:
        per_row = diff.reshape(diff.shape[0], -1).max(1) if diff.size else np.zeros(0)
        agreement = float((per_row <= tolerance).mean()) if per_row.size else 1.0
    return ShapeCheck(shape, worst, agreement)


def _first_line(error: Exception, most: int = 300) -> str:
    line = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return line if len(line) <= most else line[:most] + " ..."


def _json_float(value: float):
    return value if math.isfinite(value) else str(value)
