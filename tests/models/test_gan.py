"""The GAN family: each player learns against the other held fixed, the generator's loss does not
saturate, and the update is the model's own (two optimizers, settings it cannot honour refused)."""

from __future__ import annotations

import contextlib

import pytest
import torch

from damoxing.config import TrainConfig
from damoxing.core.errors import ConfigError
from damoxing.models.gan import GAN, GANConfig
from damoxing.training.optim import build_optimizer


def gan(shape=(1, 8, 8), **options) -> GAN:
    torch.manual_seed(0)
    return GAN(shape, GANConfig(**{"latent_dim": 4, "hidden": [16], "conv_channels": [8, 16], **options}))


def real_batch(n=32):
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(n, 1, 8, 8)
    x[:, 0, 2:6, 3:5] = 2.0  # a bright bar: easy to tell from the generator's first noise
    return x + 0.1 * torch.randn(n, 1, 8, 8, generator=g)


@pytest.mark.parametrize("shape", [(1, 8, 8), (5,)])
def test_the_discriminator_learns_against_a_fixed_generator(shape):
    model = gan(shape)
    x = real_batch() if len(shape) == 3 else torch.randn(32, 5) + 3.0
    optimizer = model.configure_optimizers(TrainConfig(optimizer={"name": "adam", "lr": 0.01}), build_optimizer)["discriminator"]
    fake = model.generate(torch.randn(32, 4)).detach()
    losses = []
    for _ in range(30):
        loss = model.discriminator_loss(model(x), model(fake))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize("shape", [(1, 8, 8), (5,)])
def test_the_generator_learns_against_a_fixed_discriminator(shape):
    model = gan(shape)
    optimizer = model.configure_optimizers(TrainConfig(optimizer={"name": "adam", "lr": 0.01}), build_optimizer)["generator"]
    z = torch.randn(32, 4)
    losses = []
    for _ in range(30):
        loss = model.generator_loss(model(model.generate(z)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_generator_loss_is_non_saturating():
    # when the discriminator confidently rejects a fake (logit -10), -log D(G(z)) still has slope ~1;
    # the saturating log(1 - D(G(z))) would have slope sigmoid(-10) ~ 4.5e-5
    logit = torch.tensor([-10.0], requires_grad=True)
    GAN.generator_loss(logit).backward()
    assert logit.grad.item() == pytest.approx(-1.0, abs=1e-3)


def test_discriminator_loss_with_label_smoothing_targets_one_minus_it():
    model = gan(label_smoothing=0.1)
    big = torch.tensor([20.0])  # D is certain: real. With target 0.9 that costs 0.1 * 20 (the BCE's linear tail)
    assert model.discriminator_loss(big, torch.tensor([-20.0])).item() == pytest.approx(2.0, abs=1e-3)


def test_two_optimizers_over_disjoint_players_and_unsupported_settings_refused():
    model = gan()
    optimizers = model.configure_optimizers(TrainConfig(), build_optimizer)
    d_params = {id(p) for g in optimizers["discriminator"].param_groups for p in g["params"]}
    g_params = {id(p) for g in optimizers["generator"].param_groups for p in g["params"]}
    assert not d_params & g_params and d_params | g_params == {id(p) for p in model.parameters()}
    with pytest.raises(ConfigError, match="train.clip_grad_norm"):
        model.configure_optimizers(TrainConfig(clip_grad_norm=1.0), build_optimizer)


def test_train_step_updates_both_players_and_copes_with_a_batch_of_one():
    model = gan()
    optimizers = model.configure_optimizers(TrainConfig(), build_optimizer)
    d_before = [p.detach().clone() for p in model.discriminator.parameters()]
    g_before = [p.detach().clone() for p in model.generator.parameters()]
    parts = model.train_step(real_batch(1), optimizers, contextlib.nullcontext)  # batch norm with one real row
    assert set(parts) == {"loss", "d_loss", "g_loss"}
    assert parts["loss"].item() == pytest.approx(parts["d_loss"].item() + parts["g_loss"].item())
    assert all(not torch.equal(a, b) for a, b in zip(d_before, model.discriminator.parameters()))
    assert all(not torch.equal(a, b) for a, b in zip(g_before, model.generator.parameters()))


@pytest.mark.parametrize("architecture", ["conv", "mlp"])
def test_samples_and_discriminator_fit_odd_image_sizes(architecture):
    model = gan((3, 7, 9), architecture=architecture).eval()
    samples = model.sample(4, torch.Generator().manual_seed(0))
    assert samples.shape == (4, 3, 7, 9) and model(samples).shape == (4,)
    with pytest.raises(ConfigError, match="'conv' needs images"):
        gan((5,), architecture="conv")
