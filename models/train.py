"""The training recipe of the course: optimizers, weight decay, clipping, a schedule, a fixed seed."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from models.data import Split

OPTIMIZERS = ("sgd", "momentum", "adagrad", "adam")


@dataclass(frozen=True)
class Recipe:
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    optimizer: str = "adam"
    weight_decay: float = 0.0
    grad_clip: float | None = 1.0  # max gradient norm; None turns clipping off
    warmup_epochs: int = 1  # linear warm-up, then cosine decay to zero
    max_steps: int | None = None  # stop each epoch after this many steps (smoke tests); None: whole epochs

    def with_overrides(self, **changes) -> Recipe:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


class Classification:
    """Cross-entropy on logits; held-out accuracy."""

    metric = "accuracy"

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(model(x), y)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
        model.eval()
        return (model(x).argmax(dim=1) == y).float().mean().item()


def make_optimizer(name: str, params, recipe: Recipe) -> torch.optim.Optimizer:
    wd = recipe.weight_decay
    if name == "sgd":
        return torch.optim.SGD(params, lr=recipe.lr, weight_decay=wd)
    if name == "momentum":
        return torch.optim.SGD(params, lr=recipe.lr, momentum=0.9, nesterov=True, weight_decay=wd)
    if name == "adagrad":
        return torch.optim.Adagrad(params, lr=recipe.lr, weight_decay=wd)
    if name == "adam":
        return torch.optim.AdamW(params, lr=recipe.lr, weight_decay=wd)
    raise ValueError(f"unknown optimizer '{name}' (use one of {', '.join(OPTIMIZERS)})")


def lr_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class Epoch:
    """What one finished epoch reports to the caller (the CLI draws its progress bar from it)."""

    number: int
    of: int
    loss: float
    metric: str
    value: float

    def __str__(self) -> str:
        return f"epoch {self.number}/{self.of}  loss {self.loss:.4f}  held-out {self.metric} {self.value:.4f}"


@dataclass(frozen=True)
class TrainResult:
    metric: str
    value: float
    epochs: int
    seconds: float


def train(
    model: nn.Module,
    data: Split,
    task,
    recipe: Recipe,
    seed: int = 0,
    on_epoch: Callable[[Epoch], None] = lambda epoch: None,
) -> TrainResult:
    """Minibatch training with the recipe; returns the held-out metric."""
    torch.manual_seed(seed)
    optimizer = make_optimizer(recipe.optimizer, model.parameters(), recipe)
    n = len(data.train_x)
    steps_per_epoch = math.ceil(n / recipe.batch_size)
    if recipe.max_steps is not None:
        steps_per_epoch = min(steps_per_epoch, recipe.max_steps)
    total_steps = steps_per_epoch * recipe.epochs
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, steps_per_epoch * recipe.warmup_epochs, total_steps)
    )
    start = time.perf_counter()
    value = float("nan")
    for epoch in range(1, recipe.epochs + 1):
        model.train()
        order = torch.randperm(n)
        total_loss, seen = 0.0, 0
        for i in range(0, steps_per_epoch * recipe.batch_size, recipe.batch_size):
            batch = order[i : i + recipe.batch_size]
            loss = task.loss(model, data.train_x[batch], data.train_y[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if recipe.grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
            optimizer.step()
            schedule.step()
            total_loss += loss.item() * len(batch)
            seen += len(batch)
        value = task.evaluate(model, data.test_x, data.test_y)
        on_epoch(Epoch(epoch, recipe.epochs, total_loss / seen, task.metric, value))
    model.eval()
    return TrainResult(task.metric, value, recipe.epochs, time.perf_counter() - start)
