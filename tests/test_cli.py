"""End to end through the real CLI on bundled data: train -> run folder -> predict / evaluate, and
every user mistake giving one paragraph, a non-zero exit and no traceback."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import fast_train, pickled_files, run_subprocess, write_yaml

DIGITS_MLP = {"name": "dmlp", "data": {"source": "builtin:digits"}, "model": {"type": "mlp", "size": "tiny"},
              "train": fast_train(epochs=4)}


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """One small trained run shared by the read-only tests below."""
    from damoxing.api import train

    out = tmp_path_factory.mktemp("runs") / "digits"
    return train(DIGITS_MLP, out=out, quiet=True)


def test_help_is_fast_and_lists_verbs():
    run_subprocess("--help")  # warm the file cache
    start = time.perf_counter()
    result = run_subprocess("--help")
    elapsed = time.perf_counter() - start
    assert result.code == 0
    for verb in ("train", "evaluate", "predict", "init", "schema", "datasets"):
        assert verb in result.out
    assert elapsed < 1.0, f"--help took {elapsed:.2f}s"  # ~0.15 s here; headroom for a loaded CI machine


def test_train_prints_run_folder_last_and_writes_the_contract(cli, tmp_path):
    cfg = write_yaml(tmp_path / "c.yaml", DIGITS_MLP)
    result = cli("train", cfg, "--out", tmp_path / "run", "--quiet")
    assert result.code == 0, result.err
    run = Path(result.last_line)
    assert run == tmp_path / "run"
    for name in ("config.yaml", "model.safetensors", "preprocessing.json", "metrics.json", "history.jsonl", "manifest.json"):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"val", "test", "baseline", "test_ci"} <= set(metrics)
    lo, hi = metrics["test_ci"]["accuracy"]
    assert lo <= metrics["test"]["accuracy"] <= hi
    assert metrics["test"]["accuracy"] > metrics["baseline"]["test"]["accuracy"] + 0.5
    assert len((run / "history.jsonl").read_text().splitlines()) == 4
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["data"]["fingerprint"] and manifest["seed"] == 0 and manifest["packages"]["torch"]
    import yaml

    resolved = yaml.safe_load((run / "config.yaml").read_text())
    assert resolved["task"] == "classification" and resolved["model"]["hidden"] == [16]  # tiny preset filled in
    assert pickled_files(run) == {}  # nothing in a run folder is a pickle, of any protocol or in a zip


def test_set_overrides_apply(cli, tmp_path):
    cfg = write_yaml(tmp_path / "c.yaml", DIGITS_MLP)
    result = cli("train", cfg, "--quiet", "--out", tmp_path / "r", "--set", "train.epochs=2", "--set", "name=other")
    assert result.code == 0, result.err
    assert len((tmp_path / "r" / "history.jsonl").read_text().splitlines()) == 2


def test_predict_reproduces_recorded_test_accuracy(cli, digits_run, tmp_path):
    from damoxing.data.sources import load_source

    raw = load_source("builtin:digits")
    test_idx = np.load(digits_run.path / "splits.npz")["test"]
    frame = raw.frame.iloc[test_idx].sample(frac=1.0, axis=1, random_state=0)  # columns in another order
    frame["extra"] = "ignored"
    frame.to_csv(tmp_path / "test.csv", index=False)
    result = cli("predict", digits_run.path, tmp_path / "test.csv", "--out", tmp_path / "preds.csv")
    assert result.code == 0, result.err
    preds = pd.read_csv(tmp_path / "preds.csv")
    assert list(preds.columns[:2]) == ["prediction", "proba_0"]
    accuracy = float((preds["prediction"].to_numpy() == frame["label"].to_numpy()).mean())
    assert accuracy == pytest.approx(digits_run.metrics["test"]["accuracy"], abs=1e-9)


def test_python_api_load_predict_proba(digits_run):
    import damoxing
    from damoxing.data.sources import load_source

    model = damoxing.load(digits_run.path)
    frame = load_source("builtin:digits").frame.head(20)
    proba = model.predict_proba(frame)
    assert proba.shape == (20, 10) and np.allclose(proba.sum(1), 1, atol=1e-5)
    assert list(model.predict(frame.to_dict("list"))) == list(model.predict(frame))
    assert set(model.classes_) == set(range(10))


def test_evaluate_on_own_test_split_matches_metrics(cli, digits_run):
    result = cli("evaluate", digits_run.path, "--json")
    assert result.code == 0, result.err
    again = json.loads(result.out)
    assert again["metrics"]["accuracy"] == pytest.approx(digits_run.metrics["test"]["accuracy"])


def test_same_config_and_seed_twice_gives_identical_metrics(tmp_path):
    from damoxing.api import train

    a = train(DIGITS_MLP, out=tmp_path / "a", quiet=True)
    b = train(DIGITS_MLP, out=tmp_path / "b", quiet=True)
    assert a.metrics == b.metrics


def test_init_schema_datasets(cli, tmp_path):
    result = cli("init", "--out", tmp_path / "s.yaml")
    assert result.code == 0 and (tmp_path / "s.yaml").exists()
    assert "builtin:digits_images" in (tmp_path / "s.yaml").read_text()
    again = cli("init", "--out", tmp_path / "s.yaml")
    assert again.code == 2 and "--force" in again.err
    listing = cli("init", "--list")
    assert "digits-mlp" in listing.out
    schema = json.loads(cli("schema").out)
    assert "data" in schema["properties"] and "model" in schema["properties"]
    datasets = cli("datasets").out
    for name in ("digits", "digits_images", "iris", "wine", "breast_cancer", "diabetes"):
        assert f"builtin:{name}" in datasets


def _error(cli, *args) -> str:
    result = cli(*args)
    assert result.code == 2, (result.code, result.out, result.err)
    assert "Traceback" not in result.err
    errors = [line for line in result.err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and result.err.rstrip().endswith(errors[0]), result.err  # one paragraph, last
    return errors[0]


def _cfg(tmp_path, **patch) -> Path:
    data = json.loads(json.dumps(DIGITS_MLP))
    for key, value in patch.items():
        node = data
        parts = key.split("__")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return write_yaml(tmp_path / "bad.yaml", data)


def test_error_typo_in_model_name(cli, tmp_path):
    assert "Did you mean 'mlp'" in _error(cli, "train", _cfg(tmp_path, model__type="mpl"))


def test_error_unknown_config_key(cli, tmp_path):
    assert "Unknown key 'train.epoch'" in _error(cli, "train", _cfg(tmp_path, train__epoch=3))


def test_error_missing_data_file(cli, tmp_path):
    assert "does not exist" in _error(cli, "train", _cfg(tmp_path, data__source=str(tmp_path / "nope.csv")))


def test_error_missing_config_file(cli, tmp_path):
    assert "does not exist" in _error(cli, "train", tmp_path / "nope.yaml")


def test_error_empty_data_file(cli, tmp_path):
    (tmp_path / "empty.csv").write_text("")
    assert "empty" in _error(cli, "train", _cfg(tmp_path, data__source=str(tmp_path / "empty.csv"))).lower()


def test_error_target_column_missing_lists_columns(cli, tmp_path):
    pd.DataFrame({"a": [1, 2, 3], "b": [0, 1, 0]}).to_csv(tmp_path / "t.csv", index=False)
    err = _error(cli, "train", _cfg(tmp_path, data__source=str(tmp_path / "t.csv"), data__target="lable"))
    assert "'lable'" in err and "'a'" in err and "'b'" in err


def test_error_text_target_with_regression(cli, tmp_path):
    pd.DataFrame({"x": range(30), "y": ["cat", "dog", "eel"] * 10}).to_csv(tmp_path / "t.csv", index=False)
    err = _error(cli, "train", _cfg(tmp_path, data__source=str(tmp_path / "t.csv"), data__target="y", task="regression"))
    assert "regression" in err and "classification" in err


def test_error_class_too_small_to_stratify(cli, tmp_path):
    pd.DataFrame({"x": range(40), "y": ["a"] * 20 + ["b"] * 19 + ["rare"]}).to_csv(tmp_path / "t.csv", index=False)
    err = _error(cli, "train", _cfg(tmp_path, data__source=str(tmp_path / "t.csv"), data__target="y"))
    assert "rare" in err and "stratify" in err


def test_error_mismatched_image_shapes(cli, tmp_path):
    images = np.empty(3, dtype=object)
    images[:] = [np.zeros((8, 8)), np.zeros((8, 8)), np.zeros((7, 8))]
    np.savez(tmp_path / "imgs.npz", x=images, y=np.array([0, 1, 0]))
    err = _error(cli, "train", _cfg(tmp_path, data__source=str(tmp_path / "imgs.npz"), model__type="cnn"))
    assert "shape" in err


def test_error_not_a_run_folder(cli, tmp_path):
    (tmp_path / "somefolder").mkdir()
    assert "not a damoxing run" in _error(cli, "predict", tmp_path / "somefolder", tmp_path / "x.csv")
    assert "does not exist" in _error(cli, "evaluate", tmp_path / "missing-run")


def test_error_prediction_input_missing_column(cli, digits_run, tmp_path):
    from damoxing.data.sources import load_source

    frame = load_source("builtin:digits").frame.head(5).drop(columns=["pixel_10"])
    frame.to_csv(tmp_path / "in.csv", index=False)
    assert "pixel_10" in _error(cli, "predict", digits_run.path, tmp_path / "in.csv")


def test_error_no_traceback_in_a_real_process(tmp_path):
    cfg = _cfg(tmp_path, model__type="mpl")
    result = run_subprocess("train", cfg)
    assert result.code == 2 and "Traceback" not in result.err and "Did you mean 'mlp'" in result.err
    debug = run_subprocess("--debug", "train", cfg)
    assert debug.code != 0 and "Traceback" in debug.err


def test_diverged_run_is_saved_and_exits_nonzero(cli, tmp_path):
    cfg = _cfg(tmp_path, train__optimizer={"name": "sgd", "lr": 1e30}, train__log_every=1)
    result = cli("train", cfg, "--out", tmp_path / "div", "--quiet")
    assert result.code == 2 and "step" in result.err and "lower train.optimizer.lr" in result.err
    assert (tmp_path / "div" / "model.safetensors").exists()


def test_out_folder_holding_a_run_is_not_overwritten(cli, digits_run, tmp_path):
    before = (digits_run.path / "metrics.json").read_bytes()
    cfg = write_yaml(tmp_path / "c.yaml", DIGITS_MLP)
    err = _error(cli, "train", cfg, "--out", digits_run.path)
    assert "already holds a run" in err
    assert (digits_run.path / "metrics.json").read_bytes() == before


def test_damoxing_train_stays_callable_after_the_train_package_is_imported(tmp_path):
    """`damoxing.train` is both the API function and a subpackage; the second call must still train."""
    import damoxing
    import damoxing.training.loop  # noqa: F401 - binds damoxing.train to the subpackage

    cfg = {"data": {"source": "builtin:iris"}, "model": {"type": "linear"}, "train": {"epochs": 1}}
    first = damoxing.train(cfg, out=tmp_path / "a", quiet=True)
    second = damoxing.train(cfg, out=tmp_path / "b", quiet=True)
    assert first.path.exists() and second.path.exists()


def test_damoxing_evaluate_stays_callable_after_the_evaluate_package_is_imported(digits_run):
    import damoxing
    import damoxing.evaluation.metrics  # noqa: F401 - binds damoxing.evaluate to the subpackage

    result = damoxing.evaluate(digits_run.path)
    assert result["metrics"]["accuracy"] == pytest.approx(digits_run.metrics["test"]["accuracy"])
