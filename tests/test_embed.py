"""`damoxing embed`: sentence embeddings from a checkpoint folder or a pretrained run, on a tiny random BERT."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hf_fixtures import two_topic_sentences, write_tiny_bert, write_topics_csv


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    base = tmp_path_factory.mktemp("embed")
    texts, _ = two_topic_sentences(120)
    write_tiny_bert(base / "bert", texts)
    write_topics_csv(base / "topics.csv", 60)
    (base / "lines.txt").write_text("\n".join(texts[:7]) + "\n\n" + texts[0] + "\n")  # a blank line, and a repeat
    return base


def test_embed_a_checkpoint_to_parquet_and_npy(cli, folder, tmp_path):
    result = cli("embed", folder / "bert", folder / "lines.txt", "--out", tmp_path / "e.parquet")
    assert result.code == 0, result.err
    assert result.last_line == str(tmp_path / "e.parquet")
    table = pd.read_parquet(tmp_path / "e.parquet")
    assert list(table.columns) == ["text", "embedding"] and len(table) == 8  # the blank line is skipped
    vectors = np.stack(table["embedding"].to_numpy())
    assert vectors.shape == (8, 32) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(vectors[0], vectors[7])  # the same text, the same vector
    assert cli("embed", folder / "bert", folder / "lines.txt", "--out", tmp_path / "e.npy", "--batch-size", "1").code == 0
    np.testing.assert_allclose(np.load(tmp_path / "e.npy"), vectors, atol=1e-5)  # padding within a batch changes nothing


def test_embed_from_runs_frozen_keeps_the_base_lora_changes_it(cli, folder, tmp_path):
    from damoxing.api import train
    from damoxing.inference.embeddings import embed

    texts = pd.read_csv(folder / "topics.csv")["text"].tolist()[:10]
    base = embed(folder / "bert", texts)
    runs = {}
    for mode in ("frozen", "lora"):
        runs[mode] = train({"data": {"source": str(folder / "topics.csv"), "target": "label"},
                            "model": {"type": "pretrained", "path": str(folder / "bert"), "finetune": mode},
                            "train": {"epochs": 2, "batch_size": 16, "optimizer": {"name": "adamw", "lr": 0.01}}},
                           out=tmp_path / mode, quiet=True)
    result = cli("embed", runs["frozen"].path, folder / "topics.csv", "--column", "text", "--out", tmp_path / "frozen.npy")
    assert result.code == 0, result.err
    frozen = np.load(tmp_path / "frozen.npy")
    assert frozen.shape == (60, 32)
    np.testing.assert_allclose(frozen[:10], base, atol=1e-5)  # a frozen encoder is the checkpoint itself
    tuned = embed(runs["lora"].path, texts)
    assert np.abs(tuned - base).max() > 1e-3  # the adapters changed the encoder


def test_embed_bad_input(cli, folder, tmp_path):
    from damoxing.api import train

    result = cli("embed", folder / "bert", folder / "lines.txt", "--out", tmp_path / "e.csv")
    assert result.code == 2 and ".npy or .parquet" in result.err
    pd.DataFrame({"a": ["x", "y"], "b": ["u", "v"]}).to_csv(tmp_path / "two.csv", index=False)
    result = cli("embed", folder / "bert", tmp_path / "two.csv", "--out", tmp_path / "e.npy")
    assert result.code == 2 and "--column" in result.err and "'a', 'b'" in result.err
    result = cli("embed", folder / "bert", tmp_path / "two.csv", "--column", "c", "--out", tmp_path / "e.npy")
    assert result.code == 2 and "no column 'c'" in result.err
    mlp = train({"data": {"source": "builtin:iris"}, "model": {"type": "mlp"}, "train": {"epochs": 1}}, out=tmp_path / "mlp", quiet=True)
    result = cli("embed", mlp.path, folder / "lines.txt", "--out", tmp_path / "e.npy")
    assert result.code == 2 and "no sentence encoder" in result.err and "Traceback" not in result.err
    rnn = train({"data": {"source": str(folder / "topics.csv"), "target": "label"}, "model": {"type": "rnn", "size": "tiny"},
                 "train": {"epochs": 1}}, out=tmp_path / "rnn", quiet=True)  # a text model with an `embed` layer, no encoder
    result = cli("embed", rnn.path, folder / "lines.txt", "--out", tmp_path / "e.npy")
    assert result.code == 2 and "no sentence encoder" in result.err and "Traceback" not in result.err
    result = cli("embed", "sentence-transformers/all-mpnet-base-v2", folder / "lines.txt", "--out", tmp_path / "e.npy")
    assert result.code == 2 and "never downloads" in result.err
