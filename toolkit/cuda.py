"""CUDA device code: which kernels got a GPU schedule, and nvcc to check code built without a GPU.

Every kernel of a CUDA build needs a GPU schedule (threads bound to its loops): tuning records
give some, dlight's default rules the rest. `require_gpu_schedules` names any kernel left without
one, rather than letting TVM fail later with "Did you forget to bind?".

On a machine without a GPU, TVM 0.27 cannot compile CUDA code into a GPU binary: the artifact
carries the kernels as CUDA C source, which the GPU machine compiles when it loads the artifact
(TVM's NVRTC path through the cuda-bindings package, or nvcc with TVM_CUDA_COMPILE_MODE=nvcc).
So that code which does not compile fails at compile time rather than on the GPU machine,
`dltk compile` compiles that source with nvcc for the target's architecture and records it.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from toolkit.errors import CheckFailed, DltkError

NVCC_HOW_TO = "pip install nvidia-cuda-nvcc, or install the CUDA toolkit and put its bin/ on PATH"
# Where a CUDA toolkit usually lives when its bin/ is not on PATH.
CUDA_HOMES = ("/usr/local/cuda",)
# TVM's own flags for nvcc (tvm.support.nvcc), so the check compiles what the GPU machine will.
_NVCC_FLAGS = ["--cubin", "-O3", "--expt-relaxed-constexpr", "--expt-extended-lambda", "--use_fast_math"]
_NVCC_TIMEOUT_S = 600
_SCHEDULED = "tirx.is_scheduled"  # set on a PrimFunc by tuning records and by dlight alike


# --- schedules ---------------------------------------------------------------------------


def kernels_with_records(module) -> set[str]:
    """The kernels a tuning record has scheduled (call before the default rules)."""
    return {gv.name_hint for gv, func in _prim_funcs(module) if int(func.attrs.get(_SCHEDULED, 0) or 0) == 1}


def require_gpu_schedules(module, from_records: set[str]) -> dict:
    """Every kernel must bind its loops to GPU threads; name those that do not.

    Returns what the manifest records: kernel count and how each was scheduled.
    """
    unbound = sorted(gv.name_hint for gv, func in _prim_funcs(module) if not _binds_threads(func.body))
    if unbound:
        import tvm_ffi

        # Raised inside a TVM pass: registered, the error crosses TVM's FFI as itself, not as a RuntimeError.
        tvm_ffi.register_error(CheckFailed.__name__, CheckFailed)
        shown = ", ".join(unbound[:5]) + (f" and {len(unbound) - 5} more" if len(unbound) > 5 else "")
        raise CheckFailed(
            f"{len(unbound)} kernel(s) have no GPU schedule: {shown}",
            "no tuning record covers them and dlight's rules do not apply; tune them with --tune, or report the op",
        )
    names = [gv.name_hint for gv, _ in _prim_funcs(module)]
    records = sum(1 for name in names if name in from_records)
    return {"kernels": len(names), "scheduled_by": {"tuning_records": records, "dlight": len(names) - records}}


def _prim_funcs(module):
    from tvm import tirx

    return [(gv, func) for gv, func in module.functions_items() if isinstance(func, tirx.PrimFunc)]


_CHILDREN = ("body", "seq", "then_case", "else_case", "block", "init")


def _binds_threads(stmt) -> bool:
    """Whether a TIR statement binds a loop to blockIdx/threadIdx anywhere inside."""
    from tvm import tirx

    if isinstance(stmt, tirx.For) and stmt.kind == tirx.ForKind.THREAD_BINDING:
        return True
    if isinstance(stmt, tirx.AttrStmt) and stmt.attr_key == "thread_extent":
        return True
    for name in _CHILDREN:
        child = getattr(stmt, name, None)
        if child is None:
            continue
        children = child if type(child).__name__ in ("Array", "list", "tuple") else [child]
        if any(_binds_threads(c) for c in children):
            return True
    return False


# --- nvcc ----------------------------------------------------------------------------------


def find_nvcc() -> str | None:
    """nvcc on PATH, under $CUDA_PATH or $CUDA_HOME, from the nvidia-cuda-nvcc wheel, or in /usr/local/cuda."""
    found = shutil.which("nvcc")
    if found:
        return found
    homes = [os.environ.get("CUDA_PATH"), os.environ.get("CUDA_HOME"), *_wheel_homes(), *CUDA_HOMES]
    for home in filter(None, homes):
        candidate = Path(home) / "bin" / "nvcc"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def _wheel_homes() -> list[str]:
    """nvidia-cuda-nvcc installs nvcc as nvidia/cu13/bin/nvcc inside site-packages (a namespace package)."""
    try:
        spec = importlib.util.find_spec("nvidia")
    except (ImportError, ValueError):
        return []
    locations = list(spec.submodule_search_locations or []) if spec else []
    return [str(home) for root in locations for home in sorted(Path(root).glob("cu*"), reverse=True)]


def require_nvcc(arch: str) -> str:
    nvcc = find_nvcc()
    if nvcc is None:
        raise DltkError(f"compiling CUDA code for {arch} on a machine without a GPU needs nvcc to check it, and none was found",
                        NVCC_HOW_TO)
    return nvcc


def nvcc_version(nvcc: str) -> str:
    out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=60).stdout
    release = [line for line in out.splitlines() if "release" in line]
    return release[-1].rsplit("V", 1)[-1].strip() if release else "unknown"


def cuda_sources(executable) -> list[str]:
    """The CUDA C source of each device module still to be compiled (empty where TVM compiled it for a GPU here).

    Without a CUDA runtime TVM keeps a placeholder module of kind "cuda" that holds the source and
    cannot run; the real module it becomes on a GPU machine holds the compiled binary and runs.
    """
    sources, pending = [], list(executable.mod.imports)
    while pending:
        module = pending.pop()
        pending.extend(module.imports)
        if module.kind == "cuda" and not module.is_runnable():
            sources.append(module.inspect_source(""))
    return sources


def check_with_nvcc(sources: list[str], arch: str, nvcc: str) -> dict:
    """Compile each CUDA source to a cubin for `arch`; a failure is a CheckFailed with nvcc's first error."""
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dltk-nvcc-") as tmp:
        for index, source in enumerate(sources):
            path = Path(tmp) / f"kernels{index}.cu"
            path.write_text(source)
            command = [nvcc, *_NVCC_FLAGS, "-arch", arch, "-o", str(path.with_suffix(".cubin")), str(path)]
            try:
                done = subprocess.run(command, capture_output=True, text=True, timeout=_NVCC_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                raise CheckFailed(f"nvcc took over {_NVCC_TIMEOUT_S} s on the CUDA code for {arch}") from None
            if done.returncode != 0:
                errors = [line for line in (done.stderr + done.stdout).splitlines() if "error" in line.lower()]
                first = (errors or (done.stderr + done.stdout).strip().splitlines() or ["no output"])[0]
                raise CheckFailed(f"the CUDA code TVM generated does not compile for {arch}: {first.strip()[:300]}",
                                  "rerun with -v for the trace, and report it with the model")
    return {"compiler": f"nvcc {nvcc_version(nvcc)}", "arch": arch, "seconds": round(time.perf_counter() - start, 1)}
