"""`damoxing train CONFIG`: the one place where the stages of a training run are wired together:

    config -> data (arrays + fitted preprocessing) -> model (from the data's schema)
           -> train loop -> evaluation -> run folder
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from damoxing.core import console
from damoxing.core.console import note, progress_bar, stage, warn
from damoxing.core.errors import RunFolderError, TrainingDiverged, TrainingInterrupted
from damoxing.models.protocols import FittedReference, ReportsRunInfo, ResolvesConfig
from damoxing.models.runtime import pick_device
from damoxing.runs.folder import RunWriter, is_run
from damoxing.runs.manifest import build_manifest, device_name
from damoxing.spec import load_config


@dataclass
class Run:
    """What `train` returns: the run folder and what was measured."""

    path: Path
    metrics: dict
    config: Any
    history: list[dict] = field(default_factory=list)
    manifest: dict = field(default_factory=dict)

    def load(self):
        from damoxing.inference.predictor import load

        return load(self.path)


def _overrides(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Python keyword overrides: `train__epochs=5` means the dotted key `train.epochs`."""
    return {k.replace("__", "."): v for k, v in kwargs.items()}


def train(config: str | Path | dict | None = None, *, out: str | Path | None = None, quiet: bool = False,
          overrides: Optional[dict[str, Any]] = None, resume: str | Path | None = None, adapt=None,
          on_epoch_end=None, score_test: bool = True, **kwargs: Any) -> Run:
    """Train, evaluate and save one run.

    Args:
        config: a YAML path or a dict with the same keys (optional with `resume`).
        out: the run folder (default runs/<name>-<time>).
        quiet: no progress bar or notes.
        overrides: dotted keys, e.g. {"train.epochs": 5}; keyword arguments such as
            `train__epochs=5` are the same.
        resume: a run interrupted after a checkpoint (train.checkpoint_every): continue it.
        adapt: `damoxing compress`'s hook, (model, task, data, train Split) -> (task, train Split) for the
            loop: it may load starting weights (pruning) or train under another loss (distillation).
        on_epoch_end: called with each epoch's record (losses, validation metrics); it may raise
            `damoxing.training.loop.StopTraining` to end the run there (saved as usual), e.g. a pruned tuning trial.
        score_test: False evaluates the validation split only (tuning trials: the test split stays unseen).
    Returns:
        Run with `.path`, `.metrics`, `.config`, `.history`, `.manifest`. Under torchrun every
        process returns, but only rank 0 evaluates and writes; the others' Run has no metrics.
    """
    from damoxing.training.distributed import launched_rank

    with console.quiet(quiet or launched_rank() != 0):  # one process speaks; the setting ends with the call
        return _train(config, out, overrides, resume, kwargs, {"adapt": adapt, "on_epoch_end": on_epoch_end, "score_test": score_test})


@dataclass
class _Start:
    """What `train` settles before any data is read: the config, the reserved run folder, the device."""

    cfg: Any
    path: Path
    base_dir: Optional[Path]
    resumed: Any
    ctx: Any
    device: Any
    started: float
    reserved: bool
    adapt: Any = None  # `damoxing compress`'s hook (see `train`)
    on_epoch_end: Any = None  # `damoxing tune`'s hook: report, prune (see `train`)
    score_test: bool = True


def _train(config, out, overrides: Optional[dict[str, Any]], resume, kwargs: dict[str, Any], hooks: Optional[dict] = None) -> Run:
    """`train`'s work, inside its quiet setting: start (config, reserved folder), fit, write."""
    from damoxing.runs.folder import release

    start = _start(config, out, overrides, resume, kwargs)
    for name, value in (hooks or {}).items():
        setattr(start, name, value)
    try:
        return _train_started(start)
    except BaseException:
        if start.reserved:
            release(start.path)  # an empty reservation goes back; anything written is kept
        raise


def _start(config, out, overrides, resume, kwargs) -> _Start:
    """Load and check the config, reserve the run folder (which proves it writable) and pick the device."""
    from damoxing.runs.folder import RunWriter, new_run_path, resume_paths
    from damoxing.tasks import check_monitor, known_task
    from damoxing.training import distributed as dist
    from damoxing.training.checkpoint import read_checkpoint

    started = time.perf_counter()
    resumed = None
    if resume is not None:
        path, checkpoint_file = resume_paths(resume)
        resumed = read_checkpoint(checkpoint_file)
    if config is None and resumed is None:
        from damoxing.core.errors import UserError

        raise UserError("train needs a config (a YAML path or a dict), or resume= a run interrupted after a checkpoint.")
    base_dir = None
    if config is None:  # resuming with the run's own resolved config
        config = RunWriter.partial_path(path) / "config.yaml"
        base_dir = Path(resumed.meta["base_dir"]) if resumed.meta.get("base_dir") else None
    elif isinstance(config, (str, Path)):
        base_dir = Path(config)
    cfg = load_config(config, {**(overrides or {}), **_overrides(kwargs)})  # a missing or unreadable file fails here
    if isinstance(config, (str, Path)) and base_dir == Path(config):
        base_dir = Path(config).resolve().parent
    task_known = known_task(cfg)
    if task_known is not None:  # a typo in train.monitor must not cost a data load or an epoch
        check_monitor(cfg.train.monitor, task_known, cfg.model.type)
    ctx = dist.init_distributed(cfg.train.device)
    device = dist.process_device(pick_device(cfg.train.device), ctx)
    reserved = False
    if resume is None and ctx.is_main:
        reserved = out is None or not Path(out).exists()  # an empty --out the user made is not ours to remove
        path = new_run_path(out, cfg.name)
    elif resume is None:  # other ranks never write; rank 0 reserves and reports the folder
        path = Path(out) if out is not None else Path("runs") / f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    if cfg.model.init_from:  # fine-tuning: unset model options come from the pretraining run
        cfg = cfg.model_copy(update={"model": inherit_options(cfg.model, source_run(cfg.model.init_from, base_dir))})
    return _Start(cfg, path, base_dir, resumed, ctx, device, started, reserved)


def _train_started(start: _Start) -> Run:
    """Data, model, the loop, evaluation and the run folder, for a started run."""
    import torch

    from damoxing.data.pipeline import prepare_data
    from damoxing.models import MODELS, count_parameters, create_model, data_needs, resolve_size
    from damoxing.tasks import TASKS, check_monitor, known_task

    cfg, path, base_dir = start.cfg, start.path, start.base_dir
    family = MODELS.get(cfg.model.type)
    if isinstance(family, FittedReference):  # a traditional reference (scikit-learn): fitted, saved as ONNX
        from damoxing.verbs.reference import fit_reference

        path, metrics, cfg, history, manifest = fit_reference(cfg, path, base_dir, start.started, evaluate_run)
        note(headline(metrics, cfg.task, path))
        return Run(path=path, metrics=metrics, config=cfg, history=history, manifest=manifest)
    if isinstance(family, ResolvesConfig):  # e.g. pretrained: find the checkpoint, record its hash and position limit
        cfg = family.resolve_config(cfg, base_dir)

    data = prepare_data(cfg, data_needs(cfg.model), base_dir)
    if known_task(cfg) is None:  # the task was inferred from the data: check before the model is built
        check_monitor(cfg.train.monitor, data.task, cfg.model.type)
    cfg = cfg.model_copy(update={"task": data.task, "model": resolve_size(cfg.model)})
    cfg, chosen_defaults = choose_defaults(cfg, data)
    task = TASKS.get(data.task)(cfg.train)
    load_seconds = time.perf_counter() - start.started

    torch.manual_seed(cfg.train.seed)
    model = create_model(cfg.model, data.schema)
    init_report = None
    if cfg.model.init_from:
        from damoxing.models.init_from import describe, load_init_weights

        init_report = load_init_weights(model, Path(cfg.model.init_from) / "model.safetensors")
        note(describe(init_report))
    private = None
    if cfg.train.privacy is not None and cfg.train.federated is None:  # DP-SGD (trust/privacy.py): refuse what cannot work, replace layers it cannot train
        from damoxing.trust.privacy import prepare_private

        model, private = prepare_private(cfg.train, model, len(data.x["train"]), start.ctx.world)
    params, trainable = count_parameters(model)
    note(f"{cfg.name}: {cfg.model.type} ({params:,} parameters) on {data.source}, task {data.task}, "
         f"{data.summary['split_rows']['train']} training rows, device {start.device}")
    fitted = _fit(start, cfg, data, model, task, params, trainable, private)
    if not start.ctx.is_main:  # rank 0 evaluates and writes the run folder
        return Run(path=path, metrics={}, config=cfg, history=fitted.result.history)
    extra = {"chosen_defaults": chosen_defaults, "init_report": init_report, "load_seconds": load_seconds}
    return _write(start, cfg, data, model, task, fitted, extra)


@dataclass
class _Fitted:
    result: Any
    writer: Any
    samples: Any
    meter: Any
    params: int
    trainable: int
    splits: dict
    private: Any = None  # trust/privacy.py's PrivateTraining (train.privacy)
    federation: Any = None  # trust/federated.py's Federation (train.federated)


def _fit(start: _Start, cfg, data, model, task, params: int, trainable: int, private=None) -> _Fitted:
    """Checkpoints, the cost meter and the training loop itself."""
    import torch

    from damoxing.training import distributed as dist
    from damoxing.training.loop import Split, fit

    splits = {k: Split(torch.as_tensor(data.x[k]), None if data.y[k] is None else torch.as_tensor(data.y[k])) for k in data.x}
    samples = None
    if data.task == "generation" and data.schema.kind == "image":  # fixed-seed sample grids, written with the run
        from damoxing.inference.images import SampleGrids

        samples = SampleGrids(data.preprocessing, cfg.train.sample_every, cfg.train.seed)
    fit_task, fit_train = task, splits["train"]
    if start.adapt is not None:  # `damoxing compress`: pruned starting weights, or a distillation loss (optimize/)
        fit_task, fit_train = start.adapt(model, task, data, splits["train"])
    federation = None
    if cfg.train.federated is not None:  # federated averaging over simulated clients (trust/federated.py)
        from damoxing.trust.federated import Federation

        federation = Federation(cfg.train, model, {"train": fit_train}, fit_task, start.device, start.ctx.world)
    writer, checkpoints = _checkpoints(start, cfg, data)
    meter = None
    if cfg.cost.enabled and start.ctx.is_main:  # rank 0 accounts for the run it writes
        from damoxing.evaluation.cost import CostMeter

        meter = CostMeter(cfg.cost, start.device, device_name(start.device))
        meter.start()
    stage(f"training {cfg.model.type}: up to {cfg.train.epochs} epochs on {data.summary['split_rows']['train']:,} rows")
    progress = progress_bar()
    if progress is not None:
        progress.start()
    try:
        if federation is not None:
            result = federation.fit(model, fit_train, splits["val"], progress)
        else:
            result = fit(model, fit_train, splits["val"], fit_task, cfg.train, start.device, progress=progress, checkpoints=checkpoints,
                         on_epoch_end=_epoch_end(samples, model, start.on_epoch_end), private=private)
    finally:
        if private is not None:
            private.close()  # the per-sample hooks come off: a plain model is evaluated and saved
        if progress is not None:
            progress.stop()
    if not start.ctx.is_main:
        dist.shutdown()
    elif result.message and result.stopped != "diverged":  # a divergence is reported as the error below
        (warn if result.stopped == "interrupted" else note)(result.message)
    return _Fitted(result, writer, samples, meter, params, trainable, splits, private, federation)


def _epoch_end(samples, model, hook):
    """The loop's per-epoch callback: sample grids of a generative run, then the caller's hook."""
    if samples is None:
        return hook

    def after_epoch(record: dict) -> None:
        samples.after_epoch(model, record["epoch"])
        if hook is not None:
            hook(record)

    return after_epoch


def _checkpoints(start: _Start, cfg, data):
    """(the run writer, the Checkpointer) when the run checkpoints or resumes, else (None, None)."""
    from damoxing.config import dump_config
    from damoxing.runs.folder import RunWriter
    from damoxing.training.checkpoint import Checkpointer, check_identity

    if cfg.train.checkpoint_every is None and start.resumed is None:
        return None, None
    writer, path = None, start.path
    identity = {"config": cfg.model_dump(mode="json"), "data_fingerprint": data.fingerprint}
    if start.resumed is not None:
        check_identity(start.resumed, identity["config"], data.fingerprint, start.ctx.world)
        loop = start.resumed.meta["loop"]
        note(f"resuming {path} from its checkpoint at epoch {loop['epoch']}, step {loop['step']}")
    if start.ctx.is_main:
        writer = RunWriter(path, fresh=start.resumed is None)
        writer.write_text("config.yaml", dump_config(cfg))  # what `--resume` reads back
    checkpoints = Checkpointer(RunWriter.partial_path(path) / "checkpoints" / "checkpoint.safetensors", cfg.train.checkpoint_interval(),
                               identity={**identity, "base_dir": str(start.base_dir) if start.base_dir else None},
                               resume=start.resumed, write=start.ctx.is_main)
    if cfg.train.checkpoint_every is not None:
        note(f"checkpoints every {cfg.train.checkpoint_every} in {checkpoints.path.parent}; "
             f"if interrupted, continue with: damoxing train --resume {path}")
    return writer, checkpoints


def _write(start: _Start, cfg, data, model, task, fitted: _Fitted, extra: dict) -> Run:
    """Evaluate, then write every file of the run folder and commit it."""
    from damoxing.training import distributed as dist

    result, path = fitted.result, start.path
    if result.stopped == "interrupted" and fitted.writer is not None:  # keep the checkpoint: --resume continues
        raise TrainingInterrupted(f"Interrupted at epoch {len(result.history)}; the checkpoint is kept in "
                                  f"{RunWriter.partial_path(path)}. Continue with: damoxing train --resume {path}")
    stage("evaluating on the validation and test rows")
    eval_started = time.perf_counter()
    predictions: dict[str, dict] = {}
    splits = None if start.score_test else ("val",)  # a tuning trial never sees the test split
    metrics = evaluate_run(model, task, data, cfg, start.device, predictions=predictions, splits=splits)
    if fitted.federation is not None and start.score_test and len(fitted.splits.get("test", [])):  # each client's test part
        metrics["federated"] = fitted.federation.client_scores(model, fitted.splits["test"])
    eval_seconds = time.perf_counter() - eval_started
    cost = _cost_block(start, cfg, model, task, data, fitted, eval_seconds)

    stage(f"writing the run folder {path}")
    writer = _write_files(fitted.writer, path, cfg, data, model, metrics, result, fitted.samples, predictions)
    manifest = build_manifest(cfg, data, result, start.device, fitted.params, fitted.trainable,
                              timings={"load_seconds": extra["load_seconds"], "train_seconds": result.train_seconds,
                                       "eval_seconds": eval_seconds, "total_seconds": time.perf_counter() - start.started})
    manifest["config_dir"] = str(start.base_dir) if start.base_dir else None  # relative data paths resolve against
    manifest["working_dir"] = str(Path.cwd())  # these, so `damoxing evaluate RUN` works from any folder
    if extra["init_report"] is not None:
        manifest["model"]["init_from"] = extra["init_report"]
    if extra["chosen_defaults"]:
        manifest["training"]["chosen_defaults"] = extra["chosen_defaults"]
    if isinstance(model, ReportsRunInfo):  # e.g. pretrained: the base checkpoint and its hash, what was saved
        manifest["model"].update(model.run_info())
    if cost is not None:
        manifest["cost"] = cost
    if fitted.federation is not None:
        manifest["federated"] = fitted.federation.summary()
    if fitted.private is not None:
        manifest["privacy"] = fitted.private.summary()
        note(f"privacy: epsilon {manifest['privacy']['epsilon']:.3f} spent (target {cfg.train.privacy.epsilon:g}), delta {fitted.private.delta:.2g}")
    writer.write_manifest(manifest)
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


def _cost_block(start: _Start, cfg, model, task, data, fitted: _Fitted, eval_seconds: float):
    if fitted.meter is None:
        return None
    from damoxing.models.runtime import autocast_context

    fitted.meter.stop()
    train = fitted.splits["train"]
    return fitted.meter.block(model=model, task=task, train_x=train.x, train_y=train.y, schema=data.schema,
                              params=fitted.params, trainable=fitted.trainable, samples_seen=fitted.result.samples_seen,
                              train_seconds=fitted.result.train_seconds, eval_seconds=eval_seconds,
                              autocast_bf16=autocast_context(cfg.train, start.device) is not contextlib.nullcontext)


def _write_files(writer, path: Path, cfg, data, model, metrics, result, samples, predictions):
    """The run's files (all but the manifest and the report) into its partial folder."""
    from safetensors.torch import save_file

    from damoxing.config import dump_config
    from damoxing.runs.folder import RunWriter

    writer = writer or RunWriter(path)
    writer.discard("checkpoints")  # the run is complete: nothing left to resume
    model.to("cpu")
    try:
        weights = model.state_dict()
        if cfg.train.privacy is not None and cfg.train.federated is None:  # DP layers: each weight once, under the torch layer's name
            from damoxing.models.private_layers import private_state_dict

            weights = private_state_dict(model)
        save_file({k: v.contiguous() for k, v in weights.items()}, str(writer.file("model.safetensors")))
        np.savez(writer.file("splits.npz"), **{k: v.astype(np.int64) for k, v in data.indices.items()})
        if samples is not None:
            samples.write(model, writer.tmp)
        for split, arrays in predictions.items():  # plain arrays for the report's curves (np.load, allow_pickle=False)
            np.savez(writer.file(f"predictions_{split}.npz"), **arrays)
    except OSError as e:
        raise writer.failed("the weights and arrays", e) from None
    writer.write_text("config.yaml", dump_config(cfg))
    writer.write_json("preprocessing.json", data.preprocessing.to_dict())
    for name, text in data.preprocessing.files().items():  # e.g. tokenizer.json
        writer.write_text(name, text)
    writer.write_json("metrics.json", metrics)
    writer.write_jsonl("history.jsonl", result.history)
    return writer


def choose_defaults(cfg, data):
    """The config with a table model's unset train settings chosen from the data (training/defaults.py), and what was chosen."""
    from damoxing.training.defaults import choose_train_defaults, describe_chosen

    n_train = data.summary["split_rows"]["train"]
    train_config, chosen = choose_train_defaults(cfg.train, n_train, data.schema.kind, data.task)
    if chosen:
        note(describe_chosen(chosen, n_train))
    return cfg.model_copy(update={"train": train_config}), chosen


def evaluate_run(model, task, data, cfg, device, predictions: Optional[dict] = None, splits=None) -> dict:
    """metrics.json of a trained model: the task's own `evaluate` (the one `damoxing evaluate RUN` uses),
    with the run's `evaluate:` settings, seed and evaluation batch size.

    If `predictions` is a dict, the test split's targets and predictions are put in it as plain
    arrays ({"test": {"y_true": ..., "proba"/"y_pred": ...}}) for the run folder.
    """
    from damoxing.models.runtime import autocast_context
    from damoxing.tasks import EvaluationSettings

    extra = {} if splits is None else {"splits": splits}
    return task.evaluate(model, data, EvaluationSettings.from_config(cfg), autocast_context(cfg.train, device), predictions=predictions, **extra)


def write_run_report(folder: Path, final_path: Path) -> None:
    """report.html into a run folder; a failing plot must never lose the trained run."""
    from damoxing.report.html import write_report

    writing = folder / ".report.html.writing"  # a full disk must not leave a truncated report.html
    try:
        write_report(folder, writing, run_name=final_path.name)
        os.replace(writing, folder / "report.html")
    except Exception as e:  # noqa: BLE001 - the run is complete without its report
        writing.unlink(missing_ok=True)
        warn(f"could not write report.html ({type(e).__name__}: {e}); `damoxing report {final_path}` retries it.")


def log_run_to_mlflow(path: Path, cfg) -> None:
    """Log a finished run to MLflow (tracking.mlflow); the run folder stays the source of truth."""
    from damoxing.runs.tracking import log_run

    try:
        run_id = log_run(path, cfg.tracking.mlflow, cfg.tracking.experiment or cfg.name)
    except Exception as e:  # noqa: BLE001 - the run folder is complete; say what failed, keep it
        warn(f"could not log the run to MLflow at {cfg.tracking.mlflow} ({type(e).__name__}: {e}). "
             f"The run is saved in {path}; log it later with damoxing.runs.tracking.log_run('{path}', '{cfg.tracking.mlflow}').")
        return
    note(f"logged to MLflow at {cfg.tracking.mlflow} (experiment '{cfg.tracking.experiment or cfg.name}', run {run_id})")


def headline(metrics: dict, task: str, path: Path) -> str:
    """One line: the task's headline metric on test (else val), its interval at the run's confidence, the baseline."""
    from damoxing.evaluation.metrics import ci_label
    from damoxing.tasks import headline_metric

    name = headline_metric(task)
    split = "test" if "test" in metrics else "val"
    if split not in metrics or name not in metrics[split]:
        return f"saved run to {path}"
    value = metrics[split][name]
    ci = metrics.get(f"{split}_ci", {}).get(name)
    base = metrics.get("baseline", {}).get(split, {}).get(name)
    text = f"{split} {name} {value:.4f}"
    if ci:
        text += f" ({ci_label(metrics.get(f'{split}_ci_level'))} {ci[0]:.4f}-{ci[1]:.4f})"
    if base is not None:
        text += f", baseline {base:.4f}"
    return f"{text}; saved run to {path}"


# --------------------------------------------------------------- model.init_from: pretrain, then fine-tune


def source_run(init_from: str, base_dir: Optional[Path]) -> Path:
    """The run folder named by model.init_from (relative paths: working directory, then the config's folder)."""
    path = Path(init_from).expanduser()
    if not path.exists() and base_dir is not None and (base_dir / path).exists():
        path = base_dir / path
    if not is_run(path):
        raise RunFolderError(f"model.init_from is '{init_from}', which is not a damoxing run folder (it needs config.yaml, model.safetensors, "
                             "preprocessing.json and manifest.json). Pass the folder that `damoxing train` printed for the pretraining run.")
    return path.resolve()


def inherit_options(model_config, run: Path):
    """The model config with every option not set explicitly taken from the source run (when it is the same family)."""
    source = load_config(run / "config.yaml").model
    if source.type != model_config.type:
        return model_config.model_copy(update={"init_from": str(run)})
    explicit = model_config.model_fields_set | {"type", "init_from"}
    updates: dict[str, Any] = {k: getattr(source, k) for k in type(model_config).model_fields if k not in explicit}
    return model_config.model_copy(update={**updates, "init_from": str(run)})
