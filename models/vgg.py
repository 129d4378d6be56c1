"""VGG-style plain deep CNN: stacks of 3x3 convolutions with batch norm, halved by max pooling.

The 8x8 digits are upscaled to 16x16 (bilinear) so that three pooling stages fit.
"""

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.data import Split, digits
from models.registry import ModelSpec
from models.train import Recipe


@dataclass(frozen=True)
class VGGConfig:
    stages: tuple[tuple[int, int], ...] = ((32, 2), (64, 2), (128, 2))  # (channels, convolutions) per stage
    image_size: int = 16
    hidden: int = 128
    n_classes: int = 10
    dropout: float = 0.3


class VGG(nn.Module):
    def __init__(self, config: VGGConfig = VGGConfig()):
        super().__init__()
        layers, channels = [], 1
        for width, depth in config.stages:
            for _ in range(depth):
                layers += [nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
                channels = width
            layers.append(nn.MaxPool2d(2))  # (B, width, S/2, S/2)
        self.features = nn.Sequential(*layers)
        side = config.image_size // 2 ** len(config.stages)
        self.classifier = nn.Sequential(
            nn.Flatten(),  # (B, channels * side * side)
            nn.Linear(channels * side * side, config.hidden),
            nn.ReLU(),
            nn.Dropout(config.dropout),
            nn.Linear(config.hidden, config.n_classes),  # (B, 10) logits
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, 1, S, S)
        return self.classifier(self.features(x))


@functools.lru_cache(maxsize=None)
def upscaled_digits(size: int) -> Split:
    split = digits(as_images=True)
    up = lambda x: F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)  # noqa: E731
    return Split(up(split.train_x), split.train_y, up(split.test_x), split.test_y)


def spec(config: VGGConfig = VGGConfig()) -> ModelSpec:
    return ModelSpec(
        name="vgg",
        family="CNN",
        teaches="depth from stacked 3x3 convolutions, batch norm, max pooling",
        dataset=f"sklearn digits upscaled to {config.image_size}x{config.image_size}",
        build=lambda: VGG(config),
        data=lambda: upscaled_digits(config.image_size),
        recipe=Recipe(epochs=10, lr=3e-3, weight_decay=5e-4),
        tiny=lambda: spec(VGGConfig(stages=((8, 1), (16, 1)), image_size=8, hidden=32)),
    )


SPEC = spec()
