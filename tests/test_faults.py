"""Faults replayed end to end (issue 11): concurrent runs, damaged files, unwritable destinations,
Ctrl-C and usage mistakes all end cleanly, and nothing that was saved is lost.

Tiny runs (iris, a tiny MLP, 1-2 epochs); concurrency and Ctrl-C use real subprocesses.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
TINY = {"name": "tiny", "data": {"source": "builtin:iris"}, "model": {"type": "mlp", "size": "tiny"},
        "train": {"epochs": 1}}


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def _cli(args, cwd, timeout=240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "damoxing", *map(str, args)], cwd=cwd, env=_env(),
                          capture_output=True, text=True, timeout=timeout)


def _config(tmp_path: Path, **train) -> Path:
    cfg = json.loads(json.dumps(TINY))
    cfg["train"].update(train)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _digest(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    from damoxing.verbs.train import train

    folder = tmp_path_factory.mktemp("finished")
    return train(dict(TINY), out=folder / "run", quiet=True).path


def _clean(result: subprocess.CompletedProcess, code: int) -> None:
    assert result.returncode == code, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr


# -- concurrent trainings -----------------------------------------------------------------------

@pytest.mark.slow
def test_eight_concurrent_trainings_of_one_config_all_complete_into_distinct_folders(tmp_path):
    from damoxing.runs.folder import is_run

    config = _config(tmp_path)
    fast = ["--set", "cost.enabled=false", "--set", "tracking.report=false"]  # eight imports of torch are the cost here
    procs = [subprocess.Popen([sys.executable, "-m", "damoxing", "train", str(config), "--quiet", *fast], cwd=tmp_path,
                              env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(8)]
    outputs = [p.communicate(timeout=400) for p in procs]
    assert [p.returncode for p in procs] == [0] * 8, [o[1][-400:] for o in outputs]
    paths = [out.strip().splitlines()[-1] for out, _ in outputs]
    assert len(set(paths)) == 8  # distinct names, all within the same second or two
    for path in paths:
        assert is_run(tmp_path / path), path
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == sorted(Path(p).name for p in paths)  # no leftovers


def test_a_second_training_into_a_finished_run_is_refused_and_the_run_is_untouched(finished_run, tmp_path):
    before = _digest(finished_run)
    result = _cli(["train", _config(tmp_path), "--out", finished_run], tmp_path)
    _clean(result, 2)
    assert "already holds a run" in result.stderr
    assert _digest(finished_run) == before


def test_a_reserved_name_is_never_reused(tmp_path, monkeypatch):
    from damoxing.runs.folder import new_run_path

    monkeypatch.chdir(tmp_path)
    paths = {new_run_path(None, "same") for _ in range(5)}
    assert len(paths) == 5 and all(p.is_dir() for p in paths)


# -- damaged run files ---------------------------------------------------------------------------

def _flip(file: Path, at: float = 0.5) -> None:
    data = bytearray(file.read_bytes())
    i = int(len(data) * at)
    data[i] ^= 0x01
    file.write_bytes(bytes(data))


@pytest.mark.parametrize("name", ["model.safetensors", "preprocessing.json", "config.yaml", "metrics.json"])
def test_a_flipped_byte_in_an_artifact_is_refused_naming_the_file(finished_run, tmp_path, name):
    import shutil

    from damoxing.core.errors import RunFolderError
    from damoxing.inference.predictor import Predictor
    from damoxing.runs.folder import no_verify

    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    _flip(run / name, 0.9 if name == "model.safetensors" else 0.5)
    with pytest.raises(RunFolderError, match=name.replace(".", r"\.")):
        Predictor(run)
    if name not in ("preprocessing.json", "config.yaml"):  # a flip there may leave unreadable text
        with no_verify():
            Predictor(run)  # knowingly: loads as it is


def test_the_cli_names_the_damaged_file_and_no_verify_overrides(finished_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    _flip(run / "model.safetensors", 0.95)
    result = _cli(["evaluate", run], tmp_path)
    _clean(result, 2)
    assert "model.safetensors" in result.stderr and "--no-verify" in result.stderr
    _clean(_cli(["--no-verify", "evaluate", run], tmp_path), 0)


@pytest.mark.parametrize("damage", ["truncated weights", "empty preprocessing"])
def test_damaged_files_without_checksums_are_clear_errors(finished_run, tmp_path, damage):
    import shutil

    from damoxing.core.errors import RunFolderError
    from damoxing.inference.predictor import Predictor
    from damoxing.runs.folder import no_verify

    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    if damage == "truncated weights":
        data = (run / "model.safetensors").read_bytes()
        (run / "model.safetensors").write_bytes(data[: len(data) // 2])
    else:
        (run / "preprocessing.json").write_text("{}")
    with no_verify(), pytest.raises(RunFolderError):
        Predictor(run)


def test_a_run_written_before_checksums_still_loads(finished_run, tmp_path):
    import shutil

    from damoxing.inference.predictor import Predictor

    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["files"]  # this run has them; drop them as an old run would
    del manifest["files"]
    (run / "manifest.json").write_text(json.dumps(manifest))
    Predictor(run)


# -- unwritable destinations ---------------------------------------------------------------------

def _unwritable_folder(tmp_path: Path) -> Path:
    """A folder this process cannot write into: a read-only one, or /sys when running as root."""
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        if not Path("/sys").is_dir() or os.access("/sys", os.W_OK) and _can_mkdir(Path("/sys")):
            pytest.skip("root can write everywhere here")
        return Path("/sys")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    return locked


def _can_mkdir(folder: Path) -> bool:
    try:
        (folder / "damoxing-probe").mkdir()
    except OSError:
        return False
    (folder / "damoxing-probe").rmdir()
    return True


def test_a_read_only_destination_fails_in_seconds_before_training(tmp_path):
    locked = _unwritable_folder(tmp_path)
    try:
        started = time.perf_counter()
        result = _cli(["train", _config(tmp_path, epochs=200), "--out", locked / "damoxing-run"], tmp_path)
        seconds = time.perf_counter() - started
    finally:
        if locked != Path("/sys"):
            locked.chmod(0o700)
    _clean(result, 2)
    assert "Cannot write" in result.stderr and "Nothing was trained" in result.stderr
    assert seconds < 60  # 200 epochs were not run first
    assert not (locked / "damoxing-run").exists()


def test_a_file_as_out_is_refused(tmp_path):
    (tmp_path / "afile").write_text("x")
    result = _cli(["train", _config(tmp_path), "--out", tmp_path / "afile"], tmp_path)
    _clean(result, 2)
    assert (tmp_path / "afile").read_text() == "x"


def test_a_failed_write_keeps_the_partial_run_and_says_where(tmp_path):
    from damoxing.core.errors import RunFolderError
    from damoxing.runs.folder import RunWriter

    writer = RunWriter(tmp_path / "run")
    writer.write_text("a.txt", "kept")
    (writer.tmp / "b.txt").mkdir()  # writing b.txt now fails as a full disk would
    with pytest.raises(RunFolderError, match="kept in") as info:
        writer.write_text("b.txt", "lost")
    assert str(writer.tmp) in info.value.message
    assert (writer.tmp / "a.txt").read_text() == "kept"


# -- Ctrl-C ----------------------------------------------------------------------------------------

def _interrupt_when(proc: subprocess.Popen, ready, timeout=180) -> tuple[str, str]:
    deadline = time.monotonic() + timeout
    while not ready() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    return proc.communicate(timeout=120)


def _start(tmp_path, config, *args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "damoxing", "train", str(config), *map(str, args)], cwd=tmp_path,
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_default_sigint)


def _default_sigint() -> None:
    """Ctrl-C reaches the run even when the tests were started in the background (which ignores SIGINT)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow
def test_ctrl_c_at_start_up_exits_130_with_a_message(tmp_path):
    proc = _start(tmp_path, _config(tmp_path, epochs=100000), "--out", tmp_path / "run")
    _, err = _interrupt_when(proc, lambda: (tmp_path / "run").exists())  # the folder is reserved: start-up
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err


@pytest.mark.slow
def test_ctrl_c_mid_run_with_a_checkpoint_keeps_it_and_resume_finishes(tmp_path):
    from damoxing.runs.folder import RunWriter, is_run

    run = tmp_path / "run"
    checkpoint = RunWriter.partial_path(run) / "checkpoints" / "checkpoint.safetensors"
    proc = _start(tmp_path, _config(tmp_path, epochs=100000, checkpoint_every="1 epoch"), "--out", run, "--quiet")
    _, err = _interrupt_when(proc, checkpoint.exists)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "--resume" in err
    assert checkpoint.exists() and not is_run(run)
    result = _cli(["train", "--resume", run, "--set", "train.epochs=2", "--quiet"], tmp_path)
    if result.returncode == 0:
        assert is_run(run)
    else:  # the resumed run's config fixes epochs; --set is refused with a clear message
        _clean(result, 2)


@pytest.mark.slow
def test_ctrl_c_mid_run_without_a_checkpoint_saves_what_was_trained(tmp_path):
    from damoxing.runs.folder import is_run

    run = tmp_path / "run"
    log = tmp_path / "history"
    proc = _start(tmp_path, _config(tmp_path, epochs=100000), "--out", run)
    time.sleep(0.5)
    _, err = _interrupt_when(proc, lambda: "epoch 2" in _peek(proc, log) or proc.poll() is not None)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err
    assert is_run(run)


def _peek(proc, log) -> str:
    """What the run has printed so far (stderr is read without blocking)."""
    import fcntl

    fd = proc.stderr.fileno()
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)
    try:
        chunk = os.read(fd, 65536).decode(errors="replace")
    except BlockingIOError:
        chunk = ""
    with open(log, "a") as f:
        f.write(chunk)
    return log.read_text()


# -- usage mistakes ------------------------------------------------------------------------------

@pytest.mark.parametrize("args", [
    ["train"], ["train", "x.yaml", "--bogus"], ["generate", "r", "--max-new-tokens", "abc"],
    ["train", "x.yaml", "--nproc", "0"], ["evaluate"],
], ids=lambda a: " ".join(a))
def test_usage_mistakes_exit_2_in_one_paragraph(tmp_path, args):
    result = _cli(args, tmp_path, timeout=60)
    _clean(result, 2)
    assert result.stderr.strip()


def test_a_glob_matching_two_runs_is_one_paragraph(finished_run, tmp_path):
    import shutil

    shutil.copytree(finished_run, tmp_path / "runs" / "a-1")
    shutil.copytree(finished_run, tmp_path / "runs" / "a-2")
    result = _cli(["evaluate", "runs/a-*"], tmp_path)
    _clean(result, 2)


# -- unfinished runs: listed, recovered ----------------------------------------------------------

def test_runs_lists_unfinished_and_damaged_runs_and_recover_finishes_a_complete_one(finished_run, tmp_path):
    import shutil

    runs = tmp_path / "runs"
    shutil.copytree(finished_run, runs / ".done.partial")  # complete, but its commit failed
    (runs / "done").mkdir()  # the empty reservation
    shutil.copytree(finished_run, runs / ".half.partial")
    (runs / ".half.partial" / "model.safetensors").unlink()  # stopped while writing
    shutil.copytree(finished_run, runs / "broken")
    (runs / "broken" / "manifest.json").write_text("{not json")
    result = _cli(["runs", runs], tmp_path)
    _clean(result, 0)
    assert ".done.partial" in result.stderr and ".half.partial" in result.stderr
    assert "damaged" in result.stderr and "broken" in result.stderr

    half = _cli(["recover", runs / ".half.partial"], tmp_path)
    _clean(half, 2)
    assert "model file" in half.stderr and (runs / ".half.partial").is_dir()
    done = _cli(["recover", runs / ".done.partial"], tmp_path)
    _clean(done, 0)
    assert _digest(runs / "done") == _digest(finished_run) and not (runs / ".done.partial").exists()


def test_every_verbs_out_is_probed_before_work(finished_run, tmp_path):
    (tmp_path / "afile").write_text("x")
    for args in (["predict", finished_run, "data.csv"], ["report", finished_run], ["compare", finished_run, finished_run]):
        result = _cli([*args, "--out", tmp_path / "afile" / "sub" / "out.html"], tmp_path)
        _clean(result, 2)
        assert "Cannot write" in result.stderr, result.stderr


def test_predict_on_an_empty_csv_is_one_paragraph(finished_run, tmp_path):
    (tmp_path / "empty.csv").write_text("")
    result = _cli(["predict", finished_run, tmp_path / "empty.csv"], tmp_path)
    _clean(result, 2)
    assert "empty" in result.stderr


def test_embed_refuses_an_empty_text_file_and_names_a_missing_run_folder(tmp_path):
    (tmp_path / "runs").mkdir()
    (tmp_path / "e.txt").write_text("\n  \n")
    empty = _cli(["embed", "minilm", tmp_path / "e.txt", "--out", tmp_path / "x.npy"], tmp_path)
    _clean(empty, 2)
    assert "no text" in empty.stderr and not (tmp_path / "x.npy").exists()
    missing = _cli(["embed", "runs/nope", tmp_path / "e.txt", "--out", tmp_path / "x.npy"], tmp_path)
    _clean(missing, 2)
    assert "does not exist" in missing.stderr and "download" not in missing.stderr


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory) -> Path:
    from damoxing.verbs.train import train

    folder = tmp_path_factory.mktemp("lm")
    (folder / "c.txt").write_text("".join(f"{i} plus {i} is {2 * i}.\n" for i in range(200)))
    config = {"name": "lm", "data": {"source": str(folder / "c.txt"), "block_size": 16, "tokenizer": {"vocab_size": 100}},
              "model": {"type": "gpt", "size": "tiny"}, "train": {"epochs": 1, "batch_size": 16}}
    return train(config, out=folder / "run", quiet=True).path


@pytest.mark.parametrize("options, pattern", [
    ({"out": "x.png"}, "--out is for vae and gan runs"), ({"n": 3}, "--n is for vae and gan runs"),
    ({"temperature": float("nan")}, "--temperature is nan"), ({"top_p": float("nan")}, "--top-p is nan"),
])
def test_generate_refuses_options_a_language_model_would_ignore_and_nan(tiny_lm, options, pattern):
    from damoxing.core.errors import UserError
    from damoxing.verbs.generate import generate

    with pytest.raises(UserError, match=pattern.replace("-", r"\-")):
        generate(tiny_lm, prompt="1 plus", max_new_tokens=3, **options)
