"""Hyperparameter search with optuna: every trial a real run, selection on validation only.

    study folder  runs/<study>/
        journal.log        optuna's journal storage (parallel-safe on one machine; resumable)
        trial-<n>/         each trial's run folder (report.html off), seeded from the trial number
        best.yaml          the full config of the best trial, ready for `damoxing train`
        tune.json          the trials table, the best trial and its test score
        tune.html          optimization history and the trials table

The test split is never scored for a trial; the best trial's run is evaluated on it once, at the end.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from damoxing.core.errors import ConfigError, UserError

LOWER_IS_BETTER = ("loss", "rmse", "mae", "mse", "perplexity", "ece", "brier")
COST_OBJECTIVES = {"flops": ("cost", "flops_per_sample"), "params": ("model", "params")}


@dataclass
class TuneResult:
    """What `tune` returns: the study folder, the best trial(s) and the trials table."""

    folder: Path
    study: str
    best: list[dict]
    trials: list[dict]
    test: Optional[dict] = None
    directions: list[str] = field(default_factory=list)


def direction_of(metric: str, setting: str = "auto") -> str:
    if setting != "auto":
        return setting
    return "minimize" if any(word in metric for word in LOWER_IS_BETTER) or metric in COST_OBJECTIVES else "maximize"


def check_search(config_path, base: dict, tune) -> None:
    """Every searched key with its extreme values (and every choice) goes through the config's own
    validation before any trial runs, so a typo or an impossible value is named now."""
    from damoxing.spec import load_config

    for key, space in tune.search.items():
        values = space.choices if space.choices is not None else [space.low, space.high]
        for value in values:
            try:
                load_config(config_path, {**base, key: value})
            except ConfigError as e:
                raise ConfigError(f"tune.search key '{key}' with the value {value!r} is not a valid config: {e.message}") from None


def sample(trial, tune) -> dict[str, Any]:
    """One trial's overrides: each searched key sampled from its space."""
    values = {}
    for key, space in tune.search.items():
        if space.choices is not None:
            index = trial.suggest_categorical(key, list(range(len(space.choices))))  # lists as choices: by index
            values[key] = space.choices[index]
        elif space.integer:
            values[key] = trial.suggest_int(key, space.low, space.high, step=int(space.step or 1), log=space.log)
        else:
            values[key] = trial.suggest_float(key, float(space.low), float(space.high), log=space.log,
                                              step=None if space.log else space.step)
    return values


def make_sampler(name: str, seed: int, tune):
    import optuna

    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "grid":
        grid = {}
        for key, space in tune.search.items():
            if space.choices is None and space.step is None and not space.integer:
                raise ConfigError(f"tune.sampler grid needs a finite grid: give tune.search.{key} choices or a step.")
            if space.choices is not None:
                grid[key] = list(range(len(space.choices)))
            else:
                step = space.step or 1
                n = int(round((space.high - space.low) / step)) + 1
                grid[key] = [space.low + i * step for i in range(n)]
        return optuna.samplers.GridSampler(grid, seed=seed)
    if name == "cmaes":
        try:
            import cmaes  # noqa: F401
        except ImportError:
            raise UserError("tune.sampler cmaes needs the `cmaes` package (pip install cmaes); or use tpe or random.") from None
        return optuna.samplers.CmaEsSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, multivariate=True)


def make_pruner(name: str, max_epochs: int):
    import optuna

    if name == "none":
        return optuna.pruners.NopPruner()
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
    return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max_epochs, reduction_factor=3)


def open_storage(url: Optional[str], folder: Path):
    """optuna storage: the journal file in the study folder by default, else an RDB URL (sqlite, postgresql)."""
    import optuna
    from optuna.storages.journal import JournalFileBackend

    if url is None:
        folder.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(str(folder / "journal.log")))
    if not url.startswith(("sqlite:///", "postgresql://", "postgresql+psycopg://", "mysql://")):
        raise UserError(f"--storage '{url}' is not a database URL; give sqlite:///PATH.db or postgresql://USER@HOST:PORT/DB "
                        "(or leave it out for the journal file in the study folder).")
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]  # psycopg 3, the driver the tune extra installs
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True, "connect_args": _connect_args(url)})
    except Exception as e:  # noqa: BLE001 - sqlalchemy's and the drivers' errors differ; all mean the same to a user
        raise UserError(f"Cannot open the study storage {url}: {str(e).splitlines()[0][:300]}. Check that the database "
                        "server is running and reachable, and the URL (user, host, port, database).") from None


def _connect_args(url: str) -> dict:
    return {"connect_timeout": 5} if url.startswith("postgresql") else {}


def open_study(storage, name: str, directions: list[str], sampler, pruner, search_space: dict):
    """Create the study, or continue it when it exists with the same search space."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=storage, study_name=name, directions=directions, sampler=sampler, pruner=pruner,
                                load_if_exists=True)
    recorded = study.user_attrs.get("search")
    if recorded is None:
        study.set_user_attr("search", search_space)
    elif recorded != search_space:
        raise UserError(f"The study '{name}' exists with another search space ({json.dumps(recorded)}). Rerun with the same "
                        "tune.search to continue it, or pick a new --study name to start another.")
    if list(study.directions) != [getattr(optuna.study.StudyDirection, d.upper()) for d in directions]:
        raise UserError(f"The study '{name}' exists with other directions; pick a new --study name.")
    return study


def trial_value(run, metric: str) -> float:
    """A finished trial's objective: its validation metric (val_x -> metrics.json val.x), or a cost."""
    if metric in COST_OBJECTIVES:
        section, key = COST_OBJECTIVES[metric]
        value = run.manifest.get(section, {}).get(key)
        if value is None:
            raise UserError(f"tune.objectives names {metric}, which this run did not record (cost accounting off?).")
        return float(value)
    if metric == "val_loss":
        losses = [r["val_loss"] for r in run.history if "val_loss" in r]
        return float(min(losses)) if losses else math.nan
    return float(run.metrics.get("val", {}).get(metric[len("val_"):], math.nan))


def trial_row(trial) -> dict:
    import optuna

    duration = trial.duration.total_seconds() if trial.duration is not None else None
    return {"number": trial.number, "state": optuna.trial.TrialState(trial.state).name.lower(),
            "values": trial.values, "params": trial.user_attrs.get("values", dict(trial.params)), "seconds": duration,
            "run": trial.user_attrs.get("run"), "epochs": trial.user_attrs.get("epochs"),
            "reason": trial.user_attrs.get("reason"), "flops_per_sample": trial.user_attrs.get("flops_per_sample")}


def env_one_thread() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
