"""Variational autoencoder (Kingma & Welling): an encoder gives q(z|x) = N(mu, diag(sigma^2)), a
decoder maps z back to x, and training minimises the negative ELBO

    loss = recon + beta * KL(q(z|x) || N(0, I))

per sample. `recon` is the summed squared error between x and the decoder's output, i.e. the
negative log-likelihood of a Gaussian decoder with variance 1/2 up to a constant; it is in the
units of the preprocessed data (standardized pixels or features). beta = 1 is the plain VAE,
beta > 1 a beta-VAE. Samples are decoder outputs for z drawn from the prior.

Two bodies: `conv` (stride-2 convs down, transposed convs up; images) and `mlp` (dense layers;
images flattened, or table rows). `architecture: auto` picks conv for images, mlp for tables.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal, Optional

import torch
from pydantic import Field
from torch import nn

from damoxing.config import ModelConfigBase, Widths
from damoxing.models.export_view import ExportView
from damoxing.models.layers import choose_architecture, dense_stack
from damoxing.models.registry import MODELS


class VAEConfig(ModelConfigBase):
    type: Literal["vae"] = "vae"
    architecture: Literal["auto", "conv", "mlp"] = Field("auto", description="auto: conv for images, mlp for tables")
    latent_dim: Optional[int] = Field(None, ge=1, description="size of the latent code z")
    hidden: Optional[Widths] = Field(None, description="mlp: encoder widths; the decoder mirrors them")
    conv_channels: Optional[Widths] = Field(None, description="conv: channels of each stride-2 conv; the decoder mirrors them")
    beta: float = Field(1.0, ge=0, description="weight of the KL term (1: VAE, >1: beta-VAE)")
    PRESETS: ClassVar[dict] = {
        "tiny": {"latent_dim": 4, "hidden": [16], "conv_channels": [8]},
        "small": {"latent_dim": 8, "hidden": [256, 128], "conv_channels": [32, 64]},
        "base": {"latent_dim": 32, "hidden": [512, 256], "conv_channels": [32, 64, 128]},
    }


def conv_body(input_shape: tuple[int, ...], channels: list[int]) -> tuple[nn.Sequential, nn.Sequential, tuple[int, int, int]]:
    """Encoder convs (3x3, stride 2) and the mirrored decoder (4x4 transposed convs, stride 2).

    Returns (encoder, decoder, (C', H', W')) where (C', H', W') is the encoder's output shape; the
    decoder maps (B, C', H', W') to (B, C, H' * 2^k, W' * 2^k), at least (C, H, W) (crop after).
    """
    in_channels = input_shape[0]
    down: list[nn.Module] = []
    for out_channels in channels:
        down += [nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1), nn.ReLU()]
        in_channels = out_channels
    encoder = nn.Sequential(*down)
    with torch.no_grad():
        feature_shape = tuple(encoder(torch.zeros(1, *input_shape)).shape[1:])
    up: list[nn.Module] = []
    targets = list(reversed(channels[:-1])) + [input_shape[0]]
    for i, out_channels in enumerate(targets):
        up.append(nn.ConvTranspose2d(in_channels, out_channels, 4, stride=2, padding=1))  # exactly doubles H and W
        if i < len(targets) - 1:
            up.append(nn.ReLU())
        in_channels = out_channels
    return encoder, nn.Sequential(*up), feature_shape


@MODELS.register("vae")
class VAE(nn.Module):
    config_class = VAEConfig
    input_kinds = frozenset({"image", "table"})
    task = "generation"  # the task this family always does; data labels are ignored
    loss_parts = ("recon", "kl")  # what `losses` reports besides "loss" (the generation task declares them as metrics)

    def __init__(self, input_shape: tuple[int, ...], config: VAEConfig):
        super().__init__()
        self.input_shape = tuple(input_shape)
        self.latent_dim = config.latent_dim
        self.beta = config.beta
        self.architecture = architecture = choose_architecture(config.architecture, self.input_shape, config.conv_channels)
        if architecture == "conv":
            self.encoder, self.decoder, self.feature_shape = conv_body(self.input_shape, config.conv_channels)
            flat = math.prod(self.feature_shape)
            self.to_latent = nn.Linear(flat, 2 * self.latent_dim)
            self.from_latent = nn.Sequential(nn.Linear(self.latent_dim, flat), nn.ReLU())
        else:
            flat, hidden = math.prod(self.input_shape), list(config.hidden or [])
            self.encoder = nn.Sequential(nn.Flatten(), dense_stack(flat, hidden, "relu", 0.0, False))
            self.to_latent = nn.Linear(hidden[-1] if hidden else flat, 2 * self.latent_dim)
            widths = list(reversed(hidden))
            self.from_latent = dense_stack(self.latent_dim, widths, "relu", 0.0, False)
            self.decoder = nn.Linear(widths[-1] if widths else self.latent_dim, flat)

    @classmethod
    def from_config(cls, config: VAEConfig, schema) -> "VAE":
        return cls(tuple(schema.input_shape), config)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, *input_shape) -> mu, log_var, each (B, latent_dim)."""
        mu, log_var = self.to_latent(self.encoder(x).flatten(1)).chunk(2, dim=-1)
        return mu, log_var

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, latent_dim) -> x_hat (B, *input_shape)."""
        h = self.from_latent(z)
        if self.architecture == "conv":
            _, height, width = self.input_shape
            x = self.decoder(h.view(-1, *self.feature_shape))
            return x[:, :, :height, :width]  # the decoder overshoots odd sizes; crop to the input's
        return self.decoder(h).view(-1, *self.input_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The deterministic reconstruction: decode the posterior mean. (B, *input_shape)."""
        return self.decode(self.encode(x)[0])

    def export_view(self) -> ExportView:
        """The decoder, what generation samples with: z (B, latent_dim) ~ N(0, I) -> x (B, *input_shape)."""
        return ExportView(Decoder(self), "the decoder (z -> x)", input="latent", latent_dim=self.latent_dim)

    def losses(self, x: torch.Tensor, generator: Optional[torch.Generator] = None) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Negative ELBO and its parts, each the mean over the batch, and the sampled reconstruction.

        Returns ({"loss", "recon", "kl"}, x_hat (B, *input_shape)).
        """
        mu, log_var = self.encode(x)
        noise = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        z = mu + noise * torch.exp(0.5 * log_var)  # reparameterisation: the sample stays differentiable
        x_hat = self.decode(z)
        recon = (x_hat.float() - x.float()).pow(2).flatten(1).sum(1).mean()
        kl = (-0.5 * (1 + log_var - mu.pow(2) - log_var.exp())).float().sum(1).mean()  # closed form, N(mu, s^2) vs N(0, 1)
        return {"loss": recon + self.beta * kl, "recon": recon, "kl": kl}, x_hat

    def _device(self) -> torch.device:
        return next(self.parameters()).device

    @torch.no_grad()
    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """n samples (n, *input_shape): z ~ N(0, I) drawn on the CPU (same seed, same z on any device)."""
        z = torch.randn(n, self.latent_dim, generator=generator)
        return self.decode(z.to(self._device()))

    @torch.no_grad()
    def interpolate(self, n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """n decodings (n, *input_shape) along the straight line between two latent points drawn from the prior."""
        ends = torch.randn(2, self.latent_dim, generator=generator)
        t = torch.linspace(0, 1, n)[:, None]
        return self.decode(((1 - t) * ends[0] + t * ends[1]).to(self._device()))


class Decoder(nn.Module):
    """A VAE's decoder as a module of its own (shares the weights): z (B, latent_dim) -> x (B, *input_shape)."""

    def __init__(self, vae: VAE):
        super().__init__()
        self.vae = vae

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(z)
