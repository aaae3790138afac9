"""Generative adversarial network (Goodfellow et al.), DCGAN-style for images (Radford et al.).

Two players with their own optimizers (both built from `train.optimizer`), updated in turn on
each batch:
    discriminator: d_loss = -log D(x) - log(1 - D(G(z)))         (binary cross-entropy)
    generator:     g_loss = -log D(G(z))                           (the non-saturating loss)
The non-saturating generator loss gives strong gradients early on, when D easily rejects the
fakes (minimising log(1 - D(G(z))) would give almost none).

Because the update is a two-player game, the model owns it: it defines `configure_optimizers`
and `train_step`, which the training loop calls instead of its own backward/step (see
train/loop.py). `loss` in the history is d_loss + g_loss, kept for logging and divergence
checks; neither it nor the two parts measures sample quality. For that, monitor
`val_frechet_distance` (the examples do).

Bodies: `conv` (DCGAN: the generator projects z to a small feature map, then 4x4 transposed
convs with batch norm and ReLU double it up to the image size; the discriminator has stride-2
convs with LeakyReLU(0.2)) and `mlp` (dense layers; images flattened, or table rows). The
generator's output is linear: the data is standardized, not squashed into [-1, 1].
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal, Optional

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from damoxing.config import ModelConfigBase, TrainConfig, Widths
from damoxing.core.errors import ConfigError
from damoxing.models.export_view import ExportView
from damoxing.models.layers import choose_architecture
from damoxing.models.registry import MODELS


class GANConfig(ModelConfigBase):
    type: Literal["gan"] = "gan"
    architecture: Literal["auto", "conv", "mlp"] = Field("auto", description="auto: conv for images, mlp for tables")
    latent_dim: Optional[int] = Field(None, ge=1, description="size of the generator's noise input z")
    hidden: Optional[Widths] = Field(None, description="mlp: discriminator widths; the generator mirrors them")
    conv_channels: Optional[Widths] = Field(None, description="conv: discriminator channels (stride-2 convs); the generator mirrors them")
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="one-sided: the discriminator's target for real data is 1 - this")
    PRESETS: ClassVar[dict] = {
        "tiny": {"latent_dim": 4, "hidden": [16], "conv_channels": [8]},
        "small": {"latent_dim": 32, "hidden": [256, 128], "conv_channels": [32, 64]},
        "base": {"latent_dim": 100, "hidden": [512, 256], "conv_channels": [64, 128, 256]},
    }


def conv_players(input_shape: tuple[int, int, int], channels: list[int], latent_dim: int) -> tuple[nn.Module, nn.Module]:
    """DCGAN discriminator (B, C, H, W) -> (B,) logits and generator (B, latent) -> (B, C, H*, W*), H* >= H.

    The generator starts from a (channels[-1], ceil(H / 2^k), ceil(W / 2^k)) map and doubles it k
    times, so it covers any image size; the caller crops to (H, W).
    """
    in_channels, height, width = input_shape
    layers: list[nn.Module] = []
    for out_channels in channels:
        layers += [nn.Conv2d(in_channels, out_channels, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        in_channels = out_channels
    features = nn.Sequential(*layers)
    try:
        with torch.no_grad():
            flat = features(torch.zeros(1, *input_shape)).numel()
    except RuntimeError:
        flat = 0
    if flat == 0:
        raise ConfigError(f"model.conv_channels {channels} halves the {height}x{width} images {len(channels)} times, "
                          "to nothing; use fewer conv layers.")
    discriminator = nn.Sequential(features, nn.Flatten(), nn.Linear(flat, 1), nn.Flatten(0))

    scale = 2 ** len(channels)
    start = (channels[-1], math.ceil(height / scale), math.ceil(width / scale))
    up: list[nn.Module] = [nn.Linear(latent_dim, math.prod(start)), nn.Unflatten(1, start), nn.BatchNorm2d(start[0]), nn.ReLU()]
    targets = list(reversed(channels[:-1])) + [input_shape[0]]
    for i, out_channels in enumerate(targets):
        up.append(nn.ConvTranspose2d(in_channels, out_channels, 4, stride=2, padding=1))  # exactly doubles H and W
        if i < len(targets) - 1:
            up += [nn.BatchNorm2d(out_channels), nn.ReLU()]
        in_channels = out_channels
    return discriminator, nn.Sequential(*up)


def mlp_players(n_features: int, hidden: list[int], latent_dim: int) -> tuple[nn.Module, nn.Module]:
    """Dense discriminator (B, F) -> (B,) logits and generator (B, latent) -> (B, F)."""
    d_layers: list[nn.Module] = []
    width = n_features
    for h in hidden:
        d_layers += [nn.Linear(width, h), nn.LeakyReLU(0.2)]
        width = h
    discriminator = nn.Sequential(*d_layers, nn.Linear(width, 1), nn.Flatten(0))
    g_layers: list[nn.Module] = []
    width = latent_dim
    for h in reversed(hidden):
        g_layers += [nn.Linear(width, h), nn.BatchNorm1d(h), nn.ReLU()]
        width = h
    return discriminator, nn.Sequential(*g_layers, nn.Linear(width, n_features))


@MODELS.register("gan")
class GAN(nn.Module):
    config_class = GANConfig
    input_kinds = frozenset({"image", "table"})
    task = "generation"  # the task this family always does; data labels are ignored
    loss_parts = ("d_loss", "g_loss")  # what `losses` reports besides "loss" (the generation task declares them as metrics)

    def __init__(self, input_shape: tuple[int, ...], config: GANConfig):
        super().__init__()
        self.input_shape = tuple(input_shape)
        self.latent_dim = config.latent_dim
        self.real_target = 1.0 - config.label_smoothing
        self.architecture = architecture = choose_architecture(config.architecture, self.input_shape, config.conv_channels)
        if architecture == "conv":
            self.discriminator, self.generator = conv_players(self.input_shape, config.conv_channels, self.latent_dim)
        else:
            flat = math.prod(self.input_shape)
            self.discriminator, self.generator = mlp_players(flat, list(config.hidden or []), self.latent_dim)

    @classmethod
    def from_config(cls, config: GANConfig, schema) -> "GAN":
        return cls(tuple(schema.input_shape), config)

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, latent_dim) -> samples (B, *input_shape), cropped to the data's size."""
        out = self.generator(z)
        if self.architecture == "conv":
            return out[:, :, : self.input_shape[1], : self.input_shape[2]]
        return out.view(-1, *self.input_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The discriminator's logit that each input is real: x (B, *input_shape) -> (B,)."""
        return self.discriminator(x if self.architecture == "conv" else x.flatten(1))

    def export_view(self) -> ExportView:
        """The generator: z (B, latent_dim) ~ N(0, I) -> samples (B, *input_shape), cropped as `generate` crops them."""
        return ExportView(Generator(self), "the generator (z -> x)", input="latent", latent_dim=self.latent_dim)

    def _noise(self, n: int, device, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        return torch.randn(n, self.latent_dim, generator=generator, device=device)

    def discriminator_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        """Binary cross-entropy: real logits (B,) toward 1 (or 1 - label_smoothing), fake logits toward 0."""
        real = F.binary_cross_entropy_with_logits(real_logits.float(), torch.full_like(real_logits.float(), self.real_target))
        return real + F.softplus(fake_logits.float()).mean()  # softplus(l) = -log(1 - sigmoid(l))

    @staticmethod
    def generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
        """-log D(G(z)) from the discriminator's logits on fakes (B,)."""
        return F.softplus(-fake_logits.float()).mean()  # -log sigmoid(l) = -log D(G(z)): non-saturating

    def losses(self, x: torch.Tensor, generator: Optional[torch.Generator] = None) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Both players' losses on real x and as many fakes, without updating; and the fakes.

        Returns ({"loss": d_loss + g_loss, "d_loss", "g_loss"}, fakes (B, *input_shape)).
        """
        fake = self.generate(self._noise(x.shape[0], x.device, generator))
        fake_logits = self(fake)
        d_loss, g_loss = self.discriminator_loss(self(x), fake_logits), self.generator_loss(fake_logits)
        return {"loss": d_loss + g_loss, "d_loss": d_loss, "g_loss": g_loss}, fake

    def configure_optimizers(self, config: TrainConfig, build_optimizer) -> dict[str, torch.optim.Optimizer]:
        """One optimizer per player, both from `train.optimizer` (`build_optimizer(params, config.optimizer)`,
        handed in by the loop); the loop schedules their learning rates."""
        unsupported = {"train.l1": config.l1 > 0,
                       "train.l2": config.l2 > 0, "train.clip_grad_norm": config.clip_grad_norm is not None}
        named = [k for k, on in unsupported.items() if on]
        if named:
            raise ConfigError(f"{', '.join(named)} cannot be used with model.type 'gan', whose two players update themselves "
                              "in turn; remove them (use train.optimizer.weight_decay for regularisation).")
        return {"discriminator": build_optimizer(self.discriminator.parameters(), config.optimizer),
                "generator": build_optimizer(self.generator.parameters(), config.optimizer)}

    def train_step(self, x: torch.Tensor, optimizers: dict[str, torch.optim.Optimizer], autocast) -> dict[str, torch.Tensor]:
        """One discriminator update, then one generator update, on a batch of real x (B, *input_shape).

        Returns device scalars {"loss": d_loss + g_loss, "d_loss", "g_loss"}, each measured before
        its player's update; no host sync.
        """
        d_opt, g_opt = optimizers["discriminator"], optimizers["generator"]
        with autocast():
            fake = self.generate(self._noise(max(2, x.shape[0]), x.device))  # batch norm needs 2 rows in a last batch of 1
            d_loss = self.discriminator_loss(self(x), self(fake.detach()))  # detach: this step does not move the generator
        d_opt.zero_grad(set_to_none=True)
        d_loss.backward()
        d_opt.step()

        with autocast():
            g_loss = self.generator_loss(self(fake))  # the just-updated discriminator judges the same fakes
        g_opt.zero_grad(set_to_none=True)
        g_loss.backward()  # also leaves gradients on the discriminator; its next zero_grad clears them
        g_opt.step()
        d_loss, g_loss = d_loss.detach(), g_loss.detach()
        return {"loss": d_loss + g_loss, "d_loss": d_loss, "g_loss": g_loss}

    @torch.no_grad()
    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """n samples (n, *input_shape): z drawn on the CPU (same seed, same z on any device)."""
        z = self._noise(n, "cpu", generator)
        return self.generate(z.to(next(self.parameters()).device))


class Generator(nn.Module):
    """A GAN's generator as a module of its own (shares the weights): z (B, latent_dim) -> samples (B, *input_shape)."""

    def __init__(self, gan: GAN):
        super().__init__()
        self.gan = gan

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.gan.generate(z)
