"""`damoxing compare RUN RUN [...]`: finished runs side by side, honestly.

    run folders -> checked: same task, data and test rows (runs/comparison.py)
                -> table: metric with its interval, baseline, params, FLOPs, seconds, energy
                -> paired tests on the identical test rows (evaluation/paired.py): each run against
                   the best and each rung against the next by cost; McNemar (exact and mid-p) for
                   accuracy, a paired bootstrap of the difference for any metric; Holm-corrected
                -> Pareto frontier of metric against the chosen cost, and the price per 10x
                -> compare.json + compare.html in a new folder (never inside a run), and a `Comparison`

No model is loaded: everything comes from metrics.json, manifest.json, splits.npz and the stored
test predictions (predictions_test.npz). Runs of tasks that keep no per-row predictions
(language_modeling, generation) get the table and the frontier, and a note that no paired test
is possible.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from pathlib import Path
from typing import Iterable, Optional

from damoxing.core.errors import UserError, choices_text, did_you_mean
from damoxing.runs.comparison import (
    COST_AXES,
    Comparison,
    PairTest,
    RunEntry,
    RunRecord,
    check_comparable,
    federated_sweep,
    privacy_sweep,
    read_runs,
)

ACCURACY_LIKE = ("accuracy",)  # metrics McNemar's right/wrong test decides
PAIRED_TASKS = ("classification", "regression")
DIRECTIONS = {"bits_per_byte": False, "diversity": True}  # metrics of the trainers that are not in the metric registry


def compare(runs: Iterable[str | Path], metric: Optional[str] = None, cost: str = "params", out: str | Path | None = None, *,
            n_resamples: int = 2000, alpha: float = 0.05, seed: int = 0, write: bool = True,
            spreads: Optional[dict[str, dict]] = None, extra: Optional[dict] = None) -> Comparison:
    """Compare finished runs on their shared test rows.

    Args:
        runs: two or more run folders (of one task, trained on the same data with the same split).
        metric: a test metric every run has (default: the task's headline, e.g. accuracy, r2, perplexity).
        cost: the frontier's cost axis: params | flops | seconds | energy.
        out: the folder to write compare.json and compare.html to (default runs/compare-<time>); must be new.
        n_resamples, alpha, seed: the paired bootstrap's resamples, the significance level (after Holm), its seed.
        write: False computes the comparison without writing anything.
        spreads: {run path: between-seed spread} shown beside the intervals (`damoxing ladder --seeds K`).
        extra: more JSON-ready facts to keep in compare.json (e.g. the ladder's failed rungs).
    Returns:
        a Comparison (runs/comparison.py); `.path` is the folder written.
    """
    started = time.perf_counter()
    if cost not in COST_AXES:
        raise UserError(f"--cost '{cost}' is not a cost axis.{did_you_mean(cost, COST_AXES)} Valid: {choices_text(COST_AXES)}.")
    records = read_runs(list(runs))
    check_comparable(records)
    task = records[0].task
    metric = _check_metric(records, metric, task)
    greater = _greater_is_better(metric)
    notes = _check_cost(records, cost)
    target = _out_path(out) if write else None
    entries = [_entry(r, metric, cost, (spreads or {}).get(str(r.path))) for r in records]
    best = _best(entries, greater)
    result = Comparison(task=task, metric=metric, greater_is_better=greater, cost=cost, cost_label=COST_AXES[cost][2],
                        runs=entries, best=best, notes=notes, alpha=alpha, n_resamples=n_resamples, extra=dict(extra or {}))
    _paired_tests(result, records, seed)
    _frontier(result)
    sweep = privacy_sweep(records, metric)  # runs differing only in train.privacy.epsilon: the price of privacy
    if sweep is not None:
        result.extra["privacy_sweep"] = sweep
    federated = federated_sweep(records, metric)  # runs differing only in one train.federated setting
    if federated is not None:
        result.extra["federated_sweep"] = federated
    result.seconds = time.perf_counter() - started
    if target is not None:
        result.path = str(_write(result, records, target))
    return result


# --------------------------------------------------------------------------- checks


def _check_metric(records: list[RunRecord], metric: Optional[str], task: str) -> str:
    """The metric to compare by: `metric`, which must be a number in every run's test metrics."""
    from damoxing.tasks import headline_metric

    name = metric or headline_metric(task)
    lacking = [r.name for r in records if not _is_number((r.metrics.get("test") or {}).get(name))]
    if lacking:
        shared = set.intersection(*[{k for k, v in (r.metrics.get("test") or {}).items() if _is_number(v)} for r in records])
        raise UserError(f"--metric '{name}' is not a test metric of {', '.join(repr(n) for n in lacking)}.{did_you_mean(name, shared)} "
                        f"Metrics every run has: {choices_text(shared) if shared else 'none'}.")
    return name


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _greater_is_better(metric: str) -> bool:
    from damoxing.evaluation.metrics import METRICS

    if metric in METRICS:
        return METRICS.get(metric).greater_is_better
    if metric in DIRECTIONS:
        return DIRECTIONS[metric]
    raise UserError(f"damoxing does not know whether a higher or lower '{metric}' is better, so it cannot rank by it. "
                    f"Use a registered metric: {choices_text([*METRICS.names(), *DIRECTIONS])}.")


def _check_cost(records: list[RunRecord], cost: str) -> list[str]:
    """Refuse a cost axis no run recorded; runs that lack it are named (they stay off the frontier)."""
    lacking = [r.name for r in records if r.cost(cost) is None]
    key = COST_AXES[cost][0]
    if len(lacking) == len(records):
        raise UserError(f"--cost {cost} needs '{key}' in the runs' cost block (manifest.json), and no run recorded it "
                        f"(cost.enabled false, or not measurable for these models). Use another axis: "
                        f"{choices_text(c for c in COST_AXES if c != cost)}.")
    if lacking:
        return [f"{', '.join(lacking)} recorded no {key}, so {'it is' if len(lacking) == 1 else 'they are'} left off the frontier."]
    return []


def _out_path(out: str | Path | None) -> Path:
    """The new folder for compare.json and compare.html: never a run, never inside one, never one that holds files."""
    from damoxing.runs.folder import is_run

    if out is None:
        path = Path("runs") / f"compare-{time.strftime('%Y%m%d-%H%M%S')}"
        k = 1
        while path.exists():
            k += 1
            path = Path("runs") / f"compare-{time.strftime('%Y%m%d-%H%M%S')}-{k}"
        return path
    path = Path(out)
    for folder in (path, *path.resolve().parents):
        if is_run(folder):
            raise UserError(f"--out '{out}' is {'a run folder' if folder == path.resolve() else f'inside the run folder {folder}'}; "
                            "a comparison is written to a folder of its own, and a run is never changed. Choose a new folder.")
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise UserError(f"--out '{out}' already exists and is not an empty folder; choose a new folder so nothing is overwritten.")
    return path


# --------------------------------------------------------------------------- the table


def _entry(record: RunRecord, metric: str, cost: str, spread: Optional[dict]) -> RunEntry:
    test_ci = (record.metrics.get("test_ci") or {}).get(metric)
    baseline = ((record.metrics.get("baseline") or {}).get("test") or {}).get(metric)
    return RunEntry(name=record.name, path=str(record.path), family=record.family,
                    model=str((record.manifest.get("model") or {}).get("type", "")), reference=record.is_reference,
                    seed=record.manifest.get("seed"), value=float(record.metrics["test"][metric]),
                    ci=[float(v) for v in test_ci] if test_ci else None,
                    baseline=float(baseline) if _is_number(baseline) else None,
                    params=record.cost("params"), flops_per_sample=record.cost("flops"),
                    train_seconds=record.cost("seconds"), energy_kwh=record.cost("energy"),
                    cost=record.cost(cost), seed_spread=spread)


def _best(entries: list[RunEntry], greater: bool) -> str:
    """The run with the best metric (the cheaper one on a tie)."""
    ranked = sorted(entries, key=lambda e: ((-e.value if greater else e.value), e.cost if e.cost is not None else math.inf))
    return ranked[0].name


# --------------------------------------------------------------------------- paired tests


def _pairs(result: Comparison) -> list[tuple[str, str, list[str]]]:
    """(a, b, why): every run against the best (a = best), and each rung against the next one up by
    cost (a = the costlier); a pair that is both is tested once."""
    pairs: dict[frozenset, tuple[str, str, list[str]]] = {}
    for entry in result.runs:
        if entry.name != result.best:
            pairs[frozenset((result.best, entry.name))] = (result.best, entry.name, ["vs best"])
    by_cost = sorted((e for e in result.runs if e.cost is not None), key=lambda e: e.cost)
    for low, high in zip(by_cost, by_cost[1:]):
        key = frozenset((low.name, high.name))
        if key in pairs:
            pairs[key][2].append("adjacent by cost")
        else:
            pairs[key] = (high.name, low.name, ["adjacent by cost"])
    return list(pairs.values())


def _paired_tests(result: Comparison, records: list[RunRecord], seed: int) -> None:
    """Fill result.tests (and paired, n_test), or say in a note why no paired test is possible."""
    from damoxing.evaluation.paired import holm, mcnemar, paired_bootstrap

    if result.task not in PAIRED_TASKS:
        result.notes.append(f"No paired test is possible: {result.task} runs keep no per-row test predictions, so the table "
                            "and the frontier come from the metrics and their intervals only; overlapping intervals do not "
                            "say whether a difference is real.")
        return
    without = [r.name for r in records if not r.predictions]
    if without:
        result.notes.append(f"No paired test: {', '.join(without)} kept no test predictions (predictions_test.npz); "
                            "retrain with this version of damoxing to compare them row by row.")
        return
    by_name = {r.name: r for r in records}
    y = records[0].predictions["y_true"]
    result.n_test, result.paired = len(y), True
    key = "proba" if result.task == "classification" else "y_pred"
    boots = []
    for a, b, why in _pairs(result):
        pa, pb = by_name[a].predictions, by_name[b].predictions
        boot = paired_bootstrap(result.metric, y, pa[key], pb[key], n_resamples=result.n_resamples, seed=seed)
        test = PairTest(a=a, b=b, why=why, difference=boot["a_minus_b"], ci=boot["ci"], bootstrap_p=boot["p_value"])
        if result.task == "classification":
            mc = mcnemar(pa["pred"] == y, pb["pred"] == y)
            test.mcnemar = {k: mc[k] for k in ("b", "c", "n_discordant", "p_exact", "p_mid")}
        result.tests.append(test)
        boots.append(boot)
    _adjust(result, boots, holm)


def _adjust(result: Comparison, boots: list[dict], holm) -> None:
    """Holm over the family of pairs, per kind of p-value; then each pair's decision and sentence."""
    from damoxing.evaluation.paired import plain_verdict

    tests = result.tests
    if not tests:
        return
    boot_p = [t.bootstrap_p if t.bootstrap_p is not None else 1.0 for t in tests]
    for t, h in zip(tests, holm(boot_p, alpha=result.alpha)):
        t.bootstrap_p_holm = h["p_adjusted"]
    if all(t.mcnemar for t in tests):
        for kind in ("p_exact", "p_mid"):
            for t, h in zip(tests, holm([t.mcnemar[kind] for t in tests], alpha=result.alpha)):
                t.mcnemar[f"{kind}_holm"] = h["p_adjusted"]
    by_mcnemar = result.metric in ACCURACY_LIKE and all(t.mcnemar for t in tests)
    floor = 2.0 / (result.n_resamples + 1)  # the smallest bootstrap p that R resamples can give
    if not by_mcnemar and floor * len(tests) > result.alpha:
        result.notes.append(f"With {result.n_resamples} bootstrap resamples the smallest p is {floor:.2g}, and Holm over "
                            f"{len(tests)} pairs multiplies it past alpha {result.alpha:g}: no difference can be called real. "
                            f"Use --resamples {math.ceil(8 * len(tests) / result.alpha)} or more.")
    for t, boot in zip(tests, boots):
        t.decided_by = "mcnemar" if by_mcnemar else "bootstrap"
        t.p_decisive = t.mcnemar["p_exact_holm"] if by_mcnemar else t.bootstrap_p_holm
        gain = t.difference if result.greater_is_better else -t.difference
        t.real = bool(t.p_decisive <= result.alpha and gain != 0)
        t.better = (t.a if gain > 0 else t.b) if t.real else None
        deciding = {"test": "mcnemar" if by_mcnemar else "paired_bootstrap", "p_adjusted": t.p_decisive}
        t.verdict = plain_verdict(boot, alpha=result.alpha, test=deciding, names=(t.a, t.b))


# --------------------------------------------------------------------------- the frontier


def _frontier(result: Comparison) -> None:
    """Pareto frontier of (cost, metric) over the runs with a positive cost, and the price per 10x."""
    from damoxing.evaluation.paired import frontier_prices, pareto_frontier

    placed = [e for e in result.runs if e.cost is not None and e.cost > 0]
    unplaced = [e.name for e in result.runs if e.cost is not None and e.cost <= 0]
    if unplaced:
        result.notes.append(f"{', '.join(unplaced)} recorded a {result.cost} of 0, which has no place on a log axis; left off the frontier.")
    points = [(e.cost, e.value) for e in placed]
    indices = pareto_frontier(points, maximize=result.greater_is_better)
    for i in indices:
        placed[i].on_frontier = True
    result.frontier = [placed[i].name for i in indices]
    steps = frontier_prices(points, indices, maximize=result.greater_is_better)
    result.prices = [{**step, "from": placed[step["from"]].name, "to": placed[step["to"]].name} for step in steps]


# --------------------------------------------------------------------------- writing


def _write(result: Comparison, records: list[RunRecord], target: Path) -> Path:
    """compare.json and compare.html into `target`, written in a hidden folder and renamed into place."""
    import json

    from damoxing.report.compare import build_page

    partial = target.parent / f".{target.name}.partial"
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    try:
        result.path = str(target)
        (partial / "compare.json").write_text(json.dumps(result.to_dict(), indent=2) + "\n")
        histories = {r.name: r.history for r in records}
        (partial / "compare.html").write_text(build_page(result, histories), encoding="utf-8")
        if target.exists():
            target.rmdir()  # an empty folder, checked by _out_path
        os.replace(partial, target)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return target
