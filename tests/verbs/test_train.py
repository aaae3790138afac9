"""`damoxing train`: train.monitor is checked against the task's declared validation metrics before any work."""

from __future__ import annotations

import pytest

from damoxing.core.errors import ConfigError


def train_error(config: dict, tmp_path) -> str:
    from damoxing.api import train

    with pytest.raises(ConfigError) as info:
        train(config, out=tmp_path / "run", quiet=True)
    assert not (tmp_path / "run").exists()
    return str(info.value)


def test_a_monitor_the_known_task_does_not_compute_fails_before_the_data_is_read(tmp_path):
    """task: regression, and a source that does not exist: the monitor is what is reported."""
    message = train_error({"task": "regression", "data": {"source": str(tmp_path / "missing.csv"), "target": "y"},
                           "model": {"type": "mlp"}, "train": {"monitor": "val_accuracy"}}, tmp_path)
    assert "train.monitor is 'val_accuracy', which task 'regression' does not compute" in message
    assert "'val_r2'" in message and "'val_perplexity'" not in message


def test_the_model_family_fixes_the_task_and_its_monitors(tmp_path):
    """A gan computes d_loss and g_loss, not the vae's recon: known from model.type alone."""
    message = train_error({"data": {"source": str(tmp_path / "missing.npz")}, "model": {"type": "gan"},
                           "train": {"monitor": "val_recon"}}, tmp_path)
    valid = message.split("Valid monitors for generation:")[1]
    assert "task 'generation'" in message and "'val_d_loss'" in valid and "'val_recon'" not in valid


def test_a_task_inferred_from_the_data_is_checked_before_the_model_is_built(tmp_path):
    """iris is classification; a cnn could not take its table, so reaching create_model would report that instead."""
    message = train_error({"data": {"source": "builtin:iris"}, "model": {"type": "cnn"}, "train": {"monitor": "val_r2"}}, tmp_path)
    assert "task 'classification' does not compute" in message and "'val_accuracy'" in message and "'val_mse'" not in message


def test_the_cli_reports_a_bad_monitor_in_one_paragraph(cli, tmp_path):
    from conftest import write_yaml

    config = write_yaml(tmp_path / "c.yaml", {"task": "classification", "data": {"source": "builtin:iris"}, "model": "mlp",
                                              "train": {"monitor": "val_mse"}})
    result = cli("train", config, "--out", tmp_path / "run")
    assert result.code == 2 and "Valid monitors for classification" in result.err and "Traceback" not in result.err
