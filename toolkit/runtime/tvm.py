"""TVM session: runs a compiled artifact (model.so) on the Relax virtual machine.

A tuned artifact holds static-batch variants of its entry function (`main_b1`, `main_b8`, named
in the manifest's "variants"); a call whose batch has one runs it, any other batch runs the
dynamic `main`.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import tvm
from tvm import relax

from toolkit.errors import DltkError
from toolkit.runtime.artifact import LIBRARY, Artifact
from toolkit.runtime.spec import TensorSpec, validate_feeds


def tvm_device(device: str):
    if device not in ("cpu", "cuda"):
        raise DltkError(f"unknown device '{device}'", "use cpu or cuda")
    dev = tvm.cpu(0) if device == "cpu" else tvm.cuda(0)
    if not dev.exist:
        raise DltkError(f"no {device} device here", "run on a machine with one, or use --device cpu")
    return dev


class TvmSession:
    backend = "tvm"

    def __init__(self, library: Path, inputs: list[TensorSpec], outputs: list[TensorSpec], device: str,
                 variants: dict[int, str] | None = None):
        self.inputs, self.outputs, self.device = inputs, outputs, device
        self._dev = tvm_device(device)
        self._library = tvm.runtime.load_module(str(library))
        self.artifact_path = Path(library).parent
        self._names = [o.name for o in outputs]
        self._variants = dict(variants or {})
        # The input whose first dimension is the (symbolic) batch picks the variant.
        self._batch_input = next((s.name for s in inputs if s.shape and isinstance(s.shape[0], str)), None)
        # The VM keeps per-call state, so each thread gets its own over the shared library.
        self._local = threading.local()

    @classmethod
    def from_artifact(cls, artifact: Artifact, device: str | None = None) -> TvmSession:
        device = device or artifact.device
        if device != artifact.device:
            raise DltkError(
                f"artifact {artifact.path} was compiled for {artifact.device}, not {device}",
                f"compile it with --target {device}, or load it with device='{artifact.device}'",
            )
        variants = {int(b): name for b, name in artifact.manifest.get("variants", {}).items()}
        return cls(artifact.file(LIBRARY), artifact.inputs, artifact.outputs, device, variants)

    def _function(self, name: str):
        functions = getattr(self._local, "functions", None)
        if functions is None:
            functions = self._local.functions = {}
            self._local.vm = relax.VirtualMachine(self._library, self._dev)
        function = functions.get(name)
        if function is None:
            function = functions[name] = self._local.vm[name]
        return function

    def entry_for(self, feeds: dict[str, np.ndarray]) -> str:
        """The function that serves these feeds: a static variant for its batch, else main."""
        if self._variants and self._batch_input is not None:
            return self._variants.get(feeds[self._batch_input].shape[0], "main")
        return "main"

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds = validate_feeds(self.inputs, feeds)
        args = [tvm.runtime.tensor(np.ascontiguousarray(feeds[s.name]), self._dev) for s in self.inputs]
        result = self._function(self.entry_for(feeds))(*args)
        values = [result] if isinstance(result, tvm.runtime.Tensor) else list(result)
        return {name: value.numpy() for name, value in zip(self._names, values)}
