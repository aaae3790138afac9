"""`damoxing train` of `model: {type: sklearn, ...}`: a traditional reference, fitted by scikit-learn.

The same stages as a torch run, with the estimator's `fit` where the loop would be:

    config -> data (the same preprocessed splits a torch model gets) -> estimator.fit(train rows)
           -> ONNX (skl2onnx) -> OnnxModel -> the same evaluation -> a run folder

The run folder holds what any run holds, except that the model is `model.onnx` (manifest.json:
`model.format: onnx`) instead of `model.safetensors`; what is evaluated is the ONNX graph itself,
so metrics.json says exactly what `damoxing predict` will give. No pickle is written.
"""

from __future__ import annotations

import contextlib
import platform
import sys
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

from damoxing.core.console import note, stage


def fit_reference(cfg, path: Path, base_dir: Optional[Path], started: float, evaluate_run) -> tuple:
    """Fit, evaluate and save the scikit-learn reference `cfg.model` describes.

    `evaluate_run` is verbs/train.py's (the same evaluation as a torch run's; passed in, since
    train calls this). Returns (run folder, metrics, resolved config, history, manifest)."""
    import torch

    from damoxing.core.errors import ConfigError
    from damoxing.data.pipeline import prepare_data
    from damoxing.inference.onnx_model import OnnxModel, from_sklearn
    from damoxing.models import data_needs
    from damoxing.models.sklearn import build_estimator, estimator_size
    from damoxing.tasks import TASKS

    data = prepare_data(cfg, data_needs(cfg.model), base_dir)
    cfg = cfg.model_copy(update={"task": data.task})
    if data.task not in ("classification", "regression"):
        raise ConfigError(f"model.type 'sklearn' fits classification or regression; this data's task is '{data.task}'.")
    task = TASKS.get(data.task)(cfg.train)
    estimator = build_estimator(cfg.model, data.task, cfg.train.seed)
    x_train, y_train = _rows(data.x["train"]), _targets(data.y["train"], data.task)
    load_seconds = time.perf_counter() - started
    note(f"{cfg.name}: scikit-learn {type(estimator).__name__} on {data.source}, task {data.task}, {len(x_train)} training rows")

    meter = _meter(cfg)
    stage(f"training scikit-learn {type(estimator).__name__} on {len(x_train):,} rows")
    fit_started = time.perf_counter()
    estimator.fit(x_train, y_train)
    fit_seconds = time.perf_counter() - fit_started
    model = OnnxModel(from_sklearn(estimator, data.schema.input_shape, data.task), threads=1)
    stage("evaluating on the validation and test rows")
    eval_started = time.perf_counter()
    predictions: dict[str, dict] = {}
    metrics = evaluate_run(model, task, data, cfg, torch.device("cpu"), predictions=predictions)
    history = [_history_row(model, task, data, cfg.train.eval_batch_size, fit_seconds)]
    eval_seconds = time.perf_counter() - eval_started
    size = estimator_size(estimator)
    cost = _cost_block(meter, cfg, size, len(x_train), _iterations(estimator), fit_seconds, eval_seconds) if meter else None
    timings = {"load_seconds": load_seconds, "train_seconds": fit_seconds, "eval_seconds": eval_seconds,
               "total_seconds": time.perf_counter() - started}
    manifest = _manifest(cfg, data, estimator, size, timings, cost)
    stage(f"writing the run folder {path}")
    path = _write(path, cfg, data, model, metrics, history, predictions, manifest)
    return path, metrics, cfg, history, manifest


def _rows(x: np.ndarray) -> np.ndarray:
    """(N, *shape) preprocessed inputs -> (N, F) float32 rows (images and sequences flattened)."""
    return np.ascontiguousarray(x.reshape(len(x), -1), dtype=np.float32)


def _targets(y: np.ndarray, task: str) -> np.ndarray:
    """Class ids, or regression targets in training units ((N,) for a single target)."""
    if task == "classification":
        return y
    return y.reshape(len(y)) if y.ndim == 2 and y.shape[1] == 1 else y


def _iterations(estimator) -> int:
    """Passes over the training rows the solver made (logistic: solver iterations; boosting: trees per class)."""
    n_iter = getattr(estimator, "n_iter_", 1)
    return int(np.max(n_iter)) if n_iter is not None else 1


def _meter(cfg):
    if not cfg.cost.enabled:
        return None
    import torch

    from damoxing.evaluation.cost import CostMeter
    from damoxing.runs.manifest import device_name

    meter = CostMeter(cfg.cost, torch.device("cpu"), device_name(torch.device("cpu")))
    meter.start()
    return meter


def _history_row(model, task, data, batch_size: int, fit_seconds: float) -> dict[str, Any]:
    """The one 'epoch' of a reference: its loss (and cheap metrics) on train and val after fitting."""
    import torch

    row: dict[str, Any] = {"epoch": 1}
    for split in ("train", "val"):
        if data.y[split] is None or len(data.x[split]) == 0:
            continue
        values = task.validation_metrics(model, torch.as_tensor(data.x[split]), torch.as_tensor(data.y[split]),
                                         batch_size, contextlib.nullcontext)
        row.update({f"{split}_{name}": float(value) for name, value in values.items()})
    row["seconds"] = fit_seconds
    return row


def _cost_block(meter, cfg, size: dict, rows: int, iterations: int, fit_seconds: float, eval_seconds: float) -> dict[str, Any]:
    """The manifest's cost block, with the same keys as a torch run's (FLOPs where they can be counted)."""
    from damoxing.evaluation.cost import grid_intensity, peak_rss_bytes

    meter.stop()
    seen = rows * iterations
    cost: dict[str, Any] = {"params": size["params"], "trainable_params": size["params"], "params_kind": size["params_kind"],
                            "flops_per_sample": size["flops_per_sample"], "train_flops": None,
                            "flops_method": size["flops_method"] + "; train_flops not counted for a scikit-learn solver"}
    if "comparisons_per_sample" in size:
        cost["comparisons_per_sample"] = size["comparisons_per_sample"]
    cost.update({"train_seconds": fit_seconds, "eval_seconds": eval_seconds, "samples_seen": seen,
                 "samples_per_second": seen / fit_seconds if fit_seconds > 0 else None,
                 "peak_memory_bytes": peak_rss_bytes(),
                 "peak_memory_kind": "process peak RSS since the process started (getrusage ru_maxrss)"})
    grid, source = grid_intensity(cfg.cost)
    cost.update(meter.energy)
    cost.update({"grid_g_per_kwh": grid, "grid_source": source, "co2_kg": meter.energy["energy_kwh"] * grid / 1000.0,
                 "measured_seconds": meter.wall_seconds, "accounting_seconds": meter.overhead})
    return cost


def _manifest(cfg, data, estimator, size: dict, timings: dict, cost: Optional[dict]) -> dict[str, Any]:
    """manifest.json of a reference run: the same sections as build_manifest's, `training` saying what was fitted."""
    from importlib.metadata import version

    from damoxing.core.version import __version__
    from damoxing.runs.manifest import package_versions

    packages = package_versions()
    for name in ("skl2onnx", "onnxruntime", "onnx"):
        packages[name] = version(name)
    manifest = {
        "damoxing": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": sys.argv,
        "python": platform.python_version(), "platform": platform.platform(), "packages": packages,
        "device": "cpu", "device_name": platform.processor() or platform.machine(), "seed": cfg.train.seed,
        "task": data.task, "data": {"source": data.source, "fingerprint": data.fingerprint, **data.summary},
        "model": {"type": "sklearn", "format": "onnx", "estimator": type(estimator).__name__,
                  "estimator_params": {k: v for k, v in estimator.get_params().items() if isinstance(v, (int, float, str, bool)) or v is None},
                  "params": size["params"], "trainable_params": size["params"], "params_kind": size["params_kind"]},
        "training": {"epochs_run": 1, "fitted_by": f"scikit-learn {packages.get('scikit-learn', '')}",
                     "iterations": _iterations(estimator), "stopped": "fitted", "data_path": "in memory (numpy)"},
        "timings": timings,
    }
    if cost is not None:
        manifest["cost"] = cost
    return manifest


def _write(path: Path, cfg, data, model, metrics, history, predictions, manifest) -> Path:
    """The run folder, written atomically (RunWriter), the report last."""
    from damoxing.config import dump_config
    from damoxing.runs.folder import RunWriter

    writer = RunWriter(path)
    model.save(writer.file("model.onnx"))
    writer.write_text("config.yaml", dump_config(cfg))
    writer.write_json("preprocessing.json", data.preprocessing.to_dict())
    for name, text in data.preprocessing.files().items():
        writer.write_text(name, text)
    writer.write_json("metrics.json", metrics)
    writer.write_jsonl("history.jsonl", history)
    np.savez(writer.file("splits.npz"), **{k: v.astype(np.int64) for k, v in data.indices.items()})
    for split, arrays in predictions.items():
        np.savez(writer.file(f"predictions_{split}.npz"), **arrays)
    writer.write_manifest(manifest)
    if cfg.tracking.report:
        _write_report(writer.tmp, writer.path)
    return writer.commit()


def _write_report(folder: Path, final_path: Path) -> None:
    """report.html, as for a torch run; a failing plot never loses the fitted run."""
    from damoxing.core.console import warn
    from damoxing.report.html import write_report

    try:
        write_report(folder, folder / "report.html", run_name=final_path.name)
    except Exception as e:  # noqa: BLE001 - the run is complete without its report
        warn(f"could not write report.html ({type(e).__name__}: {e}); `damoxing report {final_path}` retries it.")
