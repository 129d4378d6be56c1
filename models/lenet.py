"""LeNet-style CNN on the 8x8 digits: weight sharing, pooling, batch norm, dropout."""

from dataclasses import dataclass

import torch
from torch import nn

from models.data import digits
from models.registry import ModelSpec
from models.train import Recipe


@dataclass(frozen=True)
class LeNetConfig:
    channels: tuple[int, int] = (16, 32)
    hidden: int = 64
    n_classes: int = 10
    dropout: float = 0.2


class LeNet(nn.Module):
    def __init__(self, config: LeNetConfig = LeNetConfig()):
        super().__init__()
        c1, c2 = config.channels
        self.features = nn.Sequential(
            nn.Conv2d(1, c1, kernel_size=3, padding=1),  # (B, c1, 8, 8)
            nn.BatchNorm2d(c1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # (B, c1, 4, 4)
            nn.Conv2d(c1, c2, kernel_size=3, padding=1),  # (B, c2, 4, 4)
            nn.BatchNorm2d(c2),
            nn.ReLU(),
            nn.MaxPool2d(2),  # (B, c2, 2, 2)
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),  # (B, c2 * 4)
            nn.Linear(c2 * 4, config.hidden),
            nn.ReLU(),
            nn.Dropout(config.dropout),
            nn.Linear(config.hidden, config.n_classes),  # (B, 10) logits
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, 1, 8, 8)
        return self.classifier(self.features(x))


SPEC = ModelSpec(
    name="lenet",
    family="CNN",
    teaches="convolution (weight sharing), pooling, batch norm, dropout",
    dataset="sklearn digits 8x8",
    build=LeNet,
    data=lambda: digits(as_images=True),
    recipe=Recipe(epochs=20, lr=3e-3, weight_decay=1e-4),
)
