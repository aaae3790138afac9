"""The VAE family: its loss is the negative ELBO with hand-checkable parts; both bodies fit any input size."""

from __future__ import annotations

import pytest
import torch

from damoxing.core.errors import ConfigError
from damoxing.models.vae import VAE, VAEConfig


def vae(shape, **options) -> VAE:
    torch.manual_seed(0)
    return VAE(shape, VAEConfig(**{"latent_dim": 2, "hidden": [8], "conv_channels": [4, 8], **options}))


def test_loss_is_recon_plus_beta_times_the_closed_form_kl():
    model = vae((3,), architecture="mlp", beta=2.0)
    mu, log_var = torch.tensor([1.0, -2.0]), torch.tensor([0.0, 1.0])
    with torch.no_grad():  # make the encoder output fixed mu, log_var for every input
        model.to_latent.weight.zero_()
        model.to_latent.bias.copy_(torch.cat([mu, log_var]))
    x = torch.randn(5, 3)
    parts, x_hat = model.losses(x, generator=torch.Generator().manual_seed(1))
    # KL(N(mu, e^lv) || N(0, 1)) = 0.5 * sum(mu^2 + e^lv - 1 - lv) = 0.5 * (1 + 1 - 1 - 0) + 0.5 * (4 + e - 1 - 1)
    expected_kl = 0.5 * 1.0 + 0.5 * (4 + torch.e - 2)
    assert parts["kl"].item() == pytest.approx(expected_kl, rel=1e-5)
    assert parts["recon"].item() == pytest.approx(((x_hat - x) ** 2).sum(1).mean().item(), rel=1e-5)
    assert parts["loss"].item() == pytest.approx(parts["recon"].item() + 2.0 * expected_kl, rel=1e-5)


def test_the_sample_is_reparameterised_so_gradients_reach_the_encoder_through_recon():
    model = vae((1, 8, 8))
    parts, _ = model.losses(torch.randn(4, 1, 8, 8))
    parts["recon"].backward()
    assert model.to_latent.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("architecture", ["conv", "mlp"])
def test_odd_image_sizes_round_trip_to_the_input_shape(architecture):
    model = vae((3, 7, 9), architecture=architecture).eval()
    x = torch.randn(2, 3, 7, 9)
    assert model(x).shape == (2, 3, 7, 9)
    assert model.sample(5, torch.Generator().manual_seed(0)).shape == (5, 3, 7, 9)


def test_tables_use_the_mlp_body_and_conv_is_refused_for_them():
    assert vae((6,)).architecture == "mlp"
    assert vae((6,)).sample(3).shape == (3, 6)
    with pytest.raises(ConfigError, match="'conv' needs images"):
        vae((6,), architecture="conv")


def test_interpolation_runs_between_two_prior_points_and_is_seeded():
    model = vae((1, 8, 8)).eval()
    row = model.interpolate(6, torch.Generator().manual_seed(3))
    assert row.shape == (6, 1, 8, 8)
    assert torch.equal(row, model.interpolate(6, torch.Generator().manual_seed(3)))
    ends = torch.randn(2, 2, generator=torch.Generator().manual_seed(3))  # the same two latent points
    assert torch.allclose(row[0], model.decode(ends[:1])[0]) and torch.allclose(row[-1], model.decode(ends[1:])[0])
