"""The training loop on tiny tensors: schedules, early stopping, divergence, accumulation, reproducibility."""

from __future__ import annotations

import math

import pytest
import torch

from damoxing.config import ScheduleConfig, TrainConfig
from damoxing.data.schema import DataSchema
from damoxing.models import create_model
from damoxing.models.mlp import MLPConfig
from damoxing.models.runtime import pick_device
from damoxing.tasks import TASKS
from damoxing.training.loop import Split, fit
from damoxing.training.optim import SCHEDULES, PlateauScale


def blobs(n=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = torch.randn(n, 4, generator=g) + y[:, None] * 2.0
    return Split(x[: n * 3 // 4], y[: n * 3 // 4]), Split(x[n * 3 // 4 :], y[n * 3 // 4 :])


def make(config: TrainConfig):
    schema = DataSchema(kind="table", task="classification", input_shape=(4,), n_outputs=2)
    torch.manual_seed(config.seed)
    model = create_model(MLPConfig(hidden=[8], dropout=0.0), schema)
    return model, TASKS.get("classification")(config)


def run(**kw):
    config = TrainConfig(**{"epochs": 5, "batch_size": 16, **kw})
    train, val = blobs()
    model, task = make(config)
    result = fit(model, train, val, task, config, torch.device("cpu"))
    return model, result


def test_learns_and_records_history():
    _, result = run(optimizer={"name": "adam", "lr": 0.05})
    assert len(result.history) == 5 and result.stopped == "completed"
    assert result.history[-1]["val_accuracy"] > 0.9
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert {"epoch", "train_loss", "val_loss", "val_accuracy", "lr", "seconds"} <= set(result.history[0])
    assert result.steps == 5 * math.ceil(150 / 16)


def test_same_seed_same_result_different_seed_differs():
    a, ra = run(seed=3)
    b, rb = run(seed=3)
    c, rc = run(seed=4)
    strip = lambda history: [{k: v for k, v in h.items() if k != "seconds"} for h in history]  # noqa: E731
    assert strip(ra.history) == strip(rb.history)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    assert not all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), c.state_dict().values()))


def test_divergence_is_caught_and_names_the_step():
    _, result = run(optimizer={"name": "sgd", "lr": 1e30}, log_every=1)
    assert result.stopped == "diverged"
    assert "step" in result.message and "lower train.optimizer.lr" in result.message


def test_early_stopping_restores_best_epoch():
    model, result = run(epochs=40, optimizer={"name": "adam", "lr": 0.5}, early_stopping={"patience": 2}, monitor="val_loss")
    assert result.stopped == "early_stopping"
    assert len(result.history) < 40
    best = min(h["val_loss"] for h in result.history)
    assert result.best_score == pytest.approx(best)
    assert result.history[result.best_epoch - 1]["val_loss"] == pytest.approx(best)


def test_monitor_accuracy_is_maximised():
    _, result = run(monitor="val_accuracy")
    assert result.best_score == max(h["val_accuracy"] for h in result.history)


def test_unknown_monitor_lists_valid_ones():
    from damoxing.core.errors import ConfigError

    with pytest.raises(ConfigError, match="val_accuracy"):
        run(monitor="val_f1", monitor_mode="max")


def test_gradient_accumulation_equals_large_batch_for_sgd():
    # 2 micro-batches of 8 accumulated == one batch of 16 when the data order is the same
    train, _ = blobs(32)
    results = []
    for batch, accum in ((16, 1), (8, 2)):
        config = TrainConfig(epochs=1, batch_size=batch, grad_accum_steps=accum, optimizer={"name": "sgd", "lr": 0.1})
        model, task = make(config)
        # same order: no shuffling difference matters for a full-batch-per-step comparison of one step
        fit(model, Split(train.x[:16], train.y[:16]), None, task, config, torch.device("cpu"))
        results.append([p.detach().clone() for p in model.parameters()])
    for p, q in zip(*results):
        assert torch.allclose(p, q, atol=1e-5)


def test_samples_seen_counts_every_row_once_with_accumulation():
    # 150 rows in batches of 16: 10 micro-batches, steps of 3, the last step has one (short) micro-batch
    _, result = run(epochs=2, grad_accum_steps=3, log_every=100)
    assert result.steps == 2 * 4 and result.samples_seen == 2 * 150


def gradient_norms_at_each_step(train_call) -> list[float]:
    """The total gradient norm every optimizer sees when it steps, during `train_call()`."""
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    norms = []

    def record(optimizer, args, kwargs):
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        norms.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))))

    handle = register_optimizer_step_pre_hook(record)
    try:
        train_call()
    finally:
        handle.remove()
    return norms


def test_clipping_and_l1_l2_run():
    """Every optimizer step sees gradients clipped to train.clip_grad_norm (without clipping some are
    larger), and a run with clipping and both penalties still learns."""
    settings = {"optimizer": {"name": "sgd", "lr": 0.5}, "l1": 1e-4, "l2": 1e-3}
    free = gradient_norms_at_each_step(lambda: run(**settings))
    results = []
    clipped = gradient_norms_at_each_step(lambda: results.append(run(clip_grad_norm=0.1, **settings)[1]))
    assert max(free) > 0.2 and len(clipped) == len(free)
    assert max(clipped) <= 0.1 + 1e-5
    assert results[0].history[-1]["val_accuracy"] > 0.8


def test_l1_l2_penalty_is_added_for_weight_matrices_only():
    """One full-batch SGD step equals the hand-computed step on task loss + l1 * sum|W| + l2 * sum W^2
    over weight matrices (biases are not penalised)."""
    import copy

    train, _ = blobs(32)  # 24 training rows: one batch, one step
    config = TrainConfig(epochs=1, batch_size=32, optimizer={"name": "sgd", "lr": 0.5}, l1=0.01, l2=0.05)
    model, task = make(config)
    start = copy.deepcopy(model)
    fit(model, train, None, task, config, torch.device("cpu"))

    loss, _ = task.loss(start, train.x, train.y)
    weights = [p for p in start.parameters() if p.dim() > 1]
    (loss + sum(0.01 * w.abs().sum() + 0.05 * w.pow(2).sum() for w in weights)).backward()
    expected = [p.detach() - 0.5 * p.grad for p in start.parameters()]
    for (name, p), e in zip(model.named_parameters(), expected):
        torch.testing.assert_close(p.detach(), e, rtol=0, atol=1e-6, msg=name)


@pytest.mark.parametrize("name", ["constant", "step", "cosine", "linear"])
def test_schedules_start_after_warmup_at_one(name):
    cfg = ScheduleConfig(name=name, step_epochs=1, gamma=0.5)
    fn = SCHEDULES.get(name)
    assert fn(0, 100, 10, cfg, 10) == pytest.approx(0.1)  # warm-up step 1 of 10
    assert fn(9, 100, 10, cfg, 10) == pytest.approx(1.0 if name != "step" else 1.0)


def test_cosine_and_linear_end_near_zero_and_step_halves():
    cfg = ScheduleConfig(step_epochs=2, gamma=0.5)
    assert SCHEDULES.get("cosine")(100, 100, 0, cfg) == pytest.approx(0.0, abs=1e-9)
    assert SCHEDULES.get("cosine")(50, 100, 0, cfg) == pytest.approx(0.5)
    assert SCHEDULES.get("linear")(75, 100, 0, cfg) == pytest.approx(0.25)
    assert SCHEDULES.get("step")(45, 100, 0, cfg, steps_per_epoch=10) == pytest.approx(0.25)  # epoch 4 -> two halvings


def test_plateau_scale_reduces_after_patience():
    p = PlateauScale(ScheduleConfig(patience=1, factor=0.5), "min")
    for v in (1.0, 0.9, 0.95, 0.95):
        p.update(v)
    assert p.scale == 0.5


def test_lr_follows_schedule_in_history():
    _, result = run(epochs=4, schedule={"name": "step", "step_epochs": 1, "gamma": 0.5}, optimizer={"name": "sgd", "lr": 0.1})
    lrs = [h["lr"] for h in result.history]
    assert lrs[1] == pytest.approx(lrs[0] / 2) and lrs[3] == pytest.approx(lrs[0] / 8)


def test_device_auto_is_cpu_here_and_cuda_request_fails_clearly():
    from damoxing.core.errors import ConfigError

    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    assert pick_device("auto").type in ("cpu", "mps")
    with pytest.raises(ConfigError, match="no CUDA device"):
        pick_device("cuda")


def test_bf16_autocast_on_cpu_when_asked():
    """precision bf16: the model's layers compute in bfloat16 in training and validation forwards
    (fp32 otherwise), and it still learns."""
    seen, results = {}, {}
    for precision in ("bf16", "fp32"):
        config = TrainConfig(epochs=5, batch_size=16, precision=precision, optimizer={"name": "adam", "lr": 0.05})
        train, val = blobs()
        model, task = make(config)
        dtypes = seen[precision] = set()
        model.head.register_forward_hook(lambda module, inputs, output, dtypes=dtypes: dtypes.add((module.training, output.dtype)))
        results[precision] = fit(model, train, val, task, config, torch.device("cpu"))
    assert seen["bf16"] == {(True, torch.bfloat16), (False, torch.bfloat16)}
    assert seen["fp32"] == {(True, torch.float32), (False, torch.float32)}
    assert results["bf16"].history[-1]["val_accuracy"] > 0.8


def test_ctrl_c_keeps_what_was_trained():
    config = TrainConfig(epochs=10, batch_size=16, optimizer={"name": "adam", "lr": 0.05})
    train, val = blobs()
    model, task = make(config)

    def interrupt(record):
        if record["epoch"] == 3:
            raise KeyboardInterrupt

    result = fit(model, train, val, task, config, torch.device("cpu"), on_epoch_end=interrupt)
    assert result.stopped == "interrupted" and len(result.history) == 3
    assert "interrupted" in result.message


def test_only_reduce_on_plateau_cuts_the_lr_when_the_monitor_stalls():
    # lr 2.0 makes val_loss bounce, so the monitor stalls for more than `patience` epochs
    stalled = dict(epochs=12, optimizer={"name": "sgd", "lr": 2.0}, schedule={"patience": 0, "factor": 0.5})
    _, constant = run(**stalled)
    assert {h["lr"] for h in constant.history} == {2.0}
    _, plateau = run(**{**stalled, "schedule": {"name": "reduce_on_plateau", "patience": 0, "factor": 0.5}})
    assert min(h["lr"] for h in plateau.history) < 2.0


class OwnsItsUpdate(torch.nn.Module):
    """The loop's extension point, minimally: least squares (target w = 1) stepped by its own SGD."""

    def __init__(self, nan_at_call: int = 0):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(4))
        self.calls, self.nan_at_call, self.lrs = 0, nan_at_call, []

    def configure_optimizers(self, config, build_optimizer):
        return {"only": torch.optim.SGD([self.w], lr=config.optimizer.lr)}

    def train_step(self, x, optimizers, autocast):
        self.calls += 1
        opt = optimizers["only"]
        self.lrs.append(opt.param_groups[0]["lr"])
        with autocast():
            loss = (x @ self.w - x.sum(1)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if self.calls == self.nan_at_call:
            loss = loss * float("nan")
        return {"w_error": (self.w.detach() - 1).abs().mean(), "loss": loss.detach()}


def test_a_model_that_owns_its_update_is_stepped_scheduled_and_reported():
    x = torch.randn(64, 4, generator=torch.Generator().manual_seed(0))
    config = TrainConfig(epochs=4, batch_size=16, optimizer={"name": "sgd", "lr": 0.1},
                         schedule={"name": "step", "step_epochs": 2, "gamma": 0.5})
    model = OwnsItsUpdate()
    result = fit(model, Split(x, None), None, TASKS.get("regression")(config), config, torch.device("cpu"))
    assert model.calls == result.steps == 4 * 4
    assert model.lrs[0] == pytest.approx(0.1) and model.lrs[-1] == pytest.approx(0.05)  # the loop's schedule reached its optimizer
    history = result.history
    assert list(history[0])[:3] == ["epoch", "train_loss", "train_w_error"]  # "loss" first, then the parts
    assert history[-1]["train_loss"] < history[0]["train_loss"] and history[-1]["train_w_error"] < history[0]["train_w_error"]


def test_a_model_that_owns_its_update_has_nan_caught_by_step_and_no_accumulation():
    from damoxing.core.errors import ConfigError

    x = torch.randn(64, 4, generator=torch.Generator().manual_seed(0))
    config = TrainConfig(epochs=2, batch_size=16, log_every=100)
    result = fit(OwnsItsUpdate(nan_at_call=6), Split(x, None), None, TASKS.get("regression")(config), config, torch.device("cpu"))
    assert result.stopped == "diverged" and "at step 6 " in result.message
    with pytest.raises(ConfigError, match="grad_accum_steps must be 1"):
        fit(OwnsItsUpdate(), Split(x, None), None, TASKS.get("regression")(config),
            config.model_copy(update={"grad_accum_steps": 2}), torch.device("cpu"))
