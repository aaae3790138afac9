"""The run folder: everything one training run leaves behind, and nothing that is a pickle.

    config.yaml          resolved config (every default filled)
    model.safetensors    weights (or model.onnx: a model saved as an ONNX graph, e.g. a scikit-learn
                         reference of `damoxing ladder`; manifest.json's model.format says which)
    preprocessing.json   fitted preprocessing, label encoding and the data schema
    metrics.json         {"val": {...}, "test": {...}, "baseline": {...}, "test_ci": {...}}
    history.jsonl        one line per epoch
    manifest.json        versions, data fingerprint, seed, timings, costs
    splits.npz           row indices of train/val/test in the source (plain int arrays)

A run is a transaction. Its final name is reserved at the start (an empty folder made with an
atomic mkdir, so any number of concurrent trainings get distinct folders); it is written into a
hidden `.NAME.partial` folder and renamed over the empty reservation at the end, so a crash never
leaves a half-written run that looks complete, and the commit never deletes anything. manifest.json
lists the sha256 of every file written before it (`files`); loading a run checks them.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from damoxing.core.errors import RunFolderError

REQUIRED = ("config.yaml", "preprocessing.json", "manifest.json")
MODEL_FILES = {"safetensors": "model.safetensors", "onnx": "model.onnx"}  # a run holds one: its model.format


def new_run_path(out: str | Path | None, name: str) -> Path:
    """Reserve the run's final folder and return it: exactly `out` when given (refused when it is
    not empty), else runs/<name>-<YYYYmmdd-HHMMSS>[-k].

    The reservation is an empty folder made with an atomic mkdir, so concurrent trainings of one
    config always get distinct folders; making it also proves the destination writable before
    any work (a read-only or missing destination fails here, in seconds)."""
    if out is not None:
        out = Path(out)
        if out.exists():
            if not out.is_dir():
                raise RunFolderError(f"--out '{out}' is a file; give a new folder for the run.")
            if any(out.iterdir()):
                what = "a run" if is_run(out) else "files"
                raise RunFolderError(
                    f"--out '{out}' already holds {what}; --out is the run folder itself, so give a new or empty "
                    "folder (nothing there is overwritten).")
            probe_writable(out)
            return out
        _reserve(out)
        return out
    base = Path("runs")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for k in range(1, 10_000):
        path = base / (f"{name}-{stamp}" if k == 1 else f"{name}-{stamp}-{k}")
        if RunWriter.partial_path(path).exists():
            continue
        try:
            _reserve(path)
            return path
        except FileExistsError:
            continue
    raise RunFolderError(f"Could not reserve a run folder for '{name}' under {base}: 10,000 names are taken.")


def _reserve(path: Path) -> None:
    """mkdir the final folder (its parents too); FileExistsError when another run took it."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.mkdir()
    except FileExistsError:
        raise
    except OSError as e:
        raise RunFolderError(_unwritable(path, e)) from None


def release(path: Path) -> None:
    """Give back a reserved final folder that was never filled (a run that failed before its commit)."""
    with contextlib.suppress(OSError):
        Path(path).rmdir()  # only ever removes an empty folder


def probe_writable(folder: str | Path, what: str = "Nothing was trained") -> None:
    """Write and remove a small file in `folder` (made if missing): a clear error now instead of
    after the work, when the destination is read-only, full or not a folder."""
    folder = Path(folder)
    created = [p for p in [folder, *folder.parents] if not p.exists()]  # deepest first; removed again after the probe
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".damoxing-probe-{os.getpid()}"
        probe.write_bytes(b"0" * 4096)
        probe.unlink()
    except OSError as e:
        raise RunFolderError(_unwritable(folder, e, what)) from None
    finally:
        for made in created:  # a probe leaves nothing behind: a verb that fails later wrote nothing
            with contextlib.suppress(OSError):
                made.rmdir()


def probe_output(out: str | Path | None) -> None:
    """For a verb's `--out` (a file or a new folder): prove the folder it goes into writable before
    any work, so a read-only or full destination fails in seconds, not after the work."""
    if out is not None:
        probe_writable(Path(out).parent, what="Nothing was done")


def _unwritable(path: Path, error: OSError, what: str = "Nothing was trained") -> str:
    reason = {errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
              errno.ENOSPC: "the disk is full", errno.ENOTDIR: "a part of the path is a file"}.get(error.errno, str(error))
    return f"Cannot write to '{path}': {reason}. {what}; choose another --out (a writable folder)."


class RunWriter:
    """Writes a run into `<parent>/.<name>.partial`, then renames it to its final path.

    `fresh=False` keeps what an interrupted run left there (its checkpoint, for --resume).
    """

    def __init__(self, final_path: Path, fresh: bool = True):
        self.path = Path(final_path)
        self.tmp = self.partial_path(self.path)
        if fresh and self.tmp.exists():
            shutil.rmtree(self.tmp)
        self.tmp.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def partial_path(final_path: Path) -> Path:
        """Where a run is written until it is complete (and where its checkpoints live)."""
        final_path = Path(final_path)
        return final_path.parent / f".{final_path.name}.partial"

    def discard(self, name: str) -> None:
        """Remove a file or folder from the run being written (e.g. checkpoints once it is complete)."""
        target = self.tmp / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()

    def write_text(self, name: str, text: str) -> None:
        target = self.tmp / name
        part = target.with_name(target.name + ".writing")
        try:
            part.write_text(text)
            os.replace(part, target)  # a full disk leaves no truncated file that looks complete
        except OSError as e:
            raise self.failed(name, e) from None

    def write_json(self, name: str, data: Any) -> None:
        self.write_text(name, json.dumps(data, indent=2, default=_json_default) + "\n")

    def write_jsonl(self, name: str, rows: list[dict]) -> None:
        self.write_text(name, "".join(json.dumps(r, default=_json_default) + "\n" for r in rows))

    def write_manifest(self, manifest: dict) -> None:
        """manifest.json, with the sha256 of every file written so far (checked when the run is loaded)."""
        self.write_json("manifest.json", {**manifest, "files": file_checksums(self.tmp)})

    def file(self, name: str) -> Path:
        return self.tmp / name

    def failed(self, name: str, error: OSError) -> RunFolderError:
        """The error for a write that failed: where the partial run is, and that nothing was deleted."""
        return RunFolderError(
            f"Writing {name} into the run failed ({_unwritable(self.tmp / name, error).split(': ', 1)[1].split('. Nothing')[0]}). "
            f"What was written so far is kept in '{self.tmp}' (nothing was deleted); free space or fix permissions, "
            "then train again into a new folder.")

    def commit(self) -> Path:
        """Rename the written run over its empty reservation. A folder someone else filled meanwhile
        is never deleted: the run stays in its partial folder and the error says where."""
        try:
            os.replace(self.tmp, self.path)  # POSIX rename replaces an empty folder, never a full one
        except OSError as e:
            raise RunFolderError(
                f"Could not move the finished run from '{self.tmp}' to '{self.path}' ({e.strerror}); it is complete "
                f"in '{self.tmp}', and '{self.path}' was left as it was. Rename the folder by hand.") from None
        return self.path


def file_checksums(folder: str | Path) -> dict[str, str]:
    """{relative path: sha256} of every file under `folder` (checkpoints and reports excluded)."""
    folder = Path(folder)
    out = {}
    for file in sorted(folder.rglob("*")):
        rel = file.relative_to(folder).as_posix()
        if file.is_file() and not rel.startswith("checkpoints/") and rel not in ("manifest.json", "report.html"):
            out[rel] = _sha256(file)
    return out


def _sha256(file: Path) -> str:
    digest = hashlib.sha256()
    with open(file, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_VERIFY: contextvars.ContextVar[bool] = contextvars.ContextVar("damoxing_verify", default=True)


def set_verify(enabled: bool) -> None:
    """Whether loading a run checks its files' checksums (`damoxing --no-verify ...` turns it off, knowingly)."""
    _VERIFY.set(enabled)


@contextlib.contextmanager
def _verification(enabled: bool):
    token = _VERIFY.set(enabled)
    try:
        yield
    finally:
        _VERIFY.reset(token)


def no_verify():
    """Load runs without checking their checksums inside this block (the Python API's --no-verify)."""
    return _verification(False)


def verify_run(path: str | Path) -> None:
    """Check every file the manifest lists against its sha256; a RunFolderError naming the files
    that changed. Runs written before checksums existed (no `files` in the manifest) pass."""
    if not _VERIFY.get():
        return
    path = Path(path)
    expected = read_json(path / "manifest.json").get("files")
    if not expected:
        return
    bad = [name for name, digest in expected.items() if not (path / name).is_file() or _sha256(path / name) != digest]
    if bad:
        raise RunFolderError(
            f"The run '{path}' was changed or damaged after it was saved: {', '.join(bad)} "
            f"{'does' if len(bad) == 1 else 'do'} not match the checksum in its manifest.json. Train the run again, or "
            "pass --no-verify (damoxing --no-verify COMMAND ...) to use it as it is, knowingly.")


def _json_default(obj: Any):
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def is_run(path: str | Path) -> bool:
    path = Path(path)
    return path.is_dir() and all((path / f).exists() for f in REQUIRED) and model_format(path) is not None


def model_format(path: str | Path) -> str | None:
    """'safetensors' (torch weights) or 'onnx' (an ONNX graph), by the model file the run holds; None if neither."""
    return next((fmt for fmt, name in MODEL_FILES.items() if (Path(path) / name).exists()), None)


def check_run(path: str | Path) -> Path:
    """The path, if it is a run folder; else a RunFolderError saying what is missing."""
    path = Path(path)
    if not path.exists():
        raise RunFolderError(f"Run folder '{path}' does not exist. `damoxing runs` lists the runs under ./runs.")
    if not path.is_dir():
        raise RunFolderError(f"'{path}' is a file, not a run folder. Pass the folder that `damoxing train` printed.")
    missing = [f for f in REQUIRED if not (path / f).exists()]
    if model_format(path) is None:
        missing.append(" or ".join(MODEL_FILES.values()))
    if missing:
        raise RunFolderError(
            f"'{path}' is not a damoxing run: it lacks {', '.join(missing)}. "
            "Pass the folder that `damoxing train` printed (runs/<name>-<time>)."
        )
    return path


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise RunFolderError(f"'{path}' could not be read as JSON ({e}); the run folder may be damaged.") from None


def read_history(path: Path) -> list[dict]:
    file = Path(path) / "history.jsonl"
    if not file.exists():
        return []
    return [json.loads(line) for line in file.read_text().splitlines() if line.strip()]


def recover(partial: str | Path) -> Path:
    """Finish a run whose commit failed: move its complete `.NAME.partial` folder to NAME.

    Only a partial folder that is a whole run (every required file, and a manifest whose checksums
    match) is moved, and only onto a missing or empty NAME; anything else is a RunFolderError saying
    what is missing and what to do (a checkpointed run is continued with `train --resume`)."""
    partial = Path(partial)
    if not partial.name.startswith("."):  # the run's final name given: look for its partial folder
        partial = RunWriter.partial_path(partial)
    if not (partial.name.endswith(".partial") and partial.is_dir()):
        raise RunFolderError(f"'{partial}' is not an unfinished run folder (.NAME.partial); `damoxing runs` lists those it finds.")
    final = partial.parent / partial.name[1 : -len(".partial")]
    if not is_run(partial):
        missing = [f for f in REQUIRED if not (partial / f).exists()] + ([] if model_format(partial) else ["the model file"])
        if (partial / "checkpoints").is_dir():
            raise RunFolderError(f"'{partial}' stopped during training and lacks {', '.join(missing)}; continue it with "
                                 f"`damoxing train --resume {final}`.")
        raise RunFolderError(f"'{partial}' lacks {', '.join(missing)}: its run stopped before all of it was written, so it "
                             "cannot be finished from what is there. Train the config again (the folder is left as it is).")
    with _verification(True):
        verify_run(partial)
    if final.exists() and (not final.is_dir() or any(final.iterdir())):
        raise RunFolderError(f"'{final}' already exists and is not empty; the complete run stays in '{partial}'. "
                             "Move it to a new name by hand.")
    try:
        os.replace(partial, final)
    except OSError as e:
        raise RunFolderError(_unwritable(final, e).replace("Nothing was trained; choose another --out (a writable folder).",
                                                          f"The run stays complete in '{partial}'.")) from None
    return final


def resume_paths(run: str | Path) -> tuple[Path, Path]:
    """(the run's final path, its checkpoint file) for `--resume RUN`, where RUN is the run folder
    printed when training started (or its hidden `.NAME.partial` folder)."""
    from damoxing.training.checkpoint import FILE_NAME, CheckpointError

    run = Path(run)
    if run.name.startswith(".") and run.name.endswith(".partial"):
        final = run.parent / run.name[1 : -len(".partial")]
    else:
        final = run
    if is_run(final):
        raise CheckpointError(f"'{final}' is a complete run; there is nothing to resume. Start a new run to train further.")
    checkpoint = RunWriter.partial_path(final) / "checkpoints" / FILE_NAME
    if not checkpoint.exists():
        raise CheckpointError(
            f"There is no checkpoint to resume for '{final}' (looked for '{checkpoint}'). A run can be resumed when it "
            "was started with train.checkpoint_every and stopped after its first checkpoint; pass the run folder it "
            "printed when it started."
        )
    return final, checkpoint
