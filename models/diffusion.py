"""DDPM (Ho et al. 2020) on the 8x8 digits: a denoiser and its noise schedule.

Forward process: x_t = sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε over `steps` steps of a linear β
schedule. The denoiser ε_θ(x_t, t) learns to predict ε (the "simple" loss, a reweighted ELBO);
the held-out metric is that loss on held-out digits at seeded t and ε. The denoiser is what is
exported; `dltk generate` runs the reverse process, x_{t-1} = (x_t - β_t/sqrt(1-ᾱ_t) ε_θ) /
sqrt(α_t) + sqrt(β_t) z, calling the compiled denoiser once per step.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.data import digits
from models.registry import ModelSpec
from models.train import Recipe

PIXELS = 64


@dataclass(frozen=True)
class DiffusionConfig:
    steps: int = 100
    beta_start: float = 1e-4
    beta_end: float = 0.1  # with 100 steps, ᾱ_T ≈ 0.005: x_T is almost pure noise
    hidden: int = 256
    time_dim: int = 32


def alpha_bars(config: DiffusionConfig) -> torch.Tensor:
    betas = torch.linspace(config.beta_start, config.beta_end, config.steps, dtype=torch.float64)
    return torch.cumprod(1 - betas, dim=0).float()


class Denoiser(nn.Module):
    """An MLP over the 64 pixels, told the step t through a sinusoidal embedding."""

    def __init__(self, config: DiffusionConfig = DiffusionConfig()):
        super().__init__()
        half = config.time_dim // 2
        self.register_buffer("frequencies", torch.exp(-math.log(10_000) * torch.arange(half) / half), persistent=False)
        self.time = nn.Sequential(nn.Linear(config.time_dim, config.hidden), nn.SiLU())
        self.input = nn.Linear(PIXELS, config.hidden)
        self.net = nn.Sequential(
            nn.SiLU(), nn.Linear(config.hidden, config.hidden), nn.SiLU(),
            nn.Linear(config.hidden, config.hidden), nn.SiLU(), nn.Linear(config.hidden, PIXELS),
        )

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:  # (B, 1, 8, 8), (B,) int64 -> ε (B, 1, 8, 8)
        angles = t.float()[:, None] * self.frequencies[None, :]  # (B, time_dim / 2)
        time = self.time(torch.cat([angles.sin(), angles.cos()], dim=1))  # (B, hidden)
        return self.net(self.input(x.flatten(1)) + time).view_as(x)


def to_signal(x: torch.Tensor) -> torch.Tensor:
    return x * 2 - 1  # pixels in [0, 1] -> [-1, 1], the scale the noise is added at


class NoisePrediction:
    """The DDPM simple loss, || ε - ε_θ(x_t, t) ||^2 at uniform t."""

    metric = "noise_mse"

    def __init__(self, config: DiffusionConfig):
        self.config = config
        self.alpha_bars = alpha_bars(config)

    def noised(self, x0: torch.Tensor, generator: torch.Generator | None = None):
        t = torch.randint(0, self.config.steps, (len(x0),), generator=generator)
        noise = torch.randn(x0.shape, generator=generator)
        a = self.alpha_bars[t].view(-1, 1, 1, 1)
        return a.sqrt() * to_signal(x0) + (1 - a).sqrt() * noise, t, noise

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x_t, t, noise = self.noised(x)
        return F.mse_loss(model(x_t, t), noise)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
        model.eval()
        x_t, t, noise = self.noised(x, torch.Generator().manual_seed(0))
        return F.mse_loss(model(x_t, t), noise).item()


def spec(config: DiffusionConfig = DiffusionConfig()) -> ModelSpec:
    task = NoisePrediction(config)

    def noised_digits(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        x0 = digits(as_images=True).test_x
        x_t, t, _ = task.noised(x0[torch.arange(n) % len(x0)], torch.Generator().manual_seed(0))
        return x_t, t

    return ModelSpec(
        name="diffusion",
        family="diffusion model",
        teaches="the DDPM forward noising process, noise prediction, ancestral sampling",
        dataset="sklearn digits 8x8",
        build=lambda: Denoiser(config),
        data=lambda: digits(as_images=True),
        recipe=Recipe(epochs=150, lr=2e-3, warmup_epochs=5),
        task=task,
        input_names=("x", "t"),
        output_names=("noise",),
        inputs=noised_digits,
        generation={
            "kind": "diffusion", "steps": config.steps, "beta_start": config.beta_start,
            "beta_end": config.beta_end, "shape": [1, 8, 8], "scale": [-1, 1],
        },
        tiny=lambda: spec(DiffusionConfig(steps=10, beta_start=1e-3, beta_end=0.3, hidden=16, time_dim=8)),
    )


SPEC = spec()
