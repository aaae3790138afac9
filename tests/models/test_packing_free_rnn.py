"""The rnn family's export path (`PackingFreeRNN`) gives the packed model's outputs: every cell, one and
two directions, one and two layers, every pooling, texts of every length (an empty one too) and
lengths other than the padded one; numeric sequences as well."""

from __future__ import annotations

import itertools

import pytest
import torch

from damoxing.data.schema import DataSchema
from damoxing.models import create_model
from damoxing.models.protocols import Exportable
from damoxing.models.rnn import PackingFreeRNN, RNNConfig, reverse_valid_prefix

TEXT = DataSchema(kind="text", task="classification", input_shape=(10,), n_outputs=3, vocab_size=20, pad_id=0)
SEQUENCE = DataSchema(kind="sequence", task="classification", input_shape=(7, 3), n_outputs=2)


def texts(batch: int, length: int, seed: int) -> torch.Tensor:
    """Right-padded token ids of random lengths 1..length; row 0 is full, row 1 is empty (all padding)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(1, 20, (batch, length), generator=g)
    lengths = torch.randint(1, length + 1, (batch,), generator=g)
    lengths[0], lengths[1] = length, 0
    x[torch.arange(length) >= lengths[:, None]] = 0
    return x


GRID = [(cell, bidirectional, layers, pooling)
        for cell, bidirectional, layers, pooling in itertools.product(["lstm", "gru", "rnn"], [False, True], [1, 2], ["last", "mean", "max"])]


@pytest.mark.parametrize("cell,bidirectional,layers,pooling", GRID, ids=["-".join(map(str, case)) for case in GRID])
def test_packing_free_outputs_equal_the_packed_models(cell, bidirectional, layers, pooling):
    torch.manual_seed(0)
    model = create_model(RNNConfig(size="tiny", cell=cell, bidirectional=bidirectional, layers=layers, pooling=pooling), TEXT).eval()
    twin = PackingFreeRNN(model).eval()
    with torch.no_grad():
        for length in (10, 4, 1):
            x = texts(9, length, seed=length)
            torch.testing.assert_close(twin(x), model(x), rtol=1e-5, atol=1e-6)


def test_numeric_sequences_too():
    torch.manual_seed(0)
    model = create_model(RNNConfig(size="tiny", cell="gru", bidirectional=True, layers=2, pooling="mean"), SEQUENCE).eval()
    x = torch.randn(5, 7, 3)
    with torch.no_grad():
        torch.testing.assert_close(PackingFreeRNN(model)(x), model(x), rtol=1e-5, atol=1e-6)


def test_the_twin_shares_the_models_weights():
    model = create_model(RNNConfig(size="tiny", bidirectional=True), TEXT).eval()
    twin = PackingFreeRNN(model)
    assert twin.cells[0][1].weight_hh_l0 is model.rnn.weight_hh_l0_reverse
    with torch.no_grad():
        model.rnn.weight_hh_l0_reverse.add_(0.5)  # a change to the model is a change to the twin
        x = texts(4, 10, seed=3)
        torch.testing.assert_close(twin(x), model(x), rtol=1e-5, atol=1e-6)


def test_reversing_the_valid_prefix_twice_gives_it_back():
    h = torch.arange(2 * 5, dtype=torch.float32).view(2, 5, 1)
    lengths = torch.tensor([3, 5])
    once = reverse_valid_prefix(h, lengths)
    assert once[0, :, 0].tolist() == [2, 1, 0, 3, 4] and once[1, :, 0].tolist() == [9, 8, 7, 6, 5]
    assert torch.equal(reverse_valid_prefix(once, lengths), h)


def test_the_export_view_is_the_twin_and_fixes_time_only_for_plain_rnn_cells():
    lstm = create_model(RNNConfig(size="tiny"), TEXT)
    plain = create_model(RNNConfig(size="tiny", cell="rnn"), TEXT)
    assert isinstance(lstm, Exportable)
    view = lstm.export_view()
    assert isinstance(view.module, PackingFreeRNN) and set(view.axes) == {0, 1} and view.input == "rows"
    assert set(plain.export_view().axes) == {0}
