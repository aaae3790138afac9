"""model.type fasttext (a bag of token and token-pair embeddings) on a tiny text table: it learns
two topics, predicts raw strings through the saved tokenizer, pairs change its features, and
`damoxing export` gives an ONNX graph whose outputs match the run's."""

from __future__ import annotations

import json

import pytest
import torch
from test_text_models import topic_sentences


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from damoxing.api import train

    folder = tmp_path_factory.mktemp("fasttext")
    data = topic_sentences(folder / "topics.csv", 240)
    config = {"name": "fasttext", "data": {"source": str(data), "target": "topic"}, "model": {"type": "fasttext", "dim": 16, "buckets": 1024},
              "train": {"epochs": 15, "batch_size": 32, "optimizer": {"name": "adam", "lr": 0.01}}}
    return train(config, out=folder / "run", quiet=True)


def test_fasttext_learns_two_topics_and_predicts_strings(run):
    from damoxing.api import load

    assert run.metrics["test"]["accuracy"] >= 0.9, run.metrics["test"]
    assert run.metrics["baseline"]["test"]["accuracy"] == pytest.approx(0.5, abs=0.1)
    model = load(run.path)
    assert list(model.predict(["the coach saw the keeper score a goal", "we then made soup with garlic and butter"])) == ["sport", "food"]


def test_token_pairs_are_part_of_the_text_vector():
    from damoxing.data.schema import DataSchema
    from damoxing.models import create_model
    from damoxing.models.fasttext import FastTextConfig

    schema = DataSchema(kind="text", task="classification", input_shape=(6,), n_outputs=2, vocab_size=30, pad_id=0)
    torch.manual_seed(0)
    bag = create_model(FastTextConfig(ngrams=1), schema)
    torch.manual_seed(0)
    pairs = create_model(FastTextConfig(ngrams=2), schema)
    forward, backward = torch.tensor([[5, 6, 7, 0, 0, 0]]), torch.tensor([[7, 6, 5, 0, 0, 0]])
    torch.testing.assert_close(bag.forward_features(forward), bag.forward_features(backward))  # a bag ignores order
    assert not torch.allclose(pairs.forward_features(forward), pairs.forward_features(backward))  # pairs do not
    padded = torch.tensor([[5, 6, 7, 0, 0, 0, 0, 0]])
    torch.testing.assert_close(pairs.forward_features(padded), pairs.forward_features(forward))  # padding adds nothing


def test_export_passes_its_parity_check(cli, run, tmp_path):
    """`damoxing export` checks the graph against the run's model on the run's own rows (deploy/parity.py)."""
    pytest.importorskip("onnxruntime")
    result = cli("export", run.path, "--out", tmp_path / "export")
    assert result.code == 0, result.err
    meta = json.loads(next((tmp_path / "export").rglob("export.json")).read_text())
    assert meta["parity"]["passed"] is True, meta["parity"]
    assert next((tmp_path / "export").rglob("*.onnx")).stat().st_size > 0
