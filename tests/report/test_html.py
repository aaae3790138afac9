"""report.html from run folders it knows (regression) and does not know (a task added later), and
the numpy ROC/PR curves against scikit-learn."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import yaml

from damoxing.report.html import build_report, write_report
from damoxing.report.plots import ranking_curves


def test_ranking_curves_match_sklearn():
    from sklearn.metrics import (
        average_precision_score,
        precision_recall_curve,
        roc_auc_score,
        roc_curve,
    )

    rng = np.random.default_rng(1)
    positive = rng.random(400) < 0.3
    score = np.round(rng.random(400) + 0.4 * positive, 2)  # rounded: many ties
    curves = ranking_curves(positive, score)
    fpr, tpr, _ = roc_curve(positive, score, drop_intermediate=False)
    assert np.allclose(curves["fpr"], fpr) and np.allclose(curves["tpr"], tpr)
    assert curves["auc"] == pytest.approx(roc_auc_score(positive, score))
    assert curves["average_precision"] == pytest.approx(average_precision_score(positive, score))
    precision, recall, _ = precision_recall_curve(positive, score)
    assert np.allclose(sorted(zip(curves["recall"], curves["precision"])), sorted(zip(recall, precision)))


def _fake_run(folder, task: str, metrics: dict, history: list[dict], predictions: dict | None = None):
    folder.mkdir()
    (folder / "config.yaml").write_text(yaml.safe_dump({"name": "fake", "task": task, "model": {"type": "gpt"}}))
    (folder / "metrics.json").write_text(json.dumps(metrics))
    (folder / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history))
    manifest = {"task": task, "damoxing": "0.1.0", "data": {"source": "corpus.txt", "split_rows": {"train": 90, "val": 10}},
                "cost": {"params": 1234, "tokens_per_second": 5000.0, "some_new_field": 7}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    if predictions is not None:
        np.savez(folder / "predictions_test.npz", **predictions)
    return folder


def test_unknown_task_degrades_to_what_the_files_hold(tmp_path):
    metrics = {"val": {"loss": 3.2, "perplexity": 24.5}, "test": {"loss": 3.3, "perplexity": 27.1},
               "test_ci": {"perplexity": [25.0, 29.0]}, "samples": {"prompt": "Once", "text": "Once <upon> a time"}}
    history = [{"epoch": e, "train_loss": 4.0 / e, "val_loss": 4.1 / e, "val_perplexity": 60.0 / e, "lr": 1e-3} for e in (1, 2, 3)]
    run = _fake_run(tmp_path / "lm", "language_modeling", metrics, history)
    page = build_report(run)
    assert "perplexity" in page and "27.1000" in page and "25.0000 – 29.0000" in page  # headline with its interval
    assert "tokens/s" in page and "some_new_field" in page  # cost fields, known and unknown
    assert "Once &lt;upon&gt; a time" in page  # other results shown as escaped JSON, never raw HTML
    images = re.findall(r'<img alt="([^"]+)"', page)
    assert images == ["learning curves"]  # no confusion matrix / ROC without classification data


def test_regression_report_has_residual_plot_and_survives_a_damaged_predictions_file(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.normal(size=50)
    metrics = {"test": {"mse": 0.1, "r2": 0.9}, "baseline": {"test": {"mse": 1.0, "r2": 0.0}}}
    run = _fake_run(tmp_path / "reg", "regression", metrics, [{"epoch": 1, "train_loss": 1.0}],
                    {"y_true": y, "y_pred": y + rng.normal(scale=0.1, size=50)})
    path = write_report(run)
    assert path == run / "report.html"
    assert "predicted vs true and residuals" in path.read_text()
    (run / "predictions_test.npz").write_bytes(b"not an npz")
    page = build_report(run)
    assert "predicted vs true" not in page and "r2" in page


def test_report_of_a_folder_that_is_not_a_run_is_a_clear_error(cli, tmp_path):
    result = cli("report", tmp_path)
    assert result.code == 2 and "is not a damoxing run" in result.err and "Traceback" not in result.err


def test_a_plot_that_cannot_be_drawn_leaves_a_note_not_a_broken_report(tmp_path):
    metrics = {"test": {"accuracy": 0.5, "confusion_matrix": [[1, "x"], [0, 1]]}}  # damaged matrix
    history = [{"epoch": 1, "train_loss": 1.0}]
    page = build_report(_fake_run(tmp_path / "bad", "classification", metrics, history))
    assert "confusion matrix: could not be drawn (ValueError" in page
    assert '<img alt="learning curves"' in page
