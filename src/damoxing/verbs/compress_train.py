"""`damoxing compress --method prune | distill`: a new model trained by the normal training loop (verbs/train.py),
started from pruned weights or under a distillation loss, on the original run's own splits; then
measured against the original (optimize/measure.py) and written as a new run with its compression block.

The run is trained into a hidden staging folder beside the target, checked (its splits must be the
original's, row for row), measured, and written to the target with compression.json and the
manifest's `compression` block; the staging folder is removed.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from damoxing.core.console import note
from damoxing.core.errors import UserError

ROW_KEYS = ("source", "target", "labels", "features", "exclude", "text", "split")  # the data settings that pick the rows


def prune_run(predictor, target: Path, sparsity: float, structured: bool, finetune_epochs: Optional[int], threads: int) -> tuple[Path, dict]:
    """Prune the run's model, fine-tune it with the run's own training settings, measure, write. Returns (path, report)."""
    from damoxing.optimize.prune import check_sparsity, keep_masked, prune

    check_sparsity(sparsity)
    epochs = predictor.config.train.epochs if finetune_epochs is None else finetune_epochs
    if not (isinstance(epochs, int) and epochs >= 1):
        raise UserError(f"--finetune-epochs is {finetune_epochs}; give a whole number of epochs, 1 or more (the pruned model "
                        "is fine-tuned by the normal training loop).")
    pruned = prune(predictor.model, predictor.config.model, sparsity, structured)
    kind = "structured" if structured else "unstructured"
    note(f"pruning {predictor.path} ({predictor.config.model.type}, {kind}, sparsity {sparsity}); fine-tuning {epochs} epoch(s)")

    def adapt(model, task, data, train_split):
        model.load_state_dict(pruned.state)
        if pruned.masks:
            keep_masked(model, pruned.masks)
        return task, train_split

    model = {k: v for k, v in pruned.config.model_dump(mode="json").items() if k != "init_from"}  # the pruned weights are the start
    config = _config(predictor, model=model, name=f"{predictor.config.name}-pruned",
                     train={**predictor.config.train.model_dump(mode="json"), "epochs": epochs})
    settings = {"sparsity": sparsity, "structured": structured, "finetune_epochs": epochs}
    details = {"widths": pruned.widths}
    if not structured:
        details["note"] = ("unstructured magnitude pruning: the zeroed weights are stored densely (model.safetensors keeps every "
                           "tensor's shape), so size on disk, FLOPs and speed are unchanged; only the non-zero count falls")
    return _train_and_write(predictor, target, config, adapt, "prune", settings, details, threads)


def _config(predictor, **replace: Any) -> dict:
    """The original run's resolved config as a dict, its data source as the run recorded it, with `replace` applied."""
    from damoxing.runs.folder import read_json

    config = predictor.config.model_dump(mode="json", exclude_none=True)
    config["data"]["source"] = _source(predictor, read_json(predictor.path / "manifest.json"))
    config.update(replace)
    config.pop("task", None)
    return config


def _source(predictor, manifest: dict) -> str:
    """The data source as the run read it (the manifest's resolved path where it exists, else the config's)."""
    recorded = str(manifest.get("data", {}).get("source", ""))
    configured = predictor.config.data.source
    if recorded and (recorded.startswith("builtin:") or Path(recorded).exists()):
        return recorded
    return configured


def _train_and_write(predictor, target: Path, config: dict, adapt: Callable, method: str, settings: dict, details: dict,
                     threads: int, student_rows: Optional[Callable] = None) -> tuple[Path, dict]:
    """Train `config` with `adapt` into a staging folder, check its splits, measure it against the original, write the target."""
    from damoxing.inference.predictor import load
    from damoxing.inference.run_data import run_data, split_indices
    from damoxing.optimize.folder import write_compressed_run
    from damoxing.optimize.measure import Measured, before_after
    from damoxing.runs.folder import read_json
    from damoxing.verbs.train import train

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".training", dir=target.parent))
    try:
        run = train(config, out=staging / "run", adapt=adapt)
        _check_same_rows(predictor.path, run.path, split_indices)
        after = load(run.path)
        figures = before_after(Measured(predictor.model, predictor.path / "model.safetensors"),
                               Measured(after.model, run.path / "model.safetensors", x=student_rows(after) if student_rows else None),
                               run_data(predictor), predictor.task, predictor.config, threads, predictor.config.train.seed)
        report = {"method": method, "settings": settings, "original_run": str(predictor.path), "details": details, **figures}
        manifest = read_json(run.path / "manifest.json")
        manifest["derived_from"] = {"run": str(predictor.path), "by": f"damoxing compress --method {method}",
                                    "note": details.get("note", f"trained by the normal training loop ({method})")}
        path = write_compressed_run(target, run.path, {"manifest.json", "report.html"}, manifest, report,
                                    report=predictor.config.tracking.report)
        return path, report
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _check_same_rows(original: Path, new: Path, split_indices) -> None:
    """The new run's train / val / test rows must be the original's, row for row (else the comparison is void)."""
    a, b = split_indices(original), split_indices(new)
    differ = [s for s in sorted(set(a) | set(b)) if not np.array_equal(a.get(s, np.empty(0)), b.get(s, np.empty(0)))]
    if differ:
        raise UserError(f"The new run's {', '.join(differ)} rows differ from those of '{original}' (its data or split settings "
                        "changed, or the source changed since it was trained), so before and after cannot be compared on the same "
                        "rows. Nothing was written.")


def distill_run(teacher, target: Path, student, temperature: float, alpha: float, threads: int) -> tuple[Path, dict]:
    """Train the student config on the teacher run's splits under the distillation loss, measure, write."""
    import torch

    from damoxing.inference.run_data import run_data, split_indices
    from damoxing.models.runtime import model_outputs
    from damoxing.optimize.distill import (
        DistillationLoss,
        RegressionDistillationLoss,
        check_settings,
        packed_regression_targets,
        packed_targets,
    )
    from damoxing.training.loop import Split

    check_settings(temperature, alpha)
    if teacher.task_name not in ("classification", "regression"):
        raise UserError(f"--method distill trains a student on a classifier's softened class probabilities or a regressor's "
                        f"predictions; '{teacher.path}' is a {teacher.task_name} run. It can take --method quantize.")
    regression = teacher.task_name == "regression"
    config, base_dir = _student_config(teacher, student)
    prepared = run_data(teacher)
    note(f"distilling {teacher.path} ({teacher.config.model.type}) into {config['model'].get('type')}: teacher "
         f"{'predictions' if regression else 'logits'} on {len(prepared.x['train'])} training rows, computed once")
    teacher_outputs = model_outputs(teacher.model, torch.as_tensor(prepared.x["train"]), teacher.config.train.eval_batch_size)
    expected = split_indices(teacher.path)

    def adapt(model, task, data, train_split):
        for split, rows in expected.items():
            if not np.array_equal(np.asarray(data.indices.get(split, [])), rows):
                raise UserError(f"The student's {split} rows differ from the teacher run's ('{teacher.path}'): its data.split or "
                                "data settings pick other rows. Give the student the teacher's data section. Nothing was written.")
        if regression:  # the teacher's predictions in its target units, then in the student's (its own target scaling)
            values = np.asarray(teacher.preprocessing.decode_regression(teacher_outputs.cpu().numpy()), dtype=np.float64)
            scaler = data.preprocessing.target_scaler
            scaled = torch.as_tensor(np.asarray(scaler.transform(values) if scaler else values, dtype=np.float32))
            return RegressionDistillationLoss(task, alpha), Split(train_split.x, packed_regression_targets(train_split.y, scaled))
        if list(data.schema.class_names or []) != list(teacher.schema.class_names or []):
            raise UserError(f"The student's classes {data.schema.class_names} are not the teacher's {teacher.schema.class_names}.")
        return DistillationLoss(task, temperature, alpha), Split(train_split.x, packed_targets(train_split.y, teacher_outputs))

    student_name = str(student) if isinstance(student, (str, Path)) else "a config dict"
    settings = {"student": student_name, "alpha": alpha, **({} if regression else {"temperature": temperature})}
    loss = (f"MSE(student, teacher's predictions) + {alpha:g} x the task's loss (a regressor has no distribution to soften: "
            "no temperature)" if regression else f"KL(teacher || student) at T={temperature:g} x T^2 + {alpha:g} x cross-entropy")
    details = {"teacher": {"run": str(teacher.path), "model": teacher.config.model.type}, "loss": loss,
               "teacher_outputs": f"computed once on the {len(prepared.x['train'])} training rows before training",
               "note": f"a student distilled from '{teacher.path}'"}
    return _train_and_write(teacher, target, config, adapt, "distill", settings, details, threads,
                            student_rows=lambda run: torch.as_tensor(run_data(run).x["test"]))


def _student_config(teacher, student) -> tuple[dict, Optional[Path]]:
    """The student's config as a dict, its data source resolved; a UserError when its task or rows differ from the teacher's."""
    from damoxing.runs.folder import read_json
    from damoxing.spec import load_config

    if student is None:
        raise UserError("--method distill needs --student STUDENT.yaml: the config of the smaller model to train (its data section "
                        "the teacher run's; e.g. `damoxing init` writes one to edit).")
    if isinstance(student, (str, Path)) and not Path(student).exists():
        raise UserError(f"--student '{student}' does not exist; give the student's config file (YAML).")
    base_dir = Path(student).resolve().parent if isinstance(student, (str, Path)) else None
    cfg = load_config(student)
    if cfg.task is not None and cfg.task != teacher.task_name:
        raise UserError(f"The student's task is '{cfg.task}' but the teacher run's is '{teacher.task_name}'; a student learns the "
                        f"teacher's task. Set task: {teacher.task_name} (or leave it out).")
    theirs = teacher.config.data
    source = _resolved(cfg.data.source, base_dir)
    recorded = _source(teacher, read_json(teacher.path / "manifest.json"))
    differ = [key for key in ROW_KEYS if key != "source" and getattr(cfg.data, key) != getattr(theirs, key)]
    if source != _resolved(recorded, None) and source != _resolved(theirs.source, None):
        differ.insert(0, "source")
    if differ:
        shown = ", ".join(f"data.{k}: {getattr(cfg.data, k)!r} (teacher: {getattr(theirs, k)!r})" for k in differ)
        raise UserError(f"The student's data differs from the teacher run's ({shown}). Distillation compares them on the same rows: "
                        "give the student the teacher's data source, target and split (its preprocessing and tokenizer may differ).")
    config = cfg.model_dump(mode="json", exclude_none=True)
    config["data"]["source"] = recorded
    config.pop("task", None)
    return config, base_dir


def _resolved(source: str, base_dir: Optional[Path]) -> str:
    """A file source as an absolute path (relative ones: the working directory, then the config's folder); builtins as they are."""
    if source.startswith("builtin:"):
        return source
    path = Path(source).expanduser()
    if not path.is_absolute() and not path.exists() and base_dir is not None:
        path = base_dir / path
    return str(path.resolve())
