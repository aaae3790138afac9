"""The two exporters, called the way that works with torch 2.13, and what they need around them.

    to_onnx(view, example, path, opset)   torch.onnx.export(dynamo=True) -> one .onnx file with the
                                          damoxing contract (inference/onnx_model.py)
    to_program(view, example, path)       torch.export.export -> torch.export.save, a .pt2 archive
                                          without a single pickled member
    load_program(path)                    refuses an archive that holds anything torch would unpickle
                                          or any call outside torch's operators, then loads it

Three exporter bugs are worked around here (measured in /work/notes/export-quantize.md):
  * torch.onnx.export swaps in while_loop kernels for aten.lstm / aten.gru only for its capture
    step, but the ops' dispatch caches keep whichever kernel ran first: a second export in one
    process unrolls the recurrence and silently fixes the time axis. The caches are cleared.
  * it registers those while_loop decompositions for the capture step only; its decomposition step
    then re-derives an RNN's output shape unrolled and freezes the example's length into Reshape
    nodes (a stacked RNN fails in onnxruntime at any other length; pytorch/pytorch#191855). They
    stay registered for the whole export.
  * an example axis of size 0 or 1 is specialized (guards such as `x.size(0) != 1`): every dynamic
    axis is traced with min=2 and an example of at least 2 rows and steps; graphs still run at 1.
Whatever the exporter does, the result is checked: every varying axis must come out symbolic
(`check_onnx_axes`), and deploy/parity.py runs the file at other sizes.

About .pt2 and pickle: `torch.export.save` pickles the example inputs into the archive
(data/sample_inputs/model.pt), and `torch.export.load` unpickles that member, first with
weights_only=True and, when that fails, again with weights_only=False, which runs any code a
changed file carries; members flagged `use_pickle` and custom objects are unpickled as well. damoxing
drops the example inputs before saving, so the archive it writes holds raw tensor bytes and JSON
only, and loads an archive only after `check_program_archive` found nothing pickled in it. Anyone
who loads a .pt2 with torch.export.load directly must trust the file.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import warnings
import zipfile
from pathlib import Path
from typing import Optional

import torch

from damoxing.core.errors import UserError
from damoxing.models.export_view import ExportView

INPUT_NAME, OUTPUT_NAME = "input", "outputs"  # the contract of inference/onnx_model.py
LOWEST_OPSET = 18  # torch's ONNX exporter implements opset 18 and later (torch.onnx._internal.exporter._constants)
SAFE_TARGETS = re.compile(r"^(torch\.ops\.(aten|prims|higher_order)\.|_operator\.|math\.)")  # calls a .pt2 graph may make


class ExportFailed(UserError):
    """An exporter could not trace this model, or its result does not have the shape asked for."""

    exit_code = 1  # not a mistake in the command: the export itself went wrong


# --------------------------------------------------------------------------------------------- ONNX


def to_onnx(view: ExportView, example: torch.Tensor, path: Path, output_kind: str, opset: Optional[int] = None) -> None:
    """Export view.module to an ONNX file: input "input", output "outputs", the graph's metadata
    `damoxing.outputs` = output_kind; view.axes vary. Raises ExportFailed with the exporter's reason."""
    import onnx

    with quiet_exporters(), rnn_export_context():
        try:
            program = torch.onnx.export(view.module, (example,), dynamo=True, verbose=False, opset_version=opset,
                                        input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], dynamic_shapes=dynamic_shapes(view))
        except Exception as e:  # noqa: BLE001 - the exporter raises many types; its cause is what a user can act on
            raise ExportFailed(f"torch.onnx.export could not export {view.what}: {exporter_reason(e)}") from e
    proto = program.model_proto
    props = {p.key: p.value for p in proto.metadata_props}
    onnx.helper.set_model_props(proto, {**props, "damoxing.outputs": output_kind})
    onnx.save_model(proto, str(path), save_as_external_data=False)
    check_onnx_axes(proto, view, example)


def check_onnx_axes(proto, view: ExportView, example: torch.Tensor) -> None:
    """The exporters fix an axis without an error when a guard pins it: refuse a graph whose input
    shape is not [the varying axes' names, the fixed axes' sizes]."""
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    wanted = [view.axes[i].name if i in view.axes else int(size) for i, size in enumerate(example.shape)]
    if dims != wanted:
        raise ExportFailed(f"The ONNX graph of {view.what} takes inputs shaped {dims}, not {wanted}: the exporter fixed an axis "
                           "that should vary. Nothing was written.")


def onnx_opset(path: Path) -> int:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


# ------------------------------------------------------------------------------------- torch.export


def to_program(view: ExportView, example: torch.Tensor, path: Path) -> None:
    """Export view.module with torch.export and save it as a .pt2 archive without pickled members."""
    with quiet_exporters(), rnn_export_context():
        try:
            program = torch.export.export(view.module, (example,), dynamic_shapes=dynamic_shapes(view))
        except Exception as e:  # noqa: BLE001
            raise ExportFailed(f"torch.export could not export {view.what}: {exporter_reason(e)}") from e
    program.example_inputs = None  # else torch.export.save pickles them into data/sample_inputs/
    torch.export.save(program, str(path))
    check_program_archive(path)


def load_program(path: Path) -> torch.nn.Module:
    """A .pt2 archive as a callable module, after `check_program_archive` found nothing in it that
    torch.export.load would unpickle and no call outside torch's operators."""
    check_program_archive(path)
    with quiet_exporters():
        return torch.export.load(str(path)).module()


def check_program_archive(path: Path) -> None:
    """Refuse (UserError) a .pt2 archive holding a member torch.export.load would unpickle: example
    inputs, a weight or constant flagged use_pickle, a custom or opaque object, a legacy .pt file;
    or a graph that calls anything but torch's operators (torch.ops.aten / prims / higher_order)."""
    problems = []
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                name = info.filename.split("/", 1)[-1]
                if name.startswith("data/sample_inputs/") and info.file_size:
                    problems.append(f"{name} (pickled example inputs)")
                elif name.endswith(".pt") and not name.startswith("data/sample_inputs/"):
                    problems.append(f"{name} (a pickled tensor file)")
                elif name.endswith(("_weights_config.json", "_constants_config.json")):
                    problems += [f"{name}: {key}" for key, meta in json.loads(archive.read(info))["config"].items()
                                 if meta.get("use_pickle") or not str(meta.get("path_name", "")).startswith(("weight_", "tensor_"))]
                elif name.startswith("models/") and name.endswith(".json"):
                    problems += [f"{name} calls {target}" for target in sorted(_graph_targets(json.loads(archive.read(info))))
                                 if not SAFE_TARGETS.match(target)]
    except (zipfile.BadZipFile, OSError, json.JSONDecodeError, KeyError, AttributeError) as e:
        raise UserError(f"'{path}' is not a readable torch.export archive ({type(e).__name__}: {e}).") from None
    if problems:
        listed = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise UserError(f"'{path}' is refused: loading it would unpickle data or run calls outside torch's operators "
                        f"({listed}). damoxing writes .pt2 archives without any; this one was changed or made elsewhere. "
                        "Load it only if you trust where it came from (torch.export.load), or export the run again.")


def _graph_targets(node) -> set[str]:
    """Every call target named in a serialized program (the graph and its subgraphs)."""
    found: set[str] = set()
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if isinstance(item.get("target"), str):
                found.add(item["target"])
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


# ------------------------------------------------------------------------------------------ shared


def dynamic_shapes(view: ExportView) -> tuple[dict, ...]:
    """torch.export dynamic shapes for the one input: its varying axes as Dims with min 2 (see above)."""
    from torch.export import Dim

    return ({i: Dim(axis.name, min=2, max=axis.most) if axis.most else Dim(axis.name, min=2) for i, axis in view.axes.items()},)


def exporter_reason(error: Exception) -> str:
    """The first line of the exporter's own cause, without its terminal colours."""
    cause = error.__cause__ or error
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(cause)).strip()
    return f"{type(cause).__name__}: {text.splitlines()[0] if text else ''}"


@contextlib.contextmanager
def quiet_exporters():
    """Silence the exporters' chatter (observed with torch 2.13: the notes list each source)."""
    loggers = {name: logging.getLogger(name) for name in ("torch.onnx", "torch._export.serde.serialize", "torch.export")}
    levels = {name: logger.level for name, logger in loggers.items()}
    with warnings.catch_warnings():
        for message in (".*LeafSpec.*", ".*_check_is_size will be removed.*", ".*were assigned during export.*",
                        ".*Converting a tensor with requires_grad=True to a scalar.*"):
            warnings.filterwarnings("ignore", message=message)
        for logger in loggers.values():
            logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for name, logger in loggers.items():
                logger.setLevel(levels[name])


@contextlib.contextmanager
def rnn_export_context():
    """Around either exporter: LSTM/GRU over a varying time axis (the first two bugs above). Harmless
    for models without recurrent layers."""
    from torch.export._patches import (
        register_gru_while_loop_decomposition,
        register_lstm_while_loop_decomposition,
    )

    _clear_rnn_dispatch_cache()
    try:
        with register_lstm_while_loop_decomposition(), register_gru_while_loop_decomposition():
            yield
    finally:
        _clear_rnn_dispatch_cache()


def _clear_rnn_dispatch_cache() -> None:
    for op in (torch.ops.aten.lstm.input, torch.ops.aten.gru.input):
        op._dispatch_cache.clear()
