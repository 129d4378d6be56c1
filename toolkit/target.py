"""TVM targets from what users type: `cpu` (this host), `cuda` (this GPU), or a JSON dict.

TVM 0.27 accepts targets only as dicts; `mcpu: native` is invalid, so ask LLVM for the host CPU.
"""

from __future__ import annotations

import json
import os
import platform

from toolkit.errors import DltkError, first_line

DEVICES = ("cpu", "cuda")  # where a model runs: the host CPU or a CUDA GPU; the first is the default
_DEVICE_OF_KIND = {"llvm": "cpu", "cuda": "cuda"}


def host_cpu() -> dict:
    import tvm

    return {
        "kind": "llvm",
        "mtriple": f"{platform.machine()}-linux-gnu",
        "mcpu": tvm.target.codegen.llvm_get_system_cpu(),
        "num-cores": os.cpu_count() or 1,
    }


def local_cuda() -> dict:
    import tvm

    gpu = tvm.cuda(0)
    if not gpu.exist:
        raise DltkError(
            "--target cuda: no CUDA GPU here to take the architecture from",
            'give it as JSON, e.g. --target \'{"kind": "cuda", "arch": "sm_90"}\'',
        )
    return {"kind": "cuda", "arch": "sm_" + gpu.compute_version.replace(".", ""), "host": host_cpu()}


def resolve_target(target: str | dict) -> dict:
    """A full target dict; a cuda dict without a host gets this CPU as its host."""
    if isinstance(target, str):
        if target == "cpu":
            return host_cpu()
        if target == "cuda":
            return local_cuda()
        try:
            target = json.loads(target)
        except json.JSONDecodeError:
            raise DltkError(f"unknown target '{target}'", "use cpu, cuda, or a JSON dict such as '{\"kind\": \"llvm\"}'") from None
    if not isinstance(target, dict) or target.get("kind") not in _DEVICE_OF_KIND:
        raise DltkError(f"unsupported target {json.dumps(target)}", "the kind must be llvm or cuda")
    if target["kind"] == "cuda" and "host" not in target:
        target = dict(target, host=host_cpu())
    import tvm

    try:
        tvm.target.Target(target)
    except Exception as e:  # TVM raises its own error types for bad attributes
        raise DltkError(f"TVM rejects target {json.dumps(target)}: {first_line(e)}") from e
    return target


def device_of(target: dict) -> str:
    return _DEVICE_OF_KIND[target["kind"]]
