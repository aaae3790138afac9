"""`damoxing explain` on tables: attributions that add up, a sanity check that can fail, importance with intervals."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def bc_run(tmp_path_factory):
    """A small MLP on the bundled breast_cancer data (30 numeric columns, two classes)."""
    from damoxing.api import train

    folder = tmp_path_factory.mktemp("explain")
    config = {"name": "bc", "data": {"source": "builtin:breast_cancer"}, "model": {"type": "mlp", "size": "small"},
              "train": {"epochs": 15, "batch_size": 32, "optimizer": {"name": "adam", "lr": 0.003}}, "evaluate": {"bootstrap": 50}}
    return train(config, out=folder / "runs" / "bc", quiet=True).path


@pytest.fixture(scope="module")
def bc_explained(bc_run):
    from damoxing.api import explain

    return explain(bc_run, rows=80, repeats=10)


def _digest(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def test_attributions_sum_to_output_minus_baseline_within_the_delta(bc_run, bc_explained):
    from damoxing.inference.predictor import load
    from damoxing.runs.rows import split_rows

    result = bc_explained.attributions
    predictor = load(bc_run)
    rows = split_rows(predictor.config, bc_run, "test").iloc[:80]
    x = torch.as_tensor(predictor.preprocessing.transform_inputs(rows))
    columns = predictor.preprocessing.feature_columns
    baseline = torch.as_tensor(predictor.preprocessing.transform_inputs(pd.DataFrame({c: [np.nan] for c in columns})))
    with torch.no_grad():  # the model's own outputs, computed here, not taken from the explainer
        logits = predictor.model(x)
        target = logits.argmax(1)
        f_x = logits.gather(1, target[:, None])[:, 0].double().numpy()
        f_b = predictor.model(baseline)[0, target].double().numpy()
    gap = np.abs(result.values.sum(1) - (f_x - f_b))
    assert result.values.shape == (80, 30)
    assert np.all(gap <= np.abs(result.delta) + 1e-5)  # what is missing is exactly the reported delta
    assert np.all(np.abs(result.delta) <= 0.01 * np.abs(f_x - f_b) + 1e-3)  # and the delta is small on every row
    assert np.array_equal(result.target, target.numpy())
    assert bc_explained.summary["convergence_delta"]["rows_converged"] == 80


def test_the_randomized_model_rank_correlation_is_reported_and_low(bc_explained):
    sanity = bc_explained.summary["sanity"]
    assert sanity["draws"] == 3 and sanity["rows"] == 80
    assert sanity["global_spearman"] < 0.5 and sanity["passed"] is True
    assert -1.0 <= sanity["row_spearman_median"] < 0.8


def test_a_randomized_copy_changes_every_weight_and_the_same_model_correlates_fully(bc_run):
    """The check could fail: with the real model in place of the randomized copy the correlation is 1."""
    from damoxing.inference.predictor import load
    from damoxing.trust.explain import randomized_copy, rank_correlations

    model = load(bc_run).model
    copy = randomized_copy(model, seed=0)
    for (name, a), (_, b) in zip(model.named_parameters(), copy.named_parameters()):
        assert not torch.equal(a, b), name
    values = np.random.default_rng(0).normal(size=(20, 30))
    assert rank_correlations(values, values)["global"] == pytest.approx(1.0)
    assert rank_correlations(values, values)["row_median"] == pytest.approx(1.0)


def test_permutation_importance_intervals_are_shown(bc_explained):
    importance = bc_explained.summary["importance"]
    assert importance["repeats"] == 10 and importance["rows"] == 114 and len(importance["columns"]) == 30
    for column in importance["columns"]:
        assert column["ci_low"] <= column["importance"] <= column["ci_high"] and column["std"] >= 0
    top = importance["columns"][0]
    assert top["ci_low"] > 0  # the most important column matters beyond its interval
    page = (bc_explained.path / "explain.html").read_text()
    assert "Permutation importance" in page and f"{top['ci_low']:.4f}"[:5] in page and "data:image/png;base64," in page
    frame = pd.read_parquet(bc_explained.path / "importance.parquet")
    assert list(frame.columns) == ["column", "importance", "std", "ci_low", "ci_high"]


def test_permutation_importance_finds_the_only_column_a_model_uses():
    from damoxing.trust.importance import permutation_importance

    torch.manual_seed(0)
    x = torch.randn(2000, 3)
    y = (x[:, 0] > 0).long()
    model = torch.nn.Linear(3, 2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[-4.0, 0.0, 0.0], [4.0, 0.0, 0.0]]))
        model.bias.zero_()
    result = permutation_importance(model, x, y, "classification", np.array([0, 1, 2]), ["a", "b", "c"], n_repeats=5)
    by_name = {c["column"]: c for c in result["columns"]}
    assert by_name["a"]["ci_low"] > 1.0
    assert by_name["b"]["importance"] == pytest.approx(0.0, abs=1e-6) and by_name["c"]["ci_high"] == pytest.approx(0.0, abs=1e-6)


def test_files_and_the_run_folder_is_untouched(bc_run, tmp_path):
    from damoxing.api import explain

    before = _digest(bc_run)
    result = explain(bc_run, rows=10, method="feature_ablation", sanity=False, repeats=2, out=tmp_path / "ex")
    assert _digest(bc_run) == before and result.path == tmp_path / "ex"
    frame = pd.read_parquet(result.path / "attributions.parquet")
    assert len(frame) == 10 and "attribution[worst_radius]" in frame.columns and "delta" not in frame.columns
    summary = json.loads((result.path / "explain.json").read_text())
    assert summary["method"] == "feature_ablation" and summary["convergence_delta"] is None
    assert "has no convergence delta" in (result.path / "explain.html").read_text()


def test_one_hot_columns_are_summed_back_to_the_original_column(tmp_path):
    from damoxing.api import explain, train

    rng = np.random.default_rng(0)
    n = 400
    city = rng.choice(["beijing", "shanghai", "chengdu"], n)
    age = rng.normal(40, 10, n)
    label = np.where((city == "chengdu") | (age > 45), "yes", "no")
    frame = pd.DataFrame({"city": city, "age": age, "label": label})
    frame.loc[rng.random(n) < 0.1, "age"] = np.nan
    frame.to_csv(tmp_path / "t.csv", index=False)
    run = train({"data": {"source": str(tmp_path / "t.csv"), "target": "label"}, "model": {"type": "mlp", "size": "tiny"},
                 "train": {"epochs": 5}}, out=tmp_path / "run", quiet=True)
    result = explain(run.path, rows=30, sanity=False, repeats=2)
    attributions = result.attributions
    assert attributions.feature_names == ["city", "age"] and attributions.values.shape == (30, 2)
    # completeness survives the sum over the one-hot inputs (city: 3 categories + <unknown>)
    assert np.allclose(attributions.values.sum(1) - (attributions.output - attributions.baseline_output), attributions.delta, atol=1e-9)
    assert [c["column"] for c in result.summary["importance"]["columns"]] != [] and len(result.summary["importance"]["columns"]) == 2


# --------------------------------------------------------------------------- bad input


def test_a_method_that_does_not_apply_lists_those_that_do(cli, bc_run):
    result = cli("explain", bc_run, "--method", "occlusion")
    assert result.code == 2 and "Traceback" not in result.err
    assert "'occlusion' does not apply to model 'mlp' on table data" in result.err
    assert "'feature_ablation', 'integrated_gradients', 'saliency'" in result.err
    result = cli("explain", bc_run, "--method", "shap")
    assert result.code == 2 and "Unknown explain method 'shap'" in result.err


def test_input_rows_with_missing_columns_are_a_clear_error(cli, bc_run, tmp_path):
    from damoxing.runs.rows import split_rows
    from damoxing.spec import load_config

    rows = split_rows(load_config(bc_run / "config.yaml"), bc_run, "test").iloc[:5]
    rows.drop(columns=["mean_radius", "worst_area"]).to_csv(tmp_path / "in.csv", index=False)
    result = cli("explain", bc_run, tmp_path / "in.csv")
    assert result.code == 2 and "missing the feature column(s) 'mean_radius', 'worst_area'" in result.err
    rows.to_csv(tmp_path / "ok.csv", index=False)
    result = cli("explain", bc_run, tmp_path / "ok.csv", "--no-sanity", "--repeats", "2", "--out", tmp_path / "ok")
    assert result.code == 0 and result.last_line == str(tmp_path / "ok")
    assert len(pd.read_parquet(tmp_path / "ok" / "attributions.parquet")) == 5


def test_the_output_folder_is_never_inside_the_run(cli, bc_run):
    result = cli("explain", bc_run, "--out", bc_run / "explained")
    assert result.code == 2 and "inside the run folder" in result.err and not (bc_run / "explained").exists()


def test_the_run_report_says_how_to_explain_and_links_what_was_written(bc_run, bc_explained, tmp_path):
    from damoxing.report.html import build_report

    page = build_report(bc_run)
    assert "Explanations and fairness" in page and "damoxing explain RUN" in page
    assert bc_explained.path.name in page  # the explain folder beside the run is linked


def test_a_regression_is_explained_in_the_targets_units(tmp_path):
    """The target is standardized for training; attributions and outputs come back in its own units."""
    from damoxing.api import explain, train
    from damoxing.inference.predictor import load
    from damoxing.runs.rows import split_rows

    run = train({"data": {"source": "builtin:diabetes"}, "model": {"type": "mlp", "size": "tiny"},
                 "train": {"epochs": 10, "optimizer": {"name": "adam", "lr": 0.01}}, "evaluate": {"bootstrap": 20}},
                out=tmp_path / "run", quiet=True).path
    result = explain(run, rows=20, sanity=False, repeats=3).attributions
    predictor = load(run)
    rows = split_rows(predictor.config, run, "test").iloc[:20]
    assert np.allclose(result.output, predictor.predict(rows), rtol=1e-4, atol=1e-3)  # f(x) in the target's units
    assert np.all(result.converged)
    assert np.allclose(result.values.sum(1), result.output - result.baseline_output, atol=np.abs(result.delta).max() + 1e-6)
