"""TVM session: runs a compiled artifact (model.so) on the Relax virtual machine."""

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

    def __init__(self, library, inputs: list[TensorSpec], outputs: list[TensorSpec], device: str):
        """library: the path of a model.so, or an executable fresh from tvm.compile."""
        self.inputs, self.outputs, self.device = inputs, outputs, device
        self._dev = tvm_device(device)
        self._library = tvm.runtime.load_module(str(library)) if isinstance(library, (str, Path)) else library
        self._names = [o.name for o in outputs]
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
        return cls(artifact.file(LIBRARY), artifact.inputs, artifact.outputs, device)

    @staticmethod
    def set_threads(threads: int | None) -> None:
        """TVM's CPU thread pool is one per process: None or 0 gives its default (one per core)."""
        tvm.get_global_func("runtime.config_threadpool")(1, threads or 0)  # 1: no big.LITTLE preference

    def _main(self):
        main = getattr(self._local, "main", None)
        if main is None:
            main = self._local.main = relax.VirtualMachine(self._library, self._dev)["main"]
        return main

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds = validate_feeds(self.inputs, feeds)
        args = [tvm.runtime.tensor(np.ascontiguousarray(feeds[s.name]), self._dev) for s in self.inputs]
        result = self._main()(*args)
        values = [result] if isinstance(result, tvm.runtime.Tensor) else list(result)
        return {name: value.numpy() for name, value in zip(self._names, values)}
