"""The loop's fast paths on CPU: streamed == resident, channels_last, augmentation, compile fallback,
and exact resume from in-process checkpoints."""

from __future__ import annotations

import pytest
import torch

from damoxing.config import TrainConfig
from damoxing.data.schema import DataSchema
from damoxing.models import create_model
from damoxing.models.cnn import CNNConfig
from damoxing.models.mlp import MLPConfig
from damoxing.tasks import TASKS
from damoxing.training.checkpoint import Checkpointer, read_checkpoint
from damoxing.training.loop import Split, fit

CPU = torch.device("cpu")


def blobs(n=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = torch.randn(n, 4, generator=g) + y[:, None] * 2.0
    return Split(x[: n * 3 // 4], y[: n * 3 // 4]), Split(x[n * 3 // 4 :], y[n * 3 // 4 :])


def images(n=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = torch.randn(n, 1, 8, 8, generator=g) * 0.5
    x[y == 1, :, 2:6, 2:6] += 1.5  # class 1 has a bright square
    return Split(x[:64], y[:64]), Split(x[64:], y[64:])


def train_mlp(dropout=0.0, checkpoints=None, on_epoch_end=None, **kw):
    config = TrainConfig(**{"epochs": 4, "batch_size": 16, "optimizer": {"name": "adam", "lr": 0.05}, **kw})
    schema = DataSchema(kind="table", task="classification", input_shape=(4,), n_outputs=2)
    torch.manual_seed(config.seed)
    model = create_model(MLPConfig(hidden=[8], dropout=dropout), schema)
    train, val = blobs()
    result = fit(model, train, val, TASKS.get("classification")(config), config, CPU,
                 checkpoints=checkpoints, on_epoch_end=on_epoch_end)
    return model, result


def train_cnn(**kw):
    config = TrainConfig(**{"epochs": 3, "batch_size": 16, "optimizer": {"name": "adam", "lr": 0.01}, **kw})
    schema = DataSchema(kind="image", task="classification", input_shape=(1, 8, 8), n_outputs=2)
    torch.manual_seed(0)
    model = create_model(CNNConfig(conv_channels=[4], dense=[8], dropout=0.0), schema)
    train, val = images()
    return model, fit(model, train, val, TASKS.get("classification")(config), config, CPU)


def same_weights(a, b) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def test_streamed_path_trains_exactly_like_the_resident_path(capsys):
    resident, r1 = train_mlp()
    streamed, r2 = train_mlp(data_on_device=False, loader={"workers": 1})
    assert r1.data_path == "resident" and r2.data_path == "streamed"
    assert same_weights(resident, streamed)
    assert "streamed through a DataLoader" in capsys.readouterr().err


def test_channels_last_on_cpu_when_asked_trains_the_same_model():
    plain, r1 = train_cnn(channels_last="off")
    fast, r2 = train_cnn(channels_last="on")
    conv = fast.features[0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last)
    for p, q in zip(plain.parameters(), fast.parameters()):
        assert torch.allclose(p, q, atol=1e-4)
    assert r2.history[-1]["val_accuracy"] > 0.8


def test_augmentation_changes_training_and_still_learns():
    plain, _ = train_cnn()
    augmented, result = train_cnn(augment={"crop_padding": 1, "flip": True}, epochs=5)
    assert not same_weights(plain, augmented)
    assert result.history[-1]["val_accuracy"] > 0.8


def test_compile_failure_at_the_first_step_falls_back_to_eager(capsys):
    import torch._inductor.config as inductor

    eager, _ = train_mlp(epochs=1)
    with inductor.patch({"cpp.cxx": ("/nonexistent/c++",), "force_disable_caches": True}):
        fallback, result = train_mlp(epochs=1, compile="on")
    err = capsys.readouterr().err
    assert "torch.compile failed at the first step" in err and "train.compile: off" in err
    assert result.stopped == "completed" and same_weights(eager, fallback)


@pytest.mark.parametrize("every", ["1 epochs", "5 steps"])
def test_resume_from_a_checkpoint_is_bitwise_exact(tmp_path, every):
    """Stop after epoch 2 (Ctrl-C), resume from the last checkpoint, end where an uninterrupted run ends."""
    # dropout, weight decay and a warm-up + cosine schedule: every piece of state must come back
    settings = {"dropout": 0.3, "epochs": 4, "optimizer": {"name": "adamw", "lr": 0.05, "weight_decay": 0.1},
                "schedule": {"name": "cosine", "warmup_epochs": 1}}
    full, full_result = train_mlp(**settings)
    path = tmp_path / "checkpoint.safetensors"
    config = TrainConfig(epochs=4, checkpoint_every=every)

    def stop(record):
        if record["epoch"] == 2:
            raise KeyboardInterrupt

    _, first = train_mlp(checkpoints=Checkpointer(path, config.checkpoint_interval()), on_epoch_end=stop, **settings)
    assert first.stopped == "interrupted" and path.exists()
    resumed_from = read_checkpoint(path)
    resumed, result = train_mlp(checkpoints=Checkpointer(path, config.checkpoint_interval(), resume=resumed_from), **settings)
    assert result.resumed_from["step"] == resumed_from.meta["loop"]["step"] > 0
    if every == "5 steps":
        assert result.resumed_from["micro"] > 0  # a mid-epoch checkpoint
    assert same_weights(full, resumed)
    strip = lambda history: [{k: v for k, v in h.items() if k != "seconds"} for h in history]  # noqa: E731
    assert strip(result.history) == strip(full_result.history)
    assert result.steps == full_result.steps and result.samples_seen == full_result.samples_seen


def test_cuda_settings_logic_without_a_gpu():
    """TF32 and channels_last are decided for CUDA; the decisions are plain logic, checked here on CPU."""
    from damoxing.training.loop import configure_cuda, use_channels_last

    cuda = torch.device("cuda")
    matmul, conv = torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision
    try:
        torch.backends.cuda.matmul.fp32_precision = "none"
        configure_cuda(TrainConfig(tf32=False), cuda)
        configure_cuda(TrainConfig(), CPU)
        assert torch.backends.cuda.matmul.fp32_precision == "none"
        configure_cuda(TrainConfig(), cuda)
        assert torch.backends.cuda.matmul.fp32_precision == "tf32" and torch.backends.cudnn.conv.fp32_precision == "tf32"
    finally:
        torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision = matmul, conv

    image_schema = DataSchema(kind="image", task="classification", input_shape=(1, 8, 8), n_outputs=2)
    cnn = create_model(CNNConfig(conv_channels=[4], dense=[8]), image_schema)
    mlp = create_model(MLPConfig(hidden=[8]), image_schema)
    x = torch.zeros(2, 1, 8, 8)
    assert use_channels_last(cnn, x, TrainConfig(), cuda) and not use_channels_last(cnn, x, TrainConfig(), CPU)
    assert not use_channels_last(mlp, x, TrainConfig(), cuda) and not use_channels_last(cnn, x, TrainConfig(channels_last="off"), cuda)
    assert use_channels_last(cnn, x, TrainConfig(channels_last="on"), CPU)
