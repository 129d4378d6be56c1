"""Tensor specs, feed validation and random feeds: shared by every session."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from toolkit.errors import DltkError, InputError

Dim = int | str  # a fixed size, or the name of a symbolic dimension such as "batch"


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[Dim, ...]
    dtype: str  # numpy dtype name: "float32", "int64", ...

    def to_json(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_json(cls, d: dict) -> TensorSpec:
        return cls(d["name"], tuple(d["shape"]), d["dtype"])


def check_input_dims(specs: list[TensorSpec], source) -> list[TensorSpec]:
    """Refuse a model input with a fixed size below 1: no data fits it, and runtimes fail on it obscurely."""
    for spec in specs:
        bad = [d for d in spec.shape if isinstance(d, int) and d < 1]
        if bad:
            raise DltkError(f"{source}: input '{spec.name}' has shape {format_shape(spec.shape)}, with a size of {bad[0]}",
                            "give each input dimension a size of at least 1, or a symbolic name such as 'batch'")
    return specs


def format_shape(shape) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"


def validate_feeds(specs: list[TensorSpec], feeds: dict) -> dict[str, np.ndarray]:
    """Check names, dtypes and shapes (symbolic dims bound consistently); return numpy feeds."""
    if len(feeds) != len(specs):
        _check_names(specs, feeds)
    bound: dict[str, int] = {}
    checked = {}
    for spec in specs:
        value = feeds.get(spec.name, _MISSING)
        if value is _MISSING:  # as many feeds as inputs, so another is unknown: named first
            _check_names(specs, feeds)
        if not isinstance(value, np.ndarray):
            value = np.asarray(value)
        _check_tensor(spec, value.shape, _dtype_name(value.dtype), bound)
        checked[spec.name] = value
    return checked


_MISSING = object()


@functools.cache
def _dtype_name(dtype: np.dtype) -> str:
    # str() of a numpy dtype takes microseconds: for a small model, more than its inference
    return str(dtype)


def validate_tensors(specs: list[TensorSpec], tensors: dict) -> None:
    """The same checks for tensors that are not numpy arrays (TVM tensors on a GPU): nothing is read or copied."""
    _check_names(specs, tensors)
    bound: dict[str, int] = {}
    for spec in specs:
        tensor = tensors[spec.name]
        _check_tensor(spec, tuple(tensor.shape), str(tensor.dtype), bound)


def _check_names(specs: list[TensorSpec], feeds: dict) -> None:
    expected = {s.name for s in specs}
    for name in feeds:
        if name not in expected:
            raise InputError(f"unknown input '{name}'", f"the model takes {sorted(expected)}")
    for spec in specs:
        if spec.name not in feeds:
            raise InputError(
                f"missing input '{spec.name}'",
                f"expected shape {format_shape(spec.shape)} {spec.dtype}",
            )


def _check_tensor(spec: TensorSpec, shape: tuple, dtype: str, bound: dict[str, int]) -> None:
    if dtype != spec.dtype:
        raise InputError(f"input '{spec.name}' has dtype {dtype}", f"expected {spec.dtype}")
    if not _shape_fits(spec.shape, shape, bound):
        raise InputError(f"input '{spec.name}' has shape {format_shape(shape)}", f"expected {format_shape(spec.shape)}")


def _shape_fits(expected, given, bound: dict[str, int]) -> bool:
    symbols = _symbols_bound(expected, given)
    if symbols is None:
        return False
    for symbol, size in symbols:
        if bound.setdefault(symbol, size) != size:  # one symbol, one size across all inputs
            return False
    return True


@functools.lru_cache(maxsize=1024)
def _symbols_bound(expected: tuple, given: tuple) -> tuple | None:
    """The (symbol, size) pairs a shape binds in the expected one, or None where it does not fit.

    Worked out once per pair of shapes: every call of a session checks its feeds, and for a model
    that answers in 20 us, each microsecond of checking shows in its latency."""
    if len(expected) != len(given):
        return None
    symbols: dict[str, int] = {}
    for want, got in zip(expected, given):
        if want == "?":  # unknown size: anything goes
            continue
        if isinstance(want, str):
            if symbols.setdefault(want, got) != got:
                return None
        elif want != got:
            return None
    return tuple(symbols.items())


# Integer inputs that take 0 or 1 by convention (Hugging Face's attention_mask, token_type_ids):
# a mask of 2..9 overflows the (1 - mask) * dtype-min bias to inf and NaN, which any two runs
# agree on, and a token type past 1 is an index out of range.
BINARY_INPUTS = ("mask", "token_type")


def random_feeds(specs: list[TensorSpec], dims: dict[str, int] | None = None, seed: int = 0):
    """Random inputs; symbolic dims take their size from `dims`, else 1. Integers are 0-9, or
    0-1 for inputs named as masks or token types (BINARY_INPUTS)."""
    rng = np.random.default_rng(seed)
    dims = dims or {}
    feeds = {}
    for spec in specs:
        shape = tuple(dims.get(d, 1) if isinstance(d, str) else d for d in spec.shape)
        dtype = np.dtype(spec.dtype)
        if dtype.kind == "f":
            feeds[spec.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind in "iu":
            high = 2 if any(word in spec.name.lower() for word in BINARY_INPUTS) else 10
            feeds[spec.name] = rng.integers(0, high, size=shape).astype(dtype)
        elif dtype.kind == "b":
            feeds[spec.name] = rng.integers(0, 2, size=shape).astype(bool)
        else:
            raise InputError(f"cannot make random data for input '{spec.name}' of dtype {dtype}")
    return feeds
