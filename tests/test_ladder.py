"""`damoxing ladder` on bundled breast_cancer (a fast variant: 2 epochs, tiny rungs): the
HistGradientBoosting reference beside the neural rungs with p-values and the frontier, compare.html
in a real headless Chromium, compare.json's p-values recomputed with evaluation/paired.py, and
`damoxing predict` on a reference rung (model.onnx) against the scikit-learn estimator itself."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import write_yaml

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CHROMIUM = Path("/usr/bin/chromium")
RUNGS = "logistic,hgb,linear,mlp-tiny"
FAST = ["--set", "train.epochs=2", "--set", "evaluate.bootstrap=200", "--set", "tracking.report=false"]


def _config(tmp: Path) -> Path:
    return write_yaml(tmp / "bc.yaml", {"name": "bc", "data": {"source": "builtin:breast_cancer"}, "model": {"type": "mlp"},
                                        "train": {"batch_size": 64, "optimizer": {"name": "adam", "lr": 0.01}}})


@pytest.fixture(scope="module")
def bc_ladder(tmp_path_factory):
    """The CLI's ladder on breast_cancer: (ladder folder, compare.json, the CLI's stdout)."""
    from damoxing.cli import main

    tmp = tmp_path_factory.mktemp("ladder")
    out = tmp / "ladder"
    import contextlib
    import io

    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        main(["ladder", str(_config(tmp)), "--rungs", RUNGS, "--out", str(out), "--quiet", *FAST])
    text = stdout.getvalue()
    assert text.strip().splitlines()[-1] == str(out / "compare")
    return out, json.loads((out / "compare" / "compare.json").read_text()), text


def test_table_holds_the_gradient_boosting_reference_beside_the_neural_rungs(bc_ladder):
    out, saved, text = bc_ladder
    runs = {r["name"]: r for r in saved["runs"]}
    assert list(runs) == RUNGS.split(",")
    assert runs["hgb"]["family"] == "HistGradientBoostingClassifier" and runs["hgb"]["reference"]
    assert runs["logistic"]["family"] == "LogisticRegression" and runs["logistic"]["params"] == 31  # 30 weights + bias
    assert not runs["linear"]["reference"] and not runs["mlp-tiny"]["reference"]
    for r in runs.values():
        low, high = r["ci"]
        assert low <= r["value"] <= high and r["baseline"] == pytest.approx(0.6316, abs=1e-4)
        assert r["params"] > 0 and r["train_seconds"] > 0 and r["energy_kwh"] > 0
    assert runs["hgb"]["flops_per_sample"] is None and runs["linear"]["flops_per_sample"] == 2 * 30 * 2
    assert saved["paired"] and saved["n_test"] == 114 and len(saved["tests"]) >= 3
    for t in saved["tests"]:
        assert 0 < t["mcnemar"]["p_exact"] <= 1 and 0 < t["mcnemar"]["p_mid"] <= t["mcnemar"]["p_exact"]
        assert 0 < t["bootstrap_p"] <= 1 and t["bootstrap_p"] <= t["bootstrap_p_holm"] <= 1
    assert saved["frontier"] and len(saved["prices"]) == len(saved["frontier"]) - 1
    assert [r["name"] for r in saved["runs"] if r["on_frontier"]] == [n for n in RUNGS.split(",") if n in saved["frontier"]]
    for words in ("HistGradientBoostingClassifier (ref)", "McNemar p (Holm)", "frontier (parameters):"):
        assert words in text
    assert saved["extra"]["failed"] == [] and saved["extra"]["ladder"]["rungs"] == RUNGS.split(",")


def test_compare_json_p_values_equal_paired_on_the_runs_predictions(bc_ladder):
    from damoxing.evaluation.paired import holm, mcnemar, paired_bootstrap

    out, saved, _ = bc_ladder
    predictions = {r["name"]: np.load(Path(r["path"]) / "predictions_test.npz") for r in saved["runs"]}
    exact = []
    for t in saved["tests"]:
        a, b = predictions[t["a"]], predictions[t["b"]]
        y = a["y_true"]
        expected = mcnemar(a["pred"] == y, b["pred"] == y)
        assert (t["mcnemar"]["b"], t["mcnemar"]["c"]) == (expected["b"], expected["c"])
        assert t["mcnemar"]["p_exact"] == expected["p_exact"] and t["mcnemar"]["p_mid"] == expected["p_mid"]
        boot = paired_bootstrap("accuracy", y, a["proba"], b["proba"], n_resamples=saved["n_resamples"], seed=0)
        assert t["bootstrap_p"] == boot["p_value"] and t["ci"] == boot["ci"]
        exact.append(expected["p_exact"])
    assert [t["mcnemar"]["p_exact_holm"] for t in saved["tests"]] == [h["p_adjusted"] for h in holm(exact)]


@pytest.mark.skipif(not CHROMIUM.exists(), reason="headless Chromium is not installed (/usr/bin/chromium; apt-get install chromium)")
def test_compare_html_renders_in_headless_chromium_without_console_errors(bc_ladder, tmp_path):
    out, _, _ = bc_ladder
    page = (out / "compare" / "compare.html").read_text()
    assert not re.search(r'(src|href)="(https?:)?//', page) and "url(" not in page  # self-contained
    marker = ("<script>window.addEventListener('load',function(){var a=Array.prototype.slice.call(document.images);"
              "var ok=a.filter(function(i){return i.complete&&i.naturalWidth>0;}).length;"
              "document.body.setAttribute('data-images-decoded',ok+'/'+a.length);});</script>")
    checked = tmp_path / "checked.html"
    checked.write_text(page.replace("</body>", marker + "</body>"))
    broken = tmp_path / "broken.html"  # the positive control: the console check must see this one
    broken.write_text("<html><body><script>missingFunction();</script></body></html>")

    def chromium(file: Path) -> subprocess.CompletedProcess:
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", f"--user-data-dir={tmp_path / ('profile-' + file.stem)}",
                 "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000", "--dump-dom"]
        return subprocess.run([str(CHROMIUM), *flags, file.as_uri()], capture_output=True, text=True, timeout=120)

    def console_lines(stderr: str) -> list[str]:
        return [line for line in stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]

    assert any("missingFunction" in line for line in console_lines(chromium(broken).stderr))
    loaded = chromium(checked)
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    assert console_lines(loaded.stderr) == []
    decoded = re.search(r'data-images-decoded="(\d+)/(\d+)"', loaded.stdout)
    assert decoded and decoded.group(1) == decoded.group(2) and int(decoded.group(2)) >= 3  # differences, frontier, curves
    for text in ("Pareto frontier", "Paired tests", "HistGradientBoostingClassifier (reference)", "Learning curves"):
        assert text in loaded.stdout


def _raw_test_rows(run: Path) -> pd.DataFrame:
    from damoxing.data.sources.builtin import load_builtin

    raw = load_builtin("breast_cancer")
    with np.load(run / "splits.npz") as splits:
        return raw.frame.iloc[splits["test"]].reset_index(drop=True)


def test_predict_on_a_reference_rung_gives_the_fitted_estimators_predictions(bc_ladder, cli, tmp_path):
    from damoxing.data.pipeline import prepare_data
    from damoxing.models import data_needs
    from damoxing.models.sklearn import build_estimator
    from damoxing.spec import load_config

    out, _, _ = bc_ladder
    run = out / "hgb"
    files = {p.name for p in run.iterdir()}
    assert "model.onnx" in files and "model.safetensors" not in files
    assert all(p.suffix in (".yaml", ".json", ".jsonl", ".npz", ".onnx", ".html") for p in run.iterdir())  # no pickle
    assert json.loads((run / "manifest.json").read_text())["model"]["format"] == "onnx"

    cfg = load_config(run / "config.yaml")  # the estimator again, fitted on the same preprocessed training rows
    data = prepare_data(cfg, data_needs(cfg.model))
    estimator = build_estimator(cfg.model, "classification", cfg.train.seed).fit(data.x["train"], data.y["train"])
    expected_proba = estimator.predict_proba(data.x["test"])
    expected = data.preprocessing.decode_labels(estimator.predict(data.x["test"]))

    rows = _raw_test_rows(run)
    rows.drop(columns=["label"]).to_csv(tmp_path / "rows.csv", index=False)
    result = cli("predict", run, tmp_path / "rows.csv", "--out", tmp_path / "preds.csv")
    assert result.code == 0, result.err
    predicted = pd.read_csv(tmp_path / "preds.csv")
    assert list(predicted["prediction"]) == list(expected)
    np.testing.assert_allclose(predicted[["proba_benign", "proba_malignant"]].to_numpy(), expected_proba, atol=1e-5)
    assert (predicted["prediction"] == rows["label"]).mean() == pytest.approx(
        json.loads((run / "metrics.json").read_text())["test"]["accuracy"])


def test_ridge_reference_predicts_in_target_units(tmp_path):
    """A regression reference: fitted on the scaled target, its ONNX values decoded back to the target's units."""
    from damoxing.api import load, train
    from damoxing.data.sources.builtin import load_builtin

    run = train({"name": "ridge", "data": {"source": "builtin:diabetes"}, "model": {"type": "sklearn", "estimator": "ridge"},
                 "tracking": {"report": False}}, out=tmp_path / "ridge", quiet=True)
    raw = load_builtin("diabetes")
    with np.load(run.path / "splits.npz") as splits:
        rows = raw.frame.iloc[splits["train"]]
    from sklearn.linear_model import Ridge

    model = load(run.path)
    x = model.preprocessing.transform_inputs(rows.drop(columns=["target"]))
    y = model.preprocessing.transform_targets(rows["target"].to_numpy())
    expected = model.preprocessing.decode_regression(Ridge(alpha=1.0).fit(x, y).predict(x)[:, None])
    np.testing.assert_allclose(model.predict(rows.drop(columns=["target"])), expected, rtol=1e-4, atol=1e-3)
    assert run.metrics["test"]["r2"] > run.metrics["baseline"]["test"]["r2"]


def test_seeds_give_the_between_seed_spread(tmp_path):
    from damoxing.api import ladder

    result = ladder(_config(tmp_path), rungs=["logistic", "mlp-tiny"], seeds=2, out=tmp_path / "ladder", n_resamples=200,
                    overrides={"train.epochs": 2, "evaluate.bootstrap": 100, "tracking.report": False})
    assert {k: len(v) for k, v in result.runs.items()} == {"logistic": 2, "mlp-tiny": 2}
    spreads = {e.name: e.seed_spread for e in result.comparison.runs}
    assert set(spreads) == {"logistic-s0", "mlp-tiny-s0"} and spreads["logistic-s0"]["seeds"] == [0, 1]
    assert spreads["logistic-s0"]["std"] == 0  # a deterministic solver: the seed changes nothing
    values = [json.loads((p / "metrics.json").read_text())["test"]["accuracy"] for p in result.runs["mlp-tiny"]]
    assert spreads["mlp-tiny-s0"]["values"] == values and spreads["mlp-tiny-s0"]["std"] == pytest.approx(np.std(values, ddof=1))


def test_a_failing_rung_is_reported_not_fatal(tmp_path):
    """A monitor the classification loop does not compute fails the neural rung; the references ignore it."""
    from damoxing.api import ladder

    result = ladder(_config(tmp_path), rungs=["logistic", "hgb", "linear"], out=tmp_path / "ladder", n_resamples=100,
                    overrides={"train.monitor": "val_r2", "evaluate.bootstrap": 100, "tracking.report": False})
    assert [f["rung"] for f in result.failed] == ["linear"] and "ConfigError" in result.failed[0]["error"]
    assert [e.name for e in result.comparison.runs] == ["logistic", "hgb"]
    page = (result.path / "compare" / "compare.html").read_text()
    assert "rungs that failed" in page and "train.monitor is &#x27;val_r2&#x27;, which task &#x27;classification&#x27; does not compute" in page


@pytest.mark.parametrize("rungs, words", [
    ("logistic,mlp-huge", ["'mlp-huge' is not a rung", "Did you mean 'mlp-base'?", "Rungs for this data (table, classification): 'hgb', 'linear', 'logistic'"]),
    ("logistic,cnn-small", ["Rung 'cnn-small' does not fit this data (table data, task classification)"]),
    ("logistic", ["at least two rungs"]),
])
def test_a_bad_rung_exits_2_and_writes_nothing(cli, tmp_path, monkeypatch, rungs, words):
    monkeypatch.chdir(tmp_path)
    config = _config(tmp_path)
    result = cli("ladder", config, "--rungs", rungs)
    assert result.code == 2 and "Traceback" not in result.err
    message = " ".join(result.err.split())
    for word in words:
        assert word in message, (word, message)
    assert {p.name for p in tmp_path.iterdir()} == {"bc.yaml"}
