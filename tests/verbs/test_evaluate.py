"""`damoxing evaluate RUN` re-evaluates a run exactly as training did: its saved preprocessing and
splits, its `evaluate:` settings and seed; the intervals are labelled with the run's confidence."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import write_yaml

SETTINGS = {"evaluate": {"confidence": 0.9, "bootstrap": 200, "calibration_bins": 5}}


def write_table(path: Path, n: int = 240, seed: int = 0) -> Path:
    """Two numeric features and a categorical one; the label depends on them; a few labels missing."""
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=n) * 3 + 10, rng.normal(size=n)
    colour = rng.choice(["red", "green", "blue"], size=n)
    label = np.where(x1 - 10 + x2 + (colour == "red") > 0.5, "yes", "no").astype(object)
    label[rng.choice(n, size=8, replace=False)] = None
    pd.DataFrame({"x1": x1, "x2": x2, "colour": colour, "label": label}).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def table_run(tmp_path_factory):
    """A classifier on a CSV beside its config (relative source), with its own evaluate settings and seed."""
    from damoxing.api import train

    folder = tmp_path_factory.mktemp("table")
    write_table(folder / "table.csv")
    config = write_yaml(folder / "config.yaml", {
        "name": "t", "data": {"source": "table.csv", "target": "label"}, "model": {"type": "mlp", "size": "tiny"},
        "train": {"epochs": 2, "seed": 7, "eval_batch_size": 16, "optimizer": {"name": "adam", "lr": 0.01}}, **SETTINGS})
    return train(config, out=folder / "run", quiet=True)


def saved_split(run_path: Path, split: str) -> dict:
    from damoxing.tasks import one_split

    return one_split(json.loads((run_path / "metrics.json").read_text()), split)


def test_evaluate_reproduces_metrics_json_with_the_runs_settings(table_run):
    from damoxing.verbs.evaluate import evaluate

    saved = json.loads((table_run.path / "metrics.json").read_text())
    assert saved["test_ci_level"] == 0.9 and len(saved["test_calibration"]["bins"]) == 5
    for split in ("val", "test"):
        assert evaluate(table_run.path, split=split) == saved_split(table_run.path, split)


def test_evaluate_reads_the_saved_splits_and_preprocessing_when_the_data_grew(table_run, tmp_path, capsys):
    """Rows appended to the source: refitting would split and scale differently; the saved
    preprocessing and split indices still give the rows and numbers of metrics.json."""
    import shutil

    from damoxing.verbs.evaluate import evaluate

    folder = tmp_path / "moved"
    shutil.copytree(table_run.path, folder / "run")
    grown = pd.concat([pd.read_csv(table_run.path.parent / "table.csv"), pd.read_csv(write_table(tmp_path / "more.csv", 400, seed=1))])
    grown.to_csv(folder / "table.csv", index=False)
    (folder / "run" / "config.yaml").write_text((table_run.path / "config.yaml").read_text().replace(
        "source: table.csv", f"source: {folder / 'table.csv'}"))
    capsys.readouterr()
    from damoxing.runs.folder import no_verify

    with no_verify():  # config.yaml was edited (the data moved), knowingly
        assert evaluate(folder / "run") == saved_split(table_run.path, "test")
    assert "changed since this run was trained" in capsys.readouterr().err


def test_evaluate_refuses_splits_that_name_rows_the_data_no_longer_has(table_run, tmp_path, cli):
    import shutil

    shutil.copytree(table_run.path, tmp_path / "run")
    pd.read_csv(table_run.path.parent / "table.csv").head(50).to_csv(tmp_path / "table.csv", index=False)
    (tmp_path / "run" / "config.yaml").write_text((table_run.path / "config.yaml").read_text().replace(
        "source: table.csv", f"source: {tmp_path / 'table.csv'}"))
    assert "config.yaml does not match the checksum" in cli("evaluate", tmp_path / "run").err  # an edited run is refused
    result = cli("--no-verify", "evaluate", tmp_path / "run")  # unless asked knowingly
    assert result.code == 2 and "data changed since the run was trained" in result.err and "Traceback" not in result.err


def test_cli_table_and_headline_name_the_runs_confidence(table_run, cli):
    from damoxing.verbs.train import headline

    result = cli("evaluate", table_run.path)
    assert result.code == 0, result.err
    assert "90% CI" in result.out and "95% CI" not in result.out
    line = headline(table_run.metrics, "classification", table_run.path)
    assert "(90% CI " in line and "95%" not in line
    old = {k: v for k, v in table_run.metrics.items() if k != "test_ci_level"}  # a run saved before the level was recorded
    assert "(95% CI " in headline(old, "classification", table_run.path)


def test_train_prints_the_headline_with_the_runs_confidence(tmp_path, capsys):
    from damoxing.api import train

    train({"name": "h", "data": {"source": "builtin:iris"}, "model": {"type": "linear"}, "train": {"epochs": 1},
           "evaluate": {"confidence": 0.8, "bootstrap": 50}}, out=tmp_path / "run")
    err = capsys.readouterr().err
    assert "test accuracy" in err and "(80% CI " in err, err


def test_evaluate_a_split_the_run_does_not_have(table_run, cli, tmp_path):
    result = cli("evaluate", table_run.path, "--split", "train")
    assert result.code == 2 and "val, test" in result.err
    from damoxing.api import train

    run = train({"name": "n", "data": {"source": "builtin:iris", "split": {"val": 0.0, "test": 0.3}}, "model": {"type": "linear"},
                 "train": {"epochs": 1}}, out=tmp_path / "noval", quiet=True)
    result = cli("evaluate", run.path, "--split", "val")
    assert result.code == 2 and "no val split" in result.err


def test_evaluate_on_a_labelled_file_uses_the_runs_settings(table_run, tmp_path):
    from damoxing.verbs.evaluate import evaluate

    frame = pd.read_csv(write_table(tmp_path / "new.csv", 120, seed=3))
    result = evaluate(table_run.path, data=tmp_path / "new.csv")
    assert result["split"] == "test" and result["ci_level"] == 0.9 and len(result["calibration"]["bins"]) == 5
    assert "baseline" not in result  # the run's training targets are not read for a new file
    assert result == evaluate(table_run.path, data=tmp_path / "new.csv")  # seeded: the same intervals again
    assert frame["label"].isna().sum() == 8
