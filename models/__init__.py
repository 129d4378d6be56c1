"""The model zoo: one file per family, named in REGISTRY."""

from __future__ import annotations

from models import lenet, mlp, rnn
from models.registry import ModelSpec

REGISTRY: dict[str, ModelSpec] = {spec.name: spec for spec in (mlp.SPEC, lenet.SPEC, *rnn.SPECS)}


def get(name: str) -> ModelSpec:
    """The spec named `name`; KeyError lists the names there are."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown model '{name}' (one of: {', '.join(REGISTRY)})") from None
