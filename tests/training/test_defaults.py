"""training/defaults.py: which train settings are chosen from the data, and which are kept."""

from __future__ import annotations

import pytest
import yaml

from damoxing.config import TrainConfig
from damoxing.training.defaults import (
    MAX_EPOCHS,
    MAX_PATIENCE,
    MIN_EPOCHS,
    MIN_PATIENCE,
    auto_batch_size,
    auto_epochs,
    auto_lr,
    auto_patience,
    choose_train_defaults,
)


@pytest.mark.parametrize("rows, batch", [(10, 32), (124, 32), (5_000, 64), (20_000, 256), (327_000, 512)])
def test_batch_size_is_a_power_of_two_for_about_100_steps(rows, batch):
    assert auto_batch_size(rows) == batch


def test_lr_grows_with_the_square_root_of_the_batch_and_is_capped():
    assert auto_lr(32) == 0.001
    assert auto_lr(128) == 0.002
    assert auto_lr(512) == 0.003  # 0.004 by the square root, capped


def test_epoch_budget_scales_with_the_data():
    assert auto_epochs(124, 32) == MAX_EPOCHS  # 4 steps an epoch: capped
    assert auto_epochs(327_000, 512) == MIN_EPOCHS  # 639 steps an epoch
    assert auto_epochs(20_000, 256) == 127  # 79 steps an epoch: ceil(10,000 / 79)
    assert auto_epochs(20_000, 256, grad_accum_steps=2) == 250  # 40 optimizer steps an epoch


def test_patience_is_a_quarter_of_the_budget_within_5_to_20():
    assert [auto_patience(e) for e in (MIN_EPOCHS, 40, 127, MAX_EPOCHS)] == [MIN_PATIENCE, 10, MAX_PATIENCE, MAX_PATIENCE]


def test_a_large_table_stops_after_a_shorter_plateau():
    _, chosen = choose_train_defaults(TrainConfig(), 327_000, "table", "regression")
    assert chosen == {"batch_size": 512, "optimizer.lr": 0.003, "epochs": MIN_EPOCHS, "early_stopping.patience": MIN_PATIENCE}


def test_unset_table_settings_are_chosen():
    train, chosen = choose_train_defaults(TrainConfig(), 398, "table", "classification")
    assert chosen == {"batch_size": 32, "optimizer.lr": 0.001, "epochs": MAX_EPOCHS, "early_stopping.patience": MAX_PATIENCE}
    assert (train.batch_size, train.optimizer.lr, train.epochs, train.early_stopping.patience) == (32, 0.001, MAX_EPOCHS, MAX_PATIENCE)
    assert train.restore_best


def test_explicit_values_are_kept_and_explicit_epochs_mean_no_early_stopping():
    written = TrainConfig.model_validate({"epochs": 20, "batch_size": 64, "optimizer": {"lr": 0.001}})
    train, chosen = choose_train_defaults(written, 50_000, "table", "regression")
    assert chosen == {} and train == written and train.early_stopping is None


def test_explicit_early_stopping_is_kept_with_an_automatic_budget():
    written = TrainConfig.model_validate({"early_stopping": {"patience": 3}, "optimizer": {"name": "sgd"}})
    train, chosen = choose_train_defaults(written, 1_000, "table", "classification")
    assert train.early_stopping.patience == 3 and "early_stopping.patience" not in chosen
    assert "optimizer.lr" not in chosen and train.optimizer.lr == 1e-3  # SGD's lr is never guessed
    assert chosen["epochs"] == auto_epochs(1_000, 32)


@pytest.mark.parametrize("kind, task", [("image", "classification"), ("text", "classification"), ("table", "generation")])
def test_other_kinds_and_tasks_keep_the_fixed_defaults(kind, task):
    train, chosen = choose_train_defaults(TrainConfig(), 1_000, kind, task)
    assert chosen == {} and train == TrainConfig()


def test_a_resolved_config_read_back_chooses_nothing():
    """A run's config.yaml (what --resume reads) holds the chosen values, now written out: they stay."""
    from damoxing.config import dump_config

    train, _ = choose_train_defaults(TrainConfig(), 398, "table", "classification")
    again, chosen = choose_train_defaults(TrainConfig.model_validate(yaml.safe_load(dump_config(train))), 9_999, "table", "classification")
    assert chosen == {} and again == train


def test_train_logs_and_records_the_chosen_values(tmp_path, capsys):
    from damoxing.api import train

    run = train({"data": {"source": "builtin:iris"}, "model": {"type": "mlp", "size": "tiny"}, "train": {"epochs": 2}},
                out=tmp_path / "run")
    err = capsys.readouterr().err
    assert "chosen automatically" in err and "batch_size 32" in err and "optimizer.lr 0.001" in err
    saved = yaml.safe_load((run.path / "config.yaml").read_text())["train"]
    assert saved["batch_size"] == 32 and saved["epochs"] == 2 and saved["early_stopping"] is None
    assert run.manifest["training"]["chosen_defaults"] == {"batch_size": 32, "optimizer.lr": 0.001}
    assert len(run.history) == 2
