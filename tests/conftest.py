"""Shared fixtures: run the real CLI in-process, build tiny data files."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    @property
    def last_line(self) -> str:
        lines = [line for line in self.out.splitlines() if line.strip()]
        return lines[-1] if lines else ""


@pytest.fixture
def cli(capsys):
    """Run `damoxing ARGS...` in this process; returns exit code, stdout, stderr."""
    from damoxing.cli import main

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        code = 0
        try:
            main([str(a) for a in args])
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """One torch thread for the whole suite: tiny models train as fast on one, and many times faster
    when the machine's few cores are shared. Processes the tests start (the CLI, torchrun workers)
    inherit it through OMP_NUM_THREADS. A test that needs more threads says so: `torch_threads(n)`."""
    import torch

    before, env = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"
    yield
    torch.set_num_threads(before)
    if env is None:
        os.environ.pop("OMP_NUM_THREADS", None)
    else:
        os.environ["OMP_NUM_THREADS"] = env


@pytest.fixture
def torch_threads():
    """`torch_threads(n)`: this test runs torch on n threads; back to one afterwards."""
    import torch

    yield torch.set_num_threads
    torch.set_num_threads(1)


def run_subprocess(*args: str, cwd: Path | None = None, timeout: int = 300) -> CliResult:
    """The installed console script in a fresh process (for start-up time and traceback checks)."""
    exe = Path(sys.executable).parent / "damoxing"
    proc = subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=timeout)
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def write_yaml(path: Path, data: dict) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def fast_train(**extra) -> dict:
    """Train settings small enough for tests."""
    return {"epochs": 3, "batch_size": 64, "optimizer": {"name": "adam", "lr": 0.01}, **extra}
