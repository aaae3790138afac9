"""The Python API, and the one place where the stages are wired together:

    config -> data (arrays + fitted preprocessing) -> model (from the data's schema)
           -> train loop -> evaluation -> run folder

`train`, `load`, `evaluate` and `predict` mirror the CLI verbs.
"""

from __future__ import annotations

import contextlib
import json
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from damoxing import __version__
from damoxing.console import note, progress_bar, set_quiet, warn
from damoxing.errors import TrainingDiverged


@dataclass
class Run:
    """What `train` returns: the run folder and what was measured."""

    path: Path
    metrics: dict
    config: Any
    history: list[dict] = field(default_factory=list)
    manifest: dict = field(default_factory=dict)

    def load(self):
        return load(self.path)


def _overrides(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Python keyword overrides: `train__epochs=5` means the dotted key `train.epochs`."""
    return {k.replace("__", "."): v for k, v in kwargs.items()}


def train(config: str | Path | dict | None = None, *, out: str | Path | None = None, quiet: bool = False,
          overrides: Optional[dict[str, Any]] = None, resume: str | Path | None = None, **kwargs: Any) -> Run:
    """Train, evaluate and save one run.

    Args:
        config: a YAML path or a dict with the same keys (optional with `resume`).
        out: the run folder (default runs/<name>-<time>).
        quiet: no progress bar or notes.
        overrides: dotted keys, e.g. {"train.epochs": 5}; keyword arguments such as
            `train__epochs=5` are the same.
        resume: a run interrupted after a checkpoint (train.checkpoint_every): continue it.
    Returns:
        Run with `.path`, `.metrics`, `.config`, `.history`, `.manifest`. Under torchrun every
        process returns, but only rank 0 evaluates and writes; the others' Run has no metrics.
    """
    import torch

    from damoxing.config import dump_config, load_config
    from damoxing.data.pipeline import prepare_data
    from damoxing.models import MODELS, count_parameters, create_model, resolve_size
    from damoxing.run_folder import RunWriter, new_run_path
    from damoxing.tasks import TASKS
    from damoxing.train import distributed as dist
    from damoxing.train.checkpoint import Checkpointer, check_identity, read_checkpoint, resume_paths
    from damoxing.train.loop import Split, fit, pick_device

    started = time.perf_counter()
    resumed = None
    if resume is not None:
        path, checkpoint_file = resume_paths(resume)
        resumed = read_checkpoint(checkpoint_file)
    if config is None and resumed is None:
        from damoxing.errors import UserError

        raise UserError("train needs a config (a YAML path or a dict), or resume= a run interrupted after a checkpoint.")
    if config is None:  # resuming with the run's own resolved config
        config = RunWriter.partial_path(path) / "config.yaml"
        base_dir = Path(resumed.meta["base_dir"]) if resumed.meta.get("base_dir") else None
    else:
        base_dir = Path(config).resolve().parent if isinstance(config, (str, Path)) else None
    cfg = load_config(config, {**(overrides or {}), **_overrides(kwargs)})
    ctx = dist.init_distributed(cfg.train.device)
    set_quiet(quiet or not ctx.is_main)  # one process speaks
    device = dist.process_device(pick_device(cfg.train.device), ctx)
    if resume is None:
        path = new_run_path(out, cfg.name)  # refuse an --out that holds a run before any work
    if cfg.model.init_from:  # fine-tuning: unset model options come from the pretraining run
        from damoxing.models.init_from import inherit_options, source_run

        cfg = cfg.model_copy(update={"model": inherit_options(cfg.model, source_run(cfg.model.init_from, base_dir))})

    family = MODELS.get(cfg.model.type)
    if hasattr(family, "resolve_config"):  # e.g. pretrained: find the checkpoint, record its hash and position limit
        cfg = family.resolve_config(cfg, base_dir)

    data = prepare_data(cfg, base_dir)
    cfg = cfg.model_copy(update={"task": data.task, "model": resolve_size(cfg.model)})
    task = TASKS.get(data.task)(cfg.train)
    load_seconds = time.perf_counter() - started

    torch.manual_seed(cfg.train.seed)
    model = create_model(cfg.model, data.schema)
    init_report = None
    if cfg.model.init_from:
        from damoxing.models.init_from import describe, load_init_weights

        init_report = load_init_weights(model, Path(cfg.model.init_from))
        note(describe(init_report))
    params, trainable = count_parameters(model)
    note(f"{cfg.name}: {cfg.model.type} ({params:,} parameters) on {data.source}, task {data.task}, "
         f"{data.summary['split_rows']['train']} training rows, device {device}")

    splits = {k: Split(torch.as_tensor(data.x[k]), None if data.y[k] is None else torch.as_tensor(data.y[k])) for k in data.x}
    samples = None
    if data.task == "generation" and data.schema.kind == "image":  # fixed-seed sample grids, written with the run
        from damoxing.generate_images import SampleGrids

        samples = SampleGrids(data.preprocessing, cfg.train.sample_every, cfg.train.seed)
    writer, checkpoints = None, None
    if cfg.train.checkpoint_every is not None or resumed is not None:
        identity = {"config": cfg.model_dump(mode="json"), "data_fingerprint": data.fingerprint}
        if resumed is not None:
            check_identity(resumed, identity["config"], data.fingerprint, ctx.world)
            loop = resumed.meta["loop"]
            note(f"resuming {path} from its checkpoint at epoch {loop['epoch']}, step {loop['step']}")
        if ctx.is_main:
            writer = RunWriter(path, fresh=resumed is None)
            writer.write_text("config.yaml", dump_config(cfg))  # what `--resume` reads back
        partial = RunWriter.partial_path(path)
        checkpoints = Checkpointer(partial / "checkpoints" / "checkpoint.safetensors", cfg.train.checkpoint_interval(),
                                   identity={**identity, "base_dir": str(base_dir) if base_dir else None},
                                   resume=resumed, write=ctx.is_main)
        if cfg.train.checkpoint_every is not None:
            note(f"checkpoints every {cfg.train.checkpoint_every} in {checkpoints.path.parent}; "
                 f"if interrupted, continue with: damoxing train --resume {path}")
    meter = None
    if cfg.cost.enabled and ctx.is_main:  # rank 0 accounts for the run it writes
        from damoxing.evaluate.cost import CostMeter

        meter = CostMeter(cfg.cost, device, device_name(device))
        meter.start()
    progress = progress_bar()
    if progress is not None:
        progress.start()
    try:
        result = fit(model, splits["train"], splits["val"], task, cfg.train, device, progress=progress, checkpoints=checkpoints,
                     on_epoch_end=(lambda record: samples.after_epoch(model, record["epoch"])) if samples else None)
    finally:
        if progress is not None:
            progress.stop()
    if not ctx.is_main:  # rank 0 evaluates and writes the run folder
        dist.shutdown()
        return Run(path=path, metrics={}, config=cfg, history=result.history)
    if result.message:
        if result.stopped != "diverged":  # a divergence is reported as the error below
            (warn if result.stopped == "interrupted" else note)(result.message)

    eval_started = time.perf_counter()
    predictions: dict[str, dict] = {}
    metrics = evaluate_run(model, task, data, cfg, device, predictions=predictions)
    eval_seconds = time.perf_counter() - eval_started
    cost = None
    if meter is not None:
        from damoxing.train.loop import autocast_context

        meter.stop()
        cost = meter.block(model=model, task=task, train_x=splits["train"].x, train_y=splits["train"].y, schema=data.schema,
                           params=params, trainable=trainable, samples_seen=result.samples_seen,
                           train_seconds=result.train_seconds, eval_seconds=eval_seconds,
                           autocast_bf16=autocast_context(cfg.train, device) is not contextlib.nullcontext)

    writer = writer or RunWriter(path)
    writer.discard("checkpoints")  # the run is complete: nothing left to resume
    from safetensors.torch import save_file

    model.to("cpu")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(writer.file("model.safetensors")))
    writer.write_text("config.yaml", dump_config(cfg))
    writer.write_json("preprocessing.json", data.preprocessing.to_dict())
    for name, text in data.preprocessing.files().items():  # e.g. tokenizer.json
        writer.write_text(name, text)
    writer.write_json("metrics.json", metrics)
    writer.write_jsonl("history.jsonl", result.history)
    np.savez(writer.file("splits.npz"), **{k: v.astype(np.int64) for k, v in data.indices.items()})
    if samples is not None:
        samples.write(model, writer.tmp)
    for split, arrays in predictions.items():  # plain arrays for the report's curves (np.load, allow_pickle=False)
        np.savez(writer.file(f"predictions_{split}.npz"), **arrays)
    manifest = build_manifest(cfg, data, result, device, params, trainable,
                              timings={"load_seconds": load_seconds, "train_seconds": result.train_seconds,
                                       "eval_seconds": eval_seconds, "total_seconds": time.perf_counter() - started})
    if init_report is not None:
        manifest["model"]["init_from"] = init_report
    if hasattr(model, "run_info"):  # e.g. pretrained: the base checkpoint and its hash, what was saved
        manifest["model"].update(model.run_info())
    if cost is not None:
        manifest["cost"] = cost
    writer.write_json("manifest.json", manifest)
    if cfg.tracking.report:
        write_run_report(writer.tmp, writer.path)
    path = writer.commit()
    dist.shutdown()
    note(headline(metrics, data.task, path))
    if cfg.tracking.mlflow:
        log_run_to_mlflow(path, cfg)
    if result.stopped == "diverged":
        raise TrainingDiverged(f"{result.message} The best weights so far were saved in {path}.")
    return Run(path=path, metrics=metrics, config=cfg, history=result.history, manifest=manifest)


def evaluate_run(model, task, data, cfg, device, predictions: Optional[dict] = None) -> dict:
    """Metrics for val and test, the baseline's, bootstrap intervals and calibration for test.

    If `predictions` is a dict, the test split's targets and predictions are put in it as plain
    arrays ({"test": {"y_true": ..., "proba"/"y_pred": ...}}) for the run folder.
    """
    import torch

    from damoxing.evaluate.evaluation import evaluate_predictions
    from damoxing.train.loop import autocast_context, model_outputs

    autocast = autocast_context(cfg.train, device)
    if data.task == "language_modeling":
        return evaluate_language_model(model, task, data, cfg.train.eval_batch_size, autocast, device)
    if data.task == "generation":  # no labels: the model's losses and sample quality, beside trivial generators
        return task.evaluate(model, data.x, device, cfg.train.eval_batch_size, autocast)
    metrics: dict[str, Any] = {}
    train_targets = data.y_original["train"]
    for split in ("val", "test"):
        if data.y_original[split] is None or len(data.x[split]) == 0:
            continue
        x = torch.as_tensor(data.x[split], device=device)
        pred = task.predictions(model_outputs(model, x, cfg.train.eval_batch_size, autocast))
        if data.task == "regression":
            pred = data.preprocessing.decode_regression(pred)
        result = evaluate_predictions(task, data.y_original[split], pred, data.schema, train_targets,
                                      n_resamples=cfg.evaluate.bootstrap if split == "test" else 0, seed=cfg.train.seed,
                                      confidence=cfg.evaluate.confidence, calibration_bins=cfg.evaluate.calibration_bins)
        metrics[split] = result["metrics"]
        metrics.setdefault("baseline", {})[split] = result["baseline"]
        if "ci" in result:
            metrics[f"{split}_ci"] = result["ci"]
        if split == "test" and "calibration" in result:
            metrics["test_calibration"] = result["calibration"]
        if split == "test" and predictions is not None:
            predictions["test"] = prediction_arrays(data.task, data.y_original[split], pred)
    return metrics


def evaluate_language_model(model, task, data, batch_size: int, autocast, device) -> dict:
    """Loss, perplexity and bits per byte on val and test, and the same for a unigram model of the training tokens."""
    import torch

    metrics: dict[str, Any] = {}
    for split in ("val", "test"):
        if len(data.x[split]) == 0:
            continue
        n_bytes = data.summary["split_bytes"][split]
        x, y = torch.as_tensor(data.x[split], device=device), torch.as_tensor(data.y[split], device=device)
        metrics[split] = task.evaluate_split(model, x, y, n_bytes, batch_size, autocast)
        metrics.setdefault("baseline", {})[split] = task.unigram_baseline(data.y["train"], data.y[split], data.schema.vocab_size, n_bytes)
    return metrics
def prediction_arrays(task: str, y_true: np.ndarray, pred: np.ndarray) -> dict[str, np.ndarray]:
    """Targets and predictions as plain numeric arrays: y_true + proba + pred (classification),
    y_true + y_pred (regression and anything else numeric)."""
    y_true, pred = np.asarray(y_true), np.asarray(pred)
    if task == "classification":
        return {"y_true": y_true.astype(np.int64), "proba": pred.astype(np.float32), "pred": pred.argmax(axis=1).astype(np.int64)}
    return {"y_true": y_true.astype(np.float64), "y_pred": pred.astype(np.float64)}


def device_name(device) -> str:
    """The GPU's name on CUDA, else the CPU's (as the manifest records it)."""
    import torch

    return torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()


def write_run_report(folder: Path, final_path: Path) -> None:
    """report.html into a run folder; a failing plot must never lose the trained run."""
    from damoxing.report.html import write_report

    try:
        write_report(folder, folder / "report.html", run_name=final_path.name)
    except Exception as e:  # noqa: BLE001 - the run is complete without its report
        warn(f"could not write report.html ({type(e).__name__}: {e}); `damoxing report {final_path}` retries it.")


def log_run_to_mlflow(path: Path, cfg) -> None:
    """Log a finished run to MLflow (tracking.mlflow); the run folder stays the source of truth."""
    from damoxing.tracking import log_run

    try:
        run_id = log_run(path, cfg.tracking.mlflow, cfg.tracking.experiment or cfg.name)
    except Exception as e:  # noqa: BLE001 - the run folder is complete; say what failed, keep it
        warn(f"could not log the run to MLflow at {cfg.tracking.mlflow} ({type(e).__name__}: {e}). "
             f"The run is saved in {path}; log it later with damoxing.tracking.log_run('{path}', '{cfg.tracking.mlflow}').")
        return
    note(f"logged to MLflow at {cfg.tracking.mlflow} (experiment '{cfg.tracking.experiment or cfg.name}', run {run_id})")


def headline(metrics: dict, task: str, path: Path) -> str:
    from damoxing.evaluate.metrics import headline_metric

    name = headline_metric(task)
    split = "test" if "test" in metrics else "val"
    if split not in metrics or name not in metrics[split]:
        return f"saved run to {path}"
    value = metrics[split][name]
    ci = metrics.get(f"{split}_ci", {}).get(name)
    base = metrics.get("baseline", {}).get(split, {}).get(name)
    text = f"{split} {name} {value:.4f}"
    if ci:
        text += f" (95% CI {ci[0]:.4f}-{ci[1]:.4f})"
    if base is not None:
        text += f", baseline {base:.4f}"
    return f"{text}; saved run to {path}"


def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("torch", "numpy", "pandas", "scikit-learn", "pydantic", "safetensors", "transformers", "tokenizers", "peft"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def build_manifest(cfg, data, result, device, params: int, trainable: int, timings: dict) -> dict:
    import torch

    return {
        "damoxing": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": sys.argv,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": package_versions(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "seed": cfg.train.seed,
        "task": data.task,
        "data": {"source": data.source, "fingerprint": data.fingerprint, **data.summary},
        "model": {"type": cfg.model.type, "params": params, "trainable_params": trainable},
        "training": {
            "epochs_run": len(result.history), "best_epoch": result.best_epoch, "monitor": result.monitor,
            "best_score": result.best_score, "stopped": result.stopped, "message": result.message,
            "steps": result.steps, "samples_seen": result.samples_seen,
            "data_path": result.data_path, "distributed": result.strategy, "processes": _world_size(),
            "resumed_from": result.resumed_from,
        },
        "timings": timings,
    }


def _world_size() -> int:
    from damoxing.train.distributed import current

    return current().world


def load(path: str | Path, device: str = "cpu"):
    """A saved run as a Predictor: `.predict(df_or_array)`, `.predict_proba(...)`."""
    from damoxing.predictor import Predictor

    return Predictor(path, device=device)


def evaluate(run: str | Path, data: str | Path | None = None) -> dict:
    """Re-evaluate a saved run: on its own test split (default) or on a labelled file."""
    from damoxing.data.pipeline import prepare_data
    from damoxing.evaluate.evaluation import evaluate_predictions
    from damoxing.predictor import read_table_or_arrays
    from damoxing.run_folder import read_json
    from damoxing.errors import DataError

    predictor = load(run)
    prep = predictor.preprocessing
    if predictor.task_name == "language_modeling":
        return _evaluate_language_model_run(predictor, data)
    if predictor.task_name == "generation":
        return _evaluate_generation(predictor, data)
    if data is None:
        prepared = prepare_data(_run_data_config(predictor))
        manifest = read_json(predictor.path / "manifest.json")
        if prepared.fingerprint != manifest["data"]["fingerprint"]:
            warn(f"the data at {prepared.source} changed since this run was trained (fingerprint differs); "
                 "its test split may not be the one in metrics.json.")
        y = prepared.y_original["test"]
        train_targets = prepared.y_original["train"]
        out = predictor.task.predictions(_outputs(predictor, prepared.x["test"]))
        if predictor.task_name == "regression":
            out = prep.decode_regression(out)
        return evaluate_predictions(predictor.task, y, out, predictor.schema, train_targets)
    inputs, targets = read_table_or_arrays(data, predictor.schema.kind, prep.target)
    if targets is None:
        raise DataError(f"'{data}' has no target values ('{prep.target}'); evaluate needs labelled data. Use `damoxing predict` for unlabelled inputs.")
    keep = ~_is_missing(targets)
    if not keep.all():
        warn(f"dropped {int((~keep).sum())} row(s) whose target '{prep.target}' is missing.")
        inputs = inputs[keep] if not hasattr(inputs, "iloc") else inputs.loc[keep]
        targets = targets[keep]
    return predictor.evaluate(inputs, targets)


def _run_data_config(predictor):
    """The run's config, reading text with the run's own tokenizer (a retrained one could number tokens differently)."""
    config = predictor.config
    if predictor.schema.kind not in ("text", "corpus"):
        return config
    tokenizer = config.data.tokenizer.model_copy(update={"path": str(predictor.path)})
    return config.model_copy(update={"data": config.data.model_copy(update={"tokenizer": tokenizer})})


def _evaluate_language_model_run(predictor, data: str | Path | None) -> dict:
    """A language model on its own test split, or on a .txt file / folder, beside the unigram baseline of its training text."""
    import contextlib

    import torch

    from damoxing.data.pipeline import prepare_data
    from damoxing.data.sources import load_source
    from damoxing.errors import DataError
    from damoxing.run_folder import read_json

    prepared = prepare_data(_run_data_config(predictor))  # the training tokens, for the baseline
    if prepared.fingerprint != read_json(predictor.path / "manifest.json")["data"]["fingerprint"]:
        warn(f"the data at {prepared.source} changed since this run was trained (fingerprint differs).")
    x, y, n_bytes = prepared.x["test"], prepared.y["test"], prepared.summary["split_bytes"]["test"]
    if data is not None:
        raw = load_source(str(data))
        if raw.kind != "corpus":
            raise DataError(f"This run is a language model; evaluate it on a .txt file or a folder of .txt files, not '{data}'.")
        x, y, n_bytes = predictor.preprocessing.inputs.pack(raw.texts, predictor.schema.input_shape[0], raw.text_unit)
    if len(x) == 0:
        raise DataError("This run has no test text (data.split.test is 0); pass --data FILE.txt to evaluate on other text.")
    task = predictor.task
    metrics = task.evaluate_split(predictor.model, torch.as_tensor(x), torch.as_tensor(y), n_bytes, 64, contextlib.nullcontext)
    return {"metrics": metrics, "baseline": task.unigram_baseline(prepared.y["train"], y, predictor.schema.vocab_size, n_bytes)}
def _evaluate_generation(predictor, data: str | Path | None) -> dict:
    """A generative run on its own test split (default) or on a file of images/rows (labels not needed)."""
    from damoxing.data.pipeline import prepare_data
    from damoxing.predictor import read_table_or_arrays
    from damoxing.run_folder import read_json

    prepared = prepare_data(predictor.config)
    if prepared.fingerprint != read_json(predictor.path / "manifest.json")["data"]["fingerprint"]:
        warn(f"the data at {prepared.source} changed since this run was trained (fingerprint differs).")
    splits = {"train": prepared.x["train"], "test": prepared.x["test"]}
    if data is not None:
        inputs, _ = read_table_or_arrays(data, predictor.schema.kind, None)
        splits["test"] = predictor.preprocessing.transform_inputs(inputs)
    result = predictor.task.evaluate(predictor.model, splits, predictor.device, 1024, contextlib.nullcontext)
    if "test" not in result:
        from damoxing.errors import DataError

        raise DataError("The test data has fewer than 2 rows; generative metrics compare sets of samples, so give at least 2.")
    return {"metrics": result["test"], "baseline": result["baseline"]["test"], "reference": result["reference"]["test"]}


def _outputs(predictor, x: np.ndarray):
    import torch

    from damoxing.train.loop import model_outputs

    return model_outputs(predictor.model, torch.as_tensor(x), 1024)


def _is_missing(values: np.ndarray) -> np.ndarray:
    import pandas as pd

    return pd.isna(pd.Series(values)).to_numpy()


def predict(run: str | Path, data: Any) -> np.ndarray:
    """Predictions of a saved run for raw inputs."""
    return load(run).predict(data)
