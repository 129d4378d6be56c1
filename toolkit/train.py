"""Train a zoo model into a checkpoint, and load a model from a zoo NAME or a checkpoint."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from torch import nn

import models
from models import checkpoint
from models.registry import ModelSpec
from models.train import OPTIMIZERS, Epoch, TrainResult, train
from toolkit.errors import DltkError


@dataclass
class LoadedModel:
    spec: ModelSpec
    module: nn.Module  # in eval mode
    info: dict  # what trained it: metric, epochs, optimizer, seed; empty when untrained


def spec_for(name: str) -> ModelSpec:
    try:
        return models.get(name)
    except KeyError:
        raise DltkError(f"unknown model '{name}'", f"one of: {', '.join(models.REGISTRY)}; see 'dltk models'") from None


def load_model(source: str, seed: int = 0) -> LoadedModel:
    """A zoo NAME gives freshly initialised weights (seeded); a checkpoint path gives its trained weights."""
    path = Path(source)
    if path.is_file():
        try:
            data = checkpoint.read(path)
        except ValueError as e:
            raise DltkError(str(e)) from None
        spec = spec_for(data["model"])
        module = spec.create(seed)
        try:
            module.load_state_dict(data["state_dict"])
        except (RuntimeError, TypeError) as e:  # missing or unexpected keys, tensors of another shape
            detail = " ".join(str(e).split())  # torch's message spans many lines; keep all of it on one
            raise DltkError(f"{source} does not hold weights for {spec.name}: {detail}",
                            f"give a checkpoint written by 'dltk train {spec.name}'") from None
        return LoadedModel(spec, module.eval(), data["info"])
    if path.suffix in (".pt", ".pth") or "/" in source:
        raise DltkError(f"no such file: {source}", "check the path, or give a zoo model name")
    spec = spec_for(source)
    return LoadedModel(spec, spec.create(seed), {})


def train_model(
    name: str,
    output,
    epochs: int | None = None,
    optimizer: str | None = None,
    seed: int = 0,
    on_epoch: Callable[[Epoch], None] = lambda epoch: None,
) -> TrainResult:
    spec = spec_for(name)
    if optimizer is not None and optimizer not in OPTIMIZERS:
        raise DltkError(f"unknown optimizer '{optimizer}'", f"use one of {', '.join(OPTIMIZERS)}")
    if epochs is not None and epochs < 1:
        raise DltkError(f"--epochs must be at least 1, got {epochs}")
    recipe = spec.recipe.with_overrides(epochs=epochs, optimizer=optimizer)
    model = spec.create(seed)
    result = train(model, spec.data(), spec.task, recipe, seed=seed, on_epoch=on_epoch)
    info = {
        "metric": {result.metric: result.value},
        "dataset": spec.dataset,
        "epochs": recipe.epochs,
        "optimizer": recipe.optimizer,
        "seed": seed,
    }
    checkpoint.save(output, spec.name, model, info)  # written atomically
    return result
