"""Checkpoints: weights plus what made them, loadable without unpickling code (weights_only)."""

from __future__ import annotations

import torch
from torch import nn

FORMAT = "dltk-checkpoint/1"


def save(path, model_name: str, model: nn.Module, info: dict) -> None:
    """Write the checkpoint to `path` (`dltk train` writes it beside its place and renames it in)."""
    torch.save({"format": FORMAT, "model": model_name, "info": info, "state_dict": model.state_dict()}, path)


def read(path) -> dict:
    """The checkpoint's dict; raises ValueError when the file is not a dltk checkpoint."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for foreign or damaged files
        raise ValueError(f"{path} is not a readable PyTorch checkpoint: {(str(e).strip().splitlines() or [type(e).__name__])[0]}") from e
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{path} is not a dltk checkpoint (write one with 'dltk train')")
    return data
