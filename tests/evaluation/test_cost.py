"""Cost accounting: FLOPs per sample against hand calculations, device and grid tables, the meter."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from damoxing.config import CostConfig, TrainConfig
from damoxing.data.schema import DataSchema
from damoxing.evaluation.cost import (
    CostMeter,
    count_flops,
    device_spec,
    forward_flops_per_sample,
    grid_intensity,
    recurrent_flops,
)
from damoxing.models import create_model, resolve_size
from damoxing.tasks import TASKS


def _classification():
    return TASKS.get("classification")(TrainConfig())


def test_mlp_flops_match_hand_count():
    """Seed 002's MLP 64 -> 128 -> 10: 2 FLOPs per multiply-add, biases and ReLU not counted."""
    from damoxing.models.mlp import MLPConfig

    schema = DataSchema(kind="table", task="classification", input_shape=(64,), n_outputs=10)
    model = create_model(MLPConfig(hidden=[128]), schema)
    x, y = torch.randn(32, 64), torch.randint(0, 10, (32,))
    assert forward_flops_per_sample(model, _classification(), x, y) == 2 * (64 * 128 + 128 * 10)  # 18,944


def test_cnn_flops_match_hand_count():
    """Tiny CNN on 1x8x8: conv 3x3 'same' to 8 channels, 2x2 pool, dense 16, head 10."""
    from damoxing.models.cnn import CNNConfig

    schema = DataSchema(kind="image", task="classification", input_shape=(1, 8, 8), n_outputs=10)
    model = create_model(resolve_size(CNNConfig(size="tiny")), schema)
    conv = 2 * (8 * 1 * 3 * 3) * (8 * 8)  # per output pixel and channel: C_in x k x k multiply-adds
    dense = 2 * (8 * 4 * 4) * 16
    head = 2 * 16 * 10
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    assert forward_flops_per_sample(model, _classification(), x, y) == conv + dense + head  # 13,632


class LSTMClassifier(nn.Module):
    """A plain LSTM model (2 layers) reading (B, T, F) and classifying from the last step."""

    def __init__(self, features: int = 3, hidden: int = 5, classes: int = 2):
        super().__init__()
        self.lstm = nn.LSTM(features, hidden, num_layers=2, batch_first=True)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x):
        out, _ = self.lstm(x)  # (B, T, H)
        return self.head(out[:, -1])


def test_lstm_flops_match_hand_count():
    """FlopCounterMode alone sees 0 inside nn.LSTM; the analytic count gives, per time step,
    layer 1: 2 x 4 gates x H x (F + H), layer 2: 2 x 4 x H x (H + H), then the head once."""
    model = LSTMClassifier()
    x, y = torch.randn(4, 7, 3), torch.randint(0, 2, (4,))
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as plain, torch.no_grad():
        model(x)
    assert plain.get_total_flops() == 4 * 2 * 5 * 2  # the head only: the LSTM is invisible to it
    per_step = 2 * 4 * 5 * (3 + 5) + 2 * 4 * 5 * (5 + 5)
    assert forward_flops_per_sample(model, _classification(), x, y) == 7 * per_step + 2 * 5 * 2  # 5,060


def test_recurrent_flops_bidirectional_gru_projection_and_packed():
    gru = nn.GRU(3, 5, bidirectional=True)  # (T, B, F)
    x = torch.randn(7, 4, 3)
    assert count_flops(gru, lambda: gru(x)) == 4 * 7 * 2 * (2 * 3 * 5 * (3 + 5))
    lstm = nn.LSTM(3, 6, proj_size=2, batch_first=True)
    x = torch.randn(2, 5, 3)
    assert recurrent_flops(lstm, x) == 2 * 5 * 2 * (4 * 6 * (3 + 2) + 6 * 2)
    packed = nn.utils.rnn.pack_padded_sequence(torch.randn(3, 6, 3), [6, 4, 1], batch_first=True)
    rnn = nn.RNN(3, 4, batch_first=True)
    assert count_flops(rnn, lambda: rnn(packed)) == (6 + 4 + 1) * 2 * 4 * (3 + 4)  # only the real steps


def test_attention_counted_in_eval_mode_on_cpu():
    """The fused CPU attention op and the encoder layer's inference fast path are both counted."""
    layer = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True)
    x = torch.randn(4, 5, 16)
    projections = 2 * 5 * 16 * (3 * 16) + 2 * 5 * 16 * 16
    attention = 2 * 2 * 5 * 5 * 16  # QK^T and AV over all heads
    feed_forward = 2 * 2 * 5 * 16 * 32
    expected = 4 * (projections + attention + feed_forward)
    with torch.enable_grad():  # eval mode with gradients: the fast path is not taken
        assert count_flops(layer.eval(), lambda: layer(x)) == expected

    class Encoder(nn.Module):  # the same layer inside a model, counted the way a run counts it
        def __init__(self):
            super().__init__()
            self.layer, self.head = layer, nn.Linear(16, 2)

        def forward(self, tokens):
            return self.head(self.layer(tokens).mean(1))

    per_sample = forward_flops_per_sample(Encoder(), _classification(), x, torch.randint(0, 2, (4,)))
    assert per_sample == expected / 4 + 2 * 16 * 2
    assert torch.backends.mha.get_fastpath_enabled()  # switched back on afterwards


def test_flop_count_leaves_model_and_rng_untouched():
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Dropout(0.5), nn.Linear(8, 2))
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = torch.randn(8, 4), torch.randint(0, 2, (8,))
    torch.manual_seed(3)
    expected = torch.rand(3)
    torch.manual_seed(3)
    forward_flops_per_sample(model, _classification(), x, y)
    assert torch.equal(torch.rand(3), expected)
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # BN statistics unchanged


def test_device_table_prefers_specific_names():
    assert device_spec("NVIDIA H100 PCIe")[1] == 350
    assert device_spec("NVIDIA H100 80GB HBM3")[0]["bf16"] == 989e12
    assert device_spec("NVIDIA A100-SXM4-80GB")[1] == 400
    assert device_spec("NVIDIA A10")[1] == 150
    assert device_spec("Some Future GPU") == (None, None)


def test_grid_intensity_from_country_or_override():
    assert grid_intensity(CostConfig(country="fra")) == (55.0, "built-in table, FRA (approximate annual average)")
    assert grid_intensity(CostConfig(country="FRA", grid_g_per_kwh=12.5))[0] == 12.5


def test_unknown_country_is_a_clear_config_error():
    from damoxing.core.errors import ConfigError
    from damoxing.spec import load_config

    with pytest.raises(ConfigError) as err:
        load_config({"data": {"source": "builtin:iris"}, "model": "mlp", "cost": {"country": "FRANCE"}})
    message = str(err.value)
    assert "cost.country" in message and "FRA" in message and "grid_g_per_kwh" in message


def test_meter_estimate_on_cpu_is_labelled_and_positive():
    from damoxing.models.mlp import MLPConfig

    schema = DataSchema(kind="table", task="classification", input_shape=(4,), n_outputs=2)
    model = create_model(MLPConfig(hidden=[8]), schema)
    x, y = torch.randn(64, 4), torch.randint(0, 2, (64,))
    meter = CostMeter(CostConfig(energy="estimate", cpu_watts_per_core=20.0, grid_g_per_kwh=100.0), torch.device("cpu"))
    meter.start()
    for _ in range(200):
        model(x).sum().backward()
    meter.stop()
    cost = meter.block(model=model, task=_classification(), train_x=x, train_y=y, schema=schema, params=58, trainable=58,
                       samples_seen=640, train_seconds=0.5, eval_seconds=0.1, autocast_bf16=False)
    assert cost["flops_per_sample"] == 2 * (4 * 8 + 8 * 2)
    assert cost["train_flops"] == 3 * cost["flops_per_sample"] * 640
    assert cost["samples_per_second"] == 1280
    assert cost["energy_is_estimate"] and cost["energy_method"].startswith("estimate")
    cpu_seconds = cost["energy_details"]["cpu_seconds"]
    assert cpu_seconds > 0 and cost["energy_kwh"] == pytest.approx(20.0 * cpu_seconds / 3.6e6)
    assert cost["co2_kg"] == pytest.approx(cost["energy_kwh"] * 0.1)
    assert cost["peak_memory_bytes"] > 10 * 2**20  # a Python process with torch loaded
    assert "mfu" not in cost and "tokens_per_second" not in cost  # CUDA only / token models only


def test_tokens_per_second_counts_non_padding_tokens():
    schema = DataSchema(kind="text", task="classification", input_shape=(4,), n_outputs=2, vocab_size=10, pad_id=0)
    model = nn.Sequential(nn.Embedding(10, 4), nn.Flatten(), nn.Linear(16, 2))
    x = torch.tensor([[5, 6, 0, 0], [5, 6, 7, 8]])  # 3 real tokens per row on average
    meter = CostMeter(CostConfig(energy="estimate"), torch.device("cpu"))
    meter.start()
    meter.stop()
    cost = meter.block(model=model, task=_classification(), train_x=x, train_y=torch.tensor([0, 1]), schema=schema,
                       params=1, trainable=1, samples_seen=100, train_seconds=2.0, eval_seconds=0.1, autocast_bf16=False)
    assert cost["tokens_per_second"] == pytest.approx(3 * 50)


def test_codecarbon_asked_for_but_missing_is_a_config_error():
    try:
        import codecarbon  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("codecarbon is installed here")
    from damoxing.core.errors import ConfigError

    with pytest.raises(ConfigError, match="codecarbon is not installed"):
        CostMeter(CostConfig(energy="codecarbon"), torch.device("cpu")).start()


def test_codecarbon_measures_when_installed():
    pytest.importorskip("codecarbon", reason="codecarbon is not installed (optional extra damoxing[energy])")
    meter = CostMeter(CostConfig(energy="codecarbon"), torch.device("cpu"))
    meter.start()
    total = sum(i * i for i in range(3_000_000))
    meter.stop()
    assert total > 0
    assert meter.energy["energy_kwh"] > 0
    assert meter.energy["energy_method"].startswith("codecarbon")
