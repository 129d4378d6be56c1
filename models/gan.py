"""DCGAN-style generative adversarial network on the 8x8 digits (Goodfellow 2014; Radford 2016).

The generator turns noise z into a digit with transposed convolutions; the discriminator, a
strided CNN, tells real digits from generated ones. Both take one gradient step per batch, on
one optimizer: the discriminator on real-vs-fake cross-entropy, the generator on fooling a
frozen copy of the discriminator's weights (the non-saturating loss). The generator is the
module's forward, which is what gets exported. Held-out metric: the kernel MMD^2 between 360
generated digits and the 360 held-out ones (0 when the distributions match; lower is better).
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from models.autoencoder import latent_normal
from models.data import digits
from models.registry import ModelSpec
from models.train import Recipe


@dataclass(frozen=True)
class GANConfig:
    latent: int = 16
    width: int = 32  # channels of the generator's last hidden layer and the discriminator's first


class Generator(nn.Module):
    def __init__(self, config: GANConfig):
        super().__init__()
        w = config.width
        self.project = nn.Sequential(nn.Linear(config.latent, 2 * w * 2 * 2), nn.BatchNorm1d(2 * w * 2 * 2), nn.ReLU())
        self.upsample = nn.Sequential(
            nn.ConvTranspose2d(2 * w, w, 4, stride=2, padding=1, bias=False),  # (B, w, 4, 4)
            nn.BatchNorm2d(w),
            nn.ReLU(),
            nn.ConvTranspose2d(w, 1, 4, stride=2, padding=1),  # (B, 1, 8, 8)
            nn.Sigmoid(),
        )
        self.width = w

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # (B, latent) -> (B, 1, 8, 8) in [0, 1]
        return self.upsample(self.project(z).view(-1, 2 * self.width, 2, 2))


class Discriminator(nn.Module):
    def __init__(self, config: GANConfig):
        super().__init__()
        w = config.width
        self.net = nn.Sequential(
            nn.Conv2d(1, w, 4, stride=2, padding=1),  # (B, w, 4, 4)
            nn.LeakyReLU(0.2),
            nn.Conv2d(w, 2 * w, 4, stride=2, padding=1, bias=False),  # (B, 2w, 2, 2)
            nn.BatchNorm2d(2 * w),
            nn.LeakyReLU(0.2),
            nn.Flatten(),
            nn.Linear(2 * w * 2 * 2, 1),  # (B, 1) logit of "real"
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1)


class GAN(nn.Module):
    def __init__(self, config: GANConfig = GANConfig()):
        super().__init__()
        self.latent = config.latent
        self.generator = Generator(config)
        self.discriminator = Discriminator(config)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.generator(z)


class Adversarial:
    metric = "mmd2"

    def loss(self, model: GAN, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        fake = model.generator(torch.randn(len(x), model.latent))
        real_logit, fake_logit = model.discriminator(x), model.discriminator(fake.detach())
        d_loss = F.binary_cross_entropy_with_logits(real_logit, torch.ones_like(real_logit)) + \
            F.binary_cross_entropy_with_logits(fake_logit, torch.zeros_like(fake_logit))
        # The generator's loss must not move the discriminator: run it on detached weights.
        frozen = {name: p.detach() for name, p in model.discriminator.named_parameters()}
        fooled = functional_call(model.discriminator, frozen, (fake,))
        g_loss = F.binary_cross_entropy_with_logits(fooled, torch.ones_like(fooled))
        return d_loss + g_loss

    @torch.no_grad()
    def evaluate(self, model: GAN, x: torch.Tensor, y: torch.Tensor) -> float:
        model.eval()
        z = torch.randn(len(x), model.latent, generator=torch.Generator().manual_seed(0))
        return mmd2(model.generator(z).flatten(1), x.flatten(1))


def mmd2(a: torch.Tensor, b: torch.Tensor) -> float:
    """Squared maximum mean discrepancy with a Gaussian kernel, bandwidth from the median distance."""
    both = torch.cat([a, b])
    distances = torch.cdist(both, both).pow(2)
    kernel = torch.exp(-distances / distances.median())
    n = len(a)
    return (kernel[:n, :n].mean() + kernel[n:, n:].mean() - 2 * kernel[:n, n:].mean()).item()


def spec(config: GANConfig = GANConfig()) -> ModelSpec:
    return ModelSpec(
        name="gan",
        family="generative adversarial network",
        teaches="adversarial training, transposed convolutions, generating from noise",
        dataset="sklearn digits 8x8",
        build=lambda: GAN(config),
        data=lambda: digits(as_images=True),
        recipe=Recipe(epochs=60, lr=2e-3, grad_clip=None),
        task=Adversarial(),
        input_names=("z",),
        output_names=("image",),
        inputs=latent_normal(config.latent),
        generation={"kind": "latent", "latent": config.latent},
        tiny=lambda: spec(GANConfig(latent=4, width=4)),
    )


SPEC = spec()
