"""`damoxing explain` on images (heat maps) and texts (token attributions on the embedding, padding masked)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from hf_fixtures import two_topic_sentences, write_tiny_bert, write_topics_csv

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    base = tmp_path_factory.mktemp("explain_kinds")
    write_topics_csv(base / "topics.csv", 80)
    return base


def _text_run(folder, model: dict, name: str):
    from damoxing.api import train

    config = {"name": name, "data": {"source": str(folder / "topics.csv"), "target": "label",
                                     "tokenizer": {"kind": "wordpiece", "vocab_size": 200}},
              "model": model, "train": {"epochs": 4, "batch_size": 16, "optimizer": {"name": "adam", "lr": 0.003}},
              "evaluate": {"bootstrap": 20}}
    return train(config, out=folder / "runs" / name, quiet=True).path


def _check_text(result, n: int) -> None:
    a = result.attributions
    assert a.values.shape[0] == n and a.mask.shape == a.values.shape
    assert np.all(a.values[~a.mask] == 0.0) and a.mask.sum() < a.mask.size  # the texts are padded; padding gets nothing
    assert np.all(a.converged)  # the path integral adds up, with the delta measured from the real path start
    assert np.allclose(a.values.sum(1) - (a.output - a.baseline_output), a.delta)
    tokens = pd.read_parquet(result.path / "tokens.parquet")
    assert len(tokens) == int(a.mask.sum()) and set(tokens.columns) == {"row", "position", "token", "attribution"}
    page = (result.path / "explain.html").read_text()
    assert "<h2>Tokens</h2>" in page and "background:rgba(" in page
    with np.load(result.path / "attributions.npz", allow_pickle=False) as z:
        assert z["ids"].shape == a.values.shape and z["mask"].dtype == bool


@pytest.mark.parametrize("family", ["rnn", "transformer", "gpt"])
def test_token_attributions_of_text_models(folder, family):
    from damoxing.api import explain

    run = _text_run(folder, {"type": family, "size": "tiny"}, family)
    result = explain(run, rows=6)
    _check_text(result, 6)
    assert result.summary["sanity"]["draws"] == 1 and result.summary["sanity"]["global_spearman"] is not None


@pytest.mark.parametrize("finetune", ["lora", "frozen"])
def test_token_attributions_of_a_pretrained_encoder(folder, finetune):
    """A frozen encoder runs without gradients while training; explain still gets gradients at the embedding."""
    from damoxing.api import explain, train

    texts, _ = two_topic_sentences(200)
    if not (folder / "bert").exists():
        write_tiny_bert(folder / "bert", texts)
    run = train({"name": f"bert-{finetune}", "data": {"source": str(folder / "topics.csv"), "target": "label"},
                 "model": {"type": "pretrained", "path": str(folder / "bert"), "finetune": finetune},
                 "train": {"epochs": 2, "batch_size": 16, "optimizer": {"name": "adamw", "lr": 0.003}}},
                out=folder / "runs" / f"bert-{finetune}", quiet=True)
    result = explain(run.path, rows=4)
    _check_text(result, 4)
    tokens = pd.read_parquet(result.path / "tokens.parquet")
    specials = tokens[tokens.token.str.strip().isin(["[CLS]", "[SEP]"])]
    assert len(specials) == 8 and np.all(specials.attribution == 0.0)  # kept in the baseline: nothing to attribute


def test_a_text_method_without_gradients_is_refused(cli, folder):
    run = _text_run(folder, {"type": "transformer", "size": "tiny"}, "refused")
    result = cli("explain", run, "--method", "saliency")
    assert result.code == 2 and "token ids have no gradient" in result.err and "'integrated_gradients'" in result.err


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    from damoxing.api import train

    base = tmp_path_factory.mktemp("digits")
    return train({"data": {"source": "builtin:digits_images"}, "model": {"type": "cnn", "size": "tiny"},
                  "train": {"epochs": 2}, "evaluate": {"bootstrap": 20}}, out=base / "run", quiet=True).path


@pytest.mark.parametrize("method", ["integrated_gradients", "occlusion"])
def test_image_heat_maps(digits_run, method, tmp_path):
    from damoxing.api import explain

    result = explain(digits_run, rows=8, method=method, out=tmp_path / method)
    with np.load(result.path / "attributions.npz", allow_pickle=False) as z:
        assert z["attributions"].shape == (8, 1, 8, 8)
        if method == "integrated_gradients":
            assert np.all(z["converged"])
            assert np.allclose(z["attributions"].reshape(8, -1).sum(1), z["output"] - z["baseline_output"], atol=0.02)
        else:
            assert "delta" not in z.files
    png = (result.path / "heatmaps.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert "attribution heat maps" in (result.path / "explain.html").read_text()


def test_the_image_baseline_is_a_black_image_through_the_preprocessing(digits_run):
    from damoxing.inference.predictor import load
    from damoxing.trust.explain import make_explainer

    predictor = load(digits_run)
    explainer = make_explainer(predictor.model, "cnn", predictor.preprocessing)
    black = predictor.preprocessing.transform_inputs(np.zeros((1, 1, 8, 8), dtype=np.uint8))
    assert torch.allclose(explainer.baseline, torch.as_tensor(black)) and float(explainer.baseline.abs().max()) > 0


def test_runs_without_a_prediction_per_input_or_without_columns_are_refused(cli, digits_run, tmp_path):
    from damoxing.api import train

    vae = train({"data": {"source": "builtin:digits_images"}, "model": {"type": "vae", "size": "tiny"}, "train": {"epochs": 1}},
                out=tmp_path / "vae", quiet=True).path
    result = cli("explain", vae, "--rows", "2")
    assert result.code == 2 and "generation run" in result.err and "Traceback" not in result.err
    result = cli("audit", digits_run, "--sensitive", "sex")
    assert result.code == 2 and "has no columns" in result.err
