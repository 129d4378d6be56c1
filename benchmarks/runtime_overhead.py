"""What `toolkit.runtime` adds over calling the TVM Relax VM directly (target: at most 20 us).

    PYTHONPATH=. python benchmarks/runtime_overhead.py mlp lenet --out benchmarks/results/amd-epyc-2c

Both sides start from the same numpy input and end with numpy outputs:
  direct:  vm["main"](tvm.runtime.tensor(x)).numpy()
  runtime: runtime.load(artifact, backend="tvm").run({"input": x})   (feed checks, variant dispatch)
measured in alternating blocks, p50 of each; the overhead is the difference of the p50s.
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

    def direct():
        out = entry(tvm.runtime.tensor(x))
        return out.numpy()

    def through_runtime():
        return session.run({"input": x})

    np.testing.assert_allclose(direct(), through_runtime()["logits"])
    samples = {"direct": [], "runtime": []}
    for _ in range(BLOCKS):
        samples["direct"] += block(direct)
        samples["runtime"] += block(through_runtime)
    p50 = {k: float(np.median(v)) for k, v in samples.items()}
    return {"model": name, "batch": batch, "p50_us": p50, "overhead_us": p50["runtime"] - p50["direct"],
            "calls": BLOCKS * CALLS}


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
        "| model | batch | direct VM p50 (us) | toolkit.runtime p50 (us) | overhead (us) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(f"| {r['model']} | {r['batch']} | {r['p50_us']['direct']:.1f} | {r['p50_us']['runtime']:.1f} | "
                     f"{r['overhead_us']:.1f} |")
    (args.out / "runtime_overhead.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
