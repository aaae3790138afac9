"""Checkpoints: atomic safetensors + JSON, refused when damaged or foreign, and exact resume after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from damoxing.training.checkpoint import (
    CheckpointError,
    check_identity,
    optimizer_from_flat,
    optimizer_to_flat,
    read_checkpoint,
    write_checkpoint,
)
from tests.conftest import write_yaml

ROOT = Path(__file__).resolve().parents[2]


def small_checkpoint(path: Path) -> Path:
    tensors = {"model/w": torch.randn(3, 4), "model/b": torch.zeros(4, dtype=torch.bfloat16), "rng/shuffle": torch.arange(5, dtype=torch.uint8)}
    return write_checkpoint(path, tensors, {"config": {"a": 1, "train": {"lr": 0.1}}, "data_fingerprint": "abc", "world": 1, "loop": {"epoch": 2}})


def test_write_then_read_round_trips_and_leaves_no_temp_file(tmp_path):
    path = small_checkpoint(tmp_path / "ck" / "checkpoint.safetensors")
    loaded = read_checkpoint(path)
    assert loaded.meta["loop"] == {"epoch": 2} and loaded.meta["format"] == 1
    assert set(loaded.group("model")) == {"w", "b"} and loaded.group("model")["b"].dtype == torch.bfloat16
    assert [p.name for p in path.parent.iterdir()] == ["checkpoint.safetensors"]


def test_rewriting_replaces_the_previous_checkpoint_atomically(tmp_path):
    path = small_checkpoint(tmp_path / "checkpoint.safetensors")
    write_checkpoint(path, {"model/w": torch.ones(2)}, {"config": {}, "loop": {"epoch": 3}})
    assert read_checkpoint(path).meta["loop"]["epoch"] == 3


@pytest.mark.parametrize("damage", ["truncate", "flip_byte", "garbage"])
def test_a_damaged_checkpoint_is_refused_clearly(tmp_path, damage):
    path = small_checkpoint(tmp_path / "checkpoint.safetensors")
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "flip_byte":
        data[-3] ^= 0xFF  # inside the last tensor's bytes: only the checksum notices
    else:
        data = bytearray(b"not a checkpoint at all")
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="damaged") as info:
        read_checkpoint(path)
    assert "without --resume" in str(info.value)


def test_a_plain_safetensors_file_is_not_a_checkpoint(tmp_path):
    save_file({"w": torch.zeros(2)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match="not a damoxing checkpoint"):
        read_checkpoint(tmp_path / "model.safetensors")


def test_identity_checks_name_what_differs(tmp_path):
    checkpoint = read_checkpoint(small_checkpoint(tmp_path / "c.safetensors"))
    check_identity(checkpoint, {"a": 1, "train": {"lr": 0.1}}, "abc", 1)
    with pytest.raises(CheckpointError, match=r"train\.lr: 0\.1 in the checkpoint, 0\.2 now"):
        check_identity(checkpoint, {"a": 1, "train": {"lr": 0.2}}, "abc", 1)
    with pytest.raises(CheckpointError, match="data changed"):
        check_identity(checkpoint, {"a": 1, "train": {"lr": 0.1}}, "xyz", 1)
    with pytest.raises(CheckpointError, match="--nproc 1"):
        check_identity(checkpoint, {"a": 1, "train": {"lr": 0.1}}, "abc", 2)


def test_optimizer_state_flattens_and_comes_back_with_tuples():
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    state = get_optimizer_state_dict(model, optimizer)
    tensors, saved = optimizer_to_flat(state)
    assert set(tensors) == {f"optimizer/{p}/{k}" for p in ("weight", "bias") for k in ("step", "exp_avg", "exp_avg_sq")}
    back = optimizer_from_flat({k.removeprefix("optimizer/"): v for k, v in tensors.items()}, json.loads(json.dumps(saved)), optimizer.param_groups)
    assert back["param_groups"][0]["betas"] == (0.9, 0.999)
    assert torch.equal(back["state"]["weight"]["exp_avg"], optimizer.state[model.weight]["exp_avg"])


# ---------------------------------------------------------------------------------------------
# Through the CLI


def mlp_config(tmp_path: Path, **train) -> Path:
    return write_yaml(tmp_path / "cfg.yaml", {
        "name": "ck", "data": {"source": "builtin:digits"}, "model": {"type": "mlp", "hidden": [32], "dropout": 0.2},
        "train": {"epochs": 3, "batch_size": 64, "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9}, **train},
    })


def test_checkpointed_run_leaves_a_clean_run_folder(cli, tmp_path):
    result = cli("train", mlp_config(tmp_path, checkpoint_every=1), "--out", tmp_path / "run")
    assert result.code == 0, result.err
    assert "--resume" in result.err and not (tmp_path / "run" / "checkpoints").exists()
    assert not (tmp_path / ".run.partial").exists()


def test_resume_refuses_complete_runs_missing_checkpoints_and_other_configs(cli, tmp_path):
    cfg = mlp_config(tmp_path, checkpoint_every=1)
    assert cli("train", cfg, "--out", tmp_path / "done").code == 0
    result = cli("train", "--resume", tmp_path / "done")
    assert result.code == 2 and "complete run" in result.err
    result = cli("train", "--resume", tmp_path / "never")
    assert result.code == 2 and "no checkpoint to resume" in result.err and "checkpoint_every" in result.err
    result = cli("train")
    assert result.code == 2 and "--resume" in result.err
    result = cli("train", "--resume", tmp_path / "never", "--out", tmp_path / "elsewhere")
    assert result.code == 2 and "--out does not go with --resume" in result.err

    # a partial run with a checkpoint: resuming with a changed config is refused
    partial = tmp_path / ".half.partial"
    (partial / "checkpoints").mkdir(parents=True)
    import shutil

    shutil.copy(tmp_path / "cfg.yaml", partial / "config.yaml")
    write_checkpoint(partial / "checkpoints" / "checkpoint.safetensors", {"model/w": torch.zeros(1)},
                     {"config": {"name": "other"}, "data_fingerprint": "x", "world": 1, "loop": {"epoch": 2, "step": 5}})
    result = cli("train", cfg, "--resume", tmp_path / "half")
    assert result.code == 2 and "different config" in result.err and "Traceback" not in result.err


def _process_tree(pid: int) -> list[int]:
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    children.append(int(entry.name))
            except (OSError, ValueError, IndexError):
                continue
    return [pid] + [p for c in children for p in _process_tree(c)]


def kill_after_first_checkpoint(command: list[str], cwd: Path, checkpoint: Path, timeout: float = 240) -> None:
    """Start `damoxing ...`, SIGKILL it (and its workers) as soon as a checkpoint exists."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen([sys.executable, "-m", "damoxing", *command], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while not checkpoint.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    for pid in _process_tree(proc.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()
    assert checkpoint.exists(), "the run ended before writing a checkpoint"


def damoxing(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run([sys.executable, "-m", "damoxing", *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_sigkill_then_resume_ends_bitwise_equal_to_an_uninterrupted_run(tmp_path):
    """A real process, killed with SIGKILL mid-epoch right after a checkpoint, resumed from the CLI."""
    cfg = mlp_config(tmp_path, epochs=5, optimizer={"name": "adamw", "lr": 0.01, "weight_decay": 0.05},
                     schedule={"name": "cosine", "warmup_epochs": 1})
    reference = damoxing("train", cfg, "--out", "reference", "--quiet", cwd=tmp_path)
    assert reference.returncode == 0, reference.stderr
    kill_after_first_checkpoint(["train", str(cfg), "--out", "run", "--quiet", "--set", "train.checkpoint_every=15 steps"],
                                tmp_path, tmp_path / ".run.partial" / "checkpoints" / "checkpoint.safetensors")
    assert not any((tmp_path / "run").iterdir())  # killed before it completed: only the empty reservation
    resumed = damoxing("train", "--resume", "run", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.strip().splitlines()[-1] == "run"
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["training"]["resumed_from"]["step"] >= 15 and manifest["training"]["epochs_run"] == 5
    a, b = load_file(tmp_path / "reference" / "model.safetensors"), load_file(tmp_path / "run" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["test"] == json.loads((tmp_path / "reference" / "metrics.json").read_text())["test"]
