"""TVM session: runs a compiled artifact (model.so) on the Relax virtual machine.

A tuned artifact holds static-batch variants of its entry function (`main_b1`, `main_b8`, named
in the manifest's "variants"); a call whose batch has one runs it, any other batch runs the
dynamic `main`.

Only TVM's runtime library is loaded (toolkit.runtime.tvm_runtime): no compiler, no torch.

Memory: the VM's pooled allocator keeps every freed buffer for reuse, keyed by its size, so each
new batch size of the dynamic `main` added a whole set of buffers that stayed until the process
ended (LeNet at batch 20000: about 115 MB a size). On the CPU the VM uses the naive allocator,
which hands buffers back to malloc when the call's tensors die: a session's memory follows the
largest batch it runs, not how many sizes it saw, at no measurable cost per call. On a GPU a
device allocation per call would synchronize, so the pools stay, and a session that has seen
more than _POOLED_SHAPES input shapes since the last release frees the pooled buffers (the
process's pools are shared: others just allocate again); dropping a GPU session frees them too.
"""

from __future__ import annotations

import threading
import weakref
from pathlib import Path

import numpy as np

from toolkit.errors import DltkError, InputError, first_line
from toolkit.runtime import tvm_runtime
from toolkit.runtime.artifact import LIBRARY, Artifact
from toolkit.runtime.session import Session, StaticVariants
from toolkit.runtime.spec import TensorSpec, validate_tensors

ALLOCATORS = {"cpu": tvm_runtime.NAIVE_ALLOCATOR, "cuda": tvm_runtime.POOLED_ALLOCATOR}
_POOLED_SHAPES = 8  # distinct input shapes a pooled session runs before it releases the pools


def tvm_device(device: str):
    return tvm_runtime.device(device)


class TvmSession(Session):
    backend = "tvm"

    def __init__(self, library, inputs: list[TensorSpec], outputs: list[TensorSpec], device: str,
                 variants: dict[int, str] | None = None, variant_dims: dict[str, int] | None = None):
        """library: the path of a model.so, or an executable fresh from tvm.compile.
        variant_dims: other symbolic dims the variants bind, e.g. {"sequence": 64}."""
        dev = tvm_device(device)  # first: a CUDA library does not even load where there is no GPU
        is_path = isinstance(library, (str, Path))
        self.artifact_path = Path(library).parent if is_path else None
        if is_path:
            library = tvm_runtime.load_module(library)
        elif hasattr(library, "jit"):  # a tvm.runtime.Executable: build its module once, not per VM
            library = library.jit()
        self._attach(library, dev, inputs, outputs, device, variants, host_memory=device == "cpu",
                     variant_dims=variant_dims)

    def _attach(self, library, dev, inputs: list[TensorSpec], outputs: list[TensorSpec], device: str,
                variants: dict[int, str] | None, host_memory: bool, variant_dims: dict[str, int] | None = None) -> None:
        """host_memory: the device reads this process's memory, so feeds go in and out through DLPack."""
        self.inputs, self.outputs, self.device = inputs, outputs, device
        self._library, self._dev = library, dev
        self._allocator = ALLOCATORS[device]
        self._shapes_since_release: set = set()
        if self._allocator == tvm_runtime.POOLED_ALLOCATOR:
            weakref.finalize(self, tvm_runtime.release_pooled_memory).atexit = False
        self._names = [o.name for o in outputs]
        self._input_names = [s.name for s in inputs]
        self._tensor_type = tvm_runtime.ffi().Tensor
        self._variants = StaticVariants(inputs, variants, variant_dims)
        self._host_memory = host_memory
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
        if str((artifact.manifest.get("device_code") or {}).get("form", "")).startswith("CUDA C source"):
            _register_cuda_compiler()
        return cls(artifact.file(LIBRARY), artifact.inputs, artifact.outputs, device, variants,
                   artifact.manifest.get("variant_dims"))

    def virtual_machine(self):
        """A fresh VM over the library, on this session's device: `vm[name]` is a function, and
        `vm["set_instrument"](hook)` instruments it (the profiler does, on its own VM)."""
        return tvm_runtime.virtual_machine(self._library, self._dev, self._allocator)

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
        return self._variants.entry_for(feeds)

    set_threads = staticmethod(tvm_runtime.set_threads)

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._allocator == tvm_runtime.POOLED_ALLOCATOR:
            self._bound_pools(feeds)
        try:
            if self._host_memory:
                call = self._host_call(feeds)
                result, to_numpy = call.function(*call.fill(feeds)), _cpu_numpy
            else:
                args = [self._device_tensor(s.name, feeds[s.name]) for s in self.inputs]
                result, to_numpy = self._function(self.entry_for(feeds))(*args), self._device_numpy
        except Exception as e:  # feeds that match the manifest's inputs: the library disagrees with its manifest
            raise DltkError(f"the compiled model cannot run these inputs: {first_line(e)}",
                            "its manifest.json does not describe its model.so; recompile the artifact") from e
        values = (result,) if isinstance(result, self._tensor_type) else result
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
        if self._allocator == tvm_runtime.POOLED_ALLOCATOR:
            self._bound_pools(tensors)
        result = self._function(self.entry_for(tensors))(*[tensors[s.name] for s in self.inputs])
        values = [result] if isinstance(result, tvm_runtime.ffi().Tensor) else list(result)
        return dict(zip(self._names, values))

    def _bound_pools(self, feeds: dict[str, np.ndarray]) -> None:
        """Release the pooled buffers once more than _POOLED_SHAPES input shapes ran since the last time."""
        shapes = tuple(feeds[s.name].shape for s in self.inputs)
        if shapes not in self._shapes_since_release:
            if len(self._shapes_since_release) >= _POOLED_SHAPES:
                tvm_runtime.release_pooled_memory()
                self._shapes_since_release.clear()
            self._shapes_since_release.add(shapes)

    def _device_tensor(self, name: str, array: np.ndarray):
        return tvm_runtime.to_device(tvm_runtime.from_numpy(np.ascontiguousarray(array)), self._dev)

    @staticmethod
    def _device_numpy(value) -> np.ndarray:
        return tvm_runtime.to_numpy(tvm_runtime.to_cpu(value))

    def _host_call(self, feeds: dict[str, np.ndarray]) -> _HostCall:
        """This thread's call for the feeds' shapes (their dtypes are the inputs', checked before),
        kept from call to call unless the feeds are large (their copy costs more than new buffers)."""
        calls = getattr(self._local, "calls", None)
        if calls is None or len(calls) > _MAX_CALLS:
            calls = self._local.calls = {}
        shapes = tuple([feeds[name].shape for name in self._input_names])
        call = calls.get(shapes)
        if call is None:
            examples = [feeds[name] for name in self._input_names]
            call = _HostCall(self._function(self.entry_for(feeds)), self._input_names, examples)
            if sum(example.nbytes for example in examples) <= _MAX_BUFFER_BYTES:
                calls[shapes] = call
        return call


# Copying into and out of TVM's own tensors (tvm.runtime.tensor(array), Tensor.numpy()) costs
# about 27 us and 10 us per call here, more than a small model's whole run; DLPack hands memory
# over in under 1 us. Each thread copies a feed into its own aligned buffer per input and shape
# (TVM requires 64-byte alignment, and the caller's array must not be aliased), wrapped once as
# a TVM tensor; outputs are copied out, as a model output can alias an input or a weight.
_ALIGNMENT = 64
_MAX_CALLS = 16  # distinct input shapes a thread keeps buffers for before starting over
_MAX_BUFFER_BYTES = 1 << 20  # feeds larger than this in all get buffers for the call only


class _HostCall:
    """One entry function called on CPU feeds of one set of shapes: all a call needs besides the
    feeds' values, worked out once. A small model runs in a few microseconds, less than looking up
    its function and wrapping its buffers on every call took."""

    def __init__(self, function, names: list[str], examples: list[np.ndarray]):
        self.function = function
        self._buffers = []  # (input name, aligned array) for each input its TVM tensor reads
        self._args = []  # per input: its TVM tensor, or its name where DLPack cannot carry the dtype
        for name, example in zip(names, examples):
            aligned, tensor = _aligned_tensor(example.shape, example.dtype)
            if tensor is None:
                self._args.append(name)
            else:
                self._buffers.append((name, aligned))
                self._args.append(tensor)
        self._some_fresh = len(self._buffers) < len(names)  # an input copied into a new tensor each call

    def fill(self, feeds: dict[str, np.ndarray]) -> list:
        """The call's input tensors, holding the feeds' values."""
        for name, aligned in self._buffers:
            aligned[...] = feeds[name]
        if not self._some_fresh:
            return self._args
        return [tvm_runtime.from_numpy(np.ascontiguousarray(feeds[a])) if isinstance(a, str) else a for a in self._args]


def _aligned_tensor(shape, dtype):
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    buffer = np.empty(nbytes + _ALIGNMENT, np.uint8)
    offset = -buffer.ctypes.data % _ALIGNMENT
    aligned = buffer[offset:offset + nbytes].view(dtype).reshape(shape)
    try:
        return aligned, tvm_runtime.ffi().from_dlpack(aligned)
    except Exception:  # a dtype DLPack cannot carry (TVM raises its own error types)
        return aligned, None


def _from_dlpack(name: str, value):
    try:
        tensor = tvm_runtime.ffi().from_dlpack(value)
    except Exception as e:  # not a DLPack tensor, not aligned (TVM raises its own types)
        raise InputError(f"input '{name}' cannot be handed to TVM through DLPack: {str(e).strip().splitlines()[-1]}",
                         "give a contiguous tensor on the session's device") from e
    if not tensor.is_contiguous():  # tvm_ffi takes strided tensors; compiled kernels read them as compact
        raise InputError(f"input '{name}' is not contiguous", "pass tensor.contiguous()")
    return tensor


def _register_cuda_compiler() -> None:
    """An artifact built without a GPU carries CUDA source, which TVM compiles when it loads the
    library, through a callback that the full `tvm` package registers (tvm.support.nvcc)."""
    try:
        import tvm.support.nvcc  # noqa: F401
    except ImportError as e:
        raise DltkError("this CUDA artifact carries CUDA source, and compiling it here needs the full TVM",
                        "pip install apache-tvm (and cuda-bindings for NVRTC)") from e


def _cpu_numpy(value) -> np.ndarray:
    try:
        return np.from_dlpack(value).copy()
    except Exception:  # a dtype numpy's DLPack import refuses
        return tvm_runtime.to_numpy(value)

