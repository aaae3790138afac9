"""`damoxing tune CONFIG`: an optuna study whose every trial is a real run (optimize/tune.py).

Trials are seeded from their number and scored on validation only; pruned trials stop early and
are saved as such; the best trial's run is evaluated on the test split once, at the end.
"""

from __future__ import annotations

import math
import multiprocessing
from pathlib import Path
from typing import Any, Optional

import yaml

from damoxing.core.console import note, warn
from damoxing.core.errors import ConfigError, UserError
from damoxing.optimize import tune as T


class StudyStopped(Exception):
    """A mistake every trial would repeat (e.g. a metric the task never computes): the study stops, the CLI says why."""


def tune(config: str | Path, *, trials: Optional[int] = None, timeout: Optional[float] = None, jobs: int = 1,
         storage: Optional[str] = None, study: Optional[str] = None, out: str | Path | None = None,
         overrides: Optional[dict[str, Any]] = None) -> T.TuneResult:
    """Run (or continue) the study described by the config's `tune:` section; returns its TuneResult."""
    from damoxing.spec import load_config
    from damoxing.tasks import check_monitor, known_task

    if jobs < 1:
        raise UserError(f"--jobs is {jobs}; give 1 or more parallel trial processes.")
    base = dict(overrides or {})
    cfg = load_config(config, base)
    if cfg.tune is None:
        raise ConfigError(f"'{config}' has no tune: section. Add one, e.g.\n  tune:\n    search:\n"
                          "      train.optimizer.lr: {low: 1.0e-4, high: 1.0e-1, log: true}\n(`damoxing init tune-digits` writes a starter).")
    tune_cfg = cfg.tune
    metrics = tune_cfg.objectives or [tune_cfg.metric or cfg.train.monitor]
    task = known_task(cfg)
    for metric in metrics:
        if metric not in T.COST_OBJECTIVES and task is not None:
            check_monitor(metric, task, cfg.model.type)
        elif metric not in T.COST_OBJECTIVES and not metric.startswith("val_"):
            raise ConfigError(f"tune metric '{metric}' is not a validation metric; give val_loss or val_<metric> (e.g. val_accuracy).")
    T.check_search(config, base, tune_cfg)
    name = study or f"{cfg.name}-tune"
    folder = Path(out) if out is not None else Path("runs") / name
    directions = [T.direction_of(m, tune_cfg.direction if len(metrics) == 1 else "auto") for m in metrics]
    storage_obj = T.open_storage(storage, folder)
    search_space = {k: v.model_dump(mode="json", exclude_none=True) for k, v in tune_cfg.search.items()}
    sampler = T.make_sampler(tune_cfg.sampler, cfg.train.seed, tune_cfg)
    study_obj = T.open_study(storage_obj, name, directions, sampler, T.make_pruner(tune_cfg.pruner, cfg.train.epochs), search_space)
    done = sum(1 for t in study_obj.get_trials(deepcopy=False) if t.state.is_finished())
    target = trials or tune_cfg.trials
    remaining = max(target - done, 0)
    note(f"study '{name}' in {folder}: {done} trials done, running {remaining} more ({jobs} process{'es' if jobs > 1 else ''}); "
         f"optimising {', '.join(f'{m} ({d})' for m, d in zip(metrics, directions))} on the validation split")
    spec = {"config": str(config), "base": base, "study": name, "storage": storage, "folder": str(folder), "metrics": metrics,
            "target": target, "timeout": timeout}
    if remaining:
        if jobs == 1:
            _optimize(spec, remaining)
        else:
            _parallel(spec, remaining, jobs)
    return _finish(study_obj, folder, name, metrics, directions)


def _parallel(spec: dict, remaining: int, jobs: int) -> None:
    """J processes on one study (one torch thread each); the storage hands out distinct trials."""
    context = multiprocessing.get_context("spawn")
    shares = [remaining // jobs + (1 if i < remaining % jobs else 0) for i in range(jobs)]
    workers = [context.Process(target=_worker, args=({**spec, "worker": i}, n)) for i, n in enumerate(shares) if n]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    failed = [w.exitcode for w in workers if w.exitcode]
    if failed:
        warn(f"{len(failed)} trial process(es) ended with exit codes {failed}; the study keeps what they finished.")


def _worker(spec: dict, n: int) -> None:
    import os

    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)
    from damoxing.core import console

    with console.quiet(True):
        _optimize(spec, n)


def _optimize(spec: dict, n: int) -> None:
    import optuna
    from optuna.study import MaxTrialsCallback

    from damoxing.spec import load_config

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cfg = load_config(spec["config"], spec["base"])
    folder = Path(spec["folder"])
    storage = T.open_storage(spec["storage"], folder)
    study = optuna.load_study(study_name=spec["study"], storage=storage,
                              sampler=T.make_sampler(cfg.tune.sampler, cfg.train.seed + 1000 * spec.get("worker", 0), cfg.tune),
                              pruner=T.make_pruner(cfg.tune.pruner, cfg.train.epochs))
    objective = _objective(spec, cfg, folder)
    try:
        study.optimize(objective, n_trials=n, timeout=spec["timeout"], catch=(UserError,),
                       callbacks=[MaxTrialsCallback(spec["target"], states=None)])
    except StudyStopped as e:
        raise ConfigError(str(e)) from None


def _objective(spec: dict, cfg, folder: Path):
    import optuna

    from damoxing.training.loop import StopTraining
    from damoxing.verbs.train import train

    metrics = spec["metrics"]
    single = len(metrics) == 1

    def objective(trial):
        values = T.sample(trial, cfg.tune)
        out = folder / f"trial-{trial.number}"
        trial.set_user_attr("run", str(out))
        trial.set_user_attr("values", values)  # the chosen values (optuna stores a list choice as its index)

        def report(record: dict) -> None:
            value = record.get(metrics[0])
            if not single or value is None or not math.isfinite(value):
                return
            trial.report(value, record["epoch"])
            if record["epoch"] < cfg.train.epochs and trial.should_prune():  # pruning at the last epoch saves nothing
                raise StopTraining(f"pruned at epoch {record['epoch']} ({metrics[0]} {value:.4f})", reason="pruned")

        overrides = {**spec["base"], **values, "train.seed": trial.number, "tracking.report": False}
        try:
            run = train(spec["config"], out=out, quiet=True, overrides=overrides, on_epoch_end=report, score_test=False)
        except UserError as e:  # diverged, or a value the model cannot take: the trial failed, the study goes on
            trial.set_user_attr("reason", e.message[:500])
            raise
        training = run.manifest.get("training", {})
        trial.set_user_attr("epochs", len(run.history))
        trial.set_user_attr("flops_per_sample", run.manifest.get("cost", {}).get("flops_per_sample"))
        if training.get("stopped") == "pruned":
            trial.set_user_attr("reason", training.get("message"))
            raise optuna.TrialPruned(training.get("message"))
        scores = [T.trial_value(run, m) for m in metrics]
        if any(math.isnan(s) for s in scores):
            missing = [m for m, s in zip(metrics, scores) if math.isnan(s)]
            raise StudyStopped(f"tune metric {', '.join(missing)} is not computed by this run's task. Validation metrics "
                               f"it has: {', '.join('val_' + k for k in run.metrics.get('val', {}) if not k.endswith(('matrix', 'class')))}, val_loss.")
        return scores[0] if single else scores

    return objective


def _finish(study, folder: Path, name: str, metrics: list[str], directions: list[str]) -> T.TuneResult:
    """best.yaml, the best run scored on test once, tune.json and tune.html."""
    import optuna

    from damoxing.report.tune import write_tune_html
    from damoxing.runs.folder import _json_default
    from damoxing.verbs.evaluate import evaluate

    rows = [T.trial_row(t) for t in study.get_trials(deepcopy=False)]
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise UserError(f"No trial of the study '{name}' completed ({len(rows)} ran: "
                        f"{', '.join(sorted({r['state'] for r in rows})) or 'none'}); see their reasons in {folder}/tune.json.")
    best = study.best_trials if len(metrics) > 1 else [study.best_trial]
    best_rows = [T.trial_row(t) for t in best]
    run = Path(best[0].user_attrs["run"])
    config = yaml.safe_load((run / "config.yaml").read_text())
    config.setdefault("tracking", {})["report"] = True
    config.pop("tune", None)
    (folder / "best.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    test = evaluate(run, split="test")  # the one look at the test split, for the best trial
    note(f"best trial {best[0].number}: {', '.join(f'{m} {v:.4f}' for m, v in zip(metrics, best[0].values))}; "
         f"test (evaluated once, for this trial only): " + ", ".join(f"{k} {v:.4f}" for k, v in test["metrics"].items() if isinstance(v, float)))
    result = T.TuneResult(folder=folder, study=name, best=best_rows, trials=rows, test=test, directions=directions)
    import json

    (folder / "tune.json").write_text(json.dumps({"study": name, "metrics": metrics, "directions": directions, "best": best_rows,
                                                  "best_test": test, "trials": rows, "created": T.now()}, indent=2,
                                                 default=_json_default) + "\n")
    write_tune_html(folder / "tune.html", study, result, metrics)
    return result


def summary_lines(result: T.TuneResult) -> list[str]:
    """The trials table for the terminal."""
    lines = [f"{'trial':>5}  {'state':<9} {'value':>10} {'epochs':>6} {'seconds':>8}  params"]
    for r in result.trials:
        value = "" if not r["values"] else " ".join(f"{v:.4f}" for v in r["values"])
        seconds = f"{r['seconds']:.1f}" if r["seconds"] is not None else ""
        params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in r["params"].items())
        lines.append(f"{r['number']:>5}  {r['state']:<9} {value:>10} {r['epochs'] or '':>6} {seconds:>8}  {params}")
    pruned = sum(r["state"] == "pruned" for r in result.trials)
    lines.append(f"{len(result.trials)} trials ({pruned} pruned); best: trial {', '.join(str(b['number']) for b in result.best)}; "
                 f"best.yaml in {result.folder}")
    return lines
