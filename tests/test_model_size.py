"""Nonsense model sizes and numbers are refused before any work: a layer of 0 units, true/false where a
number goes, and a model whose weights alone would not fit in memory (estimated without building it)."""

from __future__ import annotations

import time

import pytest

from damoxing.core.errors import ConfigError
from damoxing.spec import load_config

BASE = {"data": {"source": "builtin:iris"}, "model": {"type": "mlp", "hidden": [8]}}


@pytest.mark.parametrize("model", [
    {"type": "mlp", "hidden": [0]}, {"type": "mlp", "hidden": [16, 0]}, {"type": "cnn", "conv_channels": [0]},
    {"type": "cnn", "dense": [0]}, {"type": "rnn", "hidden": 0}, {"type": "rnn", "layers": 0},
    {"type": "transformer", "layers": 0}, {"type": "transformer", "ff_size": 0}, {"type": "gpt", "heads": 0},
    {"type": "vae", "hidden": [0]}, {"type": "gan", "conv_channels": [8, 0]},
])
def test_zero_units_are_a_config_error(model):
    with pytest.raises(ConfigError, match="greater than or equal to 1"):
        load_config({**BASE, "model": model})


@pytest.mark.parametrize("key", ["train.epochs", "train.batch_size", "train.optimizer.lr", "model.dropout", "data.split.seed",
                                 "data.preprocess.max_categories"])
def test_true_or_false_is_not_a_number(key):
    with pytest.raises(ConfigError, match=f"'{key.rsplit('.', 1)[1]}' must be a number, not true"):
        load_config(BASE, {key: True})


@pytest.mark.parametrize("key, value", [("model.hidden", [16, True]), ("train.optimizer.betas", [0.9, False])])
def test_true_or_false_inside_a_list_of_numbers_is_refused(key, value):
    with pytest.raises(ConfigError, match=r"must hold numbers, not \[.*(true|false)\]"):
        load_config(BASE, {key: value})


def test_booleans_still_work_where_they_are_meant():
    config = load_config(BASE, {"train.data_on_device": True, "data.split.stratify": False, "train.epochs": 3})
    assert config.train.data_on_device is True and config.data.split.stratify is False and config.train.epochs == 3


def test_a_model_too_large_for_memory_is_refused_with_the_estimate(tmp_path, cli):
    from conftest import write_yaml

    cfg = write_yaml(tmp_path / "c.yaml", {**BASE, "model": {"type": "mlp", "hidden": [10**7, 10**7]}})
    start = time.perf_counter()
    result = cli("train", cfg, "--out", tmp_path / "run")
    assert result.code == 2 and "Traceback" not in result.err
    assert "100,000,090,000,003 parameters" in result.err and "GiB of float32 weights" in result.err
    assert "memory available" in result.err and "model.hidden" in result.err
    assert time.perf_counter() - start < 60 and not (tmp_path / "run").exists()


def test_a_model_near_the_memory_limit_is_warned_about(tmp_path, monkeypatch, capsys):
    from damoxing.data.schema import DataSchema
    from damoxing.models import registry

    schema = DataSchema(kind="table", task="classification", input_shape=(10,), n_outputs=3)
    config = load_config({**BASE, "model": {"type": "mlp", "hidden": [1000]}}).model  # 14,003 parameters, 56 kB
    monkeypatch.setattr(registry, "available_memory", lambda: 100_000)  # a machine with 100 kB free
    model = registry.create_model(config, schema)
    assert sum(p.numel() for p in model.parameters()) == 14_003
    assert "14,003 parameters" in capsys.readouterr().err
    monkeypatch.setattr(registry, "available_memory", lambda: 50_000)
    with pytest.raises(ConfigError, match="14,003 parameters"):
        registry.create_model(config, schema)
