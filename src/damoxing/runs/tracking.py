"""Where runs are recorded besides their folders: MLflow (tracking.mlflow), and the table of past
runs that `damoxing runs` prints, read from the run folders themselves.

MLflow is imported only when a run is logged, with its usage telemetry turned off (this tool
works offline). A SQLite URI (sqlite:///runs/mlflow.db) is the embedded store: the folder is
created if needed and artifacts go beside the database, not into the working directory.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path
from typing import Any, Optional

from damoxing.core.console import warn
from damoxing.core.errors import UserError

MAX_PARAM_LENGTH = 6000  # MLflow's limit on a parameter value
BATCH = 100  # MLflow accepts at most 100 params (and 1000 metrics) per log_batch call
SKIP_FOLDERS = ("mlartifacts", "mlruns")  # MLflow's copies of logged run folders
RUN_SORT_KEYS = ("created", "name", "task", "model", "metric", "params", "train_seconds", "energy_kwh")


def flatten(config: dict, prefix: str = "") -> dict[str, str]:
    """{"train": {"optimizer": {"lr": 0.1}}} -> {"train.optimizer.lr": "0.1"}; lists as JSON."""
    out: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{name}."))
        else:
            text = json.dumps(value) if isinstance(value, (list, dict)) else ("" if value is None else str(value))
            out[name] = text[:MAX_PARAM_LENGTH]
    return out


def _mlflow_client(uri: str):
    """An MlflowClient for `uri`, with telemetry off and MLflow's INFO chatter silenced."""
    import logging

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # read by mlflow.telemetry; no usage data leaves
    from mlflow.tracking import MlflowClient

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    return MlflowClient(tracking_uri=uri)


def sqlite_path(uri: str) -> Optional[Path]:
    """The database file of a sqlite:/// URI (relative paths from the working directory), else None."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///"):])


def log_run(run: str | Path, uri: str, experiment: str) -> str:
    """Log a saved run folder to MLflow: params (the flattened resolved config), per-epoch metrics
    from history.jsonl, final metrics and the cost block, and the whole folder as artifacts.

    Returns the MLflow run id.
    """
    from damoxing.runs.folder import check_run

    run = check_run(run)
    with warnings.catch_warnings():  # SQLAlchemy deprecation notices from inside MLflow's store are not ours to fix
        warnings.simplefilter("ignore", DeprecationWarning)
        return _log_run(run, uri, experiment)


def _log_run(run: Path, uri: str, experiment: str) -> str:
    import yaml

    from damoxing.runs.folder import read_history, read_json

    database = sqlite_path(uri)
    if database is not None:
        database.parent.mkdir(parents=True, exist_ok=True)
    client = _mlflow_client(uri)  # first: it turns telemetry off before anything of mlflow is imported
    from mlflow.entities import Metric, Param
    found = client.get_experiment_by_name(experiment)
    if found is not None:
        experiment_id = found.experiment_id
    else:
        artifacts = (database.resolve().parent / "mlartifacts").as_uri() if database is not None else None
        experiment_id = client.create_experiment(experiment, artifact_location=artifacts)

    config = yaml.safe_load((run / "config.yaml").read_text()) or {}
    manifest = read_json(run / "manifest.json")
    metrics = read_json(run / "metrics.json") if (run / "metrics.json").exists() else {}
    cost = manifest.get("cost") or {}
    tags = {"damoxing.runs.folder": str(run.resolve()), "damoxing.task": str(manifest.get("task", "")),
            "damoxing.model": str((config.get("model") or {}).get("type", "")),
            "damoxing.stopped": str((manifest.get("training") or {}).get("stopped", ""))}
    tags.update({f"cost.{k}": str(v)[:5000] for k, v in cost.items() if isinstance(v, str)})
    mlrun = client.create_run(experiment_id, run_name=run.name, tags=tags)
    run_id = mlrun.info.run_id

    now = int(time.time() * 1000)
    points: list = []
    for row in read_history(run):
        step = int(row.get("epoch", len(points)))
        for key, value in row.items():
            if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool):
                points.append(Metric("epoch_seconds" if key == "seconds" else key, float(value), now, step))
    for split in ("val", "test"):
        for key, value in (metrics.get(split) or {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                points.append(Metric(f"{split}/{key}", float(value), now, 0))
    for key, value in cost.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            points.append(Metric(f"cost/{key}", float(value), now, 0))
    params = [Param(k, v) for k, v in flatten(config).items()]
    for start in range(0, max(len(params), len(points)), BATCH):
        client.log_batch(run_id, metrics=points[start:start + BATCH], params=params[start:start + BATCH])
    if cost:
        client.log_dict(run_id, cost, "cost.json")
    client.log_artifacts(run_id, str(run), artifact_path="run")
    client.set_terminated(run_id, "FINISHED")
    return run_id


# --------------------------------------------------------------------------- damoxing runs


def list_runs(root: str | Path = "runs", skipped: Optional[list[str]] = None) -> list[dict[str, Any]]:
    """One summary row per run folder under `root` (found at any depth; hidden folders skipped).

    A run whose manifest.json or metrics.json cannot be read is left out of the rows; its path and
    why are appended to `skipped` when given, so the caller can say so."""
    from damoxing.runs.folder import is_run
    from damoxing.tasks import headline_metric

    root = Path(root)
    if not root.exists():
        raise UserError(f"'{root}' does not exist. `damoxing runs` reads run folders from ./runs or the folder you name.")
    folders = []
    for here, subfolders, _ in os.walk(root):
        if is_run(here):
            folders.append(Path(here))
            subfolders.clear()  # nothing inside a run folder is another run
        else:  # hidden (half-written) runs and MLflow's artifact copies are not runs of their own
            subfolders[:] = sorted(d for d in subfolders if not d.startswith(".") and d not in SKIP_FOLDERS)
    rows = []
    for folder in folders:
        try:
            manifest = json.loads((folder / "manifest.json").read_text())
            metrics = json.loads((folder / "metrics.json").read_text()) if (folder / "metrics.json").exists() else {}
        except (OSError, json.JSONDecodeError) as e:
            if skipped is not None:  # the caller says so (damoxing runs: a note on stderr)
                skipped.append(f"{folder} ({type(e).__name__}: {e})")
            else:
                warn(f"left out of the table: {folder} (its manifest.json or metrics.json cannot be read: {type(e).__name__})")
            continue  # a damaged folder is left out of the table, not fatal to it, and said so
        task = manifest.get("task", "")
        name = headline_metric(task)
        split = "test" if name in (metrics.get("test") or {}) else "val"
        value = (metrics.get(split) or {}).get(name)
        ci = (metrics.get(f"{split}_ci") or {}).get(name)
        cost = manifest.get("cost") or {}
        rows.append({
            "name": folder.name, "path": str(folder), "created": manifest.get("created", ""), "task": task,
            "model": (manifest.get("model") or {}).get("type", ""),
            "metric_name": f"{split}_{name}" if value is not None else None, "metric": value, "metric_ci": ci,
            "params": cost.get("params", (manifest.get("model") or {}).get("params")),
            "train_seconds": cost.get("train_seconds", (manifest.get("timings") or {}).get("train_seconds")),
            "energy_kwh": cost.get("energy_kwh"), "energy_is_estimate": cost.get("energy_is_estimate"),
        })
    return rows


def sort_runs(rows: list[dict], key: str) -> list[dict]:
    """Sorted by `key` (descending for numbers, so the best metric or the costliest run comes first;
    ascending for text); rows without a value go last."""
    from damoxing.core.errors import choices_text, did_you_mean

    if key not in RUN_SORT_KEYS:
        raise UserError(f"--sort '{key}' is not a column.{did_you_mean(key, RUN_SORT_KEYS)} Valid: {choices_text(RUN_SORT_KEYS)}.")
    present = [r for r in rows if r.get(key) not in (None, "")]
    missing = [r for r in rows if r.get(key) in (None, "")]
    numeric = all(isinstance(r[key], (int, float)) for r in present)
    if key == "metric":  # "best first" depends on the metric: accuracy up, loss down
        from damoxing.evaluation.metrics import METRICS

        def goodness(r):
            base = r["metric_name"].split("_", 1)[1] if r.get("metric_name") else ""
            better_high = METRICS.get(base).greater_is_better if base in METRICS else True
            return -r["metric"] if better_high else r["metric"]

        return sorted(present, key=goodness) + missing
    return sorted(present, key=lambda r: r[key], reverse=numeric) + missing


def unfinished_runs(root: str | Path = "runs") -> list[dict[str, Any]]:
    """Hidden `.NAME.partial` folders under `root`: runs still being written, interrupted (with a
    checkpoint to --resume) or left by a failed write; each with its age and whether it can resume."""
    import time

    rows = []
    for here, subfolders, _ in os.walk(root):
        for name in sorted(subfolders):
            if name.startswith(".") and name.endswith(".partial"):
                folder = Path(here) / name
                age = time.time() - folder.stat().st_mtime
                rows.append({"path": str(folder), "final": str(Path(here) / name[1:-len(".partial")]),
                             "age_hours": round(age / 3600, 2), "resumable": (folder / "checkpoints").exists()})
        subfolders[:] = [d for d in subfolders if not d.startswith(".") and d not in SKIP_FOLDERS]
    return rows
