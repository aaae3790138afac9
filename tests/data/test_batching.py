"""Training batches: resident and streamed paths agree, shards cover the data, augmentation is a crop/flip."""

from __future__ import annotations

import pytest
import torch

from damoxing.config import AugmentConfig, TrainConfig
from damoxing.core.errors import ConfigError
from damoxing.training.batches import (
    ImageAugment,
    ResidentBatches,
    StreamedBatches,
    choose_path,
    fits_on_device,
    shard_order,
)

CPU = torch.device("cpu")


def data(n=37, shape=(3,)):
    x = torch.arange(n * int(torch.tensor(shape).prod()), dtype=torch.float32).reshape(n, *shape)
    return x, torch.arange(n)


@pytest.mark.parametrize("n,world", [(10, 1), (10, 2), (11, 2), (7, 3), (2, 4)])
def test_shards_cover_every_row_with_equal_lengths(n, world):
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    shards = [shard_order(order, r, world) for r in range(world)]
    assert len({len(s) for s in shards}) == 1 and len(shards[0]) == -(-n // world)
    assert set(torch.cat(shards).tolist()) == set(range(n))
    if world == 1:
        assert torch.equal(shards[0], order)


def test_two_shards_of_a_batch_are_the_single_process_batch():
    """batch_size is global: at every step the ranks' rows together are the one-process batch."""
    x, y = data(40)
    order = torch.randperm(40, generator=torch.Generator().manual_seed(1))
    single = list(ResidentBatches(x, y, TrainConfig(batch_size=8), CPU).batches(order))
    ranks = [list(ResidentBatches(x, y, TrainConfig(batch_size=8), CPU, rank=r, world=2).batches(order)) for r in (0, 1)]
    assert len(single) == len(ranks[0]) == len(ranks[1]) == 5
    for (xs, ys), (_, y0), (_, y1) in zip(single, ranks[0], ranks[1]):
        assert sorted(ys.tolist()) == sorted(y0.tolist() + y1.tolist())


@pytest.mark.parametrize("workers", [0, 1])
def test_streamed_batches_equal_resident_batches(workers):
    x, y = data(50, (2, 3))
    config = TrainConfig(batch_size=16, data_on_device=False, loader={"workers": workers})
    order = torch.randperm(50, generator=torch.Generator().manual_seed(2))
    resident = list(ResidentBatches(x, y, config, CPU).batches(order, start=1))
    stream = StreamedBatches(x, y, config, CPU)
    try:
        for _ in range(2):  # a second epoch reuses the (persistent) workers with a new order
            streamed = list(stream.batches(order, start=1))
            assert len(streamed) == len(resident) == 3
            for (xa, ya), (xb, yb) in zip(resident, streamed):
                assert torch.equal(xa, xb) and torch.equal(ya, yb)
    finally:
        stream.close()


def test_batches_without_targets():
    x, _ = data(10)
    (xb, yb), *_ = ResidentBatches(x, None, TrainConfig(batch_size=4), CPU).batches(torch.arange(10))
    assert yb is None and xb.shape == (4, 3)


def test_choose_path_honours_the_setting_and_the_size():
    assert choose_path(TrainConfig(data_on_device=True), 10**15, CPU)[0] == "resident"
    assert choose_path(TrainConfig(data_on_device=False), 10, CPU)[0] == "streamed"
    path, why = choose_path(TrainConfig(), 10**15, CPU)
    assert path == "streamed" and "exceed" in why and "RAM" in why
    path, why = choose_path(TrainConfig(), 1000, CPU)
    assert path == "resident" and "fit in 50%" in why
    assert fits_on_device(1000, CPU) and not fits_on_device(10**15, CPU)


def test_crop_takes_a_window_of_the_padded_image_and_flip_mirrors():
    x = torch.randn(16, 2, 5, 6)
    crop = ImageAugment(AugmentConfig(crop_padding=2), CPU, seed=0)
    out = crop(x)
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(16):  # each image is some 5x6 window of its own padded image
        windows = [padded[i, :, a : a + 5, b : b + 6] for a in range(5) for b in range(5)]
        assert any(torch.equal(out[i], w) for w in windows)
    assert not torch.equal(out, x)

    flip = ImageAugment(AugmentConfig(flip=True), CPU, seed=0)
    out = flip(x)
    flipped = [bool(torch.equal(out[i], x[i].flip(2))) for i in range(16)]
    kept = [bool(torch.equal(out[i], x[i])) for i in range(16)]
    assert all(f or k for f, k in zip(flipped, kept)) and 0 < sum(flipped) < 16


def test_augmentation_is_reproducible_from_its_generator_state():
    x = torch.randn(8, 1, 4, 4)
    aug = ImageAugment(AugmentConfig(crop_padding=1, flip=True), CPU, seed=3)
    state = aug.generator.get_state()
    first = aug(x)
    aug.generator.set_state(state)
    assert torch.equal(aug(x), first)


def test_augment_needs_images():
    x, y = data(10)
    with pytest.raises(ConfigError, match="train.augment"):
        ResidentBatches(x, y, TrainConfig(augment={"flip": True}), CPU)


def test_batches_apply_augmentation_and_channels_last():
    x = torch.randn(12, 3, 4, 4)
    config = TrainConfig(batch_size=6, augment={"crop_padding": 1, "flip": True})
    batches = ResidentBatches(x, torch.zeros(12), config, CPU, channels_last=True)
    xb, _ = next(iter(batches.batches(torch.arange(12))))
    assert xb.is_contiguous(memory_format=torch.channels_last)
    assert not torch.equal(xb, x[:6])
