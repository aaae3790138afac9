"""Progress a log shows: with stderr a pipe (CI, nohup, a scheduler) `damoxing train` prints a line
as each stage starts and one plain line per epoch, as they happen; --quiet silences them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

from damoxing.training.progress import duration, epoch_line

SRC = Path(__file__).resolve().parents[2] / "src"
STAGES = ["loading builtin:iris", "preparing table data", "training mlp: up to 3 epochs", "evaluating", "writing the run folder"]


def train_with_stderr_piped(tmp_path: Path, *flags: str) -> subprocess.CompletedProcess:
    config = tmp_path / "iris.yaml"
    config.write_text(yaml.safe_dump({"data": {"source": "builtin:iris"}, "model": {"type": "mlp", "size": "tiny"},
                                      "train": {"epochs": 3}, "evaluate": {"bootstrap": 0}, "tracking": {"report": False}}))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "damoxing", "train", str(config), "--out", str(tmp_path / "run"), *flags],
                          capture_output=True, text=True, env=env, timeout=300, check=False)  # stderr: a pipe


def test_a_log_gets_a_line_per_stage_and_per_epoch(tmp_path):
    proc = train_with_stderr_piped(tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    stage_lines = [next(i for i, line in enumerate(lines) if re.match(rf"\[\d\d:\d\d:\d\d\] {re.escape(s)}", line)) for s in STAGES]
    assert stage_lines == sorted(stage_lines)  # each stage once, in the order the work happens
    epochs = [line for line in lines if line.startswith("epoch ")]
    assert len(epochs) == 3
    for number, line in enumerate(epochs, start=1):
        assert re.match(rf"epoch {number}/3 train_loss \d+\.\d{{4}} val_loss \d+\.\d{{4}} val_accuracy \d+\.\d{{4}} "
                        r"\| val_loss best \d+\.\d{4} \(epoch [1-3]\) \| \d+\.\d+s", line), line
        assert (", eta " in line) == (number < 3)  # nothing is left after the last epoch
    training, evaluating = stage_lines[2], stage_lines[3]
    assert all(training < lines.index(line) < evaluating for line in epochs)
    assert "━" not in proc.stderr  # no progress bar drawn into the log


def test_quiet_silences_the_log_lines(tmp_path):
    proc = train_with_stderr_piped(tmp_path, "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "epoch " not in proc.stderr and "loading" not in proc.stderr and "training" not in proc.stderr


def test_epoch_line_and_durations():
    record = {"epoch": 2, "train_loss": 0.5, "val_loss": 0.25, "val_accuracy": 0.875, "lr": 0.001, "seconds": 83.2}
    assert epoch_line(record, 10, "val_loss", 0.25, 2, 665.6) == (
        "epoch 2/10 train_loss 0.5000 val_loss 0.2500 val_accuracy 0.8750 | val_loss best 0.2500 (epoch 2) | 1m23s, eta 11m06s")
    assert [duration(s) for s in (0.042, 2.5, 45, 4000)] == ["0.04s", "2.5s", "45s", "1h06m"]


def test_a_scikit_learn_reference_logs_its_stages_too(tmp_path, capsys):
    from damoxing.api import train

    train({"data": {"source": "builtin:wine"}, "model": {"type": "sklearn", "estimator": "logistic_regression"},
           "evaluate": {"bootstrap": 0}, "tracking": {"report": False}}, out=tmp_path / "run")
    err = capsys.readouterr().err
    positions = [err.index(s) for s in ("] loading builtin:wine", "] preparing table data", "] training scikit-learn",
                                        "] evaluating", "] writing the run folder")]
    assert positions == sorted(positions)


def test_a_long_epoch_prints_running_lines_at_most_every_interval(capsys):
    from damoxing.training.progress import EpochLog

    log = EpochLog(epochs=2, total_steps=400, interval=0.0)
    log.during_epoch(120, 1, 0.53125)
    assert re.match(r"epoch 1/2 step 120/400 train_loss 0\.5312 \(running\) \| \d+\.\d+s since the last line", capsys.readouterr().err)
    slow = EpochLog(epochs=2, total_steps=400)  # the default interval: nothing within the first 30 s
    slow.during_epoch(1, 1, 0.5)
    assert capsys.readouterr().err == ""
