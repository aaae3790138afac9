"""`damoxing compare`: what it refuses (exit 2, nothing written), what it finds on real runs, and
how fast it is over 20 runs. The runs are scikit-learn references (fitted in a fraction of a
second) and one tiny MLP, all on bundled data."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _config(name: str, model: dict, source: str = "builtin:breast_cancer", **extra) -> dict:
    return {"name": name, "data": {"source": source, **extra.pop("data", {})}, "model": model,
            "train": {"epochs": 2, "batch_size": 64, "optimizer": {"name": "adam", "lr": 0.01}},
            "evaluate": {"bootstrap": 200}, "tracking": {"report": False}, **extra}


LOGISTIC = {"type": "sklearn", "estimator": "logistic_regression"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """name -> run folder: breast_cancer runs on one split, one on another split, other data, another task, no cost."""
    from damoxing.api import train

    root = tmp_path_factory.mktemp("compare-runs")
    specs = {
        "logistic": _config("bc-logistic", LOGISTIC),
        "hgb": _config("bc-hgb", {"type": "sklearn", "estimator": "hist_gradient_boosting", "max_iter": 20}),
        "mlp": _config("bc-mlp", {"type": "mlp", "size": "tiny"}),
        "other-split": _config("bc-split1", LOGISTIC, data={"split": {"seed": 1}}),
        "iris": _config("iris-logistic", LOGISTIC, source="builtin:iris"),
        "diabetes": _config("diabetes-ridge", {"type": "sklearn", "estimator": "ridge"}, source="builtin:diabetes"),
        "no-cost": _config("bc-nocost", LOGISTIC, cost={"enabled": False}),
    }
    return {key: train(cfg, out=root / key, quiet=True).path for key, cfg in specs.items()}


def _nothing_written(folder: Path, before: set) -> bool:
    return {p.name for p in folder.iterdir()} == before


def test_compare_finds_real_differences_and_the_frontier(runs, tmp_path):
    from damoxing.api import compare
    from damoxing.evaluation.paired import pareto_frontier

    result = compare([runs["logistic"], runs["hgb"], runs["mlp"]], out=tmp_path / "cmp", n_resamples=500)
    saved = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert saved == json.loads(json.dumps(result.to_dict()))
    assert result.metric == "accuracy" and result.paired and result.n_test == 114
    assert {e.name for e in result.runs} == {"logistic", "hgb", "mlp"}
    assert {e.name: e.reference for e in result.runs} == {"logistic": True, "hgb": True, "mlp": False}
    best = max(result.runs, key=lambda e: e.value)
    assert result.best == best.name
    for t in result.tests:  # every pair tested once, each with McNemar (deciding, accuracy) and the bootstrap
        assert t.decided_by == "mcnemar" and t.p_decisive == t.mcnemar["p_exact_holm"] >= t.mcnemar["p_exact"]
        assert t.real == (t.p_decisive <= 0.05) and t.verdict
    assert len({frozenset((t.a, t.b)) for t in result.tests}) == len(result.tests) == 3
    points = [(e.cost, e.value) for e in result.runs]
    assert result.frontier == [result.runs[i].name for i in pareto_frontier(points)]
    assert [e.name for e in result.runs if e.on_frontier] == sorted(result.frontier, key=lambda n: result.entry(n).cost)
    page = (tmp_path / "cmp" / "compare.html").read_text()
    assert 'alt="Pareto frontier" src="data:image/png;base64,' in page and "McNemar" in page


def test_a_metric_other_than_accuracy_is_decided_by_the_bootstrap(runs):
    from damoxing.api import compare
    from damoxing.evaluation.paired import holm, paired_bootstrap

    result = compare([runs["logistic"], runs["hgb"]], metric="log_loss", write=False, n_resamples=300, seed=3)
    (t,) = result.tests
    assert not result.greater_is_better and t.decided_by == "bootstrap" and result.path is None
    arrays = [np.load(runs[name] / "predictions_test.npz") for name in (t.a, t.b)]
    expected = paired_bootstrap("log_loss", arrays[0]["y_true"], arrays[0]["proba"], arrays[1]["proba"], n_resamples=300, seed=3)
    assert t.bootstrap_p == expected["p_value"] and t.ci == expected["ci"] and t.difference == expected["a_minus_b"]
    assert t.bootstrap_p_holm == holm([expected["p_value"]])[0]["p_adjusted"]


@pytest.mark.parametrize("case, words", [
    ("one run", ["at least two runs"]),
    ("not a run", ["is not a damoxing run", "lacks"]),
    ("different splits", ["'logistic' and 'other-split' were tested on different rows", "data.split"]),
    ("different tasks", ["different tasks", "'logistic' classification", "'diabetes' regression"]),
    ("different data, same task", ["trained on different data", "'iris'", "'logistic'"]),
    ("metric missing", ["--metric 'r2'", "Metrics every run has"]),
    ("cost missing", ["--cost energy", "no run recorded it"]),
    ("unknown cost", ["--cost 'joules'", "Valid:"]),
    ("out is a run", ["a run folder"]),
])
def test_bad_input_exits_2_and_writes_nothing(runs, cli, tmp_path, monkeypatch, case, words):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "plain").mkdir()
    args = {
        "one run": [runs["logistic"]],
        "not a run": [runs["logistic"], tmp_path / "plain"],
        "different splits": [runs["logistic"], runs["other-split"]],
        "different tasks": [runs["logistic"], runs["diabetes"]],
        "different data, same task": [runs["logistic"], runs["iris"]],
        "metric missing": [runs["logistic"], runs["mlp"], "--metric", "r2"],
        "cost missing": [],  # below: two runs that both turned cost accounting off
        "unknown cost": [runs["logistic"], runs["mlp"], "--cost", "joules"],
        "out is a run": [runs["logistic"], runs["mlp"], "--out", runs["mlp"]],
    }[case]
    if case == "cost missing":
        args = [runs["no-cost"], shutil.copytree(runs["no-cost"], tmp_path / "no-cost-2"), "--cost", "energy"]
    before_tmp = {p.name for p in tmp_path.iterdir()}
    before_runs = {p.name for p in runs["logistic"].parent.iterdir()}
    before_run = sorted(p.name for p in runs["mlp"].iterdir())
    result = cli("compare", *args)
    assert result.code == 2, (result.out, result.err)
    message = " ".join(result.err.split())
    assert message.startswith("error: ") and "Traceback" not in result.err
    for word in words:
        assert word in message, (word, message)
    assert _nothing_written(tmp_path, before_tmp) and _nothing_written(runs["logistic"].parent, before_runs)
    assert sorted(p.name for p in runs["mlp"].iterdir()) == before_run


def test_cost_recorded_by_some_runs_only_leaves_the_others_off_the_frontier(runs):
    from damoxing.api import compare

    result = compare([runs["logistic"], runs["no-cost"], runs["mlp"]], cost="energy", write=False, n_resamples=100)
    assert "no-cost" not in result.frontier and any("no-cost recorded no energy_kwh" in n for n in result.notes)
    assert result.entry("no-cost").cost is None and result.entry("logistic").energy_kwh > 0


def test_cli_prints_the_tables_and_the_folder_last(runs, cli, tmp_path):
    out = tmp_path / "cmp"
    result = cli("compare", runs["logistic"], runs["hgb"], runs["mlp"], "--cost", "seconds", "--out", out, "--resamples", "300")
    assert result.code == 0, result.err
    assert Path(result.last_line) == out and (out / "compare.json").exists() and (out / "compare.html").exists()
    for text in ("HistGradientBoostingClassifier", "McNemar p (Holm)", "bootstrap p (Holm)", "frontier (training seconds)"):
        assert text in result.out, text
    again = cli("compare", runs["logistic"], runs["hgb"], "--out", out)  # never over an existing comparison
    assert again.code == 2 and "already exists" in again.err


def test_twenty_runs_compare_in_under_five_seconds(runs, tmp_path):
    """20 run folders (copies of two real runs): compare reads no model. Timed in CPU seconds of this
    process (the machine is shared: wall time measures the neighbours); wall times in BENCHMARKS.md."""
    from damoxing.api import compare

    folders = []
    for i in range(20):
        folders.append(shutil.copytree(runs["mlp" if i % 2 else "logistic"], tmp_path / f"run{i:02d}"))
    began = time.process_time()
    result = compare(folders, out=tmp_path / "cmp")
    seconds = time.process_time() - began
    assert len(result.runs) == 20 and len(result.tests) >= 19 and (tmp_path / "cmp" / "compare.html").exists()
    assert seconds < 5.0, seconds



def test_language_models_get_the_table_and_frontier_but_no_paired_test(tmp_path):
    from damoxing.api import compare, train

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(f"the cat {w} the mat number {i}" for i, w in enumerate(["sat on", "lay on", "ran to"] * 20)))
    paths = []
    for size in ("tiny", "small"):
        config = {"name": f"lm-{size}", "data": {"source": str(corpus), "block_size": 16, "tokenizer": {"kind": "char"}},
                  "model": {"type": "gpt", "size": size, "context_length": 16},
                  "train": {"epochs": 1, "batch_size": 16}, "tracking": {"report": False}}
        paths.append(train(config, out=tmp_path / size, quiet=True).path)
    result = compare(paths, out=tmp_path / "cmp")
    assert result.metric == "perplexity" and not result.greater_is_better and not result.paired and result.tests == []
    assert any("No paired test is possible: language_modeling runs" in n for n in result.notes)
    assert result.frontier and result.entry(result.frontier[0]).params == min(e.params for e in result.runs)
    assert "No paired test is possible" in (tmp_path / "cmp" / "compare.html").read_text()
