"""Checkpoints: weights plus what made them, loadable without unpickling code (weights_only)."""

from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path

import torch
from torch import nn

FORMAT = "dltk-checkpoint/1"


def save(path, model_name: str, model: nn.Module, info: dict) -> None:
    """Write atomically: a crash leaves the previous file, never half of a new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # An exclusive, unpredictable temporary name: a symbolic link planted at a guessable one cannot redirect it.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": FORMAT, "model": model_name, "info": info, "state_dict": model.state_dict()}, f)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def read(path) -> dict:
    """The checkpoint's dict; raises ValueError when the file is not a dltk checkpoint or is damaged."""
    _check_integrity(path)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for foreign or damaged files
        raise ValueError(f"{path} is not a readable PyTorch checkpoint: {_first_line(e)}") from e
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{path} is not a dltk checkpoint (write one with 'dltk train')")
    if not (isinstance(data.get("model"), str) and isinstance(data.get("state_dict"), dict) and data["state_dict"]
            and isinstance(data.get("info"), dict)):
        raise ValueError(f"{path} is a dltk checkpoint without weights or without its model's name "
                         "(write it again with 'dltk train')")
    return data


def _check_integrity(path) -> None:
    """torch.load does not check the zip's CRC-32s: damaged weight bytes would load as wrong weights."""
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        raise ValueError(f"{path} is not a readable PyTorch checkpoint (not a zip archive: {e})") from None
    if damaged is not None:
        raise ValueError(f"{path} is damaged: {damaged} fails its CRC check (write it again with 'dltk train')")


def _first_line(e: Exception) -> str:
    """The first line of a loader's message, without its advice to unpickle (which runs arbitrary code)."""
    line = (str(e).strip().splitlines() or [type(e).__name__])[0]
    if "weights_only" in line or "pickle" in line.lower():
        return "it holds objects other than tensors, which dltk does not load"
    return line
