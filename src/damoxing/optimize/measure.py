"""Before and after compression, on the original run's own test rows, measured the same way for both.

    report = before_after(before, after, prepared, task, config, threads=2)
    report["quality"]      # headline metric of each with its interval, the paired tests, agreement
    report["size"]         # bytes on disk, parameters, non-zero parameters, FLOPs per sample
    report["speed"]        # latency at batch 1, throughput at batch 256 (median of repeats), threads
    report["energy"]       # energy per 1,000 predictions (evaluation/cost.py's meter)

`before` and `after` are `Measured` models: an nn.Module (a torch model, or an OnnxModel running an
ONNX Runtime session) with the file it is stored in. Both run in this process, one after the other,
on the same rows, with the same thread count (torch's intra-op threads, ONNX Runtime's
intra_op_num_threads), so the ratios are fair; their absolute values depend on the machine.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

LATENCY_REPEATS = 20  # single-row calls timed per round (the median of all is reported)
THROUGHPUT_BATCH = 256
THROUGHPUT_REPEATS = 4  # batches of 256 timed per round
ROUNDS = 5  # the two models take turns this many times
WARMUP = 3


@dataclass
class Measured:
    """A model to measure: the module, the file it is stored in, and how its FLOPs are known.

    Attributes:
        module: a torch model or an OnnxModel (same call: (B, *input_shape) -> outputs).
        file: its weights (model.safetensors) or graph (model.onnx), for the size on disk.
        flops_per_sample: forward FLOPs per row, when known (None: counted here from the torch module).
        flops_note: how the FLOPs figure was found.
        x: the test rows as this model takes them (a distilled student may tokenize the same rows its own
            way); None: the original run's test rows, preprocessed by its preprocessing.
    """

    module: torch.nn.Module
    file: Path
    flops_per_sample: Optional[float] = None
    flops_note: str = ""
    x: Optional[torch.Tensor] = None


def before_after(before: Measured, after: Measured, prepared, task, config, threads: int, bootstrap_seed: int = 0) -> dict[str, Any]:
    """The compression report's figures (JSON-ready): quality, size, speed and energy of both models."""
    from damoxing.tasks import EvaluationSettings

    settings = EvaluationSettings.from_config(config)
    x = torch.as_tensor(np.ascontiguousarray(prepared.x["test"]))
    for model in (before, after):
        model.x = x if model.x is None else model.x
    y_true = prepared.y_original["test"]
    return {
        "rows": f"the original run's test split: {len(x)} rows rebuilt from {prepared.source}",
        "quality": quality(before, after, y_true, prepared, task, settings, bootstrap_seed),
        "size": {"before": size(before), "after": size(after)},
        "speed": speed(before, after, threads),
        "energy": energy(before, after, config, threads),
    }


# --------------------------------------------------------------------------- quality


def quality(before: Measured, after: Measured, y_true, prepared, task, settings, seed: int) -> dict[str, Any]:
    """Headline metric of each (with its bootstrap interval), the paired test(s) of the difference, agreement."""
    from damoxing.evaluation.paired import mcnemar, paired_bootstrap
    from damoxing.evaluation.score import evaluate_predictions
    from damoxing.models.runtime import model_outputs
    from damoxing.tasks import headline_metric

    schema = prepared.preprocessing.schema
    name = headline_metric(task.name)
    train_targets = prepared.y_original.get("train")
    preds, results = [], []
    for model in (before, after):
        pred = task.decode(task.predictions(model_outputs(model.module, model.x, settings.batch_size)), prepared.preprocessing)
        preds.append(pred)
        results.append(evaluate_predictions(task, y_true, pred, schema, train_targets, n_resamples=settings.bootstrap,
                                            seed=settings.seed, confidence=settings.confidence,
                                            calibration_bins=settings.calibration_bins))
    out: dict[str, Any] = {"metric": name, "confidence": settings.confidence}
    for label, result in zip(("before", "after"), results, strict=True):
        out[label] = {"value": result["metrics"].get(name), "ci": result.get("ci", {}).get(name)}
    boot = paired_bootstrap(name, y_true, preds[1], preds[0], n_resamples=max(settings.bootstrap, 200), seed=seed)
    out["paired_bootstrap"] = {k: boot[k] for k in ("a_minus_b", "ci", "p_value", "n_resamples", "confidence")}
    out["paired_bootstrap"]["difference"] = "after - before"
    if task.name == "classification":
        labels = [np.asarray(p).argmax(axis=1) for p in preds]
        y = np.asarray(y_true).astype(np.int64)
        test = mcnemar(labels[0] == y, labels[1] == y)
        out["mcnemar"] = {k: test[k] for k in ("b", "c", "n_discordant", "p_value", "p_mid")}
        out["mcnemar"]["b_c"] = "b: rows right before and wrong after; c: the reverse"
        out["agreement"] = float(np.mean(labels[0] == labels[1]))
    else:
        diff = np.abs(np.asarray(preds[0], dtype=np.float64) - np.asarray(preds[1], dtype=np.float64))
        out["max_abs_difference"] = float(diff.max()) if diff.size else 0.0
    return out


# --------------------------------------------------------------------------- size


def size(model: Measured) -> dict[str, Any]:
    """Bytes on disk, parameters and non-zero parameters, FLOPs per sample."""
    params, nonzero, weight_bytes = parameter_counts(model.module)
    flops, note = model.flops_per_sample, model.flops_note
    if flops is None:
        flops = forward_flops(model.module, model.x)
        note = "counted by torch's FlopCounterMode on the model's forward (2 x multiply-adds; evaluation/cost.py)"
    return {"file": model.file.name, "bytes": model.file.stat().st_size, "weight_bytes": weight_bytes, "params": params, "nonzero_params": nonzero,
            "flops_per_sample": float(flops), "flops_method": note}


def forward_flops(module: torch.nn.Module, x: torch.Tensor, rows: int = 8) -> float:
    """Forward FLOPs per row of a torch model on the first `rows` rows of x (evaluation/cost.py's counter)."""
    from damoxing.evaluation.cost import count_flops

    batch = x[:rows]
    module.eval()
    with torch.no_grad():
        return count_flops(module, lambda: module(batch)) / max(1, len(batch))


def parameter_counts(module: torch.nn.Module) -> tuple[int, int, int]:
    """(parameters, non-zero parameters, bytes of weights): a torch model's parameters, or an ONNX graph's
    weight initializers (int8 weights count one each, one byte each; the quantization scales and zero points are not counted).
    The bytes are those the model runs with, which differ from its file where a run saves only part of it
    (a LoRA run's model.safetensors holds its adapters and head; the base checkpoint lives outside)."""
    from damoxing.inference.onnx_model import OnnxModel

    if isinstance(module, OnnxModel):
        import onnx
        from onnx import numpy_helper

        graph = onnx.load_from_string(module.model_bytes).graph
        weights = [t for t in graph.initializer if not t.name.endswith(("_scale", "_zero_point"))]  # quantization's bookkeeping
        arrays = [a for a in map(numpy_helper.to_array, weights) if a.dtype != np.int64]  # int64: shapes and axes, not weights
        return sum(int(a.size) for a in arrays), sum(int(np.count_nonzero(a)) for a in arrays), sum(int(a.nbytes) for a in arrays)
    tensors = [p.detach() for p in module.parameters()]
    return (sum(t.numel() for t in tensors), sum(int(torch.count_nonzero(t)) for t in tensors),
            sum(t.numel() * t.element_size() for t in tensors))


# --------------------------------------------------------------------------- speed and energy


@torch.no_grad()
def _timed_calls(model, batches: list[torch.Tensor]) -> list[float]:
    """Seconds of each call of model(batch), after a few warm-up calls."""
    model.eval()
    for batch in batches[:WARMUP]:
        model(batch)
    times = []
    for batch in batches:
        started = time.perf_counter()
        model(batch)
        times.append(time.perf_counter() - started)
    return times


def _batches(x: torch.Tensor, batch: int, count: int) -> list[torch.Tensor]:
    """`count` batches of `batch` rows taken in turn from x (wrapping around; x repeated if it is shorter)."""
    if len(x) < batch:
        x = x.repeat(-(-batch // len(x)), *([1] * (x.dim() - 1)))
    starts = [(i * batch) % max(1, len(x) - batch + 1) for i in range(count)]
    return [x[s : s + batch].contiguous() for s in starts]


def speed(before: Measured, after: Measured, threads: int) -> dict[str, Any]:
    """Latency at batch 1 (median ms per call) and throughput at batch 256 (median rows/s), both models alike.

    The two models take turns, ROUNDS times, so a burst of other work on the machine falls on both."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        out: dict[str, Any] = {"threads": threads, "latency_calls": LATENCY_REPEATS * ROUNDS, "throughput_batch": THROUGHPUT_BATCH,
                               "throughput_calls": THROUGHPUT_REPEATS * ROUNDS, "device": "cpu",
                               "method": f"median over {ROUNDS} alternating rounds of each model, after {WARMUP} warm-up calls"}
        models = {"before": _with_threads(before, threads), "after": _with_threads(after, threads)}
        singles = {"before": _batches(before.x, 1, LATENCY_REPEATS), "after": _batches(after.x, 1, LATENCY_REPEATS)}
        bigs = {"before": _batches(before.x, THROUGHPUT_BATCH, THROUGHPUT_REPEATS),
                "after": _batches(after.x, THROUGHPUT_BATCH, THROUGHPUT_REPEATS)}
        single_times: dict[str, list[float]] = {label: [] for label in models}
        big_times: dict[str, list[float]] = {label: [] for label in models}
        for _ in range(ROUNDS):
            for label, model in models.items():
                single_times[label] += _timed_calls(model, singles[label])
                big_times[label] += _timed_calls(model, bigs[label])
        for label in models:
            out[label] = {"latency_ms_batch1": statistics.median(single_times[label]) * 1000,
                          "throughput_rows_per_s_batch256": THROUGHPUT_BATCH / statistics.median(big_times[label])}
        out["latency_speedup"] = out["before"]["latency_ms_batch1"] / out["after"]["latency_ms_batch1"]
        out["throughput_speedup"] = out["after"]["throughput_rows_per_s_batch256"] / out["before"]["throughput_rows_per_s_batch256"]
        return out
    finally:
        torch.set_num_threads(previous)


def _with_threads(measured: Measured, threads: int) -> torch.nn.Module:
    """The model to time: an OnnxModel's graph in a fresh session of `threads` intra-op threads (a torch model
    reads torch's own setting, set by the caller)."""
    from damoxing.inference.onnx_model import OnnxModel

    if isinstance(measured.module, OnnxModel):
        measured.module = OnnxModel(measured.module.model_bytes, path=measured.module.path, threads=threads)
    return measured.module


def energy(before: Measured, after: Measured, config, threads: int, rows: int = 5000) -> dict[str, Any]:
    """Energy per 1,000 predictions: the cost meter (evaluation/cost.py) around `rows` predictions at batch 256."""
    from damoxing.evaluation.cost import CostMeter

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    count = max(1, rows // THROUGHPUT_BATCH)
    out: dict[str, Any] = {"predictions": count * THROUGHPUT_BATCH, "batch": THROUGHPUT_BATCH}
    try:
        for label, measured in (("before", before), ("after", after)):
            model, batches = measured.module, _batches(measured.x, THROUGHPUT_BATCH, count)
            meter = CostMeter(config.cost, torch.device("cpu"), "cpu")
            _timed_calls(model, batches[:WARMUP])
            meter.start()
            with torch.no_grad():
                for batch in batches:
                    model(batch)
            meter.stop()
            kwh = meter.energy["energy_kwh"]
            out[label] = {"wh_per_1000": kwh * 1000 * 1000 / (count * THROUGHPUT_BATCH), "seconds": meter.wall_seconds}
            out["method"] = meter.energy.get("energy_method", "")
            out["is_estimate"] = bool(meter.energy.get("energy_is_estimate", True))
    finally:
        torch.set_num_threads(previous)
    return out
