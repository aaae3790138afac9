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


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models train as fast on one torch thread, and many times faster when the machine's cores are
    busy; a module opts in with `pytestmark = pytest.mark.usefixtures("one_torch_thread")`."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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
