"""TVM's runtime library on its own: what running a compiled artifact needs, and no more.

`import tvm` maps the 259 MB compiler library and imports about 1950 modules (2 s or more on
these machines); even with TVM_USE_RUNTIME_LIB=1 the `tvm` package imports its IR, script and
target modules (about 430 modules, 85 MB resident). And apache-tvm-ffi's `__init__` imports torch
whenever torch is installed (a workaround for a symbol clash on Windows), another second and
200 MB. Running a `model.so` needs none of it: the Relax VM lives in libtvm_runtime.so, which
model.so links against, and tvm_ffi is how Python calls into both (the `tvm` package's
`load_module` and `VirtualMachine` are thin wrappers over the calls made here).

So this module imports tvm_ffi with `import torch` refused for the importing thread (tvm_ffi
treats torch as optional), unless the application already imported torch, and loads
libtvm_runtime.so from the apache-tvm wheel without importing the `tvm` package. A later
`import tvm` (compile, tune, profile in the same process) still gets the full TVM over the same
libraries, and an application may import torch before or after. When the full TVM is already
imported, its libraries are reused.
"""

from __future__ import annotations

import ctypes
import importlib.abc
import importlib.util
import os
import sys
import threading
from pathlib import Path

from toolkit.errors import DltkError

# Allocators of the Relax VM (the values tvm.runtime.vm.VirtualMachine passes for "naive" and
# "pooled"): naive returns each buffer when its last tensor dies; pooled keeps freed buffers,
# keyed by size, for reuse and never gives them back on its own.
NAIVE_ALLOCATOR = 1
POOLED_ALLOCATOR = 2

_CPU = 1  # DLPack device type
_lock = threading.Lock()
_libraries: dict[str, object] = {}  # loaded shared libraries, kept alive for the process


class _RefuseTorch(importlib.abc.MetaPathFinder):
    """Makes `import torch` fail in one thread, the one importing tvm_ffi; others are untouched."""

    def __init__(self):
        self.thread = threading.get_ident()

    def find_spec(self, name, path=None, target=None):
        if threading.get_ident() == self.thread and (name == "torch" or name.startswith("torch.")):
            raise ModuleNotFoundError(f"No module named {name!r} (kept out by dltk's TVM runtime)", name=name)
        return None


def ffi():
    """The tvm_ffi module, with TVM's runtime library loaded."""
    with _lock:
        if "tvm_runtime" not in _libraries:
            size_thread_pool()
            _libraries["tvm_runtime"] = _load_runtime()
    return sys.modules["tvm_ffi"]


def _load_runtime():
    if "tvm" in sys.modules:  # the full TVM (or TVM's own runtime-only mode) loaded it already
        return sys.modules["tvm"].base._LOADED_LIBS["tvm_runtime"]
    if "tvm_ffi" not in sys.modules and "torch" not in sys.modules:
        refuse = _RefuseTorch()
        sys.meta_path.insert(0, refuse)
        try:
            import tvm_ffi  # noqa: F401
        finally:
            sys.meta_path.remove(refuse)
    return _load_library("tvm_runtime", "RTLD_GLOBAL")


def _load_library(name: str, mode: str):
    """libNAME.so from the apache-tvm wheel (or TVM_LIBRARY_PATH, as `import tvm` looks)."""
    from tvm_ffi.libinfo import load_lib_ctypes

    spec = importlib.util.find_spec("tvm")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise DltkError("TVM is not installed, and running a compiled artifact needs its runtime",
                        "pip install apache-tvm, or run the artifact with backend 'ort'")
    paths = [Path(os.environ["TVM_LIBRARY_PATH"])] if os.environ.get("TVM_LIBRARY_PATH") else []
    paths.append(Path(spec.submodule_search_locations[0]) / "lib")
    return load_lib_ctypes("tvm", name, mode, extra_lib_paths=paths)


def device(kind: str):
    """The tvm_ffi device for "cpu" or "cuda", after checking that it exists here."""
    if kind not in ("cpu", "cuda"):
        raise DltkError(f"unknown device '{kind}'", "use cpu or cuda")
    tvm_ffi = ffi()
    if kind == "cpu":
        return tvm_ffi.device("cpu", 0)
    _load_cuda()
    dev = tvm_ffi.device("cuda", 0)
    if not tvm_ffi.get_global_func("runtime.GetDeviceAttr")(dev.dlpack_device_type(), dev.index, 0):  # 0: kExist
        raise DltkError("no cuda device here", "run on a machine with one, or use --device cpu")
    return dev


def _load_cuda() -> None:
    """TVM's CUDA device API: a separate library (it needs libcudart and libcuda) that registers itself."""
    with _lock:
        if "tvm_runtime_cuda" in _libraries:
            return
        if "tvm" in sys.modules and "tvm_runtime_cuda" in sys.modules["tvm"].base._LOADED_LIBS:
            _libraries["tvm_runtime_cuda"] = sys.modules["tvm"].base._LOADED_LIBS["tvm_runtime_cuda"]
            return
        try:
            _libraries["tvm_runtime_cuda"] = _load_library("tvm_runtime_cuda", "RTLD_LOCAL")
        except (OSError, RuntimeError) as e:  # no CUDA runtime or driver on this machine
            raise DltkError(f"no cuda device here: TVM's CUDA runtime does not load ({e})",
                            "run on a machine with a GPU and its driver, or use --device cpu") from e


def load_module(path):
    """A compiled model.so (dlopened: the caller checks the file before)."""
    return ffi().load_module(str(path))


def virtual_machine(library, dev, allocator: int):
    """A Relax VM over `library` on `dev`, as tvm.runtime.vm.VirtualMachine builds it: call its
    functions with `vm[name](*tensors)`. A GPU VM also gets the CPU, which runs shape functions."""
    vm = library["vm_load_executable"]()
    devices = [(dev.dlpack_device_type(), dev.index)]
    if dev.dlpack_device_type() != _CPU:
        devices.append((_CPU, 0))
    vm["vm_initialization"](*[value for kind, index in devices for value in (kind, index, allocator)])
    return vm


def release_pooled_memory() -> None:
    """Free the buffers that every pooled allocator in the process keeps for reuse (not those in use)."""
    ffi().get_global_func("vm.builtin.memory_manager.clear")()


def from_numpy(array):
    """A CPU tvm_ffi tensor holding a copy of a C-contiguous numpy array, whatever its dtype
    (TVM kernels want 64-byte aligned data, which TVM's own allocation gives)."""
    tvm_ffi = ffi()
    tensor = tvm_ffi.get_global_func("runtime.TVMTensorAllocWithScope")(array.shape, str(array.dtype), tvm_ffi.device("cpu", 0), None)
    tvm_ffi.get_global_func("runtime.TVMTensorCopyFromBytes")(tensor, array.ctypes.data_as(ctypes.c_void_p), array.nbytes)
    return tensor


def to_numpy(tensor):
    """A numpy copy of a CPU tvm_ffi tensor, whatever its dtype."""
    import numpy as np

    array = np.empty(tuple(tensor.shape), str(tensor.dtype))
    ffi().get_global_func("runtime.TVMTensorCopyToBytes")(tensor, array.ctypes.data_as(ctypes.c_void_p), array.nbytes)
    return array


def to_device(array, dev):
    """A copy of a (CPU) tvm_ffi tensor on `dev`."""
    tvm_ffi = ffi()
    target = tvm_ffi.get_global_func("runtime.TVMTensorAllocWithScope")(array.shape, array.dtype, dev, None)
    tvm_ffi.get_global_func("runtime.TVMTensorCopyFromTo")(array, target)
    return target


def to_cpu(tensor):
    """A CPU copy of a tvm_ffi tensor that lives on another device."""
    return to_device(tensor, ffi().device("cpu", 0))


def set_threads(threads: int | None) -> None:
    """TVM's CPU thread pool is one per process: None or 0 gives one thread per physical core
    (at most as many as the pool was first sized for)."""
    tvm_ffi = ffi()
    threads = threads or int(os.environ.get("TVM_NUM_THREADS") or 0)
    tvm_ffi.get_global_func("runtime.config_threadpool")(1, threads)  # 1: no big.LITTLE preference


def size_thread_pool() -> None:
    """One TVM thread per physical core, unless the user chose (TVM_NUM_THREADS, OMP_NUM_THREADS).

    TVM sizes its pool once, from these variables, else from half the logical CPUs on x86 (it
    assumes 2-way SMT): on a VM without SMT, 1 of 2 cores. Call before the pool exists (its first
    parallel kernel), as it cannot grow later, and before starting processes that run TVM code
    (MetaSchedule's measuring workers inherit the variable).
    """
    if not (os.environ.get("TVM_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS")):
        os.environ["TVM_NUM_THREADS"] = str(physical_cores())


def physical_cores() -> int:
    """The cores this process may run on, counting SMT siblings (hyper-threads) once."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        siblings = Path("/sys/devices/system/cpu/cpu0/topology/thread_siblings_list").read_text()
    except OSError:
        return cpus
    return max(1, cpus // max(1, cpus_in_list(siblings)))


def cpus_in_list(cpu_list: str) -> int:
    """How many CPUs a Linux CPU list names ("0", "0,16", "0-3,8-11")."""
    count = 0
    for part in cpu_list.strip().split(","):
        first, _, last = part.partition("-")
        count += int(last or first) - int(first) + 1
    return count
