"""int8 quantization of a run's model through ONNX Runtime: the model exported to ONNX (deploy/export.py,
checked there against the torch model), then quantized to a plain .onnx file that `OnnxModel` runs.

    graph = quantize_run(predictor, prepared, mode="dynamic", folder=tmp)   # bytes of the int8 graph

dynamic  weights stored as int8, activations quantized on the fly per batch (`quantize_dynamic`):
         the Linear layers (MatMul / Gemm), LSTM and fused attention projections; embedding tables
         (Gather) are stored int8 and dequantized as they are read. Conv layers stay
         float (ONNX Runtime's ConvInteger is slower than its float conv on CPU), and so do GRU layers
         (ONNX Runtime has no int8 GRU kernel).
static   weights and activations int8 (`quantize_static`, QDQ format, per-channel weights), the
         activations' ranges calibrated on rows of the run's training split: for conv nets (cnn).

torch's own int8 path (`torch.ao.quantization`) is deprecated in torch 2.13 and its packed weights
cannot be stored in safetensors; the ONNX file is the int8 model, with no pickle anywhere.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from damoxing.core.errors import UserError

MODES = ("dynamic", "static")
DYNAMIC_OPS = ["MatMul", "Gemm", "Attention", "LSTM", "Gather"]  # Gather: embedding tables, stored int8
STATIC_FAMILIES = ("cnn",)
CALIBRATION_ROWS = 256


def check_mode(mode: str, family: str) -> None:
    """A mode this family can take, or a UserError saying which can."""
    if mode not in MODES:
        raise UserError(f"--mode is '{mode}'; int8 quantization is 'dynamic' (weights int8, activations quantized per batch; "
                        "any exportable family) or 'static' (activations calibrated on training rows; cnn).")
    if mode == "static" and family not in STATIC_FAMILIES:
        raise UserError(f"--mode static calibrates a conv net's activations (model types: {', '.join(STATIC_FAMILIES)}); this run's model "
                        f"is '{family}'. Use --mode dynamic, which quantizes its Linear / LSTM / attention weights.")


def quantize_run(predictor, prepared, mode: str, calibration_rows: int = CALIBRATION_ROWS) -> tuple[bytes, bytes, dict]:
    """The run's model as an int8 ONNX graph: (its bytes, the float graph's bytes it was made from, what was done:
    the export's parity and the ops quantized)."""
    from damoxing.deploy.export import export_onnx

    with tempfile.TemporaryDirectory(prefix="damoxing-quantize-") as folder:
        float_path, int8_path = Path(folder) / "model.float.onnx", Path(folder) / "model.int8.onnx"
        report = export_onnx(predictor, float_path)
        if mode == "dynamic":
            _dynamic(float_path, int8_path, folder)
        else:
            _static(float_path, int8_path, prepared.x["train"][:calibration_rows], folder)
        data, float_data = _without_debug_info(int8_path), _without_debug_info(float_path)
        ops = _quantized_ops(int8_path)
    details = {"mode": mode, "dtype": "int8", "export": {"opset": report.opset, "parity": report.parity.summary()},
               "quantized_ops": ops, "runtime": f"onnxruntime {_version('onnxruntime')}"}
    if mode == "dynamic":
        details["op_types"] = DYNAMIC_OPS
    else:
        details["calibration"] = f"{min(calibration_rows, len(prepared.x['train']))} rows of the training split (MinMax)"
    return data, float_data, details


def _dynamic(source: Path, target: Path, folder: str) -> None:
    """quantize_dynamic after ONNX Runtime's pre-processing (shape inference, constant folding): the exporter feeds
    an LSTM its weights through Unsqueeze / Concat nodes, which the quantizer only sees as weights once folded."""
    from onnxruntime.quantization import QuantType, quant_pre_process, quantize_dynamic

    prepared = Path(folder) / "model.prepared.onnx"
    with _quiet():
        quant_pre_process(source, prepared, skip_symbolic_shape=True)
        quantize_dynamic(prepared, target, weight_type=QuantType.QInt8, op_types_to_quantize=DYNAMIC_OPS)
    _keep_metadata(source, target)


class _Calibration:
    """onnxruntime's CalibrationDataReader protocol: one batch of training rows per `get_next`, then None."""

    def __init__(self, rows: np.ndarray, batch: int = 32):
        self.batches = [{"input": np.ascontiguousarray(rows[i : i + batch], dtype=np.float32)} for i in range(0, len(rows), batch)]

    def get_next(self):
        return self.batches.pop(0) if self.batches else None

    def rewind(self) -> None:  # part of the protocol; calibration reads the rows once
        return None


def _static(source: Path, target: Path, rows: np.ndarray, folder: str) -> None:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    prepared = Path(folder) / "model.prepared.onnx"
    with _quiet():
        quant_pre_process(source, prepared, skip_symbolic_shape=True)
    reader = type("Calibration", (_Calibration, CalibrationDataReader), {})(rows)
    with _quiet():
        quantize_static(prepared, target, reader, quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    _keep_metadata(source, target)


def _keep_metadata(source: Path, target: Path) -> None:
    """Carry the graph's `damoxing.outputs` metadata over (pre-processing may drop it)."""
    import onnx
    from onnx import helper

    from damoxing.inference.onnx_model import META_OUTPUTS

    kind = {p.key: p.value for p in onnx.load(str(source)).metadata_props}.get(META_OUTPUTS)
    model = onnx.load(str(target))
    props = {p.key: p.value for p in model.metadata_props}
    if kind and props.get(META_OUTPUTS) != kind:
        del model.metadata_props[:]
        helper.set_model_props(model, {**props, META_OUTPUTS: kind})
        onnx.save(model, str(target))


def _without_debug_info(path: Path) -> bytes:
    """The graph's bytes without the exporter's per-node debug records (source stack traces, module names:
    about 1 kB a node, more than a small layer's int8 weights); the computation is unchanged."""
    import onnx

    model = onnx.load(str(path))
    for node in model.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    return model.SerializeToString()


def _quantized_ops(path: Path) -> dict[str, int]:
    """How many nodes of each int8 kind the graph holds (MatMulInteger, DynamicQuantizeLSTM, QuantizeLinear, ...)."""
    import onnx

    counts: dict[str, int] = {}
    for node in onnx.load(str(path)).graph.node:
        if "Integer" in node.op_type or "quant" in node.op_type.lower() or node.op_type.startswith("QLinear"):
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


class _quiet:
    """Silence onnxruntime.quantization's advice on the root logger while it runs."""

    def __enter__(self):
        import logging

        self.logger = logging.getLogger()
        self.level = self.logger.level
        self.logger.setLevel(logging.ERROR)

    def __exit__(self, *exc):
        self.logger.setLevel(self.level)


def _version(name: str) -> str:
    from importlib.metadata import version

    return version(name)
