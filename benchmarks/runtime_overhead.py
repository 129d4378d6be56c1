"""What `toolkit.runtime` adds to a TVM call, beside ONNX Runtime's call of the same model (untuned compile).

    PYTHONPATH=. python benchmarks/runtime_overhead.py perceptron gcn mlp autoencoder vae \
        --out benchmarks/results/amd-epyc-2c

Each model is exported and compiled as `dltk compile --no-shipped-records` does (no tuning
records, so the dynamic-batch `main` runs), then three calls are measured in alternating blocks,
p50 of each:
  vm:       the compiled function on the Relax VM, its input tensors made before timing (the VM alone)
  runtime:  runtime.load(artifact, backend="tvm").run(feeds)  (feed checks, copies in and out)
  ort:      runtime.load(artifact, backend="ort").run(feeds)  (the same checks, ONNX Runtime's call)
runtime - vm is what the runtime adds around the VM; runtime / ort is the ratio `dltk bench` reports.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from toolkit import bench, runtime
from toolkit.compile import compile_model
from toolkit.export import export_model
from toolkit.runtime import tvm_runtime
from toolkit.tune import TuneOptions

BLOCKS = 6
CALLS = 2000
BATCHES = (1, 8)


def block(call) -> list[float]:
    for _ in range(100):
        call()
    samples = []
    for _ in range(CALLS):
        t0 = time.perf_counter_ns()
        call()
        samples.append((time.perf_counter_ns() - t0) / 1e3)
    return samples


def compiled(name: str, workdir: Path) -> Path:
    onnx_path = workdir / f"{name}.onnx"
    export_model(name, onnx_path)
    untuned = TuneOptions(db=workdir / "no-records", shipped=False)
    return compile_model(onnx_path, workdir / f"{name}.tvm", tuning=untuned, choose_engine=False).artifact.path


def measure(name: str, artifact: Path, batch: int) -> dict:
    tvm_session, ort_session = runtime.load(artifact, backend="tvm"), runtime.load(artifact, backend="ort")
    feeds = runtime.random_feeds(tvm_session.inputs, {"batch": batch})
    entry = tvm_session.virtual_machine()[tvm_session.entry_for(feeds)]  # the function run() dispatches to
    tensors = [tvm_runtime.from_numpy(feeds[spec.name]) for spec in tvm_session.inputs]
    expected = ort_session.run(feeds)
    for output, value in tvm_session.run(feeds).items():
        np.testing.assert_allclose(value, expected[output], atol=1e-4, rtol=1e-3)

    calls = {"vm": lambda: entry(*tensors), "runtime": lambda: tvm_session.run(feeds), "ort": lambda: ort_session.run(feeds)}
    samples = {k: [] for k in calls}
    block_p50 = {k: [] for k in calls}
    for _ in range(BLOCKS):
        for k, call in calls.items():
            taken = block(call)
            samples[k] += taken
            block_p50[k].append(float(np.median(taken)))
    p50 = {k: float(np.median(v)) for k, v in samples.items()}
    return {"model": name, "batch": batch, "p50_us": p50, "block_p50_us": block_p50,
            "runtime_minus_vm_us": p50["runtime"] - p50["vm"], "runtime_over_ort": p50["runtime"] / p50["ort"],
            "calls": BLOCKS * CALLS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    load_before = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            artifact = compiled(name, Path(tmp))
            for batch in BATCHES:
                rows.append(measure(name, artifact, batch))
                print(json.dumps(rows[-1]), file=sys.stderr)
    load_after = os.getloadavg()
    env = {**bench.environment(), "load_before": load_before, "load_after": load_after}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "runtime_overhead.json").write_text(json.dumps({"env": env, "results": rows}, indent=2) + "\n")
    lines = [
        "# Runtime overhead: what toolkit.runtime adds to a TVM call, beside ONNX Runtime",
        "",
        f"Machine: {env['cpu']}, {env['cores']} cores; load average {', '.join(f'{x:.1f}' for x in load_before)} "
        f"before, {', '.join(f'{x:.1f}' for x in load_after)} after. Untuned compiles (no records: the dynamic `main`).",
        "",
        "| model | batch | vm p50 (us) | runtime p50 (us) | runtime - vm (us) | ort p50 (us) | runtime / ort | runtime / ort, block p50s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        p, blocks = r["p50_us"], r["block_p50_us"]
        ratios = sorted(t / o for t, o in zip(blocks["runtime"], blocks["ort"]))
        lines.append(f"| {r['model']} | {r['batch']} | {p['vm']:.1f} | {p['runtime']:.1f} | {r['runtime_minus_vm_us']:+.1f} | "
                     f"{p['ort']:.1f} | {r['runtime_over_ort']:.2f} | {ratios[0]:.2f}-{ratios[-1]:.2f} |")
    lines += ["", "vm: the compiled function on the Relax VM, its inputs made before timing; runtime: "
              "`runtime.load(artifact, backend=\"tvm\").run(feeds)`; ort: `runtime.load(artifact, backend=\"ort\").run(feeds)`; "
              f"{BLOCKS} alternating blocks of {CALLS} calls each (p50 over all calls; the last column the range of the "
              "blocks' own ratios)."]
    (args.out / "runtime_overhead.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
