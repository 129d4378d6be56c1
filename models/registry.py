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
    # Hooks for families that are not "one float tensor in, logits out"; the defaults fit mlp and lenet.
    inputs: Callable[[int], tuple[torch.Tensor, ...]] | None = None  # n inputs of the exported graph
    batch_dims: tuple[tuple[int, ...], ...] | None = None  # per input, the dims that are the dynamic "batch"
    # Sequence models: per input, the dims exported as a dynamic "sequence", up to max_sequence (the trained length).
    sequence_dims: tuple[tuple[int, ...], ...] | None = None
    max_sequence: int | None = None
    generation: dict | None = None  # how `dltk generate` samples from the export (kept in its metadata)
    tiny: Callable[[], ModelSpec] | None = None  # the same family at test size (same name)
    decode_step: Callable[[nn.Module], nn.Module] | None = None  # text models: the one-token step over a KV cache

    @property
    def metric(self) -> str:
        return self.task.metric

    def create(self, seed: int = 0) -> nn.Module:
        """A freshly initialised model; the same seed gives the same weights."""
        torch.manual_seed(seed)
        return self.build().eval()

    def parameters(self) -> int:
        return sum(p.numel() for p in self.build().parameters())

    def dynamic_dims(self) -> tuple[tuple[int, ...], ...]:
        return self.batch_dims or ((0,),) * len(self.input_names)

    def sample(self, n: int) -> tuple[torch.Tensor, ...]:
        """n inputs of the exported graph (held-out data, repeated when there is less), for parity checks and benchmarks."""
        if self.inputs is not None:
            return self.inputs(n)
        x = self.data().test_x
        index = torch.arange(n) % len(x)
        return (x[index],)

    def test_size(self) -> ModelSpec:
        return self.tiny() if self.tiny else self
