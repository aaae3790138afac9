"""Distributed training on CPU: `damoxing train --nproc 2` (torchrun, gloo) matches one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from damoxing.training.distributed import choose_strategy
from tests.conftest import write_yaml

ROOT = Path(__file__).resolve().parents[2]


def damoxing(*args, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    env.pop("WORLD_SIZE", None)
    return subprocess.run([sys.executable, "-m", "damoxing", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def test_strategy_auto_shards_large_models_only():
    assert choose_strategy("auto", 10_000, 500_000_000) == "ddp"
    assert choose_strategy("auto", 600_000_000, 500_000_000) == "fsdp"
    assert choose_strategy("fsdp", 10, 500_000_000) == "fsdp"
    assert choose_strategy("ddp", 10**12, 500_000_000) == "ddp"


@pytest.mark.slow
def test_two_processes_reach_the_accuracy_of_one(tmp_path):
    from damoxing.api import train

    cfg = write_yaml(tmp_path / "cfg.yaml", {
        "name": "ddp", "data": {"source": "builtin:digits"}, "model": {"type": "mlp", "hidden": [128]},
        "train": {"epochs": 10, "batch_size": 64, "optimizer": {"name": "sgd", "lr": 0.01, "momentum": 0.9}},
    })
    single = train(cfg, out=tmp_path / "one", quiet=True)
    result = damoxing("train", cfg, "--nproc", "2", "--out", "two", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "two"  # rank 0 prints the run folder, once
    assert result.stderr.count("test accuracy") == 1  # only rank 0 speaks
    manifest = json.loads((tmp_path / "two" / "manifest.json").read_text())
    assert manifest["training"]["distributed"] == "ddp" and manifest["training"]["processes"] == 2
    accuracy = json.loads((tmp_path / "two" / "metrics.json").read_text())["test"]["accuracy"]
    assert abs(accuracy - single.metrics["test"]["accuracy"]) <= 0.03
    assert not list(tmp_path.glob(".*.partial"))


@pytest.mark.slow
def test_fsdp_on_request_and_worker_errors_reported_once(tmp_path):
    cfg = write_yaml(tmp_path / "cfg.yaml", {
        "name": "fsdp", "data": {"source": "builtin:digits"}, "model": {"type": "mlp", "hidden": [64]},
        "train": {"epochs": 3, "optimizer": {"name": "adam", "lr": 0.01}, "distributed": "fsdp"},
    })
    result = damoxing("train", cfg, "--nproc", "2", "--out", "run", "--quiet", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["training"]["distributed"] == "fsdp"
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["test"]["accuracy"] > 0.8

    bad = damoxing("train", cfg, "--nproc", "2", "--set", "train.l2=0.01", cwd=tmp_path)
    assert bad.returncode == 2
    assert bad.stderr.count("error: train.l1 / train.l2") == 1 and "Traceback" not in bad.stderr
