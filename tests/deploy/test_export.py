"""`damoxing export`, parametrized over the model registry: every family's tiny variant, trained for one
epoch on tiny data of every kind it takes, exports to ONNX (and to torch.export) and passes its
parity check - checked here again with plain onnxruntime, at batch 1, 3 and the test split's size
and at other lengths - while the run folder stays byte for byte as it was."""

from __future__ import annotations

import functools
import hashlib
import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest
import torch
from conftest import pickle_kind, pickled_files
from hf_fixtures import (
    two_topic_sentences,
    write_tiny_bert,
    write_tiny_gpt2,
    write_topics_csv,
)

from damoxing.models import MODELS

DATA_KINDS = ("table", "image", "text", "corpus", "sequence")
TRAIN = {"epochs": 1, "batch_size": 32, "optimizer": {"name": "adam", "lr": 0.01}}


# ------------------------------------------------------------------------------ tiny runs, on demand


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    """One tiny source per data kind (and the checkpoints the pretrained family starts from)."""
    folder = tmp_path_factory.mktemp("export-data")
    rng = np.random.default_rng(0)
    n = 150
    table = pd.DataFrame({"width": rng.normal(size=n), "height": rng.normal(10, 3, size=n),
                          "colour": rng.choice(["red", "green", "blue"], size=n), "site": rng.choice(["north", "south"], size=n)})
    table.loc[::17, "width"] = np.nan  # imputed
    table.loc[::23, "colour"] = None
    table["kind"] = np.where(table["width"].fillna(0) + (table["colour"] == "red") > 0.5, "big", "small")
    table.to_csv(folder / "table.csv", index=False)
    texts, _ = two_topic_sentences(60)
    (folder / "corpus.txt").write_text("\n".join(texts) + "\n")
    steps = rng.normal(size=(120, 12, 2))
    np.savez(folder / "steps.npz", x=steps, y=np.where(steps[:, :, 0].mean(1) > 0, "up", "down"))
    return {
        "table": {"source": str(folder / "table.csv"), "target": "kind"},
        "image": {"source": "builtin:digits_images"},
        "text": {"source": str(write_topics_csv(folder / "topics.csv", n=120)), "target": "label"},
        "corpus": {"source": str(folder / "corpus.txt"), "block_size": 16},
        "sequence": {"source": str(folder / "steps.npz")},
        "regression": {"source": "builtin:diabetes"},  # a table with a numeric target
        "bert": str(write_tiny_bert(folder / "bert", texts=texts)),
        "gpt2": str(write_tiny_gpt2(folder / "gpt2", texts=texts)),
    }


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    """trained(family, kind, **options) -> the run folder of the family's tiny variant after one epoch (cached)."""
    folder = tmp_path_factory.mktemp("export-runs")

    @functools.lru_cache(maxsize=None)
    def train_once(name: str, kind: str, options: tuple) -> Path:
        from damoxing.api import train

        model = {"type": name, **dict(options)}
        if name == "pretrained":  # no size presets: its size is the checkpoint's (a 2-layer, width-32 one here)
            model.setdefault("path", data["gpt2" if kind == "corpus" else "bert"])
            model.setdefault("finetune", "lora")
        else:
            model.setdefault("size", "tiny")
        tag = "-".join([name, kind, *(f"{k}-{v}" for k, v in options)])
        config = {"name": tag, "data": data[kind], "model": model, "train": TRAIN, "evaluate": {"bootstrap": 0},
                  "tracking": {"report": False}}
        return train(config, out=folder / tag, quiet=True).path

    return lambda name, kind, **options: train_once(name, kind, tuple(sorted(options.items())))


def registry_cases(one_kind: bool = False):
    """(family, data kind) for every registered family and every kind it takes (or its first kind only)."""
    for name, family in MODELS.items():
        kinds = [k for k in DATA_KINDS if k in family.input_kinds]
        for kind in kinds[:1] if one_kind else kinds:
            yield pytest.param(name, kind, id=f"{name}-{kind}")


def folder_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def check_rows(run: Path) -> tuple[torch.Tensor, str]:
    """The run's test rows, rebuilt (or latent vectors for a generative run), and the report's input kind."""
    from damoxing.api import load
    from damoxing.inference.run_data import run_data

    predictor = load(run)
    if predictor.task_name == "generation":
        return torch.randn(len(np.load(run / "splits.npz")["test"]), predictor.model.latent_dim), "latent"
    return torch.as_tensor(run_data(predictor).x["test"]), "rows"


# ------------------------------------------------------------------------------ every family, ONNX


@pytest.mark.slow
@pytest.mark.parametrize("name,kind", list(registry_cases()))
def test_every_family_exports_to_onnx_and_passes_its_parity_check(name, kind, trained, tmp_path):
    from damoxing.api import export, load

    run = trained(name, kind)
    before = folder_digest(run)
    report = export(run, out=tmp_path / "export")
    assert folder_digest(run) == before  # a run folder is never edited

    parity = report.parity
    assert parity.passed and parity.max_abs_diff < 1e-4 and parity.agreement == 1.0, parity.summary()
    rows, input_kind = check_rows(run)
    n = rows.shape[0]
    shapes = [c["shape"] for c in json.loads((tmp_path / "export" / "export.json").read_text())["parity"]["checks"]]
    assert {s[0] for s in shapes} >= {1, min(3, n), n}  # batch 1, 3 and the whole test split
    files = sorted(p.name for p in (tmp_path / "export").iterdir())
    assert files == sorted(["model.onnx", "preprocessing.json", "export.json", "README.md"] + (["tokenizer.json"] if kind in ("text", "corpus") else []))
    assert (tmp_path / "export" / "preprocessing.json").read_bytes() == (run / "preprocessing.json").read_bytes()

    graph = onnx.load(str(tmp_path / "export" / "model.onnx"))
    dims = [d.dim_param or d.dim_value for d in graph.graph.input[0].type.tensor_type.shape.dim]
    assert isinstance(dims[0], str) and dims[0] == report.input["shape"][0]  # a named (varying) batch axis
    predictor = load(run)
    if predictor.model_format == "onnx":  # a scikit-learn reference: its own graph, copied
        varies = False
    else:  # the graph's axes are those the family's view declares; token inputs vary in length (but nn.RNN's)
        varies = 1 in predictor.model.export_view().axes
        assert varies or predictor.schema.kind not in ("text", "corpus") or predictor.config.model.cell == "rnn"
        assert (dims[1] == "seq") == varies, dims
    assert {p.key: p.value for p in graph.metadata_props}["damoxing.outputs"] == report.output["kind"]

    # the same check again, with plain onnxruntime against the run's model: whole split, batch 1, another length
    session = ort.InferenceSession(str(tmp_path / "export" / "model.onnx"), providers=["CPUExecutionProvider"])
    reference = predictor.model if input_kind == "rows" else predictor.model.export_view().module
    inputs = [rows, rows[:1]] + ([rows[:3, : rows.shape[1] // 2]] if varies else [])
    for x in inputs:
        dtype = np.int64 if x.dtype == torch.int64 else np.float32
        got = session.run(None, {"input": x.numpy().astype(dtype)})[0]
        with torch.no_grad():
            want = reference(x).float().numpy()
        assert got.shape == want.shape and np.abs(got - want).max() < 1e-4, (x.shape, np.abs(got - want).max())
        if report.output["kind"] in ("logits", "log_probabilities"):
            assert (got.argmax(-1) == want.argmax(-1)).all()


# ------------------------------------------------------------------------------ every family, torch.export


@pytest.mark.slow
@pytest.mark.parametrize("name,kind", [c for c in registry_cases(one_kind=True) if c.values[0] != "sklearn"])
def test_every_torch_family_exports_a_pickle_free_program_that_passes_its_check(name, kind, trained, tmp_path, cli):
    from damoxing.deploy.exporters import load_program

    run = trained(name, kind)
    before = folder_digest(run)
    result = cli("export", run, "--format", "torch", "--out", tmp_path / "export")
    assert result.code == 0, result.err
    assert result.last_line == str(tmp_path / "export" / "model.pt2")
    assert "parity check passed" in result.err and "torch.export.load" in result.err and "trust" in result.err  # the loud warning
    assert folder_digest(run) == before
    record = json.loads((tmp_path / "export" / "export.json").read_text())
    assert record["format"] == "torch" and record["parity"]["passed"] and record["parity"]["max_abs_diff"] < 1e-4
    archive = tmp_path / "export" / "model.pt2"
    assert pickled_files(tmp_path / "export") == {}
    import zipfile

    with zipfile.ZipFile(archive) as z:  # every member, read as bytes: none is a pickle (the example inputs were dropped)
        for member in z.namelist():
            target = tmp_path / "members" / member
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(z.read(member))
            with warnings.catch_warnings():  # pickletools reads raw tensor bytes as opcodes and warns about escapes
                warnings.simplefilter("ignore", DeprecationWarning)
                assert pickle_kind(target) is None, member
    program = load_program(archive)
    rows, _ = check_rows(run)
    with torch.no_grad():
        assert program(rows[:2]).shape[0] == 2


def test_a_scikit_learn_reference_has_no_torch_program(trained, cli, tmp_path):
    result = cli("export", trained("sklearn", "table"), "--format", "torch", "--out", tmp_path / "x")
    assert result.code == 2 and "ONNX graph" in result.err and "--format onnx" in result.err and "Traceback" not in result.err
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------------------ variants a family's options change


VARIANTS = [
    ("rnn", "text", {"cell": "gru", "bidirectional": True, "layers": 2, "pooling": "mean"}),
    ("rnn", "text", {"cell": "lstm", "bidirectional": True, "pooling": "max"}),
    ("rnn", "text", {"cell": "rnn"}),  # nn.RNN: the time axis stays fixed at the padded length
    ("transformer", "text", {"pooling": "mean", "positional": "learned"}),
    ("gpt", "text", {"pooling": "mean"}),
    ("pretrained", "text", {"finetune": "frozen"}),
    ("pretrained", "text", {"finetune": "full"}),
    ("cnn", "image", {"batch_norm": True}),
]


@pytest.mark.slow
@pytest.mark.parametrize("name,kind,options", VARIANTS, ids=[f"{n}-{'-'.join(f'{k}={v}' for k, v in o.items())}" for n, _, o in VARIANTS])
def test_variants_export_and_pass(name, kind, options, trained, tmp_path):
    from damoxing.api import export

    report = export(trained(name, kind, **options), out=tmp_path / "model.onnx")
    assert report.parity.passed, report.parity.summary()
    assert report.file == str(tmp_path / "model.onnx") and (tmp_path / "export.json").exists()


# ------------------------------------------------------------------------------ README.md: its code runs


def _readme_code(folder: Path) -> dict:
    """Run the README's Python block in `folder` and return its namespace."""
    import os

    text = (folder / "README.md").read_text()
    code = text.split("```python\n")[-1].split("```")[0]
    namespace: dict = {}
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        exec(compile(code, str(folder / "README.md"), "exec"), namespace)  # noqa: S102 - the code this test checks
    finally:
        os.chdir(cwd)
    return namespace


@pytest.mark.parametrize("kind", ["table", "image", "text", "sequence"])
def test_the_readme_code_predicts_what_damoxing_predicts(kind, trained, data, tmp_path):
    from damoxing.api import export, load
    from damoxing.inference.run_data import run_data

    run = trained({"table": "mlp", "image": "cnn", "text": "transformer", "sequence": "rnn"}[kind], kind)
    export(run, out=tmp_path / "export")
    predictor = load(run)
    raw = _raw_test_inputs(predictor, run_data(predictor), data, kind)
    namespace = _readme_code(tmp_path / "export")
    labels, proba = namespace["predict"](raw)
    assert list(labels) == list(predictor.predict(raw))
    np.testing.assert_allclose(proba, predictor.predict_proba(raw), atol=1e-5)


def _raw_test_inputs(predictor, prepared, data, kind):
    """The test split's rows as raw data (what a consumer has): table rows, images, texts, sequences."""
    from damoxing.data.sources import load_source

    test = prepared.indices["test"]
    source = load_source(data[kind]["source"], data[kind].get("target"))
    if kind in ("table", "regression"):
        frame = source.frame[source.frame[source.target].notna()].reset_index(drop=True)
        return frame.iloc[test].drop(columns=[source.target])
    if kind == "image":
        return source.images[test]
    if kind == "text":
        return list(source.frame["text"].iloc[test])
    return np.load(data["sequence"]["source"])["x"][test]


def test_the_readme_code_regresses_in_target_units(trained, data, tmp_path):
    from damoxing.api import export, load
    from damoxing.inference.run_data import run_data

    run = trained("mlp", "regression")
    export(run, out=tmp_path / "export")
    predictor = load(run)
    raw = _raw_test_inputs(predictor, run_data(predictor), data, "regression")
    np.testing.assert_allclose(_readme_code(tmp_path / "export")["predict"](raw), predictor.predict(raw), rtol=1e-5, atol=1e-3)


def test_the_readme_code_samples_images_in_the_datas_units(trained, tmp_path):
    from damoxing.api import export

    export(trained("vae", "image"), out=tmp_path / "vae")
    namespace = _readme_code(tmp_path / "vae")
    samples = namespace["sample"](5, seed=1)
    pixels = namespace["to_data_units"](samples)
    assert samples.shape == pixels.shape == (5, 1, 8, 8) and np.isfinite(pixels).all()
    assert 0 <= np.median(pixels) <= 16 and not np.allclose(pixels, samples)  # the digits' units: 0-16


def test_the_readme_code_continues_text_with_the_language_model(trained, tmp_path):
    from damoxing.api import export

    export(trained("gpt", "corpus"), out=tmp_path / "lm")
    namespace = _readme_code(tmp_path / "lm")
    text = namespace["continue_text"]("the match", new_tokens=5)
    assert text.startswith("the match") and len(text) > len("the match")


def test_a_mitigated_run_exports_with_its_group_thresholds(trained, tmp_path):
    from damoxing.api import audit, export

    result = audit(trained("mlp", "table"), sensitive="site", mitigate="equalized_odds", out=tmp_path / "audit",
                   mitigated_out=tmp_path / "mitigated", n_resamples=10)
    mitigated = result.mitigated_run
    report = export(mitigated, out=tmp_path / "export")
    assert report.parity.passed  # the graph gives the model's outputs; the thresholds come after it
    assert (tmp_path / "export" / "postprocess.json").read_bytes() == (mitigated / "postprocess.json").read_bytes()
    readme = (tmp_path / "export" / "README.md").read_text()
    assert "group thresholds" in readme and "postprocess.json" in readme


def test_the_projects_readme_example_predicts_what_damoxing_predicts(tmp_path):
    """The 15 lines of README.md's export section, run on an export of an iris classifier."""
    import os

    from damoxing.api import export, load, train
    from damoxing.data.sources import load_source

    run = train({"name": "iris", "data": {"source": "builtin:iris"}, "model": {"type": "mlp", "size": "tiny"}, "train": TRAIN,
                 "evaluate": {"bootstrap": 0}, "tracking": {"report": False}}, out=tmp_path / "run", quiet=True).path
    export(run, out=tmp_path / "export")
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    code = readme.split("**Using model.onnx without damoxing.**")[1].split("```python\n")[1].split("```")[0]
    namespace: dict = {}
    cwd = os.getcwd()
    os.chdir(tmp_path / "export")
    try:
        exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - the documented code is what is tested
    finally:
        os.chdir(cwd)
    source = load_source("builtin:iris", None)
    frame = source.frame.drop(columns=[source.target]).iloc[:40]
    labels, proba = namespace["predict"](frame)
    predictor = load(run)
    assert list(labels) == list(predictor.predict(frame))
    np.testing.assert_allclose(proba, predictor.predict_proba(frame), atol=1e-5)
