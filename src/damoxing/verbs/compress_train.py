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

    config = _config(predictor, model=pruned.config.model_dump(mode="json"), name=f"{predictor.config.name}-pruned",
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
                     threads: int, extra: Optional[dict] = None) -> tuple[Path, dict]:
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
                               Measured(after.model, run.path / "model.safetensors"),
                               run_data(predictor), predictor.task, predictor.config, threads, predictor.config.train.seed)
        report = {"method": method, "settings": settings, "original_run": str(predictor.path), "details": details, **(extra or {}),
                  **figures}
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
