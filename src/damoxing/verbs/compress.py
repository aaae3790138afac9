"""`damoxing compress RUN --method quantize|prune|distill [--out DIR]`: a smaller or faster model, the loss stated.

The result is a NEW run folder (the original is only read) that `predict`, `evaluate`, `compare` and
`export` take, with compression.json and a `compression` block in its manifest: before and after
on the original run's own test rows (headline metric with intervals, McNemar / paired bootstrap,
agreement), size, parameters, FLOPs, CPU latency and throughput measured alike in one process, and
energy per 1,000 predictions (optimize/measure.py).

    quantize  int8 ONNX graph through ONNX Runtime (optimize/quantize.py): --mode dynamic | static
    prune     structured: the lowest-importance neurons / channels removed, a smaller dense model
              fine-tuned with the run's own settings; --structured false: magnitude pruning (optimize/prune.py)
    distill   a student config trained on the teacher run's splits with KL(teacher || student) at
              temperature T plus alpha x the task loss (optimize/distill.py)
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from damoxing.core.errors import UserError

METHODS = ("quantize", "prune", "distill")
TASKS = ("classification", "regression")


@dataclass
class Compressed:
    """What `compress` returns: the new run folder and its compression report (compression.json)."""

    path: Path
    report: dict

    def load(self):
        from damoxing.inference.predictor import load

        return load(self.path)


def compress(run: str | Path, method: str, *, out: str | Path | None = None, dtype: str = "int8", mode: str = "dynamic",
             sparsity: float = 0.5, structured: bool = True, finetune_epochs: Optional[int] = None,
             student: str | Path | dict | None = None, temperature: float = 4.0, alpha: float = 0.5,
             threads: Optional[int] = None, quiet: bool = False) -> Compressed:
    """Compress a finished run into a new run folder and measure before against after.

    Args:
        run: a finished run folder (a torch model: model.safetensors).
        method: "quantize" | "prune" | "distill".
        out: the new run folder (must not exist); default <run>-<method>-<time> beside the run.
        dtype, mode: quantize: "int8"; "dynamic" (any exportable family) or "static" (cnn, calibrated on training rows).
        sparsity: prune: the share of neurons / channels (structured) or weights (unstructured) removed, in (0, 1).
        structured: prune: remove whole neurons / channels (smaller dense model) or zero single weights.
        finetune_epochs: prune: epochs of fine-tuning (default: the run's own train.epochs).
        student, temperature, alpha: distill: the student's config (YAML path or dict), T > 0, alpha >= 0.
        threads: CPU threads for the speed measurements (default: torch's current setting).
    Raises:
        UserError (exit 2): not a finished run, a method the family cannot take, settings out of range, an --out that exists.
    """
    import torch

    from damoxing.core import console
    from damoxing.inference.predictor import load
    from damoxing.optimize.folder import check_out, default_path
    from damoxing.runs.folder import check_run

    if method not in METHODS:
        raise UserError(f"--method is '{method}'; compress takes one of: {', '.join(METHODS)}.")
    original = check_run(run)
    target = check_out(out) or default_path(original, method)
    predictor = load(original)
    _check_family(predictor, method)
    threads = threads or max(1, torch.get_num_threads())
    with console.quiet(quiet):
        if method == "quantize":
            return _quantize(predictor, target, dtype, mode, threads)
        if method == "prune":
            from damoxing.verbs.compress_train import prune_run

            return Compressed(*prune_run(predictor, target, sparsity, structured, finetune_epochs, threads))
        from damoxing.verbs.compress_train import distill_run

        return Compressed(*distill_run(predictor, target, student, temperature, alpha, threads))


def _check_family(predictor, method: str) -> None:
    """The run must hold a torch model of a supervised task the method can take; else say what can."""
    from damoxing.optimize.prune import PRUNABLE

    family = predictor.config.model.type
    if predictor.model_format != "safetensors":
        raise UserError(f"'{predictor.path}' holds its model as an ONNX graph (model.onnx: a scikit-learn reference or an already "
                        f"quantized run), which compress cannot {method}. Compress the torch run it came from.")
    if predictor.postprocess is not None:
        raise UserError(f"'{predictor.path}' applies group thresholds (postprocess.json, `damoxing audit --mitigate`), which were fitted "
                        "to its model's scores; a compressed model's scores differ. Compress the run it was mitigated from, then audit "
                        "and mitigate the compressed run.")
    if predictor.task_name not in TASKS:
        raise UserError(f"'{predictor.path}' is a {predictor.task_name} run ({family}); compress measures before and after on "
                        f"test predictions, so it takes {' or '.join(TASKS)} runs.")
    if method == "prune" and family not in PRUNABLE:
        raise UserError(f"--method prune removes neurons / channels of {', '.join(PRUNABLE)} models; this run's model is '{family}'. "
                        "It can take --method quantize (int8 through ONNX Runtime) or --method distill (a smaller student).")


def _quantize(predictor, target: Path, dtype: str, mode: str, threads: int) -> Compressed:
    """Export, quantize, evaluate the int8 graph on the run's splits exactly as `evaluate` will, measure, write."""
    import torch

    from damoxing.core.console import note
    from damoxing.inference.onnx_model import OnnxModel
    from damoxing.inference.run_data import run_data
    from damoxing.optimize.folder import derived_manifest, write_compressed_run
    from damoxing.optimize.measure import Measured, before_after, forward_flops
    from damoxing.optimize.quantize import check_mode, quantize_run
    from damoxing.runs.folder import read_json
    from damoxing.tasks import EvaluationSettings

    if dtype != "int8":
        raise UserError(f"--dtype is '{dtype}'; compress quantizes to int8 (ONNX Runtime's integer kernels).")
    check_mode(mode, predictor.config.model.type)
    prepared = run_data(predictor)
    note(f"quantizing {predictor.path} ({predictor.config.model.type}) to int8, {mode}")
    graph, float_graph, details = quantize_run(predictor, prepared, mode)
    after = OnnxModel(graph, threads=threads)
    predictions: dict = {}
    metrics = predictor.task.evaluate(after, prepared, EvaluationSettings.from_config(predictor.config), contextlib.nullcontext,
                                      predictions=predictions)
    x = torch.as_tensor(prepared.x["test"])
    flops = forward_flops(predictor.model, x)
    with _scratch_file(graph) as int8_file:
        figures = before_after(Measured(predictor.model, predictor.path / "model.safetensors"),
                               Measured(after, int8_file, flops, "the float model's FLOPs: the same multiply-adds, done in int8"),
                               prepared, predictor.task, predictor.config, threads, predictor.config.train.seed)
    figures["speed"]["float_onnx"] = _float_onnx_speed(float_graph, after, x, threads)
    report = {"method": "quantize", "settings": {"dtype": dtype, "mode": mode}, "original_run": str(predictor.path),
              "details": details, **figures}
    manifest = derived_manifest(read_json(predictor.path / "manifest.json"), "quantize", predictor.path,
                                f"the original's model exported to ONNX and quantized to int8 ({mode}); run with onnxruntime")
    manifest["model"] = {**manifest.get("model", {}), "format": "onnx", "dtype": "int8",
                         "params": figures["size"]["after"]["params"]}
    manifest.pop("cost", None)  # the training cost was the original's; compression.json holds this model's
    skip = {"model.safetensors", "metrics.json", "manifest.json", "report.html", "compression.json"} | \
        {p.name for p in predictor.path.glob("predictions_*.npz")}
    path = write_compressed_run(target, predictor.path, skip, manifest, report, model_file=("model.onnx", graph), metrics=metrics,
                                predictions=predictions, report=predictor.config.tracking.report)
    return Compressed(path, report)


def _float_onnx_speed(float_graph: bytes, after, x, threads: int) -> dict:
    """The float ONNX graph (before quantization) against the int8 one, measured alike: how much of the speed-up
    is int8 rather than the change of runtime (eager torch -> ONNX Runtime)."""
    from damoxing.inference.onnx_model import OnnxModel
    from damoxing.optimize.measure import Measured, speed

    with _scratch_file(float_graph) as file:
        figures = speed(Measured(OnnxModel(float_graph, threads=threads), file, x=x), Measured(after, file, x=x), threads)
    return {"latency_ms_batch1": figures["before"]["latency_ms_batch1"],
            "throughput_rows_per_s_batch256": figures["before"]["throughput_rows_per_s_batch256"],
            "int8_latency_speedup": figures["latency_speedup"], "int8_throughput_speedup": figures["throughput_speedup"],
            "note": "the same graph in float32 under ONNX Runtime, measured against the int8 graph in its own alternating rounds"}


@contextlib.contextmanager
def _scratch_file(data: bytes):
    """The bytes in a temporary file (for its size on disk), removed afterwards."""
    import tempfile

    handle, name = tempfile.mkstemp(suffix=".onnx", prefix="damoxing-int8-")
    try:
        os.write(handle, data)
        os.close(handle)
        yield Path(name)
    finally:
        Path(name).unlink(missing_ok=True)


def summary_lines(result: Compressed) -> list[str]:
    """The terminal table as plain lines."""
    from damoxing.report.compression_section import summary_rows

    rows = [("", "before", "after", "change"), *summary_rows(result.report)]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]
