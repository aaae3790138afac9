"""`damoxing compress --method prune | distill`: smaller models trained by the normal loop on the original
run's own splits, loaded through the normal registry, the original run untouched."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
import yaml

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TRAIN = {"epochs": 2, "batch_size": 64, "optimizer": {"name": "adam", "lr": 0.01}, "seed": 0}
SPLIT = {"val": 0.1, "test": 0.2, "stratify": True, "seed": 0}


def digest(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    from damoxing.api import train

    base = tmp_path_factory.mktemp("prune")
    mlp = {"name": "mlp", "data": {"source": "builtin:digits", "split": SPLIT}, "model": {"type": "mlp", "hidden": [64, 32]}, "train": TRAIN}
    cnn = {"name": "cnn", "data": {"source": "builtin:digits_images", "split": SPLIT},
           "model": {"type": "cnn", "conv_channels": [8, 16], "dense": [32], "pool_every": 2, "batch_norm": True}, "train": TRAIN}
    return {"base": base, "mlp": train(mlp, out=base / "mlp", quiet=True).path, "cnn": train(cnn, out=base / "cnn", quiet=True).path}


def test_structured_pruning_halves_widths_and_flops_and_loads_through_the_registry(runs):
    from damoxing.api import compress, load

    before = digest(runs["mlp"])
    result = compress(runs["mlp"], "prune", sparsity=0.5, finetune_epochs=1, out=runs["base"] / "mlp-pruned", threads=1, quiet=True)
    assert digest(runs["mlp"]) == before
    config = yaml.safe_load((result.path / "config.yaml").read_text())
    assert config["model"]["hidden"] == [32, 16]
    model = load(result.path)  # config.yaml's widths build the model the weights fit
    assert model.model_format == "safetensors" and model.model.head.in_features == 16
    size = result.report["size"]
    f = model.preprocessing.schema.input_shape[0]  # digits' 64 pixels less those 0 in every image (constant columns are dropped)
    # FLOPs: f*64 + 64*32 + 32*10 multiply-adds before, f*32 + 32*16 + 16*10 after
    assert size["before"]["flops_per_sample"] == 2 * (f * 64 + 64 * 32 + 32 * 10)
    assert size["after"]["flops_per_sample"] == 2 * (f * 32 + 32 * 16 + 16 * 10)
    assert size["after"]["params"] < 0.55 * size["before"]["params"] and size["after"]["bytes"] < size["before"]["bytes"]
    manifest = json.loads((result.path / "manifest.json").read_text())
    assert manifest["compression"]["method"] == "prune" and manifest["compression"]["settings"]["structured"] is True
    assert manifest["training"]["epochs_run"] == 1
    assert result.report["details"]["widths"] == {"layers": ["body.0", "body.2"], "before": [64, 32], "after": [32, 16]}


def test_structured_pruning_keeps_what_the_kept_units_compute(runs):
    """Before fine-tuning, the pruned cnn is the original with units removed: keeping every unit (sparsity
    -> 0) reproduces the original's outputs exactly, so the slicing of convs, batch norms and the flattened
    dense inputs is right."""
    from damoxing.api import load
    from damoxing.models import create_model
    from damoxing.optimize.prune import prune

    original = load(runs["cnn"])
    pruned = prune(original.model, original.config.model, 1e-9)
    assert pruned.config.conv_channels == [8, 16] and pruned.config.dense == [32]
    rebuilt = create_model(pruned.config, original.schema)
    rebuilt.load_state_dict(pruned.state)
    x = torch.randn(5, *original.schema.input_shape)
    original.model.eval(), rebuilt.eval()
    assert torch.allclose(rebuilt(x), original.model(x), atol=1e-5)
    half = prune(original.model, original.config.model, 0.5)
    assert half.config.conv_channels == [4, 8] and half.config.dense == [16]
    smaller = create_model(half.config, original.schema)
    smaller.load_state_dict(half.state)  # every tensor fits the smaller model


def test_unstructured_pruning_is_reported_honestly(runs):
    from damoxing.api import compress, load

    result = compress(runs["mlp"], "prune", sparsity=0.6, structured=False, finetune_epochs=1, out=runs["base"] / "mlp-sparse",
                      threads=1, quiet=True)
    size = result.report["size"]
    assert size["after"]["params"] == size["before"]["params"] and size["after"]["flops_per_sample"] == size["before"]["flops_per_sample"]
    f = load(result.path).preprocessing.schema.input_shape[0]  # digits' pixels less the constant ones
    weights = f * 64 + 64 * 32 + 32 * 10
    zeroed = round(f * 64 * 0.6) + round(64 * 32 * 0.6) + round(32 * 10 * 0.6)
    assert size["after"]["nonzero_params"] == size["before"]["params"] - zeroed  # zeros stayed zero through fine-tuning
    assert result.report["details"]["widths"] == {"weights_zeroed": zeroed, "weights": weights}
    assert "unchanged" in result.report["details"]["note"]


def test_distill_trains_a_smaller_cnn_that_records_its_teacher(runs, tmp_path, cli):
    student = {"name": "student", "data": {"source": "builtin:digits_images", "split": SPLIT},
               "model": {"type": "cnn", "conv_channels": [4], "dense": [16]}, "train": {**TRAIN, "epochs": 3}}
    (tmp_path / "student.yaml").write_text(yaml.safe_dump(student))
    before = digest(runs["cnn"])
    out = cli("compress", runs["cnn"], "--method", "distill", "--student", tmp_path / "student.yaml", "--temperature", "3",
              "--alpha", "0.3", "--threads", "1", "--out", runs["base"] / "student")
    assert out.code == 0, out.err
    path = runs["base"] / "student"
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["derived_from"]["run"] == str(runs["cnn"]) and manifest["compression"]["method"] == "distill"
    report = json.loads((path / "compression.json").read_text())
    assert report["details"]["teacher"]["run"] == str(runs["cnn"])
    assert report["settings"]["temperature"] == 3 and report["settings"]["alpha"] == 0.3
    assert report["size"]["after"]["params"] * 5 < report["size"]["before"]["params"]
    assert report["quality"]["after"]["value"] > 0.5  # it learned (chance is 0.1)
    assert digest(runs["cnn"]) == before
    assert cli("evaluate", path).code == 0


def test_distillation_loss_is_kl_times_t_squared_plus_alpha_task_loss():
    from damoxing.config import TrainConfig
    from damoxing.optimize.distill import DistillationLoss, packed_targets
    from damoxing.tasks import TASKS

    task = TASKS.get("classification")(TrainConfig())
    student, teacher = torch.tensor([[2.0, 0.0, -1.0]]), torch.tensor([[0.5, 1.5, 0.0]])
    loss = DistillationLoss(task, temperature=2.0, alpha=0.5)
    value, _ = loss.loss(lambda x: student, None, packed_targets(torch.tensor([1]), teacher))
    p = torch.softmax(teacher / 2, -1)
    kl = (p * (p.log() - torch.log_softmax(student / 2, -1))).sum() * 4
    ce = -torch.log_softmax(student, -1)[0, 1]
    assert value.item() == pytest.approx((kl + 0.5 * ce).item(), rel=1e-5)


def test_bad_prune_and_distill_requests_exit_2(runs, cli, tmp_path):
    before = digest(runs["cnn"])
    other = {"name": "other", "data": {"source": "builtin:digits_images", "split": {**SPLIT, "seed": 1}},
             "model": {"type": "cnn", "conv_channels": [4], "dense": [16]}, "train": TRAIN}
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(other))
    regression = {**other, "task": "regression", "data": {"source": "builtin:digits_images", "split": SPLIT}}
    (tmp_path / "regression.yaml").write_text(yaml.safe_dump(regression))
    cases = [
        (("--method", "prune", "--sparsity", "1.5"), "strictly between 0 and 1"),
        (("--method", "prune", "--sparsity", "0"), "strictly between 0 and 1"),
        (("--method", "prune", "--structured", "maybe"), "--structured is 'maybe'"),
        (("--method", "prune", "--finetune-epochs", "0"), "1 or more"),
        (("--method", "distill"), "needs --student"),
        (("--method", "distill", "--student", tmp_path / "missing.yaml"), "does not exist"),
        (("--method", "distill", "--student", tmp_path / "other.yaml"), "data.split"),
        (("--method", "distill", "--student", tmp_path / "regression.yaml"), "task is 'regression'"),
        (("--method", "distill", "--student", tmp_path / "other.yaml", "--temperature", "0"), "--temperature is 0"),
    ]
    for args, message in cases:
        out = cli("compress", runs["cnn"], *args, "--out", tmp_path / "never")
        assert out.code == 2 and message in out.err, (args, out.err)
        assert not (tmp_path / "never").exists()
    assert digest(runs["cnn"]) == before
    assert not [p for p in runs["base"].iterdir() if p.name.startswith(".")]  # no staging folder left behind


@pytest.mark.slow
def test_distill_from_a_pretrained_encoder_to_a_small_transformer(tmp_path):
    """Text: a pretrained encoder run (the tests' tiny random BERT, LoRA) -> a transformer of its own
    tokenizer, trained on the teacher's rows; before / after each read the rows through their own preprocessing."""
    from hf_fixtures import two_topic_sentences, write_tiny_bert, write_topics_csv

    from damoxing.api import compress, train

    texts, _ = two_topic_sentences(40)
    data = {"source": str(write_topics_csv(tmp_path / "topics.csv", n=160)), "target": "label"}
    teacher = train({"name": "teacher", "data": data, "evaluate": {"bootstrap": 0},
                     "model": {"type": "pretrained", "path": str(write_tiny_bert(tmp_path / "bert", texts=texts)), "finetune": "lora"},
                     "train": {**TRAIN, "epochs": 2, "batch_size": 32}}, out=tmp_path / "teacher", quiet=True).path
    before = digest(teacher)
    student = {"name": "student", "model": {"type": "transformer", "size": "tiny", "d_model": 16, "ff_size": 32},
               "data": {**data, "tokenizer": {"vocab_size": 300}}, "train": {**TRAIN, "epochs": 3}}
    result = compress(teacher, "distill", student=student, temperature=2.0, alpha=0.5, out=tmp_path / "student", threads=1, quiet=True)
    assert digest(teacher) == before
    config = yaml.safe_load((result.path / "config.yaml").read_text())
    assert config["model"]["type"] == "transformer" and config["data"]["tokenizer"]["kind"] == "bpe"
    report = result.report
    assert report["details"]["teacher"] == {"run": str(teacher), "model": "pretrained"}
    recorded = json.loads((result.path / "metrics.json").read_text())["test"]["accuracy"]
    assert report["quality"]["after"]["value"] == pytest.approx(recorded)  # the student read the rows through its own tokenizer
    assert report["size"]["after"]["params"] < report["size"]["before"]["params"]
    assert json.loads((result.path / "manifest.json").read_text())["derived_from"]["run"] == str(teacher)


def test_distill_a_regressor_into_a_smaller_one(tmp_path):
    from damoxing.api import compress, train

    data = {"source": "builtin:diabetes", "split": {"val": 0.1, "test": 0.2, "seed": 0}}
    teacher = train({"name": "teacher", "data": data, "model": {"type": "mlp", "hidden": [64, 32]},
                     "train": {**TRAIN, "epochs": 30, "optimizer": {"name": "adam", "lr": 0.003}}, "evaluate": {"bootstrap": 0}},
                    out=tmp_path / "teacher", quiet=True)
    student = {"name": "student", "data": data, "model": {"type": "mlp", "hidden": [4]},
               "train": {**TRAIN, "epochs": 30, "optimizer": {"name": "adam", "lr": 0.01}}}
    result = compress(teacher.path, "distill", student=student, alpha=0.5, out=tmp_path / "student", threads=1, quiet=True)
    report = result.report
    assert report["quality"]["metric"] == "r2" and report["quality"]["after"]["value"] > 0.2  # it learned (the mean scores 0)
    assert "temperature" not in report["settings"] and report["details"]["loss"].startswith("MSE(student, teacher's predictions)")
    assert report["size"]["after"]["params"] * 5 < report["size"]["before"]["params"]


def test_regression_distillation_loss_is_mse_to_the_teacher_plus_alpha_task_loss():
    from damoxing.config import TrainConfig
    from damoxing.optimize.distill import RegressionDistillationLoss, packed_regression_targets
    from damoxing.tasks import TASKS

    task = TASKS.get("regression")(TrainConfig())
    student, targets, teacher = torch.tensor([[1.0], [3.0]]), torch.tensor([0.0, 2.0]), torch.tensor([2.0, 2.0])
    value, _ = RegressionDistillationLoss(task, alpha=0.5).loss(lambda x: student, None, packed_regression_targets(targets, teacher))
    matched = ((1 - 2) ** 2 + (3 - 2) ** 2) / 2
    own = ((1 - 0) ** 2 + (3 - 2) ** 2) / 2  # the task's default loss: MSE
    assert value.item() == pytest.approx(matched + 0.5 * own)
