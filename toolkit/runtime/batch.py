"""Which axis is the batch: a tensor's leading dimension, when it is symbolic.

dltk exports a dynamic batch as a named leading dimension ("batch"); an ONNX file from elsewhere
may leave it unnamed ("?"). A model whose inputs all have a fixed leading size has a fixed batch.
"""

from __future__ import annotations

import numpy as np

from toolkit.runtime.spec import TensorSpec

UNKNOWN = "?"  # a dimension ONNX leaves without a size or a name


def batch_symbol(spec: TensorSpec) -> str | None:
    """The spec's leading dimension when it is symbolic (a name, or '?'), else None."""
    leading = spec.shape[0] if spec.shape else None
    return leading if isinstance(leading, str) else None


def batch_input(specs: list[TensorSpec]) -> str | None:
    """The first input whose leading dimension is symbolic: its size is the call's batch."""
    return next((s.name for s in specs if batch_symbol(s) is not None), None)


def batch_dims(specs: list[TensorSpec], batch: int) -> dict[str, int]:
    """Each symbolic leading dimension bound to `batch` (what random_feeds takes)."""
    return {symbol: batch for s in specs if (symbol := batch_symbol(s)) is not None}


def named_batch_symbols(specs: list[TensorSpec]) -> list[str]:
    """The named symbolic leading dimensions ('?' left out: nothing can bind it by name)."""
    return sorted({symbol for s in specs if (symbol := batch_symbol(s)) not in (None, UNKNOWN)})


def fixed_batch(specs: list[TensorSpec]) -> int | None:
    """The batch of a model whose inputs have no symbolic leading dimension: the first input's size."""
    if any(batch_symbol(s) is not None for s in specs):
        return None
    sized = [s.shape[0] for s in specs if s.shape and isinstance(s.shape[0], int)]
    return sized[0] if sized else None


def shared_batch_dim(inputs: list[TensorSpec], outputs: list[TensorSpec]) -> str | None:
    """The named leading dimension every input shares and every output has, else None.

    Only such a model can have requests stacked along axis 0 and its outputs split back.
    """
    leading = {batch_symbol(s) for s in inputs}
    if len(leading) != 1:
        return None
    (dim,) = leading
    if dim in (None, UNKNOWN):
        return None
    if not outputs or any(batch_symbol(o) is None for o in outputs):
        return None
    return dim


def variant_entry(variants: dict[int, str], variant_dims: dict[str, int], specs: list[TensorSpec],
                  feeds: dict[str, np.ndarray]) -> str:
    """The function of a compiled artifact that serves these feeds: the static variant for their
    batch when every other dim the variants bind (variant_dims, e.g. {"sequence": 64}) has that
    size in the feeds; else the dynamic "main"."""
    batch_from = batch_input(specs)
    if not variants or batch_from is None:
        return "main"
    name = variants.get(feeds[batch_from].shape[0], "main")
    for spec in specs if name != "main" else ():
        for axis, dim in enumerate(spec.shape):
            if dim in variant_dims and feeds[spec.name].shape[axis] != variant_dims[dim]:
                return "main"
    return name
