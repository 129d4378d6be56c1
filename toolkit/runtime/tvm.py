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

from toolkit.errors import DltkError, InputError
from toolkit.runtime.artifact import LIBRARY, Artifact
from toolkit.runtime.spec import TensorSpec, validate_feeds, validate_tensors


def tvm_device(device: str):
    if device not in ("cpu", "cuda"):
        raise DltkError(f"unknown device '{device}'", "use cpu or cuda")
    dev = tvm.cpu(0) if device == "cpu" else tvm.cuda(0)
    if not dev.exist:
        raise DltkError(f"no {device} device here", "run on a machine with one, or use --device cpu")
    return dev


class TvmSession:
    backend = "tvm"

    def __init__(self, library, inputs: list[TensorSpec], outputs: list[TensorSpec], device: str,
                 variants: dict[int, str] | None = None):
        """library: the path of a model.so, or an executable fresh from tvm.compile."""
        self.inputs, self.outputs, self.device = inputs, outputs, device
        self._dev = tvm_device(device)
        is_path = isinstance(library, (str, Path))
        self._library = tvm.runtime.load_module(str(library)) if is_path else library
        self.artifact_path = Path(library).parent if is_path else None
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

    def virtual_machine(self) -> relax.VirtualMachine:
        """A fresh VM over the library, on this session's device (the profiler instruments its own)."""
        return relax.VirtualMachine(self._library, self._dev)

    def _function(self, name: str):
        functions = getattr(self._local, "functions", None)
        if functions is None:
            functions = self._local.functions = {}
            self._local.vm = self.virtual_machine()
        function = functions.get(name)
        if function is None:
            function = functions[name] = self._local.vm[name]
        return function

    def entry_for(self, feeds: dict[str, np.ndarray]) -> str:
        """The function that serves these feeds: a static variant for its batch, else main."""
        if self._variants and self._batch_input is not None:
            return self._variants.get(feeds[self._batch_input].shape[0], "main")
        return "main"

    @staticmethod
    def set_threads(threads: int | None) -> None:
        """TVM's CPU thread pool is one per process: None or 0 gives its default (one per core)."""
        tvm.get_global_func("runtime.config_threadpool")(1, threads or 0)  # 1: no big.LITTLE preference

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds = validate_feeds(self.inputs, feeds)
        to_tvm, to_numpy = (self._cpu_tensor, _cpu_numpy) if self.device == "cpu" else (self._device_tensor, _device_numpy)
        result = self._function(self.entry_for(feeds))(*[to_tvm(s.name, feeds[s.name]) for s in self.inputs])
        values = [result] if isinstance(result, tvm.runtime.Tensor) else list(result)
        return {name: to_numpy(value) for name, value in zip(self._names, values)}

    def run_dlpack(self, feeds: dict) -> dict:
        """Run on tensors already on this session's device, handed over through DLPack without a copy.

        feeds: name -> any DLPack tensor on the device (a torch or CuPy CUDA tensor; on cpu a torch
        tensor or an array aligned to 64 bytes, as TVM requires). Returns name -> TVM tensor on the
        device, which torch.from_dlpack, cupy.from_dlpack or np.from_dlpack take without a copy. An
        output may share memory with the model's weights or inputs: copy it before writing to it.
        """
        tensors = {name: _from_dlpack(name, value) for name, value in feeds.items()}
        validate_tensors(self.inputs, tensors)
        for name, tensor in tensors.items():
            if tensor.device != self._dev:
                raise InputError(f"input '{name}' is on {tensor.device}, not on this session's {self._dev}",
                                 f"move it to {self.device} first, or use run() with numpy arrays")
        result = self._function(self.entry_for(tensors))(*[tensors[s.name] for s in self.inputs])
        values = [result] if isinstance(result, tvm.runtime.Tensor) else list(result)
        return dict(zip(self._names, values))

    def _device_tensor(self, name: str, array: np.ndarray):
        return tvm.runtime.tensor(np.ascontiguousarray(array), self._dev)

    def _cpu_tensor(self, name: str, array: np.ndarray):
        """The feed copied into this thread's aligned buffer for the input, kept from call to call."""
        buffers = getattr(self._local, "buffers", None)
        if buffers is None or len(buffers) > _MAX_BUFFERS:
            buffers = self._local.buffers = {}
        key = (name, array.shape, array.dtype.str)
        entry = buffers.get(key)
        if entry is None:
            entry = buffers[key] = _aligned_tensor(array.shape, array.dtype)
        aligned, tensor = entry
        if tensor is None:
            return tvm.runtime.tensor(np.ascontiguousarray(array))
        aligned[...] = array
        return tensor


# tvm.runtime.tensor(array) and Tensor.numpy() cost about 27 us and 10 us per call here, more
# than a small model's whole run; DLPack hands memory over in under 1 us. Each thread copies a
# feed into its own aligned buffer per input and shape (TVM requires 64-byte alignment, and the
# caller's array must not be aliased), wrapped once as a TVM tensor; outputs are copied out, as
# a model output can alias an input or a weight.
_ALIGNMENT = 64
_MAX_BUFFERS = 16  # distinct (input, shape) buffers a thread keeps before starting over


def _aligned_tensor(shape, dtype):
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    buffer = np.empty(nbytes + _ALIGNMENT, np.uint8)
    offset = -buffer.ctypes.data % _ALIGNMENT
    aligned = buffer[offset:offset + nbytes].view(dtype).reshape(shape)
    try:
        return aligned, tvm.runtime.from_dlpack(aligned)
    except Exception:  # a dtype DLPack cannot carry (TVM raises its own error types)
        return aligned, None


def _from_dlpack(name: str, value):
    try:
        return tvm.runtime.from_dlpack(value)
    except Exception as e:  # not a DLPack tensor, not contiguous, not aligned (TVM raises its own types)
        raise InputError(f"input '{name}' cannot be handed to TVM through DLPack: {str(e).strip().splitlines()[-1]}",
                         "give a contiguous tensor on the session's device") from e


def _cpu_numpy(value) -> np.ndarray:
    try:
        return np.from_dlpack(value).copy()
    except Exception:  # a dtype numpy's DLPack import refuses
        return value.numpy()


def _device_numpy(value) -> np.ndarray:
    return value.numpy()
