"""What every zoo family declares: how to build it, its data, its recipe, its ONNX names."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from models.data import Split
from models.train import Classification, Recipe


@dataclass(frozen=True)
class ModelSpec:
    name: str
    family: str
    teaches: str  # what from the course the model shows
    dataset: str
    build: Callable[[], nn.Module]
    data: Callable[[], Split]
    recipe: Recipe
    task: object = field(default_factory=Classification)
    input_names: tuple[str, ...] = ("input",)
    output_names: tuple[str, ...] = ("logits",)

    @property
    def metric(self) -> str:
        return self.task.metric

    def create(self, seed: int = 0) -> nn.Module:
        """A freshly initialised model; the same seed gives the same weights."""
        torch.manual_seed(seed)
        return self.build().eval()

    def parameters(self) -> int:
        return sum(p.numel() for p in self.build().parameters())

    def sample(self, n: int) -> tuple[torch.Tensor, ...]:
        """n held-out inputs (repeated when the held-out set is smaller), for parity checks and benchmarks."""
        x = self.data().test_x
        index = torch.arange(n) % len(x)
        return (x[index],)
