"""What every engine's session shares: feeds checked before the engine sees them, static-batch
variants, and the timed blocks benchmarks measure. An engine writes its constructor and `_run`.
"""

from __future__ import annotations

import functools

import numpy as np

from toolkit.runtime.batch import variant_entry
from toolkit.runtime.spec import TensorSpec, validate_feeds
from toolkit.timing import Block, Budget, timed_block

Feeds = dict[str, np.ndarray]


class Session:
    backend: str  # "ort", "tvm", "torch", ...
    device: str  # "cpu" or "cuda"
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]

    def run(self, feeds: Feeds) -> Feeds:
        """Outputs by name, in the order of `outputs`. Wrong names, dtypes or shapes raise InputError (a ValueError)."""
        return self._run(validate_feeds(self.inputs, feeds))

    def _run(self, feeds: Feeds) -> Feeds:
        """The engine's call on feeds already checked against `inputs`."""
        raise NotImplementedError

    def timed_block(self, feeds: Feeds, budget: Budget) -> Block:
        """The budget's warm-up, then timed calls of run(feeds) on this process's clock."""
        return timed_block(functools.partial(self.run, feeds), budget)


class StaticVariants:
    """A tuned artifact's static-batch copies of its entry function (manifest "variants": {"8": "main_b8"}).

    A call whose batch has a copy runs it; any other batch runs the dynamic `main`.
    """

    def __init__(self, inputs: list[TensorSpec], variants: dict[int, str] | None = None,
                 variant_dims: dict[str, int] | None = None):
        """variant_dims: other symbolic dims the copies bind (manifest "variant_dims", e.g. {"sequence": 64})."""
        self.by_batch = {int(batch): name for batch, name in (variants or {}).items()}
        self._inputs, self._dims = inputs, dict(variant_dims or {})

    def entry_for(self, feeds: Feeds) -> str:
        return variant_entry(self.by_batch, self._dims, self._inputs, feeds)
