"""A run's model as an ONNX graph or a torch.export program, checked at once against the run's model.

    report = export_onnx("runs/digits-cnn-...", "model.onnx")     # or a Predictor (damoxing.load)
    report = export_torch("runs/digits-cnn-...", "model.pt2")
    report.parity.passed, report.parity.max_abs_diff, report.parity.agreement
    report.to_dict()                                               # what export.json holds

What is exported is the family's call (`models/export_view.py`): the classifier or regressor
itself (outputs: logits, or values in training units), a language model's next-token logits at
every position, the packing-free twin of an `rnn`, a `vae`'s decoder or a `gan`'s generator
(z -> samples), a `pretrained` model with its LoRA adapters merged. The batch axis always varies;
the sequence axis of token and step inputs varies up to the longest the model reads. A run saved
as ONNX already (a scikit-learn reference) is copied as it is.

The ONNX graph follows the contract of inference/onnx_model.py (input "input", output "outputs",
metadata `damoxing.outputs`), so `OnnxModel` runs it where the torch model would run. Inputs are
preprocessed rows: preprocessing.json (deploy/bundle.py writes it beside the graph) turns raw data
into them; preprocessing is not part of the graph.

Every export is checked before it is returned (deploy/parity.py): onnxruntime (or the loaded
program) and the run's own model run the run's test rows, at batch 1, 3 and the whole split and at
other lengths; a check that fails raises ExportFailed and the file is removed (check=False returns
the report instead, for a caller that holds the result to its own thresholds).
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch

from damoxing.core.errors import RunFolderError, UserError
from damoxing.deploy.exporters import (
    LOWEST_OPSET,
    ExportFailed,
    load_program,
    onnx_opset,
    to_onnx,
    to_program,
)
from damoxing.deploy.parity import TOLERANCE, Parity, check_parity, parity_inputs
from damoxing.models.export_view import Exportable, ExportView

FORMATS = {"onnx": ".onnx", "torch": ".pt2"}
OUTPUT_KINDS = {"classification": "logits", "regression": "values", "language_modeling": "logits", "generation": "samples"}
CLASS_OUTPUTS = ("logits", "log_probabilities")  # outputs whose argmax is the prediction
EXAMPLE_ROWS = 4  # rows traced; at least 2 (see deploy/exporters.py)

RunLike = Union[str, Path, Any]  # a run folder, or a Predictor (inference/predictor.py)


@dataclass
class ExportReport:
    """What an export wrote and how it was checked; export.json holds `to_dict()`.

    Attributes:
        run: the run folder exported.   format: "onnx" | "torch".   file: the exported file.
        what: which module the file holds (e.g. "the decoder (z -> x)").
        input, output: name, dtype, shape (varying axes by name) and kind of the one input and output.
        opset: the ONNX opset (onnx only).   bytes, sha256: the file's size and hash.
        export_seconds: time to export and save.   parity: the check (deploy/parity.py).
        versions: the libraries that wrote and checked the file.
    """

    run: str
    format: str
    file: str
    what: str
    input: dict
    output: dict
    opset: Optional[int]
    bytes: int
    sha256: str
    export_seconds: float
    parity: Parity
    versions: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"run": self.run, "format": self.format, "file": self.file, "what": self.what, "input": self.input,
                "output": self.output, "opset": self.opset, "bytes": self.bytes, "sha256": self.sha256,
                "export_seconds": round(self.export_seconds, 3), "parity": self.parity.to_dict(), "versions": self.versions}


def export_onnx(run: RunLike, path: str | Path, opset: Optional[int] = None, *, check: bool = True) -> ExportReport:
    """Export a run's model to an ONNX file at `path` (which must not exist) and check it with onnxruntime.

    Args:
        run: a run folder or a Predictor.
        opset: the ONNX opset to write (18 or later; default: the exporter's own, 20 with torch 2.13).
        check: raise ExportFailed (and remove the file) when the parity check fails.
    """
    from damoxing.inference.onnx_model import OnnxModel

    predictor, path = open_run(run), _new_file(path)
    if opset is not None and opset < LOWEST_OPSET:
        raise UserError(f"--opset {opset} is too old: torch's ONNX exporter writes opset {LOWEST_OPSET} and later. "
                        "Leave --opset out for the exporter's default.")
    if predictor.model_format == "onnx":
        return _copy_onnx(predictor, path, opset, check)
    view, rows, inputs_name = _view_and_rows(predictor)
    started = time.perf_counter()
    try:
        to_onnx(view, _example(rows), path, OUTPUT_KINDS[predictor.task_name], opset)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    seconds = time.perf_counter() - started
    candidate = _session_or_fail(OnnxModel, path)
    parity = _check(predictor, view, rows, candidate, f"onnxruntime {_version('onnxruntime')} on {path.name}", inputs_name)
    hint = f" An --opset other than the exporter's default (here {opset}) can cause this: leave it out." if opset is not None else ""
    return _finish(predictor, view, rows, path, "onnx", onnx_opset(path), seconds, parity, check, hint)


def export_torch(run: RunLike, path: str | Path, *, check: bool = True) -> ExportReport:
    """Export a run's model to a torch.export archive (.pt2) at `path` and check the loaded program.

    The archive holds no pickled member (deploy/exporters.py); loading it with torch.export.load
    still means trusting the file, since torch would unpickle members a changed file adds.
    `exporters.load_program` checks an archive before it loads it."""
    predictor, path = open_run(run), _new_file(path)
    if predictor.model_format == "onnx":
        raise UserError(f"'{predictor.path}' holds its model as an ONNX graph (model.onnx: a {predictor.config.model.type} reference), "
                        "not as a torch model, so it has no torch.export program. Use --format onnx (the graph is copied).")
    view, rows, inputs_name = _view_and_rows(predictor)
    started = time.perf_counter()
    try:
        to_program(view, _example(rows), path)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    seconds = time.perf_counter() - started
    parity = _check(predictor, view, rows, load_program(path), f"torch.export program {path.name} (torch {torch.__version__})", inputs_name)
    return _finish(predictor, view, rows, path, "torch", None, seconds, parity, check)


# ------------------------------------------------------------------------------------ the steps


def open_run(run: RunLike):
    """A Predictor on the CPU (the exporters trace on the CPU), from a run folder or as given."""
    from damoxing.inference.predictor import Predictor, load

    if isinstance(run, Predictor):
        return run
    from safetensors import SafetensorError

    try:
        return load(run)
    except SafetensorError as e:  # a truncated or changed weights file
        raise RunFolderError(f"'{Path(run) / 'model.safetensors'}' cannot be read as weights ({e}); the run folder is damaged. "
                             "Nothing was exported.") from None
    except (OSError, KeyError) as e:  # a file missing, or a hand-edited one lacking a key
        raise RunFolderError(f"'{run}' could not be loaded ({type(e).__name__}: {e}); the run folder is damaged. "
                             "Nothing was exported.") from None


def _new_file(path: str | Path) -> Path:
    path = Path(path)
    if os.path.lexists(path):
        raise UserError(f"'{path}' already exists; an export never overwrites a file. Give a new path.")
    return path


def _view_and_rows(predictor) -> tuple[ExportView, torch.Tensor, str]:
    """The model's export view, and the inputs to check it on: the run's test rows, or latent vectors
    for a decoder / generator (as many as the test split has rows, drawn with the run's seed)."""
    model = predictor.model
    if not isinstance(model, Exportable):
        raise UserError(f"Model type '{predictor.config.model.type}' declares no export view (models/export_view.py), so it cannot be exported.")
    view = model.export_view()
    view.module.eval()
    if view.input == "latent":
        n = max(EXAMPLE_ROWS, _split_rows(predictor, "test"))
        seed = predictor.config.train.seed
        z = torch.randn(n, view.latent_dim, generator=torch.Generator().manual_seed(seed))
        return view, z, f"{n} latent vectors z ~ N(0, I) drawn with the run's seed {seed}"
    from damoxing.inference.run_data import run_data

    prepared = run_data(predictor)
    split = next((s for s in ("test", "val", "train") if len(prepared.x.get(s, ())) > 0), None)
    if split is None:
        raise UserError(f"'{predictor.path}' has no rows in any split to check an export on.")
    rows = torch.as_tensor(np.ascontiguousarray(prepared.x[split]))
    return view, rows, f"the run's {split} split: {rows.shape[0]} rows rebuilt from {prepared.source}"


def _split_rows(predictor, split: str) -> int:
    from damoxing.inference.run_data import split_indices

    return int(len(split_indices(predictor.path).get(split, ())))


def _example(rows: torch.Tensor) -> torch.Tensor:
    """The batch traced: the first rows, at least 2 (a single row is repeated)."""
    example = rows[:EXAMPLE_ROWS]
    return example if example.shape[0] >= 2 else example.repeat(2, *([1] * (example.dim() - 1)))


def _session_or_fail(onnx_model_class, path: Path):
    try:
        return onnx_model_class.load(path, threads=1)
    except UserError as e:
        path.unlink(missing_ok=True)
        raise ExportFailed(f"The exported graph does not load in onnxruntime {_version('onnxruntime')}: {e.message} "
                           "Nothing was written; an --opset the runtime does not read causes this (leave --opset out).") from None


def _check(predictor, view: ExportView, rows: torch.Tensor, candidate, candidate_name: str, inputs_name: str) -> Parity:
    """The exported file against the model it came from: the run's model for rows (the packed rnn, the
    unmerged LoRA model), the view's own module for latent inputs (decode / generate)."""
    reference = predictor.model if view.input == "rows" else view.module
    varying = [axis for axis in view.axes if axis != 0]
    classes = OUTPUT_KINDS[predictor.task_name] in CLASS_OUTPUTS
    return check_parity(reference, candidate, parity_inputs(rows, varying), classes, reference_name=_reference_name(view),
                        candidate_name=candidate_name, inputs_name=inputs_name, tolerance=TOLERANCE)


def _reference_name(view: ExportView) -> str:
    if view.input == "latent":
        return f"{view.what} of the run's torch model (eager, float32, CPU)"
    return "the run's torch model (eager, float32, CPU)"


def _finish(predictor, view: Optional[ExportView], rows: torch.Tensor, path: Path, fmt: str, opset: Optional[int],
            seconds: float, parity: Parity, check: bool, hint: str = "") -> ExportReport:
    """The report; with `check`, a failed parity check removes the file and raises ExportFailed."""
    if check and not parity.passed:
        path.unlink(missing_ok=True)
        raise ExportFailed(f"The export of '{predictor.path}' to {fmt} did not reproduce the run's model, so nothing was written: "
                           f"{parity.summary()}.{hint}")
    data = path.read_bytes()
    kind = OUTPUT_KINDS.get(predictor.task_name, "outputs") if view is not None else predictor.model.output_kind
    return ExportReport(
        run=str(predictor.path), format=fmt, file=str(path), what=view.what if view is not None else _copied_what(predictor),
        input=_input_facts(view, rows, path), output={"name": "outputs", "kind": kind, "shape": _output_shape(predictor, view, rows)},
        opset=opset, bytes=len(data), sha256=hashlib.sha256(data).hexdigest(), export_seconds=seconds, parity=parity,
        versions={name: _version(name) for name in ("damoxing", "torch", "onnx", "onnxruntime", "onnxscript")})


def _copy_onnx(predictor, path: Path, opset: Optional[int], check: bool) -> ExportReport:
    """A run saved as ONNX: its graph copied byte for byte, then checked like any export (against the run's own session)."""
    from damoxing.inference.onnx_model import OnnxModel

    source = predictor.path / "model.onnx"
    written = onnx_opset(source)
    if opset is not None and opset != written:
        raise UserError(f"--opset {opset} cannot be applied to '{predictor.path}': its model is already an ONNX graph (opset {written}), "
                        "which export copies as it is. Leave --opset out.")
    started = time.perf_counter()
    path.write_bytes(source.read_bytes())
    seconds = time.perf_counter() - started
    rows, inputs_name = _own_rows(predictor)
    parity = check_parity(predictor.model, _session_or_fail(OnnxModel, path), parity_inputs(rows, []),
                          predictor.model.output_kind in CLASS_OUTPUTS, reference_name=f"the run's own model.onnx (onnxruntime {_version('onnxruntime')})",
                          candidate_name=f"onnxruntime {_version('onnxruntime')} on {path.name}", inputs_name=inputs_name)
    return _finish(predictor, None, rows, path, "onnx", written, seconds, parity, check)


def _own_rows(predictor) -> tuple[torch.Tensor, str]:
    from damoxing.inference.run_data import run_data

    prepared = run_data(predictor)
    split = next((s for s in ("test", "val", "train") if len(prepared.x.get(s, ())) > 0), "test")
    rows = torch.as_tensor(np.ascontiguousarray(prepared.x[split]))
    return rows, f"the run's {split} split: {rows.shape[0]} rows rebuilt from {prepared.source}"


def _copied_what(predictor) -> str:
    return f"the run's own ONNX graph ({predictor.config.model.type}: {getattr(predictor.config.model, 'estimator', 'model')}), copied"


def _input_facts(view: Optional[ExportView], rows: torch.Tensor, path: Path) -> dict:
    """Name, dtype, shape (varying axes by name) and kind of the input; a copied graph's as the graph declares them."""
    dtype = "int64" if rows.dtype == torch.int64 else "float32"
    if view is None:
        import onnx

        declared = onnx.load(str(path), load_external_data=False).graph.input[0]
        shape = [d.dim_param or d.dim_value for d in declared.type.tensor_type.shape.dim]
        return {"name": declared.name, "dtype": dtype, "shape": shape, "kind": "rows"}
    shape = [view.axes[i].name if i in view.axes else int(size) for i, size in enumerate(rows.shape)]
    if view.input == "latent":
        shape = ["batch", view.latent_dim]
    most = {axis.name: axis.most for axis in view.axes.values() if axis.most}
    return {"name": "input", "dtype": dtype, "shape": shape, "kind": view.input, **({"longest": most} if most else {})}


@torch.no_grad()
def _output_shape(predictor, view: Optional[ExportView], rows: torch.Tensor) -> list:
    """The output's shape, an axis that follows a varying input axis named after it (a language model's
    logits (batch, seq, vocab)): found by running the module at a shorter length too."""
    example = _example(rows)
    module = view.module if view is not None else predictor.model
    shape = list(module(example).shape)
    names: list = ["batch"] + [int(size) for size in shape[1:]]
    for i, axis in (view.axes.items() if view is not None else []):
        if i == 0 or example.shape[i] < 2:
            continue
        shorter = list(module(example.narrow(i, 0, example.shape[i] - 1)).shape)
        names = [axis.name if j > 0 and shorter[j] != shape[j] else name for j, name in enumerate(names)]
    return names


def _version(name: str) -> str:
    if name == "damoxing":
        from damoxing.core.version import __version__

        return __version__
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"
