"""Multilayer perceptron on the 8x8 digits: hidden layers, ReLU, dropout."""

from dataclasses import dataclass

import torch
from torch import nn

from models.data import digits
from models.registry import ModelSpec
from models.train import Recipe


@dataclass(frozen=True)
class MLPConfig:
    n_in: int = 64
    hidden: tuple[int, ...] = (128, 64)
    n_classes: int = 10
    dropout: float = 0.1


class MLP(nn.Module):
    def __init__(self, config: MLPConfig = MLPConfig()):
        super().__init__()
        layers, width = [], config.n_in
        for h in config.hidden:
            layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(config.dropout)]
            width = h
        layers.append(nn.Linear(width, config.n_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 64) -> (B, 10) logits
        return self.net(x)


SPEC = ModelSpec(
    name="mlp",
    family="perceptron and MLP",
    teaches="hidden layers, ReLU, dropout, backpropagation",
    dataset="sklearn digits 8x8 (flattened)",
    build=MLP,
    data=lambda: digits(as_images=False),
    recipe=Recipe(epochs=30, lr=3e-3, weight_decay=1e-4),
)
