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


# ------------------------------------------------------------------ nothing saved is a pickle

# how protocol 0/1 pickles of dicts, lists and classes start; any other start is disassembled (_walks_as_pickle)
PICKLE_0_1_STARTS = (b"(dp0", b"(lp0", b"ccopy_reg\n", b"c__builtin__\n", b"}q", b"]q")


def pickle_kind(path: Path) -> str | None:
    """What makes a file a pickle, read from its bytes without unpickling anything, else None:
    'pickle protocol N' (0x80 N, N = 2..5), 'pickle protocol 0/1' (a text-protocol opcode at the
    start, e.g. `(dp0`, `ccopy_reg`, `}q`, `]q`), 'torch zip (...data.pkl)' (torch.save's format), or
    'object array (...)' (an .npy / an .npz member whose dtype holds Python objects, stored pickled)."""
    import zipfile

    head = path.read_bytes()[:16]
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return f"pickle protocol {head[1]}"
    if head.startswith(PICKLE_0_1_STARTS) or _walks_as_pickle(path, head):
        return "pickle protocol 0/1"
    if head.startswith(b"\x93NUMPY"):
        with path.open("rb") as f:
            return "object array" if _npy_holds_objects(f) else None
    if head.startswith(b"PK\x03\x04"):
        with zipfile.ZipFile(path) as z:
            for name in z.namelist():
                if name.endswith(".pkl"):
                    return f"torch zip ({name})"
                if name.endswith(".npy"):
                    with z.open(name) as f:
                        if _npy_holds_objects(f):
                            return f"object array ({name})"
    return None


def _walks_as_pickle(path: Path, head: bytes) -> bool:
    """Whether a file that starts with a pickle opcode is one whole pickle: pickletools disassembles
    it (nothing is executed) from its first opcode to a STOP on its last byte."""
    import pickletools

    if not head or chr(head[0]) not in {op.code for op in pickletools.opcodes}:
        return False
    data, last = path.read_bytes(), None
    try:
        for op, _, pos in pickletools.genops(data):
            last = (op.name, pos)
    except Exception:  # noqa: BLE001 - anything that does not disassemble is not a pickle
        return False
    return last == ("STOP", len(data) - 1)


def _npy_holds_objects(f) -> bool:
    """Whether an .npy stream's header declares a dtype with Python objects (read from the header alone)."""
    from numpy.lib import format as npy

    version = npy.read_magic(f)
    _, _, dtype = npy.read_array_header_1_0(f) if version == (1, 0) else npy.read_array_header_2_0(f)
    return dtype.hasobject


def pickled_files(folder: Path) -> dict[str, str]:
    """{path relative to folder: pickle_kind} for every file under folder (subfolders too) that is a pickle."""
    found = {}
    for path in sorted(Path(folder).rglob("*")):
        if path.is_file() and (kind := pickle_kind(path)) is not None:
            found[str(path.relative_to(folder))] = kind
    return found


def write_yaml(path: Path, data: dict) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def fast_train(**extra) -> dict:
    """Train settings small enough for tests."""
    return {"epochs": 3, "batch_size": 64, "optimizer": {"name": "adam", "lr": 0.01}, **extra}
