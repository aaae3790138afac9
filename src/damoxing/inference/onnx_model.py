"""An ONNX graph that stands where a torch model stands for inference.

A run folder may hold its model as `model.onnx` instead of `model.safetensors` (manifest.json's
`model.format` is then "onnx"): today the scikit-learn references of `damoxing ladder`; later an
int8-quantized run or `serve --backend onnx`. `OnnxModel` wraps an ONNX Runtime session in a
torch `nn.Module` without parameters, so everything that runs a model for inference
(`models.runtime.model_outputs`, the task's `predictions`, `Predictor`, `damoxing evaluate` and
`predict`) takes it unchanged:

    model = OnnxModel.load(run / "model.onnx")
    outputs = model_outputs(model, torch.as_tensor(x), batch_size=1024)   # (N, K) or (N, T)
    proba = task.predictions(outputs)                                     # the task's softmax

The contract of such a graph (what `with_damoxing_io` makes of any graph):
    input  "input":   float32 (N, *schema.input_shape), the *preprocessed* inputs a torch model of
                      the run would take (preprocessing.json does raw -> preprocessed, as for any run);
    output "outputs": float32, what the torch model's forward returns, named by the metadata key
                      `damoxing.outputs`: "logits" or "log_probabilities" (classifiers: the task's
                      softmax turns either into probabilities; softmax(log p) = p), or "values"
                      (regression, in the run's training units: preprocessing.json undoes target
                      scaling exactly as for a torch model).

It is inference only: no gradients flow through the session. It runs on the CPU (ONNX Runtime's
CPU provider), whatever device it is moved to; outputs come back on the input's device.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from damoxing.core.errors import RunFolderError

INPUT_NAME = "input"
OUTPUT_NAME = "outputs"
OUTPUT_KINDS = ("logits", "log_probabilities", "values")
META_OUTPUTS = "damoxing.outputs"


class OnnxModel(torch.nn.Module):
    """An nn.Module whose forward runs an ONNX Runtime session (its only parameter is empty).

    Attributes:
        output_kind: "logits" | "log_probabilities" | "values" (the graph's `damoxing.outputs`).
        path: the .onnx file it was loaded from, if any. model_bytes: the serialized graph.
    """

    def __init__(self, model_bytes: bytes, path: Optional[Path] = None, threads: Optional[int] = None):
        super().__init__()
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or max(1, torch.get_num_threads())
        options.log_severity_level = 3  # errors only: ORT's warnings about unused initializers are noise here
        try:
            self.session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - ORT raises its own exception types for a bad file
            where = f"'{path}'" if path else "the ONNX model"
            raise RunFolderError(f"{where} could not be loaded by ONNX Runtime ({type(e).__name__}: {str(e).splitlines()[0]}); "
                                 "the file may be damaged or written by a newer ONNX opset than this onnxruntime reads.") from None
        self.path = path
        self.model_bytes = model_bytes
        # An empty, frozen parameter: code that finds a model's device with next(model.parameters())
        # finds the host, where the session's inputs are read; it holds no weight (0 elements).
        self.device_anchor = torch.nn.Parameter(torch.empty(0), requires_grad=False)
        meta = self.session.get_modelmeta().custom_metadata_map
        self.output_kind = meta.get(META_OUTPUTS, "logits")
        self.input_name = self.session.get_inputs()[0].name
        names = [o.name for o in self.session.get_outputs()]
        self.output_name = OUTPUT_NAME if OUTPUT_NAME in names else names[0]

    @classmethod
    def load(cls, path: str | Path, threads: Optional[int] = None) -> "OnnxModel":
        path = Path(path)
        return cls(path.read_bytes(), path=path, threads=threads)

    def save(self, path: str | Path) -> Path:
        """Write the graph as an .onnx file (the bytes it was loaded from)."""
        Path(path).write_bytes(self.model_bytes)
        return Path(path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, *input_shape) preprocessed inputs -> (B, ...) outputs as the torch model's forward gives them."""
        array = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        (out,) = self.session.run([self.output_name], {self.input_name: array})
        return torch.from_numpy(np.asarray(out, dtype=np.float32)).to(x.device)


def with_damoxing_io(model, input_shape: tuple[int, ...], output: str, output_kind: str, log_of: bool = False):
    """Give an ONNX graph (an `onnx.ModelProto` taking (N, F) float32 features) the contract above.

    Adds a Flatten in front, so the graph takes (N, *input_shape) (an image's (N, C, H, W) becomes
    the (N, C*H*W) rows a scikit-learn estimator was fitted on), and names `output` "outputs"; with
    `log_of`, the output is first turned into log(max(p, 1e-12)) (a classifier's probabilities ->
    log-probabilities). Records `damoxing.outputs` = output_kind in the graph's metadata.

    Returns the same ModelProto, changed in place.
    """
    from onnx import TensorProto, helper

    if output_kind not in OUTPUT_KINDS:
        raise ValueError(f"output_kind must be one of {OUTPUT_KINDS}, got {output_kind!r}")
    graph = model.graph
    (features,) = [i for i in graph.input if i.name not in {t.name for t in graph.initializer}]
    inner = features.name
    new_input = helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", *input_shape])
    graph.input.remove(features)
    graph.input.insert(0, new_input)
    graph.node.insert(0, helper.make_node("Flatten", [INPUT_NAME], [inner], axis=1, name="damoxing_flatten"))

    (target,) = [o for o in graph.output if o.name == output]
    last = output
    if log_of:
        floor = helper.make_tensor("damoxing_floor", TensorProto.FLOAT, [], [1e-12])
        graph.initializer.append(floor)
        graph.node.append(helper.make_node("Max", [output, "damoxing_floor"], ["damoxing_clipped"], name="damoxing_clip"))
        graph.node.append(helper.make_node("Log", ["damoxing_clipped"], [OUTPUT_NAME], name="damoxing_log"))
    else:
        graph.node.append(helper.make_node("Identity", [last], [OUTPUT_NAME], name="damoxing_outputs"))
    dims = [d.dim_param or d.dim_value for d in target.type.tensor_type.shape.dim]
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, dims or None))
    del model.metadata_props[:]
    helper.set_model_props(model, {META_OUTPUTS: output_kind})
    return model


def from_sklearn(estimator, input_shape: tuple[int, ...], task: str) -> bytes:
    """A fitted scikit-learn classifier or regressor as ONNX bytes with the contract above (skl2onnx).

    The estimator was fitted on float32 rows of prod(input_shape) features. A classifier's graph
    outputs log-probabilities (skl2onnx's probabilities, no ZipMap, then log), a regressor's its
    values, (N, 1) for a single target.
    """
    import math

    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    width = math.prod(input_shape)
    options = {id(estimator): {"zipmap": False}} if task == "classification" else None
    with _integer_missing_flags():
        onnx_model = convert_sklearn(estimator, initial_types=[("features", FloatTensorType([None, width]))], options=options)
    if task == "classification":
        model = with_damoxing_io(onnx_model, input_shape, "probabilities", "log_probabilities", log_of=True)
    else:
        model = with_damoxing_io(onnx_model, input_shape, onnx_model.graph.output[0].name, "values")
    return model.SerializeToString()


@contextlib.contextmanager
def _integer_missing_flags():
    """Work around skl2onnx 1.20 with scikit-learn >= 1.6 HistGradientBoosting trees: it hands a Python
    bool (a leaf's `missing_go_to_left = False`) to an ONNX `ints` attribute, which onnx >= 1.17
    rejects ("Expected an int, got a boolean"). The flag is cast to int while converting; the
    graph is the one skl2onnx means to write."""
    from skl2onnx.common import tree_ensemble

    original = tree_ensemble.add_node

    def add_node(*args, nodes_missing_value_tracks_true=0, **kwargs):
        return original(*args, nodes_missing_value_tracks_true=int(nodes_missing_value_tracks_true), **kwargs)

    tree_ensemble.add_node = add_node
    try:
        yield
    finally:
        tree_ensemble.add_node = original
