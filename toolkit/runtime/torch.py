"""PyTorch eager session: the reference backend for benchmarks and comparisons.

Only imported when asked for, so `import toolkit.runtime` stays free of torch.
"""

from __future__ import annotations

import numpy as np
import torch

from toolkit.runtime.session import Session
from toolkit.runtime.spec import TensorSpec

_DEFAULT_THREADS = torch.get_num_threads()


class TorchSession(Session):
    backend = "torch"

    def __init__(
        self,
        module: torch.nn.Module,
        inputs: list[TensorSpec],
        outputs: list[TensorSpec],
        device: str = "cpu",
        compiled: bool = False,
    ):
        """compiled: run through torch.compile (Inductor; needs a C++ compiler on CPU, compiles per shape)."""
        self.inputs, self.outputs, self.device = inputs, outputs, device
        self._module = module.eval().to(device)
        if compiled:
            self.backend = "torch.compile"
            self._module = torch.compile(self._module)
        self._names = [o.name for o in outputs]

    @staticmethod
    def set_threads(threads: int | None) -> None:
        """torch's intra-op pool is one per process; None restores the count it started with."""
        torch.set_num_threads(threads or _DEFAULT_THREADS)

    @torch.inference_mode()
    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        args = [torch.from_numpy(feeds[s.name]).to(self.device) for s in self.inputs]
        result = self._module(*args)
        values = result if isinstance(result, (tuple, list)) else (result,)
        return {name: v.cpu().numpy() for name, v in zip(self._names, values)}
