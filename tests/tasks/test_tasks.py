"""Every task's declared surface against what it computes: validation metrics (what train.monitor may
name), the headline metric, and `evaluate` writing its intervals' confidence level."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

from damoxing.config import TrainConfig
from damoxing.data.schema import DataSchema
from damoxing.evaluation.metrics import METRICS
from damoxing.models import MODELS, create_model, family_task
from damoxing.tasks import TASKS, EvaluationSettings, headline_metric


def tiny(task: str, model_type: str):
    """(model, task object, x, y) with a handful of rows, for validation_metrics."""
    g = torch.Generator().manual_seed(0)
    if task == "language_modeling":
        schema = DataSchema(kind="corpus", task=task, input_shape=(8,), n_outputs=12, vocab_size=12, pad_id=0)
        x = torch.randint(1, 12, (6, 8), generator=g)
        y = torch.randint(1, 12, (6, 8), generator=g)
    else:
        n_outputs = 3 if task == "classification" else 1
        schema = DataSchema(kind="table", task=task, input_shape=(5,), n_outputs=n_outputs)
        x = torch.randn(12, 5, generator=g)
        y = torch.arange(12) % 3 if task == "classification" else (None if task == "generation" else torch.randn(12, generator=g))
    config = MODELS.get(model_type).config_class(type=model_type, size="tiny")
    torch.manual_seed(0)
    return create_model(config, schema), TASKS.get(task)(TrainConfig()), x, y


CASES = [("classification", "mlp"), ("regression", "mlp"), ("language_modeling", "gpt")] + [
    ("generation", name) for name, _ in MODELS.items() if family_task(name) == "generation"]


@pytest.mark.parametrize("task,model_type", CASES, ids=[f"{t}-{m}" for t, m in CASES])
def test_declared_validation_metrics_are_what_the_task_computes(task, model_type):
    model, task_obj, x, y = tiny(task, model_type)
    computed = task_obj.validation_metrics(model, x, y, 4, contextlib.nullcontext)
    assert tuple(computed) == TASKS.get(task).validation_metric_names(model_type)
    for name in computed:  # monitor_mode auto needs every monitor's direction
        assert name in METRICS, name


def test_generative_families_declare_different_loss_parts():
    generation = TASKS.get("generation")
    assert generation.monitors("vae") == ["val_loss", "val_recon", "val_kl", "val_frechet_distance", "val_diversity", "train_loss"]
    assert "val_d_loss" in generation.monitors("gan") and "val_recon" not in generation.monitors("gan")
    assert {"val_recon", "val_d_loss"} <= set(generation.monitors())  # any family: the union


def test_every_task_declares_a_headline_it_reports():
    assert {name: headline_metric(name) for name in TASKS.names()} == {
        "classification": "accuracy", "regression": "r2", "language_modeling": "perplexity", "generation": "frechet_distance"}
    assert headline_metric("no_such_task") == "loss"


@pytest.mark.parametrize("confidence", [0.8, 0.95])
def test_evaluate_records_the_confidence_of_its_intervals(confidence):
    from damoxing.data.pipeline import PreparedData, Preprocessing

    model, task, x, y = tiny("classification", "mlp")
    schema = DataSchema(kind="table", task="classification", input_shape=(5,), n_outputs=3)
    prep = Preprocessing(schema=schema, target="y", feature_columns=None, inputs=None)
    data = PreparedData(task="classification", preprocessing=prep, x={"train": x.numpy(), "test": x.numpy()}, y={},
                        y_original={"train": y.numpy(), "test": y.numpy()}, indices={}, fingerprint="", source="")
    metrics = task.evaluate(model, data, EvaluationSettings(bootstrap=50, confidence=confidence), contextlib.nullcontext)
    assert metrics["test_ci_level"] == confidence
    wide = task.evaluate(model, data, EvaluationSettings(bootstrap=50, confidence=0.99), contextlib.nullcontext)["test_ci"]["log_loss"]
    narrow = metrics["test_ci"]["log_loss"]
    assert wide[1] - wide[0] > narrow[1] - narrow[0]  # the level is the one the intervals were computed at
    assert np.isfinite(metrics["test"]["accuracy"]) and "val" not in metrics
