"""Datasets the zoo trains on. Nothing is downloaded: scikit-learn ships the 8x8 digits."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

SPLIT_SEED = 0  # the held-out set is the same whatever seed training uses


@dataclass(frozen=True)
class Split:
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor


@functools.lru_cache(maxsize=None)
def digits(as_images: bool = True) -> Split:
    """The 1,797 8x8 handwritten digits, scaled to [0, 1]; 20% held out, stratified.

    as_images: (N, 1, 8, 8) for CNNs, else (N, 64).
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = (bunch.data / 16.0).astype(np.float32)
    y = bunch.target.astype(np.int64)
    train_x, test_x, train_y, test_y = train_test_split(
        x, y, test_size=0.2, random_state=SPLIT_SEED, stratify=y
    )
    shape = (-1, 1, 8, 8) if as_images else (-1, 64)
    return Split(
        torch.from_numpy(train_x).reshape(shape),
        torch.from_numpy(train_y),
        torch.from_numpy(test_x).reshape(shape),
        torch.from_numpy(test_y),
    )
