"""Autoencoder and variational autoencoder on the 8x8 digits.

The autoencoder squeezes a digit through an 8-number code and rebuilds it (held-out metric:
mean squared reconstruction error per pixel). The VAE (Kingma & Welling 2014) makes the code
a Gaussian, samples it with the reparameterisation trick and trains on the negative ELBO, an
upper bound on -log p(x) (held-out metric: nats per image). Its decoder is what gets exported:
z ~ N(0, I) in, pixel intensities out, so `dltk generate` draws new digits through the runtime.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.data import digits
from models.registry import ModelSpec
from models.train import Recipe

PIXELS = 64


@dataclass(frozen=True)
class AutoencoderConfig:
    hidden: int = 128
    latent: int = 8


def mlp(n_in: int, hidden: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, n_out))


class Autoencoder(nn.Module):
    def __init__(self, config: AutoencoderConfig = AutoencoderConfig()):
        super().__init__()
        self.encoder = mlp(PIXELS, config.hidden, config.latent)
        self.decoder = mlp(config.latent, config.hidden, PIXELS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1, 8, 8) -> (B, 1, 8, 8) in [0, 1]
        code = self.encoder(x.flatten(1))  # (B, latent)
        return torch.sigmoid(self.decoder(code)).view_as(x)


class Reconstruction:
    """Binary cross-entropy against the pixel intensities; held-out mean squared error per pixel."""

    metric = "reconstruction_mse"

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy(model(x), x)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
        model.eval()
        return F.mse_loss(model(x), x).item()


class VAE(nn.Module):
    def __init__(self, config: AutoencoderConfig = AutoencoderConfig()):
        super().__init__()
        self.latent = config.latent
        self.encoder = mlp(PIXELS, config.hidden, 2 * config.latent)  # mean and log-variance of q(z|x)
        self.decoder = Decoder(config)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_var = self.encoder(x.flatten(1)).chunk(2, dim=1)  # (B, latent) each
        return mean, log_var

    def neg_elbo(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """-ELBO per image in nats: reconstruction (Bernoulli likelihood) + KL(q(z|x) || N(0, I))."""
        mean, log_var = self.encode(x)
        noise = torch.randn(mean.shape, generator=generator)
        z = mean + (0.5 * log_var).exp() * noise  # the reparameterisation trick
        logits = self.decoder.logits(z).view_as(x)
        reconstruction = F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / len(x)
        kl = -0.5 * (1 + log_var - mean.pow(2) - log_var.exp()).sum() / len(x)
        return reconstruction + kl

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # the generative direction, what is exported
        return self.decoder(z)


class Decoder(nn.Module):
    def __init__(self, config: AutoencoderConfig):
        super().__init__()
        self.net = mlp(config.latent, config.hidden, PIXELS)

    def logits(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # (B, latent) -> (B, 1, 8, 8) pixel means in [0, 1]
        return torch.sigmoid(self.net(z)).view(-1, 1, 8, 8)


class ELBO:
    metric = "neg_elbo_nats"

    def loss(self, model: VAE, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return model.neg_elbo(x) / PIXELS  # per pixel, so learning rates carry over from the other models

    @torch.no_grad()
    def evaluate(self, model: VAE, x: torch.Tensor, y: torch.Tensor) -> float:
        model.eval()
        return model.neg_elbo(x, torch.Generator().manual_seed(0)).item()


def latent_normal(latent: int):
    def inputs(n: int) -> tuple[torch.Tensor]:
        return (torch.randn(n, latent, generator=torch.Generator().manual_seed(0)),)

    return inputs


def autoencoder(config: AutoencoderConfig = AutoencoderConfig()) -> ModelSpec:
    return ModelSpec(
        name="autoencoder",
        family="autoencoder",
        teaches="an encoder-decoder bottleneck, unsupervised reconstruction",
        dataset="sklearn digits 8x8",
        build=lambda: Autoencoder(config),
        data=lambda: digits(as_images=True),
        recipe=Recipe(epochs=30, lr=3e-3, weight_decay=1e-5),
        task=Reconstruction(),
        output_names=("reconstruction",),
        tiny=lambda: autoencoder(AutoencoderConfig(hidden=16, latent=4)),
    )


def vae(config: AutoencoderConfig = AutoencoderConfig()) -> ModelSpec:
    return ModelSpec(
        name="vae",
        family="variational autoencoder",
        teaches="latent variables, the reparameterisation trick, the ELBO, sampling new data",
        dataset="sklearn digits 8x8",
        build=lambda: VAE(config),
        data=lambda: digits(as_images=True),
        recipe=Recipe(epochs=60, lr=3e-3),
        task=ELBO(),
        input_names=("z",),
        output_names=("image",),
        inputs=latent_normal(config.latent),
        generation={"kind": "latent", "latent": config.latent},
        tiny=lambda: vae(AutoencoderConfig(hidden=16, latent=4)),
    )


AUTOENCODER = autoencoder()
VAE_SPEC = vae()
