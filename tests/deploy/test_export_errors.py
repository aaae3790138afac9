"""`damoxing export` refuses what it cannot do, in one paragraph, and writes nothing then: not a run, an
unknown format, an --out that exists, a damaged run, a source that is gone, an export that fails its
parity check; and a .pt2 archive that carries a pickle or foreign calls is refused before it is loaded."""

from __future__ import annotations

import io
import json
import pickle
import shutil
import zipfile
from pathlib import Path

import pytest
import torch

from damoxing.deploy.parity import check_parity, parity_inputs

TRAIN = {"epochs": 1, "batch_size": 32, "optimizer": {"name": "adam", "lr": 0.01}}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A tiny mlp on iris and a tiny transformer on text, one epoch each."""
    from hf_fixtures import write_topics_csv

    from damoxing.api import train

    folder = tmp_path_factory.mktemp("export-error-runs")
    topics = write_topics_csv(folder / "topics.csv", n=80)
    settings = {"train": TRAIN, "evaluate": {"bootstrap": 0}, "tracking": {"report": False}}
    return {
        "mlp": train({"name": "mlp", "data": {"source": "builtin:iris"}, "model": {"type": "mlp", "size": "tiny"}, **settings},
                     out=folder / "mlp", quiet=True).path,
        "transformer": train({"name": "transformer", "data": {"source": str(topics), "target": "label"},
                              "model": {"type": "transformer", "size": "tiny"}, **settings}, out=folder / "transformer", quiet=True).path,
    }


def everything(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------ bad input: exit 2, nothing written


BAD_INPUT = {
    "not a run": (lambda run, tmp: [tmp / "plain", "--out", tmp / "e"], "not a damoxing run"),
    "missing run": (lambda run, tmp: [tmp / "nowhere", "--out", tmp / "e"], "does not exist"),
    "unknown format": (lambda run, tmp: [run, "--format", "tflite", "--out", tmp / "e"], "'onnx', 'torch'"),
    "out is a file": (lambda run, tmp: [run, "--out", tmp / "taken.onnx"], "already exist"),
    "out is a folder with files": (lambda run, tmp: [run, "--out", tmp / "full"], "not an empty folder"),
    "a file beside out exists": (lambda run, tmp: [run, "--out", tmp / "full" / "model.onnx"], "README.md"),
    "out suffix of the other format": (lambda run, tmp: [run, "--format", "torch", "--out", tmp / "e" / "m.onnx"], "ends in .onnx"),
    "opset too old": (lambda run, tmp: [run, "--opset", "9", "--out", tmp / "e"], "opset 18"),
    "opset for torch": (lambda run, tmp: [run, "--format", "torch", "--opset", "20", "--out", tmp / "e"], "--format onnx only"),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_exits_2_and_writes_nothing(case, runs, cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default --out (runs/export-...) would land here
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "notes.txt").write_text("not a run")
    (tmp_path / "taken.onnx").write_bytes(b"someone's model")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "README.md").write_text("someone's readme")
    args, words = BAD_INPUT[case]
    before, run_before = everything(tmp_path), everything(runs["mlp"])
    result = cli("export", *args(runs["mlp"], tmp_path))
    assert result.code == 2, (result.code, result.err)
    assert words in result.err and "Traceback" not in result.err and result.err.count("\n") == 1, result.err
    assert result.out == ""
    assert everything(tmp_path) == before and everything(runs["mlp"]) == run_before
    assert not (tmp_path / "e").exists() and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("damage", ["truncated weights", "truncated preprocessing", "no split indices"])
def test_a_damaged_run_is_refused(damage, runs, cli, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(runs["mlp"], run)
    file = {"truncated weights": "model.safetensors", "truncated preprocessing": "preprocessing.json", "no split indices": "splits.npz"}[damage]
    if damage == "no split indices":
        (run / file).unlink()
    else:
        (run / file).write_bytes((run / file).read_bytes()[:40])
    result = cli("export", run, "--out", tmp_path / "e")
    assert result.code == 2 and file in result.err and "Traceback" not in result.err, result.err
    assert not (tmp_path / "e").exists()


def test_a_source_that_is_gone_is_a_clear_error(runs, cli, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(runs["transformer"], run)
    source = Path(json.loads((run / "manifest.json").read_text())["data"]["source"])
    moved = source.with_suffix(".moved")
    source.rename(moved)
    try:
        result = cli("export", run, "--out", tmp_path / "e")
    finally:
        moved.rename(source)
    assert result.code == 2 and source.name in result.err and "Traceback" not in result.err, result.err
    assert not (tmp_path / "e").exists()


# ------------------------------------------------------------------------------ a failed check is an error


def test_an_export_that_fails_its_parity_check_is_an_error_and_writes_nothing(runs, cli, tmp_path):
    """opset 23 writes an Attention op that onnxruntime 1.32 cannot run with the transformer's padding mask."""
    run_before = everything(runs["transformer"])
    result = cli("export", runs["transformer"], "--opset", "23", "--out", tmp_path / "out" / "model.onnx")
    assert result.code == 1, result.err
    assert "parity check FAILED" in result.err and "--opset" in result.err and "Traceback" not in result.err
    assert not (tmp_path / "out").exists() and everything(runs["transformer"]) == run_before
    assert not list(tmp_path.glob(".*"))  # no staging folder left behind


def test_check_parity_fails_on_a_difference_and_on_a_candidate_that_cannot_run():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3).eval()
    rows = torch.randn(10, 4)
    names = {"reference_name": "torch", "candidate_name": "copy", "inputs_name": "10 rows"}
    same = check_parity(model, model, parity_inputs(rows, []), True, **names)
    assert same.passed and same.max_abs_diff == 0 and [c.shape[0] for c in same.checks] == [1, 3, 10]
    shifted = check_parity(model, lambda x: model(x) + 1e-3, parity_inputs(rows, []), True, **names)
    assert not shifted.passed and shifted.max_abs_diff == pytest.approx(1e-3, rel=1e-3) and "FAILED" in shifted.summary()
    flipped = check_parity(model, lambda x: -model(x), parity_inputs(rows, []), True, tolerance=10.0, **names)
    assert not flipped.passed and flipped.agreement < 1.0  # within the tolerance, but other predictions

    def broken(x):
        raise RuntimeError("no kernel for this shape")

    failed = check_parity(model, broken, parity_inputs(rows, []), True, **names)
    assert not failed.passed and "no kernel" in failed.error


def test_parity_inputs_cover_batch_1_3_the_whole_split_and_shorter_lengths():
    rows = torch.zeros(7, 10, dtype=torch.long)
    shapes = [tuple(x.shape) for x in parity_inputs(rows, [1])]
    assert shapes == [(1, 10), (3, 10), (7, 10), (3, 5), (3, 1)]


# ------------------------------------------------------------------------------ the output folder and the API


def test_the_default_folder_the_api_and_files_beside_an_existing_one(runs, tmp_path, monkeypatch):
    import damoxing

    monkeypatch.chdir(tmp_path)
    report = damoxing.export(runs["mlp"])
    folder = Path(report.file).parent
    assert folder.parent == Path("runs") and folder.name.startswith("export-mlp-") and Path(report.file).name == "model.onnx"
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "export.json", "model.onnx", "preprocessing.json"]
    assert json.loads((folder / "export.json").read_text())["parity"]["passed"] is True

    (tmp_path / "deploy").mkdir()
    (tmp_path / "deploy" / "other.txt").write_text("kept")
    report = damoxing.export(runs["mlp"], out=tmp_path / "deploy" / "iris.onnx")
    assert sorted(p.name for p in (tmp_path / "deploy").iterdir()) == ["README.md", "export.json", "iris.onnx", "other.txt", "preprocessing.json"]
    assert (tmp_path / "deploy" / "other.txt").read_text() == "kept"
    assert json.loads((tmp_path / "deploy" / "export.json").read_text())["file"] == "iris.onnx"
    assert 'InferenceSession("iris.onnx")' in (tmp_path / "deploy" / "README.md").read_text()


def test_the_cli_prints_the_check_and_the_model_path_last(runs, cli, tmp_path):
    result = cli("export", runs["transformer"], "--out", tmp_path / "e")
    assert result.code == 0, result.err
    assert result.last_line == str(tmp_path / "e" / "model.onnx")
    assert "parity check passed: max abs diff" in result.err and "agreement 1.0000" in result.err


# ------------------------------------------------------------------------------ .pt2 archives: checked before loading


class Payload:
    """Unpickling this creates a file: the stand-in for code a changed archive would run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def rewrite_archive(source: Path, target: Path, change) -> None:
    """Copy a zip archive member by member, `change(name, data) -> data` deciding each member's bytes."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for info in old.infolist():
            new.writestr(info, change(info.filename.split("/", 1)[-1], old.read(info)))


@pytest.fixture(scope="module")
def program(runs, tmp_path_factory) -> Path:
    from damoxing.deploy.export import export_torch

    path = tmp_path_factory.mktemp("pt2") / "model.pt2"
    export_torch(runs["mlp"], path)
    return path


def test_a_pt2_archive_with_a_pickle_is_refused_before_it_is_unpickled(program, tmp_path):
    from damoxing.core.errors import UserError
    from damoxing.deploy.exporters import load_program

    marker = tmp_path / "ran"
    changed = tmp_path / "changed.pt2"
    rewrite_archive(program, changed, lambda name, data: pickle.dumps(Payload(marker)) if name.startswith("data/sample_inputs/") else data)
    with pytest.raises(UserError, match="sample_inputs"):
        load_program(changed)
    assert not marker.exists()


def test_a_pt2_archive_flagging_pickled_weights_or_calling_outside_torch_is_refused(program, tmp_path):
    from damoxing.core.errors import UserError
    from damoxing.deploy.exporters import load_program

    def pickled_weights(name, data):
        if name.endswith("_weights_config.json"):
            config = json.loads(data)
            for meta in config["config"].values():
                meta["use_pickle"] = True
            return json.dumps(config).encode()
        return data

    def foreign_call(name, data):
        return data.replace(b'"torch.ops.aten.linear.default"', b'"builtins.exec"') if name.startswith("models/") else data

    for change, words in ((pickled_weights, "use_pickle|_weights_config"), (foreign_call, "builtins.exec")):
        changed = tmp_path / f"{change.__name__}.pt2"
        rewrite_archive(program, changed, change)
        with pytest.raises(UserError, match=words):
            load_program(changed)
    model = load_program(program)  # the archive damoxing wrote loads
    assert model(torch.zeros(2, 4)).shape == (2, 3)


def test_a_file_that_is_not_an_archive_is_refused(tmp_path):
    from damoxing.core.errors import UserError
    from damoxing.deploy.exporters import load_program

    (tmp_path / "x.pt2").write_bytes(io.BytesIO(b"not a zip").getvalue())
    with pytest.raises(UserError, match="not a readable torch.export archive"):
        load_program(tmp_path / "x.pt2")


def test_check_file_holds_another_graph_to_the_check_with_its_own_thresholds(runs, tmp_path):
    """What a quantized graph goes through: the same inputs against the run's model, thresholds of the caller's choosing."""
    import onnx
    from onnx import numpy_helper

    from damoxing.deploy.export import check_file, export_onnx

    export_onnx(runs["mlp"], tmp_path / "model.onnx")
    assert check_file(runs["mlp"], tmp_path / "model.onnx").passed
    graph = onnx.load(str(tmp_path / "model.onnx"))
    for i, tensor in enumerate(graph.graph.initializer):  # a crude stand-in for quantization: weights rounded to 1 decimal
        graph.graph.initializer[i].CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor).round(1), tensor.name))
    onnx.save(graph, str(tmp_path / "rounded.onnx"))
    strict = check_file(runs["mlp"], tmp_path / "rounded.onnx")
    loose = check_file(runs["mlp"], tmp_path / "rounded.onnx", tolerance=10.0, min_agreement=0.5)
    assert not strict.passed and strict.max_abs_diff > 1e-3
    assert loose.passed and loose.max_abs_diff == strict.max_abs_diff
