"""Paired comparisons of two models on the same test rows: McNemar, paired bootstrap, Holm, Pareto.

`damoxing compare` (runs side by side), `compress` (before/after) and `audit` (before/after
mitigation) all ask one question: is model A really better than model B on these rows, or is the
gap noise? Because both models saw the *same* rows, a paired test is far more sensitive than
comparing two separate intervals: rows both models get right (or wrong) carry no information
about the difference and drop out.

Every result is JSON-ready (python floats, ints, bools, strings, lists, None).

    mc = mcnemar(pred_a == y, pred_b == y)
    boot = paired_bootstrap("accuracy", y, proba_a, proba_b)
    mc["p_adjusted"] = holm([mc["p_value"], other_p])[0]["p_adjusted"]
    plain_verdict(boot, test=mc)
    # 'A is better than B (accuracy +0.021, 95% CI +0.008 to +0.035; McNemar p=0.004 after Holm)'

Shapes: N test rows, K classes, T regression outputs, R bootstrap resamples, M compared points.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Optional, Union

import numpy as np

from damoxing.core.errors import ConfigError, DataError
from damoxing.evaluation.metrics import (
    METRICS,
    SCALAR_METRICS,
    WeightedMetrics,
    bootstrap_weights,
    check_labels,
)

MetricFn = Callable[[np.ndarray, np.ndarray], float]
Evaluator = Callable[[np.ndarray], np.ndarray]  # (R, N) weights -> (R,) metric values


# --------------------------------------------------------------------------- McNemar


def _binom_half_lower(k: int, n: int) -> tuple[float, float]:
    """P(X <= k) and P(X = k) for X ~ Bin(n, 1/2), accurate for large n (no 1 - tail cancellation)."""
    try:
        from scipy.stats import binom
    except ImportError:  # pragma: no cover - scipy comes with scikit-learn
        return _binom_half_lower_logspace(k, n)
    return float(binom.cdf(k, n, 0.5)), float(binom.pmf(k, n, 0.5))


def _binom_half_lower_logspace(k: int, n: int) -> tuple[float, float]:
    """scipy-free P(X <= k), P(X = k) for X ~ Bin(n, 1/2) with k <= n/2.

    P(X = k) comes from lgamma; the lower terms from the ratio pmf(i-1)/pmf(i) = i/(n-i+1), walking
    down from k so that the largest terms (those near k) carry the least accumulated rounding."""
    log_pmf_k = math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) - n * math.log(2.0)
    i = np.arange(k, 0, -1, dtype=np.float64)
    relative = np.exp(np.concatenate([[0.0], np.cumsum(np.log(i / (n - i + 1)))]))  # pmf(k - j) / pmf(k)
    return min(1.0, math.exp(log_pmf_k + math.log(float(relative.sum())))), math.exp(log_pmf_k)


def _check_outcomes(correct_a: object, correct_b: object) -> tuple[np.ndarray, np.ndarray]:
    """Two equal-length, non-empty 1-D arrays of right/wrong outcomes -> two bool arrays."""
    out = []
    for what, x in (("correct_a", correct_a), ("correct_b", correct_b)):
        arr = np.asarray(x)
        if arr.ndim != 1 or arr.size == 0:
            raise DataError(f"{what} must be a non-empty 1-D array of per-row outcomes (True = right), got shape {arr.shape}.")
        if arr.dtype != bool:
            if not (np.issubdtype(arr.dtype, np.number) and np.isin(arr, (0, 1)).all()):
                raise DataError(f"{what} must hold booleans (or 0/1): True where the model got the row right.")
            arr = arr.astype(bool)
        out.append(arr)
    if len(out[0]) != len(out[1]):
        raise DataError(
            f"correct_a has {len(out[0])} rows but correct_b has {len(out[1])}; a paired test needs both models "
            "scored on the same rows in the same order."
        )
    return out[0], out[1]


def mcnemar(correct_a, correct_b) -> dict:
    """McNemar's test of two models' right/wrong outcomes on the same rows.

    Only discordant rows count: b = rows A gets right and B wrong, c = the reverse. Under "no
    difference" each discordant row is a fair coin, so min(b, c) ~ Bin(b + c, 1/2).

    Args:
        correct_a: (N,) bool, True where model A is right.
        correct_b: (N,) bool, True where model B is right (same rows, same order).

    Returns:
        {"test": "mcnemar", "n", "b", "c", "n_discordant",
         "p_value": the exact two-sided p = min(1, 2 P(X <= min(b, c))), conservative,
         "p_exact": the same, "p_mid": the mid-p, 2 P(X <= min(b, c)) - P(X = min(b, c)) capped at 1
         (Fagerland, Lydersen & Laake 2013: closer to nominal size, more power),
         "chi2", "p_chi2": the asymptotic chi-square (1 df) with continuity correction, for reference
         (the correction is clamped at 0 so b == c gives chi2 = 0, p = 1)}.
        All p-values are 1.0 when b + c == 0.
    """
    a, b_ = _check_outcomes(correct_a, correct_b)
    b, c = int(np.sum(a & ~b_)), int(np.sum(~a & b_))
    n_disc, k = b + c, min(b, c)
    if b == c:  # includes b + c == 0; spares the mid-p a 2 P(X <= k) - P(X = k) = 1 - rounding
        p_exact = p_mid = 1.0
    else:
        cdf, pmf = _binom_half_lower(k, n_disc)
        p_exact, p_mid = min(1.0, 2.0 * cdf), min(1.0, 2.0 * cdf - pmf)
    chi2 = max(abs(b - c) - 1, 0) ** 2 / n_disc if n_disc else 0.0
    return {
        "test": "mcnemar",
        "n": len(a),
        "b": b,
        "c": c,
        "n_discordant": n_disc,
        "p_value": p_exact,
        "p_exact": p_exact,
        "p_mid": p_mid,
        "chi2": float(chi2),
        "p_chi2": math.erfc(math.sqrt(chi2 / 2.0)),  # survival function of chi-square with 1 df
    }


# --------------------------------------------------------------------------- paired bootstrap


def _is_labels(pred: np.ndarray) -> bool:
    """A 1-D prediction of whole numbers is class labels; any other 1-D array is P(class 1).
    For 0/1 values both readings give the same one-hot probabilities."""
    if pred.ndim != 1:
        return False
    if pred.dtype == bool or np.issubdtype(pred.dtype, np.integer):
        return True
    return bool(np.issubdtype(pred.dtype, np.number) and np.all(np.isfinite(pred)) and np.all(pred == np.round(pred)))


def _n_classes(y: np.ndarray, preds: Sequence[np.ndarray]) -> int:
    """K from the probability widths if any prediction is probabilities, else from the largest label."""
    widths = {p.shape[1] if p.ndim == 2 else 2 for p in preds if not _is_labels(p)}
    if len(widths) > 1:
        raise DataError(f"pred_a and pred_b give probabilities for different numbers of classes ({sorted(widths)}).")
    if widths:
        return widths.pop()
    labels = [np.asarray(x) for x in (y, *preds)]
    top = max(int(np.max(x)) if np.issubdtype(x.dtype, np.number) or x.dtype == bool else 0 for x in labels)
    return max(2, top + 1)


def _as_proba(pred: np.ndarray, k: int, what: str) -> np.ndarray:
    """Labels (N,) -> one-hot (N, K); probabilities are passed through for metrics.py to check."""
    return np.eye(k)[check_labels(pred, k, what)] if _is_labels(pred) else pred


def _name_evaluators(name: str, y_true, pred_a, pred_b) -> tuple[Evaluator, Evaluator, int]:
    """Weighted evaluators of registered metric `name` for A and B, and cells per resample row."""
    info = METRICS.get(name)
    if info.task not in SCALAR_METRICS:
        supported = ", ".join(f"'{n}'" for n, m in METRICS.items() if m.task in SCALAR_METRICS)
        raise ConfigError(
            f"Metric '{name}' is computed by the training loop, not from predictions. Paired bootstrap supports: {supported}."
        )
    if info.task == "classification":
        y = np.asarray(y_true)
        preds = [np.asarray(pred_a), np.asarray(pred_b)]
        k = _n_classes(y, preds)
        pred_a, pred_b = (_as_proba(p, k, what) for p, what in zip(preds, ("pred_a", "pred_b")))
    # only=[name]: the per-class roc_auc statistics are computed only when roc_auc is the metric
    evals = [WeightedMetrics(info.task, y_true, p, only=[name]) for p in (pred_a, pred_b)]
    return (lambda w: evals[0](w)[name]), (lambda w: evals[1](w)[name]), evals[0].n * evals[0].width


def _fn_evaluator(fn: MetricFn, y_true: np.ndarray, pred: np.ndarray) -> Evaluator:
    """A plain fn(y_true, pred) -> float, made to take (R, N) weights by materialising each resample."""

    def evaluate(w: np.ndarray) -> np.ndarray:
        rows = [np.repeat(np.arange(w.shape[1]), r.astype(np.int64)) for r in w]
        values = [fn(y_true[idx], pred[idx]) for idx in rows]
        return np.array([np.nan if v is None else float(v) for v in values])

    return evaluate


def _check_pair(y_true, pred_a, pred_b) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    arrays = [np.asarray(x) for x in (y_true, pred_a, pred_b)]
    lengths = [len(x) if x.ndim else 0 for x in arrays]
    if min(lengths) == 0:
        raise DataError(
            f"y_true, pred_a and pred_b must be non-empty arrays with one entry per test row, got lengths {lengths}."
        )
    if len(set(lengths)) > 1:
        raise DataError(
            f"y_true, pred_a and pred_b have {lengths[0]}, {lengths[1]} and {lengths[2]} rows; a paired comparison "
            "needs both models' predictions for the same test rows, in the same order."
        )
    return arrays[0], arrays[1], arrays[2]


def _check_settings(n_resamples: object, confidence: float, alpha: float) -> None:
    if not isinstance(n_resamples, (int, np.integer)) or isinstance(n_resamples, bool) or n_resamples < 1:
        raise ConfigError(f"n_resamples must be a positive integer, got {n_resamples!r}.")
    for what, value in (("confidence", confidence), ("alpha", alpha)):
        if not 0.0 < value < 1.0:
            raise ConfigError(f"{what} must be strictly between 0 and 1, got {value!r}.")


def _resampled_differences(eval_a: Evaluator, eval_b: Evaluator, n: int, cells: int, n_resamples: int, seed: int) -> np.ndarray:
    """(R,) metric(A) - metric(B) over R resamples; both models are scored on the same weight rows."""
    rng = np.random.default_rng(seed)
    return np.concatenate([eval_a(w) - eval_b(w) for w in bootstrap_weights(rng, n_resamples, n, cells // n)])


def _two_sided_p(diffs: np.ndarray) -> float:
    """2 min(P(d <= 0), P(d >= 0)) over resamples, with +1 so a finite R never claims p = 0."""
    low, high = int(np.sum(diffs <= 0)), int(np.sum(diffs >= 0))
    return min(1.0, 2.0 * (1 + min(low, high)) / (1 + len(diffs)))


def _evaluators(
    metric: Union[str, MetricFn], greater_is_better: Optional[bool], y: np.ndarray, pa: np.ndarray, pb: np.ndarray
) -> tuple[str, bool, Evaluator, Evaluator, int]:
    """Resolve `metric` to (name, greater_is_better, evaluator of A, evaluator of B, cells per resample)."""
    if isinstance(metric, str):
        registered = METRICS.get(metric).greater_is_better
        if greater_is_better is not None and greater_is_better != registered:
            better = "higher" if registered else "lower"
            raise ConfigError(f"Metric '{metric}' is {better}-is-better; leave greater_is_better out.")
        return (metric, registered, *_name_evaluators(metric, y, pa, pb))
    if not callable(metric):
        raise ConfigError(
            f"metric must be a registered metric name or a callable fn(y_true, pred), got {type(metric).__name__}."
        )
    if greater_is_better is None:
        raise ConfigError("A callable metric needs greater_is_better=True or False so 'better' has a direction.")
    name = getattr(metric, "__name__", "metric")
    return name, bool(greater_is_better), _fn_evaluator(metric, y, pa), _fn_evaluator(metric, y, pb), len(y)


def paired_bootstrap(
    metric: Union[str, MetricFn],
    y_true,
    pred_a,
    pred_b,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    *,
    alpha: Optional[float] = None,
    greater_is_better: Optional[bool] = None,
) -> dict:
    """Paired bootstrap of metric(A) - metric(B) on the same test rows.

    Each resample draws N rows with replacement *once* and scores both models on it (one
    multinomial (R, N) weight matrix), so row difficulty cancels out of the difference. Registered
    metrics go through metrics.py's vectorised weighted code path, so the point estimate is exactly
    the value `classification_metrics` / `regression_metrics` report.

    Args:
        metric: a name in the METRICS registry with task "classification" or "regression", or a
            callable fn(y_true, pred) -> float (slow: one call per resample; needs greater_is_better).
        y_true: (N,) class indices, or (N,) / (N, T) regression targets.
        pred_a, pred_b: classification: (N, K) probabilities, (N,) P(class 1), or (N,) whole-number
            labels (one-hot, so log_loss and roc_auc become those of hard decisions);
            regression: (N,) or (N, T) predictions.
        n_resamples: R. confidence: of the percentile interval. seed: for numpy's default_rng.
        alpha: significance level for `better`; defaults to 1 - confidence, so `better` is set
            roughly when the interval excludes 0.
        greater_is_better: required for a callable; a registered name has its own (a conflicting value
            is an error).

    Returns:
        {"test": "paired_bootstrap", "metric", "greater_is_better", "direction" ("max"|"min"),
         "a", "b", "a_minus_b" (always A minus B, whatever the direction), "ci" ([low, high] of
         a_minus_b, or None if no resample was defined), "confidence", "p_value" (two-sided, for
         "no difference": 2 (1 + min(#d <= 0, #d >= 0)) / (1 + R'), capped at 1; R' = resamples where
         the metric is defined for both), "alpha", "better" ("a", "b", or None when p > alpha),
         "n", "n_resamples", "n_valid", "seed"}.
    """
    alpha = round(1.0 - confidence, 12) if alpha is None else alpha  # 0.05, not 0.050000000000000044
    _check_settings(n_resamples, confidence, alpha)
    y, pa, pb = _check_pair(y_true, pred_a, pred_b)
    name, greater_is_better, eval_a, eval_b, cells = _evaluators(metric, greater_is_better, y, pa, pb)
    ones = np.ones((1, len(y)))
    a, b = float(eval_a(ones)[0]), float(eval_b(ones)[0])
    if not (math.isfinite(a) and math.isfinite(b)):
        raise DataError(
            f"Metric '{name}' is undefined on these rows (A: {a}, B: {b}); e.g. roc_auc needs both classes in y_true."
        )
    diffs = _resampled_differences(eval_a, eval_b, len(y), cells, n_resamples, seed)
    diffs = diffs[np.isfinite(diffs)]
    tail = (1.0 - confidence) / 2
    ci = [float(q) for q in np.quantile(diffs, [tail, 1.0 - tail])] if len(diffs) else None
    p_value = _two_sided_p(diffs) if len(diffs) else None
    return {
        "test": "paired_bootstrap",
        "metric": name,
        "greater_is_better": bool(greater_is_better),
        "direction": "max" if greater_is_better else "min",
        "a": a,
        "b": b,
        "a_minus_b": a - b,
        "ci": ci,
        "confidence": float(confidence),
        "p_value": p_value,
        "alpha": float(alpha),
        "better": _better(a - b, bool(greater_is_better), p_value, alpha),
        "n": len(y),
        "n_resamples": int(n_resamples),
        "n_valid": len(diffs),
        "seed": int(seed),
    }


def _better(a_minus_b: float, greater_is_better: bool, p_value: Optional[float], alpha: float) -> Optional[str]:
    """'a' or 'b' for the better model when p <= alpha, else None."""
    gain = a_minus_b if greater_is_better else -a_minus_b
    if p_value is None or p_value > alpha or gain == 0:
        return None
    return "a" if gain > 0 else "b"


# --------------------------------------------------------------------------- Holm


def holm(p_values: Sequence[float], alpha: float = 0.05) -> list[dict]:
    """Holm-Bonferroni step-down adjustment of M p-values tested together (family-wise error <= alpha).

    The i-th smallest p is multiplied by (M - i + 1); a running maximum keeps the adjusted values
    in the same order as the raw ones; they are capped at 1. Ties get equal adjusted values.

    Args:
        p_values: (M,) p-values in [0, 1], in any order. alpha: family-wise level.

    Returns:
        One {"p_value", "p_adjusted", "reject"} per input, in input order; reject = p_adjusted <= alpha
        (the same decision as statsmodels' multipletests(method="holm")).
    """
    if not 0.0 < alpha < 1.0:
        raise ConfigError(f"alpha must be strictly between 0 and 1, got {alpha!r}.")
    try:
        p = np.asarray(p_values, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"p_values must be a list of numbers in [0, 1], got {p_values!r}.") from None
    if p.ndim != 1 or not np.all(np.isfinite(p)) or np.any((p < 0) | (p > 1)):
        raise DataError(f"p_values must be a flat list of numbers in [0, 1] (no None or NaN), got {p_values!r}.")
    m = len(p)
    order = np.argsort(p, kind="stable")
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    return [{"p_value": float(p[i]), "p_adjusted": float(adjusted[i]), "reject": bool(adjusted[i] <= alpha)} for i in range(m)]


# --------------------------------------------------------------------------- Pareto frontier


def _check_points(points: object) -> np.ndarray:
    try:
        arr = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError("points must be a list of (cost, value) number pairs.") from None
    if arr.size == 0:
        return np.zeros((0, 2))
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise DataError(f"points must be a list of (cost, value) pairs, got an array of shape {arr.shape}.")
    if not np.all(np.isfinite(arr)):
        raise DataError("points must hold finite costs and values (no NaN or inf).")
    return arr


def pareto_frontier(points: Sequence[tuple[float, float]], maximize: bool = True) -> list[int]:
    """Indices of the non-dominated (cost, value) points, sorted by increasing cost.

    Lower cost is better; higher value is better when `maximize`, lower otherwise. A point is kept
    only if it is strictly better in value than every point at the same or lower cost, so equal-cost
    points keep only the best value, equal-value points only the cheapest, and exact duplicates only
    the lowest index. Costs and values along the frontier therefore strictly improve.

    Args:
        points: (M, 2) list of (cost, value). An empty list gives [].
    """
    arr = _check_points(points)
    if not len(arr):
        return []
    cost = arr[:, 0]
    value = arr[:, 1] if maximize else -arr[:, 1]  # from here on, higher is better
    order = np.lexsort((np.arange(len(arr)), -value, cost))  # cost up, then best value, then index
    frontier, best = [], -math.inf
    for i in order:
        if value[i] > best:
            frontier.append(int(i))
            best = value[i]
    return frontier


def frontier_prices(
    points: Sequence[tuple[float, float]], frontier: Sequence[int], per: float = 10.0, *, maximize: bool = True
) -> list[dict]:
    """What each step up the frontier buys: value gained per `per`-fold cost (default: per 10x).

    gain_per = gain / log_per(cost_to / cost_from), where gain is the improvement in value (positive
    along a frontier; the drop in value when maximize=False). A step between a non-positive cost
    or two equal costs has no cost ratio and is skipped with a reason instead of dividing by zero.

    Args:
        points: (M, 2) list of (cost, value). frontier: indices into points in increasing cost, as
            returned by pareto_frontier. per: the cost factor prices are quoted for (> 1).

    Returns:
        One dict per consecutive pair: {"from", "to" (indices), "cost_from", "cost_to", "value_from",
        "value_to", "gain", "cost_ratio", "gain_per", "per", "skipped" (None or the reason)}.
    """
    if not (isinstance(per, (int, float)) and math.isfinite(per) and per > 1):
        raise ConfigError(f"per must be a cost factor greater than 1 (e.g. 10.0 for 'per 10x'), got {per!r}.")
    arr = _check_points(points)
    idx = [int(i) for i in frontier]
    if any(not 0 <= i < len(arr) for i in idx):
        raise DataError(f"frontier indices must lie in 0..{len(arr) - 1} (one per point), got {idx}.")
    if any(arr[j, 0] < arr[i, 0] for i, j in zip(idx, idx[1:])):
        raise DataError("frontier must be ordered by increasing cost; pass the output of pareto_frontier.")
    return [_price_step(arr, i, j, per, maximize) for i, j in zip(idx, idx[1:])]


def _price_step(arr: np.ndarray, i: int, j: int, per: float, maximize: bool) -> dict:
    (c0, v0), (c1, v1) = arr[i].tolist(), arr[j].tolist()
    gain = (v1 - v0) if maximize else (v0 - v1)
    step = {"from": i, "to": j, "cost_from": c0, "cost_to": c1, "value_from": v0, "value_to": v1,
            "gain": gain, "cost_ratio": None, "gain_per": None, "per": float(per), "skipped": None}  # fmt: skip
    if c0 <= 0 or c1 <= 0:
        step["skipped"] = f"cost {min(c0, c1):g} is not positive, so the cost ratio is undefined"
    elif c1 == c0:
        step["skipped"] = "equal costs: the gain comes free, there is no cost ratio to price it by"
    else:
        step["cost_ratio"] = c1 / c0
        step["gain_per"] = gain * math.log(per) / math.log(c1 / c0)
    return step


# --------------------------------------------------------------------------- plain words


def _signed(values: Sequence[float]) -> list[str]:
    """Format numbers with a sign and one shared precision: 3 decimals unless the scale needs more."""
    scale = max(abs(v) for v in values)
    if scale == 0 or 1e-3 <= scale < 1e4:
        return [f"{v:+.3f}" for v in values]
    return [f"{v:+.3g}" for v in values]


def _p_text(p: Optional[float]) -> str:
    if p is None:
        return "n/a"
    return "<0.001" if p < 0.001 else f"={p:.3g}"


def plain_verdict(
    result: dict, alpha: float = 0.05, *, test: Optional[dict] = None, names: tuple[str, str] = ("A", "B")
) -> str:
    """One sentence for a report, e.g. 'A is better than B (accuracy +0.021, 95% CI +0.008 to +0.035;
    McNemar p=0.004 after Holm)' or 'no real difference between A and B (...)'.

    Args:
        result: a paired_bootstrap result (gives the metric, the difference and its interval).
        alpha: significance level for the decision (p <= alpha).
        test: optionally the test whose p decides (e.g. a mcnemar result); defaults to `result`.
            If the deciding dict has "p_adjusted" (e.g. copied from holm()), that is used and the
            sentence says "after Holm".
        names: what to call model A and model B.
    """
    if not 0.0 < alpha < 1.0:
        raise ConfigError(f"alpha must be strictly between 0 and 1, got {alpha!r}.")
    source = result if test is None else test
    adjusted = source.get("p_adjusted") is not None
    p = source["p_adjusted"] if adjusted else source.get("p_value")
    label = {"mcnemar": "McNemar", "paired_bootstrap": "bootstrap"}.get(source.get("test", ""), "test")
    diff = result["a_minus_b"]
    if result.get("ci") is None:
        parts = [_signed([diff])[0], "CI n/a"]
    else:
        d, lo, hi = _signed([diff, *result["ci"]])
        parts = [d, f"{result['confidence'] * 100:g}% CI {lo} to {hi}"]
    hint = "" if result["greater_is_better"] else " (lower is better)"
    detail = f"{result['metric']} {parts[0]}{hint}, {parts[1]}; {label} p{_p_text(p)}{' after Holm' if adjusted else ''}"
    winner = _better(diff, result["greater_is_better"], p, alpha)
    if winner is None:
        return f"no real difference between {names[0]} and {names[1]} ({detail})"
    first, second = names if winner == "a" else names[::-1]
    return f"{first} is better than {second} ({detail})"
