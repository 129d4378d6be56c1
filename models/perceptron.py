"""Rosenblatt's perceptron: one linear unit and a threshold, on linearly separable 2-D points.

Training minimises the perceptron criterion, mean(max(0, -y * (w.x + b))) with y in {-1, +1}:
plain SGD on it is Rosenblatt's rule (each misclassified point pulls w towards y * x). On
separable data it converges; on XOR it cannot (see `xor()`), which is what the MLP is for.
"""

import functools
from dataclasses import dataclass

import torch
from torch import nn

from models.data import Split
from models.registry import ModelSpec
from models.train import Recipe

DATA_SEED = 1


@dataclass(frozen=True)
class PerceptronConfig:
    n_in: int = 2


class Perceptron(nn.Module):
    def __init__(self, config: PerceptronConfig = PerceptronConfig()):
        super().__init__()
        self.linear = nn.Linear(config.n_in, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 2) -> (B,) score; the class is score > 0
        return self.linear(x).squeeze(-1)


class PerceptronCriterion:
    """Rosenblatt's loss on labels {0, 1} (taken as -1, +1); held-out accuracy of score > 0."""

    metric = "accuracy"

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        sign = y.float() * 2 - 1
        return torch.relu(-sign * model(x)).mean()

    @torch.no_grad()
    def evaluate(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
        model.eval()
        return ((model(x) > 0).long() == y).float().mean().item()


@functools.lru_cache(maxsize=None)
def separable_points(n: int = 500, margin: float = 0.1) -> Split:
    """Points uniform in [-1, 1]^2, labelled by a fixed random line, with a margin kept empty."""
    g = torch.Generator().manual_seed(DATA_SEED)
    w = torch.randn(2, generator=g)
    w = w / w.norm()
    b = 0.2
    x = torch.empty(0, 2)
    while len(x) < n:
        candidates = torch.rand(2 * n, 2, generator=g) * 2 - 1
        x = torch.cat([x, candidates[(candidates @ w + b).abs() > margin]])[:n]
    y = (x @ w + b > 0).long()
    cut = int(0.8 * n)
    return Split(x[:cut], y[:cut], x[cut:], y[cut:])


def xor() -> Split:
    """The four XOR points, no perceptron separates them; the same set to train and test."""
    x = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    y = torch.tensor([0, 1, 1, 0])
    return Split(x, y, x, y)


SPEC = ModelSpec(
    name="perceptron",
    family="perceptron",
    teaches="a linear threshold unit, Rosenblatt's learning rule, linear separability",
    dataset="generated linearly separable 2-D points",
    build=Perceptron,
    data=separable_points,
    recipe=Recipe(epochs=20, batch_size=16, lr=0.1, optimizer="sgd", grad_clip=None),
    task=PerceptronCriterion(),
    output_names=("score",),
)
