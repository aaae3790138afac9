"""train.privacy: DP-SGD with opacus through the one training loop (trust/privacy.py)."""

from __future__ import annotations

import json
from typing import ClassVar, Literal

import pytest
import torch
from conftest import write_yaml

from damoxing.config import ModelConfigBase

QUIET = {"evaluate": {"bootstrap": 0}, "tracking": {"report": False}, "cost": {"enabled": False}}


def dp_config(privacy: dict, model: dict | None = None, source: str = "builtin:digits", **train) -> dict:
    return {"name": "dp", "data": {"source": source}, "model": model or {"type": "mlp", "size": "tiny"},
            "train": {"epochs": 2, "batch_size": 64, "optimizer": {"name": "adam", "lr": 0.01}, "privacy": privacy, **train}, **QUIET}


@pytest.fixture(scope="module")
def mlp_run(tmp_path_factory):
    from damoxing.api import train

    out = tmp_path_factory.mktemp("runs") / "dp_mlp"
    return train(dp_config({"epsilon": 2.0, "physical_batch_size": 16}), out=out, quiet=True)


def test_epsilon_spent_reaches_the_target_and_never_exceeds_it(mlp_run):
    spent = [record["epsilon"] for record in mlp_run.history]
    assert len(spent) == 2 and 0 < spent[0] < spent[1]  # spent grows epoch by epoch
    assert 0.9 * 2.0 <= spent[-1] <= 2.0 * 1.001
    block = mlp_run.manifest["privacy"]
    assert block["epsilon"] == pytest.approx(spent[-1])
    assert block["target_epsilon"] == 2.0 and block["accountant"] == "prv"
    assert block["delta"] < 1 / 1258 and block["noise_multiplier"] > 0.5
    assert block["sample_rate"] == pytest.approx(1 / 20)  # 64 of 1258 rows: 20 batches an epoch
    assert block["steps"] == 40 and block["physical_batch_size"] == 16
    saved = json.loads((mlp_run.path / "manifest.json").read_text())["privacy"]
    assert saved["epsilon"] == pytest.approx(spent[-1])
    history = [json.loads(line) for line in (mlp_run.path / "history.jsonl").read_text().splitlines()]
    assert [h["epsilon"] for h in history] == pytest.approx(spent)


def test_private_run_still_learns_and_reloads(mlp_run):
    from damoxing.api import evaluate

    assert mlp_run.metrics["test"]["accuracy"] > 0.5  # 10 classes: chance is 0.1
    again = evaluate(mlp_run.path)
    assert again["metrics"]["accuracy"] == pytest.approx(mlp_run.metrics["test"]["accuracy"])


@pytest.mark.slow
def test_tighter_budget_means_more_noise(tmp_path):
    from damoxing.api import train

    loose = train(dp_config({"epsilon": 8.0}, epochs=1), out=tmp_path / "loose", quiet=True).manifest["privacy"]
    tight = train(dp_config({"epsilon": 0.5, "accountant": "rdp"}, epochs=1), out=tmp_path / "tight", quiet=True).manifest["privacy"]
    assert tight["noise_multiplier"] > loose["noise_multiplier"]
    assert tight["epsilon"] <= 0.5 * 1.001 and loose["epsilon"] <= 8.0 * 1.001
    assert tight["accountant"] == "rdp"


@pytest.mark.slow
def test_batchnorm_is_replaced_recorded_and_the_run_reloads(tmp_path):
    import torch

    from damoxing.api import evaluate, load, train

    model = {"type": "cnn", "conv_channels": [4], "batch_norm": True, "dense": [16]}
    run = train(dp_config({"epsilon": 4.0}, model=model, source="builtin:digits_images", epochs=1), out=tmp_path / "cnn", quiet=True)
    replaced = run.manifest["privacy"]["replaced_layers"]
    assert replaced and all(r["from"] == "BatchNorm2d" and r["to"] == "GroupNorm" for r in replaced)
    loaded = load(run.path)
    assert any(isinstance(m, torch.nn.GroupNorm) for m in loaded.model.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in loaded.model.modules())
    assert evaluate(run.path)["metrics"]["accuracy"] == pytest.approx(run.metrics["test"]["accuracy"])


@pytest.mark.parametrize("privacy, extra, words", [
    ({"epsilon": 0}, {}, "epsilon"),
    ({"epsilon": -1}, {}, "epsilon"),
    ({"epsilon": 1, "delta": 1.5}, {}, "delta"),
    ({"epsilon": 1, "max_grad_norm": 0}, {}, "max_grad_norm"),
    ({"epsilon": 1, "accountant": "gdpx"}, {}, "accountant"),
    ({"epsilon": 1, "physical_batch_size": 128}, {}, "physical_batch_size"),
    ({"epsilon": 1}, {"clip_grad_norm": 1.0}, "max_grad_norm"),
    ({"epsilon": 1}, {"grad_accum_steps": 2}, "grad_accum_steps"),
])
def test_bad_privacy_settings_exit_2(cli, tmp_path, privacy, extra, words):
    path = write_yaml(tmp_path / "c.yaml", dp_config(privacy, epochs=1, **extra))
    result = cli("train", path, "--out", tmp_path / "run")
    assert result.code == 2, result.err
    assert words in result.err and "Traceback" not in result.err
    assert not (tmp_path / "run").exists()


def test_a_model_that_owns_its_update_is_refused(cli, tmp_path):
    path = write_yaml(tmp_path / "c.yaml", dp_config({"epsilon": 1}, model={"type": "gan", "size": "tiny"}, epochs=1))
    result = cli("train", path, "--out", tmp_path / "run")
    assert result.code == 2
    assert "own update" in result.err and "Traceback" not in result.err


def test_delta_not_below_one_over_n_warns(tmp_path, capsys):
    from damoxing.api import train

    run = train(dp_config({"epsilon": 8.0, "delta": 0.01}, epochs=1), out=tmp_path / "d")
    assert run.manifest["privacy"]["delta"] == 0.01
    assert "1/N" in capsys.readouterr().err


def test_report_shows_the_privacy_block(mlp_run, tmp_path):
    from damoxing.report.html import write_report

    html = write_report(mlp_run.path, tmp_path / "r.html").read_text()
    assert "<h2>Privacy</h2>" in html and "noise_multiplier" in html and "target_epsilon" in html


@pytest.mark.slow
def test_compare_draws_a_privacy_sweep(tmp_path):
    from damoxing.api import compare, train
    from damoxing.report.compare import build_page

    runs = {name: train(dp_config(privacy, epochs=1), out=tmp_path / name, quiet=True).path
            for name, privacy in (("eps1", {"epsilon": 1.0}), ("eps8", {"epsilon": 8.0}))}
    plain = dp_config(None, epochs=1)
    plain["train"].pop("privacy")
    runs["plain"] = train(plain, out=tmp_path / "plain", quiet=True).path
    result = compare(list(runs.values()), write=False)
    sweep = result.extra["privacy_sweep"]
    assert [p["epsilon"] for p in sweep["points"]] == [1.0, 8.0, None]
    assert sweep["points"][0]["spent"] <= 1.0 * 1.001
    assert "Price of privacy" in build_page(result, {})
    other = train(dp_config({"epsilon": 4.0}, epochs=1, batch_size=32), out=tmp_path / "other", quiet=True).path
    assert "privacy_sweep" not in compare([runs["eps1"], other], write=False).extra  # differs in more than epsilon


@pytest.fixture
def sequences(tmp_path):
    import numpy as np

    x = np.random.default_rng(0).normal(size=(200, 8, 2))
    np.savez(tmp_path / "seq.npz", x=x, y=np.where(x[:, :, 0].mean(1) > 0, "up", "down"))
    return str(tmp_path / "seq.npz")


@pytest.mark.slow
def test_an_lstm_trains_as_dplstm_and_reloads_as_an_lstm(tmp_path, sequences):
    import torch

    from damoxing.api import evaluate, load, train

    run = train(dp_config({"epsilon": 8.0}, model={"type": "rnn", "size": "tiny", "cell": "lstm"}, source=sequences, epochs=1),
                out=tmp_path / "lstm", quiet=True)
    assert run.manifest["privacy"]["replaced_layers"] == [{"layer": "rnn", "from": "LSTM", "to": "DPLSTM"}]
    assert isinstance(load(run.path).model.rnn, torch.nn.LSTM)  # the same weights, under nn.LSTM's names
    assert evaluate(run.path)["metrics"]["accuracy"] == pytest.approx(run.metrics["test"]["accuracy"])


def test_a_model_opacus_cannot_train_is_refused_naming_the_layer(cli, tmp_path, sequences):
    path = write_yaml(tmp_path / "c.yaml", dp_config({"epsilon": 1}, model={"type": "transformer", "size": "tiny"}, source=sequences, epochs=1))
    result = cli("train", path, "--out", tmp_path / "run")
    assert result.code == 2 and "Traceback" not in result.err
    assert "TransformerEncoder" in result.err and "differential privacy" in result.err
    assert "model.pooling: mean" in result.err  # the family's own way out


def tiny_net(kind: str):
    """(model, one row's shape): an MLP, or a DPLSTM (its gates are RNNLinear layers whose
    per-sample gradients add up over the time steps) under a linear head, on padded or packed
    sequences."""
    import torch
    from opacus.layers import DPLSTM

    if kind == "mlp":
        return torch.nn.Sequential(torch.nn.Linear(12, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3)), (12,)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn, self.head = DPLSTM(4, 8, batch_first=True), torch.nn.Linear(8, 3)

        def forward(self, x):
            if kind == "packed":  # sequences of 1-5 steps: the later steps' batches are ragged
                lengths = (x[:, 0, 0].abs() * 3).long().clamp(0, 4) + 1
                packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
                return self.head(self.rnn(packed)[1][0][-1])
            return self.head(self.rnn(x)[0][:, -1])

    return Net(), (5, 4)


def dp_weights(kind: str, fast: bool, monkeypatch, steps: int = 6) -> torch.Tensor:
    """A model's weights after a few DP-SGD steps (Poisson batches, some cut into two physical
    batches), with trust/fast_dp.py's speed-ups (factored Linear gradients included) or with opacus as it is."""
    import warnings

    import opacus.grad_sample.grad_sample_module as gsm
    import torch
    from opacus import PrivacyEngine
    from torch.utils.data import DataLoader, TensorDataset

    from damoxing.trust.fast_dp import install, speed_up

    install()
    if not fast:
        monkeypatch.setattr(gsm, "create_or_accumulate_grad_sample", gsm.create_or_accumulate_grad_sample.opacus_version)
    torch.manual_seed(0)
    model, shape = tiny_net(kind)
    x = torch.randn(120, *shape)
    y = torch.randint(0, 3, (120,))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hooks, optimizer, _ = PrivacyEngine().make_private(
            module=model, optimizer=torch.optim.Adam(model.parameters(), lr=0.01), data_loader=DataLoader(TensorDataset(x), batch_size=16),
            noise_multiplier=1.1, max_grad_norm=0.5, wrap_model=False, noise_generator=torch.Generator().manual_seed(1))
    optimizer = speed_up(optimizer, hooks) if fast else optimizer
    draw = torch.Generator().manual_seed(2)
    for step in range(steps):
        rows = (torch.rand(120, generator=draw) < 16 / 120).nonzero().flatten()
        parts = (rows[:5], rows[5:]) if step % 2 else (rows,)
        for i, part in enumerate(parts):
            warnings.filterwarnings("ignore", message="Full backward hook")
            torch.nn.functional.cross_entropy(model(x[part]), y[part]).backward()
            if i < len(parts) - 1:
                optimizer.signal_skip_step(do_skip=True)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    return torch.cat([p.detach().flatten() for p in model.parameters()])


@pytest.mark.parametrize("kind", ["mlp", "lstm", "packed"])
def test_the_fast_dp_step_gives_opacus_weights(kind, monkeypatch):
    from damoxing.trust.fast_dp import fast_optimizer_class

    with monkeypatch.context() as patch:
        reference = dp_weights(kind, False, patch)
    fast = dp_weights(kind, True, monkeypatch)
    # the same clipping, noise draws and scaling; a factored Linear gradient's norm and clipped sum
    # are summed in another order, so the weights agree to float rounding, not bit for bit
    assert torch.allclose(fast, reference, rtol=1e-5, atol=1e-6)
    assert (reference - dp_weights(kind, False, monkeypatch, steps=0)).abs().max() > 1e-3  # the steps moved the weights
    assert fast_optimizer_class().__name__ == "FastDPOptimizer"


def test_without_its_grad_sample_storage_the_fast_step_leaves_linear_layers_to_opacus(monkeypatch):
    """An opacus whose storage was not replaced (another version) must not be handed factored
    Linear gradients: it would copy their stand-in's empty memory and clip garbage."""
    import opacus.grad_sample.grad_sample_module as gsm

    from damoxing.trust.fast_dp import install

    install()
    with monkeypatch.context() as patch:
        reference = dp_weights("mlp", False, patch)
    monkeypatch.setattr(gsm, "create_or_accumulate_grad_sample", gsm.create_or_accumulate_grad_sample.opacus_version)
    fast = dp_weights("mlp", True, monkeypatch)  # the optimizer sped up, the storage opacus's own
    assert torch.allclose(fast, reference, rtol=1e-5, atol=1e-6)


def test_the_memoised_accountant_gives_opacus_epsilon():
    from opacus.accountants import PRVAccountant, RDPAccountant
    from opacus.accountants.analysis import rdp

    from damoxing.trust.fast_dp import install

    install()
    assert rdp._compute_rdp.__wrapped__(0.05, 1.3, 7.5) == rdp._compute_rdp(0.05, 1.3, 7.5) == rdp._compute_rdp(0.05, 1.3, 7.5)
    for accountant in (PRVAccountant(), RDPAccountant()):
        accountant.history = [(1.3, 0.05, 40)]
        first = accountant.get_epsilon(1e-5)
        assert accountant.get_epsilon(1e-5) == first and 0 < first < 10


class AttentionConfig(ModelConfigBase):
    type: Literal["attention_probe"] = "attention_probe"
    PRESETS: ClassVar[dict] = {}


class AttentionProbe(torch.nn.Module):
    """A tiny sequence classifier around nn.MultiheadAttention (at module level: opacus's fix deep-copies it)."""

    config_class = AttentionConfig
    input_kinds = frozenset({"sequence"})

    def __init__(self, n_features: int, n_outputs: int):
        super().__init__()
        self.embed = torch.nn.Linear(n_features, 16)
        self.attn = torch.nn.MultiheadAttention(16, 2, batch_first=True)
        self.head = torch.nn.Linear(16, n_outputs)

    @classmethod
    def from_config(cls, config, schema):
        return cls(schema.input_shape[-1], schema.n_outputs)

    def forward(self, x):
        h = self.embed(x)
        return self.head(self.attn(h, h, h, need_weights=False)[0].mean(1))


@pytest.fixture
def attention_family():
    """AttentionProbe registered as a family for one test (no built-in family uses nn.MultiheadAttention:
    the transformer's attention is its own, over scaled_dot_product_attention)."""
    from damoxing.models.registry import MODELS
    from damoxing.spec import config_class

    MODELS.register("attention_probe")(AttentionProbe)
    config_class.cache_clear()
    yield "attention_probe"
    MODELS._entries.pop("attention_probe")
    config_class.cache_clear()


def test_multihead_attention_trains_as_dp_attention_and_the_run_predicts(tmp_path, sequences, attention_family):
    import numpy as np

    from damoxing.api import evaluate, load, train

    run = train(dp_config({"epsilon": 8.0}, model={"type": attention_family}, source=sequences, epochs=1), out=tmp_path / "attn", quiet=True)
    assert run.manifest["privacy"]["replaced_layers"] == [{"layer": "attn", "from": "MultiheadAttention", "to": "DPMultiheadAttention"}]
    assert run.manifest["privacy"]["epsilon"] <= 8.0 * 1.001
    loaded = load(run.path)
    assert type(loaded.model.attn).__name__ == "DPMultiheadAttention"  # rebuilt before the weights load
    rows = np.load(sequences)["x"][:5]
    assert len(loaded.predict(rows)) == 5
    assert evaluate(run.path)["metrics"]["accuracy"] == pytest.approx(run.metrics["test"]["accuracy"])
    assert not any(isinstance(m, torch.nn.MultiheadAttention) for m in loaded.model.modules())


def test_a_mean_pooled_transformer_trains_privately_and_the_run_predicts(tmp_path, sequences):
    import numpy as np

    from damoxing.api import evaluate, load, train

    model = {"type": "transformer", "size": "tiny", "pooling": "mean"}  # no [CLS] parameter on the encoder itself
    run = train(dp_config({"epsilon": 8.0}, model=model, source=sequences, epochs=1), out=tmp_path / "tf", quiet=True)
    assert run.manifest["privacy"]["replaced_layers"] == []  # its attention is linear maps and SDPA: nothing to replace
    assert 0 < run.manifest["privacy"]["epsilon"] <= 8.0 * 1.001
    assert len(load(run.path).predict(np.load(sequences)["x"][:4])) == 4
    assert evaluate(run.path)["metrics"]["accuracy"] == pytest.approx(run.metrics["test"]["accuracy"])
