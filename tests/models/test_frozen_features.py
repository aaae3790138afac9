"""A frozen pretrained encoder runs once per split (its pooled features, then the head trains on
them), its features equal the per-batch path's, and CPU batches are cut to their longest text
(dynamic padding) without changing any output. Tiny random BERT written here."""

from __future__ import annotations

import pytest
import torch
from hf_fixtures import two_topic_sentences, write_tiny_bert, write_topics_csv

PAD = 0


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    base = tmp_path_factory.mktemp("frozen")
    texts, _ = two_topic_sentences(200)
    write_tiny_bert(base / "bert", texts)
    write_topics_csv(base / "topics.csv", 90)
    return base


def make_model(folder, finetune: str):
    from damoxing.data.schema import DataSchema
    from damoxing.models import create_model
    from damoxing.models.pretrained import PretrainedModelConfig

    schema = DataSchema(kind="text", task="classification", input_shape=(16,), n_outputs=2, vocab_size=100, pad_id=PAD)
    torch.manual_seed(0)
    return create_model(PretrainedModelConfig(path=str(folder / "bert"), finetune=finetune), schema)


def padded_ids(n: int, width: int, seed: int = 0) -> torch.Tensor:
    """n right-padded rows of 2..width-4 real tokens, then 4+ columns of padding in every row."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(5, 60, (n, width), generator=g)
    lengths = torch.randint(2, width - 4, (n,), generator=g)
    x[torch.arange(width)[None, :] >= lengths[:, None]] = PAD
    return x


def count_encoder_calls(model) -> list[int]:
    calls = [0]
    model.backbone.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_features_equal_the_whole_models_path(folder):
    model = make_model(folder, "frozen").eval()
    x = padded_ids(37, 16)
    with torch.no_grad():
        whole = model(x)
    features = model.features(x, batch_size=8)
    assert features.shape == (37, model.hidden_size) and not features.is_inference()
    torch.testing.assert_close(model.head(features), whole, rtol=1e-4, atol=1e-5)


def test_a_frozen_run_calls_the_encoder_once_per_batch_of_each_split(folder, monkeypatch):
    """3 epochs; the encoder runs only to make features (one call per feature batch), not per epoch."""
    from damoxing.models.pretrained import PretrainedModel

    calls = {"features": 0, "forward": 0}
    features, forward = PretrainedModel.features, PretrainedModel.forward

    def counted_features(self, x, batch_size):
        calls["features"] += 1
        return features(self, x, batch_size)

    def counted_forward(self, x):
        calls["forward"] += 1
        return forward(self, x)

    monkeypatch.setattr(PretrainedModel, "features", counted_features)
    monkeypatch.setattr(PretrainedModel, "forward", counted_forward)
    from damoxing.api import train

    config = {"name": "frozen", "data": {"source": str(folder / "topics.csv"), "target": "label"},
              "model": {"type": "pretrained", "path": str(folder / "bert"), "finetune": "frozen"},
              "train": {"epochs": 3, "batch_size": 8, "early_stopping": None, "optimizer": {"name": "adamw", "lr": 0.003}}}
    run = train(config, out=folder / "run", quiet=True)
    assert len(run.history) == 3
    assert calls["features"] == 2  # train and val, once each for the whole run
    assert calls["forward"] <= 4  # the test split's evaluation (and its baseline) only: never per training batch


def test_full_and_lora_train_on_the_ids_themselves(folder):
    from damoxing.training.loop import Split, on_features

    for mode in ("full", "lora"):
        model = make_model(folder, mode)
        split = Split(padded_ids(4, 16), torch.zeros(4, dtype=torch.long))
        same, train, _ = on_features(model, split, None, None, torch.device("cpu"))
        assert same is model and train is split


def test_dynamic_padding_cuts_each_training_batch_to_its_longest_text(folder):
    model = make_model(folder, "lora").train()
    x = padded_ids(6, 20)
    longest = int((x != PAD).sum(1).max())
    assert model.trimmed(x).shape == (6, longest) and longest < 20
    seen = []
    model.backbone.register_forward_pre_hook(lambda _m, args, kwargs: seen.append(kwargs["input_ids"].shape), with_kwargs=True)
    model(x)
    assert seen[-1] == (6, longest)


def test_dynamic_padding_changes_no_output(folder):
    model = make_model(folder, "full").eval()
    x = padded_ids(90, 24)  # more than SORTED_ROWS: the length-sorted path too
    with torch.no_grad():
        cut = model(x)  # no gradients: cut to the longest text
    whole = model(x).detach()  # gradients on in eval mode (explain): the full width
    torch.testing.assert_close(cut, whole, rtol=1e-4, atol=1e-5)
    assert model.trimmed(x).shape[1] == 24  # with gradients in eval mode nothing is cut


def test_length_grouped_batches_keep_every_row_and_sort_each_group():
    from damoxing.training.batches import GROUP_BATCHES, length_grouped

    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, 60, (1000,), generator=g)
    order = torch.randperm(1000, generator=g)
    grouped = length_grouped(order, lengths, batch=4)
    assert sorted(grouped.tolist()) == list(range(1000))
    group = 4 * GROUP_BATCHES
    for start in range(0, 1000, group):
        assert set(grouped[start : start + group].tolist()) == set(order[start : start + group].tolist())  # rows stay in their run
        keys = lengths[grouped[start : start + group]]
        assert bool((keys[:-1] >= keys[1:]).all())
    assert torch.equal(grouped, length_grouped(order, lengths, batch=4))  # a function of the order: resume repeats it


def test_lora_training_batches_are_length_grouped_and_cut(folder):
    """The loop hands a model that cuts padding (CutsPadding) length-grouped batches: less padding in total."""
    from damoxing.config import TrainConfig
    from damoxing.tasks import TASKS
    from damoxing.training.loop import Split, fit

    model = make_model(folder, "lora")
    x = padded_ids(96, 40, seed=3)
    y = torch.randint(0, 2, (96,), generator=torch.Generator().manual_seed(1))
    widths = []
    model.backbone.register_forward_pre_hook(lambda _m, args, kwargs: widths.append(kwargs["input_ids"].shape[1]) if model.training else None,
                                             with_kwargs=True)
    config = TrainConfig(epochs=1, batch_size=8, early_stopping=None)
    fit(model, Split(x, y), None, TASKS.get("classification")(config), config, torch.device("cpu"))
    real = (x != PAD).sum(1)
    assert len(widths) == 12 and sum(widths) == int(real.sort(descending=True).values[::8].sum())  # each batch as wide as its longest
    assert sum(widths) < 12 * 40
