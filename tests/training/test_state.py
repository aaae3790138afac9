"""The loop's state: the loss window, early stopping, and LoopState as the checkpoint's format
(including checkpoints written before LoopState existed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from damoxing.config import ScheduleConfig, TrainConfig
from damoxing.training.checkpoint import (
    Checkpointer,
    CheckpointError,
    read_checkpoint,
    write_checkpoint,
)
from damoxing.training.optim import PlateauScale
from damoxing.training.state import Diverged, EarlyStopping, LoopState, LossWindow
from tests.training.test_loop_paths import same_weights, train_mlp


def test_loss_window_reads_once_weighted_by_rows_and_names_the_bad_step():
    window = LossWindow(accum=2)
    for loss, rows in ((1.0, 10), (3.0, 30)):
        window.add({"loss": torch.tensor(loss)}, rows)
    assert window.read(step=1, epoch=1) == pytest.approx((10 * 1.0 + 30 * 3.0) / 40)
    assert window.rows == [] and window.count == 40
    assert window.epoch_means() == {"train_loss": pytest.approx(2.5)}
    assert window.epoch_means() == {"train_loss": 0.0}  # the next epoch starts from nothing

    # steps 2..4 of two micro-batches each, unread; the 5th micro-batch (step 4) is NaN
    for i, loss in enumerate([1.0, 1.0, 1.0, 1.0, float("nan"), 1.0]):
        window.add({"loss": torch.tensor(loss)}, 8)
    with pytest.raises(Diverged) as info:
        window.read(step=4, epoch=2)
    assert info.value.step == 4 and info.value.epoch == 2 and np.isnan(info.value.value)


def test_loss_window_keeps_a_models_parts_loss_first():
    window = LossWindow()
    window.add({"d_loss": torch.tensor(1.0), "loss": torch.tensor(3.0), "g_loss": torch.tensor(2.0)}, 4)
    window.read(step=1, epoch=1)
    assert list(window.epoch_means().items()) == [("train_loss", 3.0), ("train_d_loss", 1.0), ("train_g_loss", 2.0)]


@pytest.mark.parametrize("direction,scores,best_epoch", [("min", [3.0, 2.0, 2.5, 2.2], 2), ("max", [0.5, 0.7, 0.6, 0.65], 2)])
def test_early_stopping_tracks_the_best_and_stops_after_patience(direction, scores, best_epoch):
    early = EarlyStopping(direction, patience=2)
    flags = [early.improved(s, epoch) for epoch, s in enumerate(scores, start=1)]
    assert flags == [True, True, False, False] and early.best_epoch == best_epoch and early.should_stop
    never = EarlyStopping(direction)  # no patience: the best is tracked, training never stops
    for epoch, s in enumerate(scores * 5, start=1):
        never.improved(s, epoch)
    assert not never.should_stop and never.best_epoch == best_epoch


def test_early_stopping_min_delta_counts_small_gains_as_none():
    early = EarlyStopping("min", patience=1, min_delta=0.1)
    assert early.improved(1.0, 1) and not early.improved(0.95, 2) and early.should_stop and early.best_score == 1.0


def fresh_state() -> LoopState:
    return LoopState(EarlyStopping("min", 3), PlateauScale(ScheduleConfig(), "min"), LossWindow())


def test_loop_state_round_trips_through_a_checkpoint_file(tmp_path):
    state = fresh_state()
    state.epoch, state.micro, state.step, state.samples_seen, state.elapsed = 3, 4, 25, 400, 1.5
    state.history = [{"epoch": 1, "train_loss": 0.5}, {"epoch": 2, "train_loss": 0.25}]
    state.early.improved(0.5, 1)
    state.early.improved(0.6, 2)
    state.plateau.update(0.5)
    state.losses.add({"loss": torch.tensor(0.75)}, 16)
    state.losses.read(24, 3)
    state.losses.add({"loss": torch.tensor(0.5)}, 16)  # unread at the checkpoint
    state.order, state.best_weights = torch.randperm(10), {"w": torch.ones(2, 2)}
    tensors, loop = state.to_checkpoint()
    path = write_checkpoint(tmp_path / "c.safetensors", tensors, {"loop": loop})

    back = fresh_state()
    back.load_checkpoint(read_checkpoint(path), torch.device("cpu"), torch.device("cpu"))
    assert (back.epoch, back.micro, back.step, back.samples_seen, back.elapsed) == (3, 4, 25, 400, 1.5)
    assert back.history == state.history and back.early.state_dict() == state.early.state_dict()
    assert back.plateau.state_dict() == state.plateau.state_dict()
    assert torch.equal(back.order, state.order) and torch.equal(back.best_weights["w"], state.best_weights["w"])
    assert back.losses.sizes == [16] and back.losses.count == 16 and torch.equal(back.losses.rows[0], torch.tensor(0.5))
    assert back.losses.read(25, 3) == state.losses.read(25, 3)


SETTINGS = {"dropout": 0.3, "epochs": 4, "optimizer": {"name": "adamw", "lr": 0.05, "weight_decay": 0.1},
            "schedule": {"name": "cosine", "warmup_epochs": 1}}


def interrupted_checkpoint(tmp_path):
    """A mid-epoch checkpoint of a run stopped (Ctrl-C) after epoch 2."""
    path = tmp_path / "checkpoint.safetensors"

    def stop(record):
        if record["epoch"] == 2:
            raise KeyboardInterrupt

    interval = TrainConfig(checkpoint_every="5 steps").checkpoint_interval()
    train_mlp(checkpoints=Checkpointer(path, interval), on_epoch_end=stop, **SETTINGS)
    return path, interval


def as_written_before_loop_state(loop: dict) -> dict:
    """meta["loop"] exactly as the loop wrote it before LoopState: one flat dict of 13 keys, no version."""
    return {"epoch": loop["epoch"], "micro": loop["micro"], "step": loop["step"], "history": loop["history"],
            "best_score": loop["early"]["best_score"], "best_epoch": loop["early"]["best_epoch"],
            "samples_seen": loop["samples_seen"], "elapsed": loop["elapsed"],
            "epochs_without_improvement": loop["early"]["epochs_without_improvement"], "epoch_count": loop["losses"]["count"],
            "window_sizes": loop["losses"]["sizes"], "part_names": loop["losses"]["part_names"], "plateau": loop["plateau"]}


def test_a_checkpoint_written_before_loop_state_still_resumes_bitwise(tmp_path):
    full, full_result = train_mlp(**SETTINGS)
    path, interval = interrupted_checkpoint(tmp_path)
    checkpoint = read_checkpoint(path)
    assert checkpoint.meta["loop"]["version"] == 2 and checkpoint.meta["loop"]["micro"] > 0
    old = {k: v for k, v in checkpoint.meta.items() if k not in ("format", "sha256")}
    write_checkpoint(path, checkpoint.tensors, {**old, "loop": as_written_before_loop_state(checkpoint.meta["loop"])})
    old_checkpoint = read_checkpoint(path)
    assert "version" not in old_checkpoint.meta["loop"] and len(old_checkpoint.meta["loop"]) == 13

    resumed, result = train_mlp(checkpoints=Checkpointer(path, interval, resume=old_checkpoint), **SETTINGS)
    assert result.resumed_from["step"] == checkpoint.meta["loop"]["step"]
    assert same_weights(full, resumed) and result.samples_seen == full_result.samples_seen
    strip = lambda history: [{k: v for k, v in h.items() if k != "seconds"} for h in history]  # noqa: E731
    assert strip(result.history) == strip(full_result.history)


@pytest.mark.parametrize("damage", ["future_version", "missing_key"])
def test_a_loop_state_this_version_cannot_read_is_refused_naming_the_file(tmp_path, damage):
    path, interval = interrupted_checkpoint(tmp_path)
    checkpoint = read_checkpoint(path)
    loop = dict(checkpoint.meta["loop"])
    if damage == "future_version":
        loop["version"] = 99
    else:
        del loop["history"]
    meta = {k: v for k, v in checkpoint.meta.items() if k not in ("format", "sha256")}
    write_checkpoint(path, checkpoint.tensors, {**meta, "loop": loop})
    with pytest.raises(CheckpointError) as info:
        train_mlp(checkpoints=Checkpointer(path, interval, resume=read_checkpoint(path)), **SETTINGS)
    message = str(info.value)
    assert str(path) in message and "start the run again without --resume" in message
    assert ("version 99" if damage == "future_version" else "'history'") in message
