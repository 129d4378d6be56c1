"""PyTorch eager session: the reference backend for benchmarks and comparisons.

Only imported when asked for, so `import toolkit.runtime` stays free of torch.
"""

from __future__ import annotations

import numpy as np
import torch

from toolkit.runtime.spec import TensorSpec, validate_feeds


class TorchSession:
    backend = "torch"

    def __init__(self, module: torch.nn.Module, inputs: list[TensorSpec], outputs: list[TensorSpec], device: str = "cpu"):
        self.inputs, self.outputs, self.device = inputs, outputs, device
        self._module = module.eval().to(device)
        self._names = [o.name for o in outputs]

    @torch.inference_mode()
    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds = validate_feeds(self.inputs, feeds)
        args = [torch.from_numpy(feeds[s.name]).to(self.device) for s in self.inputs]
        result = self._module(*args)
        values = result if isinstance(result, (tuple, list)) else (result,)
        return {name: v.cpu().numpy() for name, v in zip(self._names, values)}
