"""Paired comparisons: McNemar by hand and against scipy, the paired bootstrap against a slow
reference loop, Holm by hand, Pareto frontier and prices on hand-made points, plain verdicts."""

import json
import math

import numpy as np
import pytest
from scipy import stats

from damoxing.core.errors import ConfigError, DataError
from damoxing.evaluation.metrics import classification_metrics, regression_metrics
from damoxing.evaluation.paired import (
    _binom_half_lower_logspace,
    frontier_prices,
    holm,
    mcnemar,
    paired_bootstrap,
    pareto_frontier,
    plain_verdict,
)

pytestmark = pytest.mark.filterwarnings("error")


def assert_json_ready(value):
    """Only python scalars, strings, None, lists and str-keyed dicts (no numpy scalars)."""
    if isinstance(value, dict):
        assert all(isinstance(k, str) for k in value)
        for v in value.values():
            assert_json_ready(v)
    elif isinstance(value, list):
        for v in value:
            assert_json_ready(v)
    else:
        assert type(value) in (float, int, bool, str, type(None)), (value, type(value))
    json.dumps(value)


def outcomes(b, c, both_right=0, both_wrong=0):
    """Right/wrong arrays for A and B with the given discordant (b, c) and concordant counts."""
    a = [True] * b + [False] * c + [True] * both_right + [False] * both_wrong
    bb = [False] * b + [True] * c + [True] * both_right + [False] * both_wrong
    return np.array(a), np.array(bb)


def softmax_data(n, k, seed, signal=1.0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), y] += signal
    p = np.exp(logits)
    return y, p / p.sum(axis=1, keepdims=True)


def two_models(n=500, k=3, seed=0, better=2.5, worse=0.5):
    """Labels and two probability matrices on the same rows; A has the stronger signal."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    noise = rng.normal(size=(n, k))
    out = []
    for signal in (better, worse):
        logits = noise.copy()
        logits[np.arange(n), y] += signal
        p = np.exp(logits)
        out.append(p / p.sum(axis=1, keepdims=True))
    return y, out[0], out[1]


# --------------------------------------------------------------------------- McNemar


def test_mcnemar_hand_values():
    r = mcnemar(*outcomes(1, 9, both_right=30, both_wrong=5))
    assert (r["b"], r["c"], r["n_discordant"], r["n"]) == (1, 9, 10, 45)
    assert r["p_exact"] == r["p_value"] == pytest.approx(0.021484375, abs=1e-15)  # 2 * 11 / 1024
    assert r["p_mid"] == pytest.approx(0.01171875, abs=1e-15)  # minus P(X = 1) = 10 / 1024
    assert r["chi2"] == pytest.approx(4.9)  # (|1 - 9| - 1)^2 / 10
    assert r["p_chi2"] == pytest.approx(stats.chi2.sf(4.9, 1), rel=1e-12)
    swapped = mcnemar(*outcomes(9, 1))
    assert (swapped["b"], swapped["c"]) == (9, 1) and swapped["p_exact"] == r["p_exact"]
    assert_json_ready(r)


@pytest.mark.parametrize("b, c", [(0, 0), (3, 3)])
def test_mcnemar_no_evidence_gives_p_one(b, c):
    r = mcnemar(*outcomes(b, c, both_right=4))
    assert r["p_exact"] == r["p_mid"] == r["p_chi2"] == 1.0 and r["chi2"] == 0.0


def test_mcnemar_single_discordant_row():
    r = mcnemar(*outcomes(0, 1))  # exact: 2 * P(X <= 0) = 1; mid-p: 1 - P(X = 0) = 0.5
    assert (r["p_exact"], r["chi2"], r["p_chi2"]) == (1.0, 0.0, 1.0) and r["p_mid"] == pytest.approx(0.5)


def test_mcnemar_matches_scipy_binomtest():
    rng = np.random.default_rng(0)
    tables = [tuple(rng.integers(0, 60, 2)) for _ in range(20)] + [(4000, 4300), (9, 30000), (12345, 12345)]
    for b, c in tables:
        r = mcnemar(*outcomes(int(b), int(c)))
        n = int(b + c)
        expected = stats.binomtest(int(b), n, 0.5).pvalue if n else 1.0
        assert r["p_exact"] == pytest.approx(expected, rel=1e-9, abs=1e-300), (b, c)
        k = min(b, c)
        mid = min(1.0, 2 * stats.binom.cdf(k, n, 0.5) - stats.binom.pmf(k, n, 0.5)) if n else 1.0
        assert r["p_mid"] == pytest.approx(mid, rel=1e-9, abs=1e-300), (b, c)
        assert r["p_mid"] <= r["p_exact"]


def test_mcnemar_mid_p_is_less_conservative():
    r = mcnemar(*outcomes(2, 9))  # exact 2 * 67/2048 = 0.0654, mid-p 0.0654 - 55/2048 = 0.0386
    assert r["p_exact"] == pytest.approx(134 / 2048, rel=1e-12)
    assert r["p_mid"] == pytest.approx(79 / 2048, rel=1e-12)
    assert r["p_mid"] < 0.05 < r["p_exact"]


@pytest.mark.parametrize("k, n", [(0, 1), (1, 10), (7, 40), (4_900, 10_000), (49_990, 100_000), (3, 2_000)])
def test_binomial_tail_without_scipy_matches_scipy(k, n):
    cdf, pmf = _binom_half_lower_logspace(k, n)
    assert cdf == pytest.approx(stats.binom.cdf(k, n, 0.5), rel=1e-9, abs=1e-300)
    assert pmf == pytest.approx(stats.binom.pmf(k, n, 0.5), rel=1e-9, abs=1e-300)


def test_mcnemar_rejects_bad_input():
    with pytest.raises(DataError, match="same rows"):
        mcnemar([True, False], [True])
    with pytest.raises(DataError, match="non-empty"):
        mcnemar([], [])
    with pytest.raises(DataError, match="booleans"):
        mcnemar([0, 2], [1, 0])
    assert mcnemar([1, 0, 1], [0, 0, 1])["b"] == 1  # 0/1 integers are fine


# --------------------------------------------------------------------------- paired bootstrap


@pytest.mark.parametrize("metric", ["accuracy", "log_loss", "roc_auc"])
def test_identical_predictions_give_zero_difference(metric):
    y, p = softmax_data(300, 3, seed=1)
    r = paired_bootstrap(metric, y, p, p.copy(), n_resamples=200)
    assert r["a_minus_b"] == 0.0 and r["ci"] == [0.0, 0.0]
    assert r["p_value"] == 1.0 and r["better"] is None and r["n_valid"] == 200
    assert r["a"] == pytest.approx(classification_metrics(y, p)[metric], abs=1e-12)


def test_clearly_better_model_is_detected():
    y, good, bad = two_models()
    r = paired_bootstrap("accuracy", y, good, bad)
    assert r["a_minus_b"] > 0.1 and r["ci"][0] > 0 and r["p_value"] < 0.01 and r["better"] == "a"
    assert r["p_value"] == pytest.approx(2 / 2001)  # no resample reaches 0: the +1 floor
    swapped = paired_bootstrap("accuracy", y, bad, good)
    assert swapped["a_minus_b"] == -r["a_minus_b"] and swapped["ci"][1] < 0 and swapped["better"] == "b"
    assert_json_ready(r)


def test_lower_is_better_metric_keeps_the_sign_explicit():
    y, good, bad = two_models()
    r = paired_bootstrap("log_loss", y, good, bad, n_resamples=500)
    assert r["direction"] == "min" and r["greater_is_better"] is False
    assert r["a_minus_b"] < 0 and r["ci"][1] < 0 and r["better"] == "a"


def test_small_difference_is_not_called():
    y, p = softmax_data(200, 2, seed=3)
    q = p.copy()
    q[:3] = q[:3, ::-1]  # B flips three rows: too few to tell apart
    r = paired_bootstrap("accuracy", y, p, q, n_resamples=500)
    assert r["ci"][0] <= 0 <= r["ci"][1] and r["p_value"] > 0.05 and r["better"] is None


def reference_differences(metric_of, y, pa, pb, n_resamples, seed):
    """The slow, obvious paired bootstrap: index the rows, score both models, subtract."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(y), size=(n_resamples, len(y)))  # what metrics._resample_weights draws
    return np.array([metric_of(y[i], pa[i]) - metric_of(y[i], pb[i]) for i in idx])


@pytest.mark.parametrize(
    "metric, data",
    [
        ("accuracy", lambda: two_models(n=120, better=0.8, worse=0.4)),
        ("f1_macro", lambda: two_models(n=120, k=4, better=0.8, worse=0.4)),
        ("r2", lambda: regression_pair(120, outputs=1)),
    ],
)
def test_interval_matches_slow_reference_loop(metric, data):
    y, pa, pb = data()
    compute = regression_metrics if metric == "r2" else classification_metrics
    diffs = reference_differences(lambda t, p: compute(t, p)[metric], y, pa, pb, n_resamples=40, seed=5)
    r = paired_bootstrap(metric, y, pa, pb, n_resamples=40, confidence=0.9, seed=5)
    assert r["ci"] == pytest.approx(np.quantile(diffs, [0.05, 0.95]).tolist(), abs=1e-12)
    expected_p = min(1.0, 2 * (1 + min((diffs <= 0).sum(), (diffs >= 0).sum())) / 41)
    assert r["p_value"] == pytest.approx(expected_p)


def regression_pair(n, outputs, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.normal(size=(n, outputs)) if outputs > 1 else rng.normal(size=n)
    good = y + 0.3 * rng.normal(size=y.shape)
    bad = y + 0.6 * rng.normal(size=y.shape)
    return y, good, bad


@pytest.mark.parametrize("outputs", [1, 2])
def test_regression_metrics(outputs):
    y, good, bad = regression_pair(400, outputs)
    mse = paired_bootstrap("mse", y, good, bad, n_resamples=500)
    assert mse["a"] == pytest.approx(regression_metrics(y, good)["mse"])
    assert mse["direction"] == "min" and mse["a_minus_b"] < 0 and mse["better"] == "a"
    r2 = paired_bootstrap("r2", y, good, bad, n_resamples=500)
    assert r2["direction"] == "max" and r2["ci"][0] > 0 and r2["better"] == "a"
    same = paired_bootstrap("r2", y, good, good.copy(), n_resamples=100)
    assert same["a_minus_b"] == 0.0 and same["p_value"] == 1.0


def test_label_predictions_match_probabilities():
    y, good, bad = two_models(k=4)
    from_proba = paired_bootstrap("accuracy", y, good, bad, n_resamples=300)
    from_labels = paired_bootstrap("accuracy", y, good.argmax(axis=1), bad.argmax(axis=1), n_resamples=300)
    mixed = paired_bootstrap("accuracy", y, good, bad.argmax(axis=1).astype(float), n_resamples=300)
    assert from_labels == from_proba == mixed


def test_callable_metric_uses_the_same_resamples():
    y, good, bad = two_models(n=80)

    def accuracy(t, p):
        return float(np.mean(p.argmax(axis=1) == t))

    by_name = paired_bootstrap("accuracy", y, good, bad, n_resamples=30, seed=2)
    by_fn = paired_bootstrap(accuracy, y, good, bad, n_resamples=30, seed=2, greater_is_better=True)
    assert by_fn["metric"] == "accuracy"
    for key in ("a", "b", "a_minus_b", "ci", "p_value", "better"):
        assert by_fn[key] == pytest.approx(by_name[key], abs=1e-12), key
    with pytest.raises(ConfigError, match="greater_is_better"):
        paired_bootstrap(accuracy, y, good, bad)
    with pytest.raises(ConfigError, match="lower-is-better"):
        paired_bootstrap("log_loss", y, good, bad, greater_is_better=True)


def test_resamples_where_the_metric_is_undefined_are_left_out():
    y, good, bad = two_models(n=30, k=2)
    y[:] = 0
    y[:2] = 1  # two positives: many resamples draw none, and roc_auc is undefined there
    r = paired_bootstrap("roc_auc", y, good, bad, n_resamples=200)
    assert 0 < r["n_valid"] < 200
    assert all(math.isfinite(v) for v in r["ci"]) and math.isfinite(r["p_value"])


def test_bootstrap_is_seeded():
    y, good, bad = two_models(n=100, better=0.6)
    same = [paired_bootstrap("accuracy", y, good, bad, 100, seed=4) for _ in range(2)]
    other = paired_bootstrap("accuracy", y, good, bad, 100, seed=5)
    assert same[0] == same[1] and same[0]["ci"] != other["ci"]


def test_bootstrap_rejects_bad_input():
    y, good, bad = two_models(n=50)
    with pytest.raises(DataError, match="50, 50 and 49 rows"):
        paired_bootstrap("accuracy", y, good, bad[:-1])
    with pytest.raises(DataError, match="non-empty"):
        paired_bootstrap("mse", [], [], [])
    with pytest.raises(ConfigError, match="Unknown metric 'acuracy'. Did you mean 'accuracy'"):
        paired_bootstrap("acuracy", y, good, bad)
    with pytest.raises(ConfigError, match="training loop"):
        paired_bootstrap("perplexity", y, good, bad)
    with pytest.raises(DataError, match="undefined"):
        paired_bootstrap("roc_auc", np.zeros(50, dtype=int), good, bad)
    with pytest.raises(DataError, match="different numbers of classes"):
        paired_bootstrap("accuracy", y, good, np.column_stack([bad, np.zeros(50)]))
    with pytest.raises(ConfigError, match="n_resamples"):
        paired_bootstrap("accuracy", y, good, bad, n_resamples=0)
    with pytest.raises(ConfigError, match="confidence"):
        paired_bootstrap("accuracy", y, good, bad, confidence=95)


# --------------------------------------------------------------------------- Holm


def test_holm_hand_values():
    out = holm([0.01, 0.04, 0.03, 0.005])
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> raised to 0.06 (monotone)
    assert [r["p_adjusted"] for r in out] == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert [r["reject"] for r in out] == [True, False, False, True]
    assert [r["p_value"] for r in out] == [0.01, 0.04, 0.03, 0.005]
    assert [r["p_adjusted"] for r in holm([0.5, 0.6])] == [1.0, 1.0]  # capped
    assert [r["p_adjusted"] for r in holm([0.02, 0.5, 0.02])] == pytest.approx([0.06, 0.5, 0.06])  # ties: 0.06, max(0.04, 0.06)
    assert [r["reject"] for r in holm([0.01, 0.02], alpha=0.02)] == [True, True]  # adjusted 0.02 <= alpha
    assert holm([]) == [] and holm([0.3]) == [{"p_value": 0.3, "p_adjusted": 0.3, "reject": False}]
    assert_json_ready(out)


def test_holm_is_monotone_and_capped():
    p = np.random.default_rng(0).uniform(0, 0.2, 30)
    adjusted = np.array([r["p_adjusted"] for r in holm(p)])
    order = np.argsort(p)
    assert np.all(np.diff(adjusted[order]) >= 0) and np.all(adjusted >= p) and np.all(adjusted <= 1)


def test_holm_matches_statsmodels():
    multitest = pytest.importorskip("statsmodels.stats.multitest")
    p = np.random.default_rng(1).uniform(0, 0.1, 12)
    reject, corrected, _, _ = multitest.multipletests(p, alpha=0.05, method="holm")
    out = holm(p)
    assert [r["p_adjusted"] for r in out] == pytest.approx(corrected.tolist())
    assert [r["reject"] for r in out] == reject.tolist()


def test_holm_rejects_bad_input():
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        holm([0.1, None])
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        holm([1.2])
    with pytest.raises(ConfigError, match="alpha"):
        holm([0.1], alpha=5)


# --------------------------------------------------------------------------- Pareto frontier

POINTS = [
    (1, 0.50),  # 0: on the frontier
    (2, 0.60),  # 1: same cost as 2 but worse
    (2, 0.70),  # 2: on the frontier
    (3, 0.70),  # 3: same value as 2 but dearer
    (10, 0.90),  # 4: on the frontier
    (10, 0.90),  # 5: exact tie with 4: the lower index stays
    (0.5, 0.10),  # 6: cheapest, on the frontier
    (5, 0.65),  # 7: dominated by 2
]


def test_pareto_frontier_hand_points():
    assert pareto_frontier(POINTS) == [6, 0, 2, 4]


def test_pareto_frontier_does_not_depend_on_input_order():
    perm = np.random.default_rng(0).permutation(len(POINTS))
    shuffled = [POINTS[i] for i in perm]
    kept = {tuple(shuffled[i]) for i in pareto_frontier(shuffled)}
    assert kept == {tuple(POINTS[i]) for i in [6, 0, 2, 4]}


def test_pareto_frontier_minimize_and_edges():
    losses = [(1, 0.9), (2, 0.5), (3, 0.7), (4, 0.5)]
    assert pareto_frontier(losses, maximize=False) == [0, 1]
    assert pareto_frontier(losses) == [0]  # maximising: the cheapest also has the best value
    assert pareto_frontier([]) == [] and pareto_frontier([(5, 1)]) == [0]
    with pytest.raises(DataError, match="finite"):
        pareto_frontier([(1, float("nan"))])
    with pytest.raises(DataError, match=r"\(cost, value\) pairs"):
        pareto_frontier([(1, 2, 3)])


def test_frontier_prices_per_10x():
    points = [(1, 0.5), (10, 0.6), (100, 0.8), (400, 0.9)]
    steps = frontier_prices(points, pareto_frontier(points))
    assert [(s["from"], s["to"]) for s in steps] == [(0, 1), (1, 2), (2, 3)]
    assert [s["gain_per"] for s in steps] == pytest.approx([0.1, 0.2, 0.1 / math.log10(4)])
    assert [s["cost_ratio"] for s in steps] == pytest.approx([10, 10, 4])
    assert all(s["skipped"] is None for s in steps)
    per_2x = frontier_prices(points, [0, 1], per=2.0)[0]
    assert per_2x["gain_per"] == pytest.approx(0.1 * math.log10(2)) and per_2x["per"] == 2.0
    assert_json_ready(steps)


def test_frontier_prices_guard_zero_negative_and_equal_costs():
    points = [(-1, 0.1), (0, 0.3), (1, 0.5), (10, 0.6)]
    steps = frontier_prices(points, [0, 1, 2, 3])
    assert [s["gain_per"] for s in steps[:2]] == [None, None]
    assert all("not positive" in s["skipped"] for s in steps[:2])
    assert steps[2]["gain_per"] == pytest.approx(0.1) and steps[2]["skipped"] is None
    tie = frontier_prices([(2, 0.5), (2, 0.6)], [0, 1])[0]
    assert tie["gain_per"] is None and "equal costs" in tie["skipped"] and tie["gain"] == pytest.approx(0.1)


def test_frontier_prices_lower_is_better():
    losses = [(1, 0.9), (10, 0.5)]
    step = frontier_prices(losses, pareto_frontier(losses, maximize=False), maximize=False)[0]
    assert step["gain"] == pytest.approx(0.4) and step["gain_per"] == pytest.approx(0.4)


def test_frontier_prices_reject_bad_input():
    with pytest.raises(ConfigError, match="per"):
        frontier_prices([(1, 0.5), (10, 0.6)], [0, 1], per=1.0)
    with pytest.raises(DataError, match="0..1"):
        frontier_prices([(1, 0.5), (10, 0.6)], [0, 2])
    with pytest.raises(DataError, match="increasing cost"):
        frontier_prices([(1, 0.5), (10, 0.6)], [1, 0])


# --------------------------------------------------------------------------- plain verdict

RESULT = {"test": "paired_bootstrap", "metric": "accuracy", "greater_is_better": True, "a_minus_b": 0.021,
          "ci": [0.008, 0.035], "confidence": 0.95, "p_value": 0.0015}  # fmt: skip


def test_plain_verdict_with_mcnemar_after_holm():
    test = {"test": "mcnemar", "p_value": 0.001, "p_adjusted": 0.004}
    expected = "A is better than B (accuracy +0.021, 95% CI +0.008 to +0.035; McNemar p=0.004 after Holm)"
    assert plain_verdict(RESULT, test=test) == expected


def test_plain_verdict_no_difference_and_names():
    test = {"test": "mcnemar", "p_value": 0.01, "p_adjusted": 0.2}
    assert plain_verdict(RESULT, test=test) == (
        "no real difference between A and B (accuracy +0.021, 95% CI +0.008 to +0.035; McNemar p=0.2 after Holm)"
    )
    worse = {**RESULT, "a_minus_b": -0.021, "ci": [-0.035, -0.008]}
    assert plain_verdict(worse, names=("baseline", "pruned")).startswith("pruned is better than baseline (accuracy -0.021")
    assert plain_verdict(RESULT, alpha=0.001).startswith("no real difference")  # bootstrap p=0.0015 > 0.001


def test_plain_verdict_lower_is_better_from_a_real_result():
    y, good, bad = regression_pair(300, outputs=1)
    verdict = plain_verdict(paired_bootstrap("mse", y, good, bad, n_resamples=300))
    assert verdict.startswith("A is better than B (mse -") and "(lower is better)" in verdict
    assert verdict.endswith("bootstrap p=0.00664)")  # 2 / 301: no resample reaches 0
