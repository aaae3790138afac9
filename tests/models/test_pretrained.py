"""model.type pretrained on tiny random checkpoints written here (BERT and GPT-2, 2 layers, width 32):
every fine-tuning mode end to end, what the run folder stores, reload, generation, the optimizer's
parameter groups, and a clear error for every bad checkpoint."""

from __future__ import annotations

import re

import shutil

import pytest
import torch
from conftest import write_yaml
from hf_fixtures import (
    two_topic_sentences,
    write_tiny_bert,
    write_tiny_gpt2,
    write_topics_csv,
)
from safetensors.torch import load_file


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    base = tmp_path_factory.mktemp("pretrained")
    texts, _ = two_topic_sentences(200)
    write_tiny_bert(base / "bert", texts)
    write_tiny_gpt2(base / "gpt2", texts)
    write_topics_csv(base / "topics.csv", 80)
    (base / "corpus.txt").write_text("\n".join(texts) + "\n")
    return base


def classifier_config(folder, finetune: str, **model) -> dict:
    return {"name": f"bert-{finetune}", "data": {"source": str(folder / "topics.csv"), "target": "label"},
            "model": {"type": "pretrained", "path": str(folder / "bert"), "finetune": finetune, **model},
            "train": {"epochs": 2, "batch_size": 16, "optimizer": {"name": "adamw", "lr": 0.003}}}


@pytest.fixture(scope="module")
def bert_runs(folder):
    from damoxing.api import train

    return {mode: train(classifier_config(folder, mode), out=folder / "runs" / mode, quiet=True) for mode in ("full", "frozen", "lora")}


HEAD = 32 * 2 + 2  # hidden 32 -> 2 classes
LORA = 2 * 2 * 8 * (32 + 32)  # 2 layers x (query, value) x rank 8 x (in + out)


@pytest.mark.parametrize("mode", ["full", "frozen", "lora"])
def test_tiny_bert_fine_tunes_and_saves_only_what_changed(bert_runs, mode):
    run = bert_runs[mode]
    info = run.manifest["model"]
    saved = load_file(str(run.path / "model.safetensors"))
    assert info["finetune"] == mode and info["base"]["sha256"] == run.config.model.base_sha256 and len(info["base"]["sha256"]) == 64
    assert info["saved_params"] == sum(t.numel() for t in saved.values())
    if mode == "full":
        assert info["trainable_params"] == info["params"] == info["saved_params"]
        assert any("word_embeddings" in k for k in saved) and not any("pooler" in k for k in saved)
    elif mode == "frozen":
        assert info["trainable_params"] == info["saved_params"] == HEAD
        assert sorted(saved) == ["head.1.bias", "head.1.weight"]
    else:
        assert info["trainable_params"] == info["saved_params"] == HEAD + LORA
        assert info["params"] == bert_runs["full"].manifest["model"]["params"] + LORA
        assert all("lora_" in k or k.startswith("head.") for k in saved)
    assert (run.path / "tokenizer.json").is_file()  # the checkpoint's own tokenizer, copied


def test_reload_reproduces_the_test_metrics_in_every_mode(bert_runs):
    from damoxing import api

    for mode, run in bert_runs.items():
        again = api.evaluate(run.path)
        assert again["metrics"]["accuracy"] == pytest.approx(run.metrics["test"]["accuracy"]), mode
        assert again["metrics"]["log_loss"] == pytest.approx(run.metrics["test"]["log_loss"], rel=1e-5), mode


def test_full_fine_tuning_learns_the_topics(folder):
    from damoxing.api import train

    run = train(classifier_config(folder, "full", head_lr=0.01, layer_lr_decay=0.8) | {"train": {
        "epochs": 6, "batch_size": 16, "optimizer": {"name": "adamw", "lr": 0.003}}}, out=folder / "runs" / "learn", quiet=True)
    assert run.metrics["test"]["accuracy"] >= 0.8 > run.metrics["baseline"]["test"]["accuracy"]


def test_regression_with_gradient_checkpointing(folder, tmp_path):
    import pandas as pd

    from damoxing.api import load, train

    texts, _ = two_topic_sentences(60, seed=1)
    pd.DataFrame({"text": texts, "words": [len(t.split()) for t in texts]}).to_csv(tmp_path / "words.csv", index=False)
    config = classifier_config(folder, "lora", gradient_checkpointing=True, pooling="cls")
    config["data"] = {"source": str(tmp_path / "words.csv"), "target": "words"}
    config["task"] = "regression"
    run = train(config, out=tmp_path / "run", quiet=True)
    assert run.config.task == "regression" and "r2" in run.metrics["test"]
    predictor = load(run.path)
    assert any(getattr(m, "gradient_checkpointing", False) for m in predictor.model.backbone.modules())
    prediction = predictor.predict(texts[:5])
    assert prediction.shape == (5,) and 3 < prediction.mean() < 30  # in words, not in standardized units


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_tiny_gpt2_fine_tunes_as_a_language_model_then_generates(folder, cli, mode):
    from damoxing import api

    config = {"name": f"gpt2-{mode}", "data": {"source": str(folder / "corpus.txt"), "block_size": 32},
              "model": {"type": "pretrained", "path": str(folder / "gpt2"), "finetune": mode},
              "train": {"epochs": 2, "batch_size": 8, "optimizer": {"name": "adamw", "lr": 0.003}}}
    run = api.train(config, out=folder / "runs" / f"gpt2-{mode}", quiet=True)
    assert run.config.task == "language_modeling" and run.config.model.context_length == 64
    saved = load_file(str(run.path / "model.safetensors"))
    if mode == "full":
        assert "backbone.transformer.wte.weight" in saved and "backbone.lm_head.weight" not in saved  # tied: stored once
    else:
        assert saved and all("lora_" in k for k in saved) and run.manifest["model"]["trainable_params"] == 2 * 8 * (32 + 96)
    assert api.evaluate(run.path)["metrics"]["loss"] == pytest.approx(run.metrics["test"]["loss"], rel=1e-5)
    result = cli("generate", run.path, "--prompt", "the chef", "--max-new-tokens", "70", "--temperature", "0")
    assert result.code == 0, result.err
    assert result.out.startswith("the chef")  # a random tiny model may end the text at once; the token count is tested below


def test_generation_past_the_context_rebuilds_the_cache(folder):
    """70 new tokens after a prompt, with 64 positions: the cache is rebuilt, never overflows."""
    from damoxing import api

    run = api.train({"data": {"source": str(folder / "corpus.txt"), "block_size": 16},
                          "model": {"type": "pretrained", "path": str(folder / "gpt2"), "finetune": "lora"},
                          "train": {"epochs": 1, "batch_size": 8}}, out=folder / "runs" / "gpt2-long", quiet=True)
    model = api.load(run.path).model
    tokens = list(model.generate_tokens([0, 5, 6], 70, lambda logits: int(logits.argmax())))
    assert len(tokens) == 70


def test_tiny_gpt2_classifies_texts_with_a_frozen_body(folder):
    from damoxing.api import train

    config = classifier_config(folder, "frozen", pooling="last")
    config["model"]["path"] = str(folder / "gpt2")
    run = train(config, out=folder / "runs" / "gpt2-frozen", quiet=True)
    assert run.manifest["model"]["trainable_params"] == HEAD and run.metrics["test"]["accuracy"] >= 0


def test_param_groups_give_the_head_its_lr_and_decay_layers_downwards(folder):
    from damoxing.config import OptimizerConfig
    from damoxing.data.schema import DataSchema
    from damoxing.models import create_model
    from damoxing.models.pretrained import PretrainedModelConfig

    schema = DataSchema(kind="text", task="classification", input_shape=(16,), n_outputs=2, vocab_size=100, pad_id=0)
    model = create_model(PretrainedModelConfig(path=str(folder / "bert"), head_lr=0.01, layer_lr_decay=0.5), schema)
    groups = model.param_groups(OptimizerConfig(name="adamw", lr=0.001, weight_decay=0.1))
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    decay_of = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert lr_of[id(named["head.1.weight"])] == 0.01
    assert lr_of[id(named["backbone.encoder.layer.1.attention.self.query.weight"])] == 0.001  # the top layer
    assert lr_of[id(named["backbone.encoder.layer.0.attention.self.query.weight"])] == 0.0005
    assert lr_of[id(named["backbone.embeddings.word_embeddings.weight"])] == 0.001 * 0.25
    assert decay_of[id(named["head.1.weight"])] == 0.1 and decay_of[id(named["head.1.bias"])] == 0.0
    assert groups[0]["lr"] == 0.001  # the history's lr column is train.optimizer.lr
    assert sum(len(g["params"]) for g in groups) == len(named)


def test_bf16_autocast_trains_a_checkpoint(folder, tmp_path):
    """train.precision bf16 (the default on CUDA) runs the transformers model under autocast; here on CPU."""
    import math

    from damoxing.api import train

    config = classifier_config(folder, "lora")
    config["train"] |= {"precision": "bf16", "epochs": 1}
    run = train(config, out=tmp_path / "run", quiet=True)
    assert math.isfinite(run.history[0]["train_loss"]) and math.isfinite(run.metrics["test"]["log_loss"])


def test_gradient_checkpointing_gives_the_same_gradients(folder):
    from damoxing.data.schema import DataSchema
    from damoxing.models import create_model
    from damoxing.models.pretrained import PretrainedModelConfig

    schema = DataSchema(kind="text", task="classification", input_shape=(12,), n_outputs=2, vocab_size=100, pad_id=0)
    x = torch.randint(5, 60, (4, 12), generator=torch.Generator().manual_seed(0))
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = create_model(PretrainedModelConfig(path=str(folder / "bert"), gradient_checkpointing=checkpointing), schema).train()
        torch.manual_seed(1)  # the same dropout masks; checkpointing replays them in the recomputation
        model(x).square().sum().backward()
        grads.append(model.backbone.embeddings.word_embeddings.weight.grad)
    assert any(getattr(m, "gradient_checkpointing", False) for m in model.backbone.modules())
    torch.testing.assert_close(grads[0], grads[1])


def test_a_wrapper_saves_only_the_fine_tuned_state(folder):
    """state_dict as a submodule (torch.compile / DDP style wrappers) also holds only what fine-tuning changed."""
    from damoxing.data.schema import DataSchema
    from damoxing.models import create_model
    from damoxing.models.pretrained import PretrainedModelConfig

    schema = DataSchema(kind="text", task="classification", input_shape=(12,), n_outputs=2, vocab_size=100, pad_id=0)
    model = create_model(PretrainedModelConfig(path=str(folder / "bert"), finetune="lora"), schema)
    wrapped = torch.nn.Sequential(model).state_dict()
    assert sorted(wrapped) == sorted(f"0.{k}" for k in model.state_dict()) and len(wrapped) == 2 * 2 * 2 + 2


def test_an_encoder_decoder_checkpoint_is_refused(here):
    from damoxing.core.errors import ConfigError
    from damoxing.data.schema import DataSchema
    from damoxing.models import create_model
    from damoxing.models.hf_checkpoint import transformers_module
    from damoxing.models.pretrained import PretrainedModelConfig

    transformers = transformers_module()
    config = transformers.T5Config(vocab_size=64, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2)
    transformers.T5Model(config).save_pretrained(str(here / "t5"))
    schema = DataSchema(kind="text", task="classification", input_shape=(12,), n_outputs=2, vocab_size=64, pad_id=0)
    with pytest.raises(ConfigError, match="encoder-decoder"):
        create_model(PretrainedModelConfig(path=str(here / "t5")), schema)


# -- bad input: one paragraph, exit code 2, no traceback ----------------------------------------------


def train_error(cli, tmp_path, **model) -> str:
    path = write_yaml(tmp_path / "c.yaml", {"data": {"source": str(tmp_path.parent / "topics.csv")}, "model": {"type": "pretrained", **model}})
    result = cli("train", path, "--out", tmp_path / "run")
    assert result.code == 2, result.err
    err = "".join(line for line in result.err.splitlines(keepends=True) if not re.match(r"\[\d\d:\d\d:\d\d\] ", line))  # a log's stage lines
    assert "Traceback" not in err and err.startswith("error: ") and err.count("\n") == 1
    return err


@pytest.fixture
def here(folder, tmp_path):
    """A temp folder beside topics.csv."""
    path = folder / tmp_path.name
    path.mkdir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_a_folder_that_is_not_a_checkpoint(cli, here):
    (here / "notes.txt").write_text("hello")
    err = train_error(cli, here, path=str(here))
    assert "is not a Hugging Face checkpoint" in err and "config.json" in err and "'notes.txt'" in err


def test_a_checkpoint_without_a_tokenizer(cli, here):
    write_tiny_bert(here / "bare", tokenizer=False, vocab_size=64)
    err = train_error(cli, here, path=str(here / "bare"))
    assert "has no tokenizer" in err and "save_pretrained" in err


def test_lora_on_an_architecture_without_default_targets_names_the_option(cli, here):
    write_tiny_bert(here / "albert", model_type="albert")
    err = train_error(cli, here, path=str(here / "albert"), finetune="lora")
    assert "'albert'" in err and "model.lora.target_modules" in err and "query" in err and "ffn_output" in err


def test_lora_target_modules_that_do_not_exist(cli, folder, here):
    err = train_error(cli, here, path=str(folder / "bert"), finetune="lora", lora={"target_modules": ["q_proj"]})
    assert "['q_proj']" in err and "names no layer" in err and "value" in err


def test_a_hub_name_is_not_downloaded(cli, here):
    err = train_error(cli, here, path="bert-base-uncased")
    assert "never downloads" in err and "hf download bert-base-uncased" in err and "'minilm'" in err


def test_a_separate_tokenizer_is_refused(cli, folder, here):
    path = write_yaml(here / "c.yaml", {"data": {"source": str(folder / "topics.csv"), "tokenizer": {"path": str(folder / "gpt2")}},
                                        "model": {"type": "pretrained", "path": str(folder / "bert")}})
    result = cli("train", path, "--out", here / "run")
    assert result.code == 2 and "Remove data.tokenizer.path" in result.err


def test_a_frozen_language_model_is_refused(cli, folder, here):
    path = write_yaml(here / "c.yaml", {"data": {"source": str(folder / "corpus.txt"), "block_size": 16},
                                        "model": {"type": "pretrained", "path": str(folder / "gpt2"), "finetune": "frozen"}})
    result = cli("train", path, "--out", here / "run")
    assert result.code == 2 and "finetune: lora" in result.err and "Traceback" not in result.err


def test_a_base_whose_hash_changed_is_refused(cli, folder, here):
    from damoxing.api import train

    shutil.copytree(folder / "bert", here / "base")
    run = train(classifier_config(folder, "lora") | {"model": {"type": "pretrained", "path": str(here / "base"), "finetune": "lora"},
                                                     "train": {"epochs": 1}}, out=here / "run", quiet=True)
    assert cli("predict", run.path, folder / "topics.csv").code == 0
    write_tiny_bert(here / "base", seed=1)  # the same architecture, other weights
    result = cli("predict", run.path, folder / "topics.csv")
    assert result.code == 2 and "Traceback" not in result.err
    assert "is not the one this run was trained on" in result.err and run.config.model.base_sha256[:16] in result.err
    assert "only the LoRA adapters and the head" in result.err
