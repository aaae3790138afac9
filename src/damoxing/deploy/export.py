"""A run's model as an ONNX graph or a torch.export program, checked at once against the run's model.

    report = export_onnx("runs/digits-cnn-...", "model.onnx")     # or a Predictor (damoxing.load)
    report = export_torch("runs/digits-cnn-...", "model.pt2")
    report.parity.passed, report.parity.max_abs_diff, report.parity.agreement
    report.to_dict()                                               # what export.json holds
    check_file(run, "model.int8.onnx", tolerance=0.5, min_agreement=0.99)   # any other file, same inputs
    check_inputs(predictor)                                        # the view, reference and rows used

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
from damoxing.models.export_view import ExportView
from damoxing.models.protocols import Exportable

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
        check: raise ExportFailed (and remove the file) when the parity check fails; False returns the
            report whatever the check found.
    """
    predictor, path = open_run(run), _new_file(path)
    if opset is not None and opset < LOWEST_OPSET:
        raise UserError(f"--opset {opset} is too old: torch's ONNX exporter writes opset {LOWEST_OPSET} and later. "
                        "Leave --opset out for the exporter's default.")
    if predictor.model_format == "onnx":
        return _copy_onnx(predictor, path, opset, check)
    inputs = check_inputs(predictor)
    started = time.perf_counter()
    try:
        to_onnx(inputs.view, _example(inputs.rows), path, OUTPUT_KINDS[predictor.task_name], opset)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    seconds = time.perf_counter() - started
    parity = _check(inputs, _onnx_session(path), f"onnxruntime {_version('onnxruntime')} on {path.name}")
    hint = f" An --opset other than the exporter's default (here {opset}) can cause this: leave it out." if opset is not None else ""
    return _finish(predictor, inputs, path, "onnx", onnx_opset(path), seconds, parity, check, hint)


def export_torch(run: RunLike, path: str | Path, *, check: bool = True) -> ExportReport:
    """Export a run's model to a torch.export archive (.pt2) at `path` and check the loaded program.

    The archive holds no pickled member (deploy/exporters.py); loading it with torch.export.load
    still means trusting the file, since torch would unpickle members a changed file adds.
    `exporters.load_program` checks an archive before it loads it."""
    predictor, path = open_run(run), _new_file(path)
    if predictor.model_format == "onnx":
        raise UserError(f"'{predictor.path}' holds its model as an ONNX graph (model.onnx: a {predictor.config.model.type} reference), "
                        "not as a torch model, so it has no torch.export program. Use --format onnx (the graph is copied).")
    inputs = check_inputs(predictor)
    started = time.perf_counter()
    try:
        to_program(inputs.view, _example(inputs.rows), path)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    seconds = time.perf_counter() - started
    parity = _check(inputs, load_program(path), f"torch.export program {path.name} (torch {torch.__version__})")
    return _finish(predictor, inputs, path, "torch", None, seconds, parity, check)


def check_file(run: RunLike, path: str | Path, *, tolerance: float = TOLERANCE, min_agreement: float = 1.0) -> Parity:
    """Hold an existing .onnx (onnxruntime) or .pt2 file to the parity check against the run's model, on
    the inputs an export is checked on: e.g. an int8-quantized graph, with a looser tolerance and the
    agreement it must keep. Returns the Parity (nothing raised when it does not pass)."""
    predictor, path = open_run(run), Path(path)
    inputs = check_inputs(predictor)
    if path.suffix == ".pt2":
        candidate, name = load_program(path), f"torch.export program {path.name}"
    else:
        candidate, name = _onnx_session(path, remove=False), f"onnxruntime {_version('onnxruntime')} on {path.name}"
    return _check(inputs, candidate, name, tolerance, min_agreement)


@dataclass
class CheckInputs:
    """What an export of a run is traced with and checked on.

    Attributes:
        view: the model's ExportView (None for a run saved as ONNX: its graph is copied).
        reference: what the export must reproduce: the run's model for rows (the packed rnn, the
            unmerged LoRA model), the view's module for latent inputs (decode / generate).
        rows: the run's test rows, preprocessed (or latent vectors), in the model's input dtype.
        description: where the rows came from, for the report.
        varying: the input axes besides the batch that vary (checked at other lengths).
        classes: the outputs are class scores (agreement of argmax), else values or samples.
    """

    view: Optional[ExportView]
    reference: torch.nn.Module
    rows: torch.Tensor
    description: str
    varying: list[int]
    classes: bool


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


def check_inputs(predictor) -> CheckInputs:
    """The model's export view and the inputs to check it on: the run's test split (else val, else
    train) rebuilt from its source, or for a decoder / generator as many latent vectors as the test
    split has rows (at least 4), drawn with the run's seed."""
    if predictor.model_format == "onnx":
        rows, description = _run_rows(predictor)
        return CheckInputs(None, predictor.model, rows, description, [], predictor.model.output_kind in CLASS_OUTPUTS)
    model = predictor.model
    if not isinstance(model, Exportable):
        raise UserError(f"Model type '{predictor.config.model.type}' declares no export view (models/export_view.py), so it cannot be exported.")
    view = model.export_view()
    view.module.eval()
    varying = [axis for axis in view.axes if axis != 0]
    classes = OUTPUT_KINDS[predictor.task_name] in CLASS_OUTPUTS
    if view.input == "latent":
        n, seed = max(EXAMPLE_ROWS, _split_rows(predictor, "test")), predictor.config.train.seed
        z = torch.randn(n, view.latent_dim, generator=torch.Generator().manual_seed(seed))
        return CheckInputs(view, view.module, z, f"{n} latent vectors z ~ N(0, I) drawn with the run's seed {seed}", varying, classes)
    rows, description = _run_rows(predictor)
    return CheckInputs(view, model, rows, description, varying, classes)


def _run_rows(predictor) -> tuple[torch.Tensor, str]:
    from damoxing.inference.run_data import run_data

    prepared = run_data(predictor)
    split = next((s for s in ("test", "val", "train") if len(prepared.x.get(s, ())) > 0), None)
    if split is None:
        raise UserError(f"'{predictor.path}' has no rows in any split to check an export on.")
    rows = torch.as_tensor(np.ascontiguousarray(prepared.x[split]))
    return rows, f"the run's {split} split: {rows.shape[0]} rows rebuilt from {prepared.source}"


def _split_rows(predictor, split: str) -> int:
    from damoxing.inference.run_data import split_indices

    return int(len(split_indices(predictor.path).get(split, ())))


def _example(rows: torch.Tensor) -> torch.Tensor:
    """The batch traced: the first rows, at least 2 (a single row is repeated)."""
    example = rows[:EXAMPLE_ROWS]
    return example if example.shape[0] >= 2 else example.repeat(2, *([1] * (example.dim() - 1)))


def _onnx_session(path: Path, remove: bool = True):
    """The graph as an OnnxModel (one thread); a graph onnxruntime cannot load is an ExportFailed (and removed)."""
    from damoxing.inference.onnx_model import OnnxModel

    try:
        return OnnxModel.load(path, threads=1)
    except UserError as e:
        if remove:
            path.unlink(missing_ok=True)
        raise ExportFailed(f"The graph does not load in onnxruntime {_version('onnxruntime')}: {e.message} "
                           "An --opset the runtime does not read causes this (leave --opset out).") from None


def _check(inputs: CheckInputs, candidate, candidate_name: str, tolerance: float = TOLERANCE, min_agreement: float = 1.0) -> Parity:
    if inputs.view is None:
        reference_name = f"the run's own model.onnx (onnxruntime {_version('onnxruntime')})"
    elif inputs.view.input == "latent":
        reference_name = f"{inputs.view.what} of the run's torch model (eager, float32, CPU)"
    else:
        reference_name = "the run's torch model (eager, float32, CPU)"
    return check_parity(inputs.reference, candidate, parity_inputs(inputs.rows, inputs.varying), inputs.classes,
                        reference_name=reference_name, candidate_name=candidate_name, inputs_name=inputs.description,
                        tolerance=tolerance, min_agreement=min_agreement)


def _finish(predictor, inputs: CheckInputs, path: Path, fmt: str, opset: Optional[int], seconds: float, parity: Parity,
            check: bool, hint: str = "") -> ExportReport:
    """The report; with `check`, a failed parity check removes the file and raises ExportFailed."""
    if check and not parity.passed:
        path.unlink(missing_ok=True)
        raise ExportFailed(f"The export of '{predictor.path}' to {fmt} did not reproduce the run's model, so nothing was written: "
                           f"{parity.summary()}.{hint}")
    data = path.read_bytes()
    view = inputs.view
    kind = OUTPUT_KINDS[predictor.task_name] if view is not None else predictor.model.output_kind
    return ExportReport(
        run=str(predictor.path), format=fmt, file=str(path), what=view.what if view is not None else _copied_what(predictor),
        input=_input_facts(view, inputs.rows, path), output={"name": "outputs", "kind": kind, "shape": _output_shape(inputs)},
        opset=opset, bytes=len(data), sha256=hashlib.sha256(data).hexdigest(), export_seconds=seconds, parity=parity,
        versions={name: _version(name) for name in ("damoxing", "torch", "onnx", "onnxruntime", "onnxscript")})


def _copy_onnx(predictor, path: Path, opset: Optional[int], check: bool) -> ExportReport:
    """A run saved as ONNX: its graph copied byte for byte, then checked like any export (against the run's own session)."""
    source = predictor.path / "model.onnx"
    written = onnx_opset(source)
    if opset is not None and opset != written:
        raise UserError(f"--opset {opset} cannot be applied to '{predictor.path}': its model is already an ONNX graph (opset {written}), "
                        "which export copies as it is. Leave --opset out.")
    inputs = check_inputs(predictor)
    started = time.perf_counter()
    path.write_bytes(source.read_bytes())
    seconds = time.perf_counter() - started
    parity = _check(inputs, _onnx_session(path), f"onnxruntime {_version('onnxruntime')} on {path.name}")
    return _finish(predictor, inputs, path, "onnx", written, seconds, parity, check)


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
def _output_shape(inputs: CheckInputs) -> list:
    """The output's shape, an axis that follows a varying input axis named after it (a language model's
    logits (batch, seq, vocab)): found by running the module at a shorter length too."""
    example = _example(inputs.rows)
    module = inputs.view.module if inputs.view is not None else inputs.reference
    shape = list(module(example).shape)
    names: list = ["batch"] + [int(size) for size in shape[1:]]
    for i, axis in (inputs.view.axes.items() if inputs.view is not None else []):
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
