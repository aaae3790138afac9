"""`damoxing compress`: int8 quantization through ONNX Runtime, before and after on the run's own test rows,
into a new run folder that predict / evaluate take while the original stays byte for byte as it was."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TRAIN = {"epochs": 3, "batch_size": 64, "optimizer": {"name": "adam", "lr": 0.01}}


def digest(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """Tiny runs on the bundled digits: an mlp (table), a cnn (images), a linear model."""
    from damoxing.api import train

    base = tmp_path_factory.mktemp("compress")
    configs = {
        "mlp": {"data": {"source": "builtin:digits"}, "model": {"type": "mlp", "hidden": [256, 128]}},
        "cnn": {"data": {"source": "builtin:digits_images"}, "model": {"type": "cnn", "conv_channels": [8, 16], "dense": [32], "pool_every": 2}},
        "linear": {"data": {"source": "builtin:digits"}, "model": {"type": "linear"}},
    }
    out = {"base": base}
    for name, config in configs.items():
        run = train({"name": name, **config, "train": TRAIN, "evaluate": {"bootstrap": 200}}, out=base / name, quiet=True)
        out[name] = run.path
    return out


@pytest.fixture(scope="module")
def int8_mlp(runs):
    from damoxing.api import compress

    before = digest(runs["mlp"])
    result = compress(runs["mlp"], "quantize", out=runs["base"] / "mlp-int8", threads=1, quiet=True)
    return result, before


def test_quantize_writes_a_new_int8_run_and_leaves_the_original_byte_identical(runs, int8_mlp):
    result, before = int8_mlp
    assert digest(runs["mlp"]) == before
    path = result.path
    assert (path / "model.onnx").exists() and not (path / "model.safetensors").exists()
    manifest = json.loads((path / "manifest.json").read_text())
    block = manifest["compression"]
    assert block["method"] == "quantize" and block["settings"] == {"dtype": "int8", "mode": "dynamic"}
    assert manifest["model"]["format"] == "onnx" and manifest["derived_from"]["run"] == str(runs["mlp"])
    report = json.loads((path / "compression.json").read_text())
    assert report["details"]["quantized_ops"].get("MatMulInteger", 0) == 3  # the three Linear layers run in int8
    size = report["size"]
    assert size["after"]["bytes"] * 3 < size["before"]["bytes"]  # int8 weights: about 4x smaller, less the graph's overhead
    assert size["after"]["params"] == size["before"]["params"]  # the same weights, stored as int8
    quality = report["quality"]
    assert quality["metric"] == "accuracy" and quality["agreement"] > 0.95
    low, high = quality["after"]["ci"]
    assert low <= quality["after"]["value"] <= high
    assert 0.0 < quality["mcnemar"]["p_value"] <= 1.0 and quality["mcnemar"]["b"] + quality["mcnemar"]["c"] == quality["mcnemar"]["n_discordant"]
    speed = report["speed"]
    assert speed["threads"] == 1 and speed["before"]["latency_ms_batch1"] > 0 and speed["after"]["throughput_rows_per_s_batch256"] > 0
    assert report["energy"]["after"]["wh_per_1000"] > 0
    assert "Compression" in (path / "report.html").read_text()


def test_predict_and_evaluate_on_the_int8_run_match_its_recorded_test_accuracy(runs, int8_mlp, cli, tmp_path):
    from damoxing.inference.predictor import load
    from damoxing.runs.rows import split_rows

    result, _ = int8_mlp
    recorded = json.loads((result.path / "metrics.json").read_text())["test"]["accuracy"]
    assert recorded == pytest.approx(result.report["quality"]["after"]["value"])
    model = load(result.path)
    assert model.model_format == "onnx"
    rows = split_rows(model.config, result.path, "test")
    rows.to_csv(tmp_path / "rows.csv", index=False)
    out = cli("predict", result.path, tmp_path / "rows.csv", "--out", tmp_path / "pred.csv")
    assert out.code == 0, out.err
    predicted = pd.read_csv(tmp_path / "pred.csv")["prediction"].to_numpy()
    truth = rows[model.config.data.target or rows.columns[-1]].to_numpy()
    assert np.mean(predicted.astype(str) == truth.astype(str)) == pytest.approx(recorded)
    evaluated = cli("evaluate", result.path, "--json")
    assert evaluated.code == 0 and json.loads(evaluated.out)["metrics"]["accuracy"] == pytest.approx(recorded)
    compared = cli("compare", runs["mlp"], result.path, "--out", tmp_path / "compare")
    assert compared.code == 0, compared.err
    exported = cli("export", result.path, "--out", tmp_path / "exported")
    assert exported.code == 0 and (tmp_path / "exported" / "model.onnx").read_bytes() == (result.path / "model.onnx").read_bytes()


def test_static_int8_of_a_cnn_calibrates_on_training_rows(runs, cli):
    before = digest(runs["cnn"])
    out = cli("compress", runs["cnn"], "--method", "quantize", "--mode", "static", "--threads", "1", "--out", runs["base"] / "cnn-static")
    assert out.code == 0, out.err
    assert "latency batch 1" in out.err and out.last_line.endswith("cnn-static")
    report = json.loads((runs["base"] / "cnn-static" / "compression.json").read_text())
    assert report["details"]["calibration"].endswith("rows of the training split (MinMax)")
    assert report["details"]["quantized_ops"].get("QuantizeLinear", 0) >= 3
    assert report["quality"]["agreement"] > 0.9
    assert digest(runs["cnn"]) == before


def test_dynamic_int8_quantizes_an_lstm_and_its_embedding_table(tmp_path):
    """The exporter feeds an LSTM its weights through Unsqueeze / Concat nodes; after ONNX Runtime's constant
    folding the quantizer sees them as weights: every LSTM becomes DynamicQuantizeLSTM."""
    from hf_fixtures import write_topics_csv

    from damoxing.api import compress, train

    source = write_topics_csv(tmp_path / "topics.csv", n=120)
    run = train({"name": "rnn", "data": {"source": str(source), "target": "label"}, "model": {"type": "rnn", "size": "tiny"},
                 "train": {**TRAIN, "epochs": 6}, "evaluate": {"bootstrap": 0}}, out=tmp_path / "rnn", quiet=True)
    result = compress(run.path, "quantize", out=tmp_path / "rnn-int8", threads=1, quiet=True)
    ops = result.report["details"]["quantized_ops"]
    assert ops.get("DynamicQuantizeLSTM", 0) >= 1 and ops.get("DequantizeLinear", 0) >= 1  # the LSTM, and the embedding read as int8
    assert result.report["quality"]["agreement"] > 0.9
    assert result.report["size"]["after"]["weight_bytes"] * 3 < result.report["size"]["before"]["weight_bytes"]


def test_bad_requests_exit_2_and_leave_the_original_untouched(runs, int8_mlp, cli, tmp_path):
    before = digest(runs["mlp"])
    unfinished = tmp_path / "unfinished"  # what a run interrupted before its end leaves: no manifest.json, no metrics
    unfinished.mkdir()
    for name in ("config.yaml", "model.safetensors", "preprocessing.json"):
        (unfinished / name).write_bytes((runs["mlp"] / name).read_bytes())
    cases = [
        (("compress", tmp_path / "nowhere", "--method", "quantize"), "does not exist"),
        (("compress", unfinished, "--method", "quantize"), "lacks manifest.json"),
        (("compress", runs["mlp"], "--method", "shrink"), "compress takes one of: quantize, prune, distill"),
        (("compress", runs["mlp"], "--method", "quantize", "--mode", "static"), "Use --mode dynamic"),
        (("compress", runs["mlp"], "--method", "quantize", "--dtype", "int4"), "quantizes to int8"),
        (("compress", runs["mlp"], "--method", "quantize", "--out", runs["cnn"]), "already exists"),
        (("compress", runs["linear"], "--method", "prune"), "can take --method quantize"),
        (("compress", runs["base"] / "mlp-int8", "--method", "quantize"), "ONNX graph"),
    ]
    for args, message in cases:
        out = cli(*args)
        assert out.code == 2 and message in out.err, (args, out.err)
        assert "Traceback" not in out.err
    assert digest(runs["mlp"]) == before
