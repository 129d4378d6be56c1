"""Untuned TVM vs tuned TVM (the shipped records) vs ONNX Runtime, side by side in one run.

    PYTHONPATH=. python benchmarks/tuning_report.py mlp lenet --out benchmarks/results/amd-epyc-2c

Each zoo model is exported once, compiled twice for this CPU (without any tuning records, and
with the records under benchmarks/tuning/ for this target), and the three engines are measured
with `toolkit.bench.single_stream` in blocks at batch 1 and 8. The TVM sessions are the
compiled code itself (backend "tvm"), never the engine choice.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from toolkit import bench
from toolkit.compile import compile_model
from toolkit.export import export_model
from toolkit.runtime.ort import OrtSession
from toolkit.runtime.artifact import open_artifact
from toolkit.runtime.tvm import TvmSession
from toolkit.tune import TuneOptions


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def measure(name: str, workdir: Path, batches: list[int], budget: bench.Budget) -> tuple[list[dict], dict]:
    import models

    onnx_path = workdir / f"{name}.onnx"
    export_model(name, onnx_path)
    untuned = compile_model(onnx_path, workdir / f"{name}.untuned.tvm",
                            tuning=TuneOptions(shipped=False), choose_engine=False, log=log).artifact
    tuned = compile_model(onnx_path, workdir / f"{name}.tuned.tvm", choose_engine=False, log=log).artifact
    sessions = {
        "ort": OrtSession(onnx_path),
        "tvm-untuned": TvmSession.from_artifact(untuned),
        "tvm-tuned": TvmSession.from_artifact(tuned),
    }
    spec = models.get(name)

    def feeds(batch: int):
        return {s.name: x.numpy() for s, x in zip(sessions["ort"].inputs, spec.sample(batch))}

    results = bench.single_stream(bench.Subject(name, sessions, feeds), batches, budget, log=log)
    return results, open_artifact(tuned.path).manifest["tuning"]


def markdown(report: dict, tuning: dict[str, dict]) -> str:
    env = report["env"]
    ratios = bench.ratio_to(report["results"], "ort")
    lines = [
        "# TVM tuning on the reference CPU",
        "",
        f"Machine: {env['cpu']}, {env['cores']} cores; {env['platform']}; TVM {env['versions']['tvm']}, "
        f"onnxruntime {env['versions']['onnxruntime']}.",
        "",
        "p50 latency in ms, single-stream, measured side by side in one run (blocks per engine).",
        "`tvm-untuned`: TVM's default CPU pipeline; `tvm-tuned`: the records shipped in",
        "`benchmarks/tuning/` applied to static batch-1 and batch-8 variants. Ratio = p50 / ONNX Runtime's p50",
        "(below 1.00 is faster than ONNX Runtime; 0.95-1.05 is a tie on this machine).",
        "",
        "| model | batch | ort | tvm-untuned | tvm-tuned | untuned / ort | tuned / ort |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    by_key = {(r["model"], r["backend"], r["batch"]): r["latency_ms"]["p50"] for r in report["results"]}
    for model, batch in sorted({(r["model"], r["batch"]) for r in report["results"]}, key=lambda k: (k[0], k[1])):
        lines.append(
            f"| {model} | {batch} | {by_key[(model, 'ort', batch)]:.4f} | {by_key[(model, 'tvm-untuned', batch)]:.4f} | "
            f"{by_key[(model, 'tvm-tuned', batch)]:.4f} | {ratios[(model, 'tvm-untuned', batch)]:.2f} | "
            f"{ratios[(model, 'tvm-tuned', batch)]:.2f} |"
        )
    lines += ["", "Tuning records used:", ""]
    for model, t in tuning.items():
        lines.append(f"- {model}: {json.dumps(t)}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--batch", default="1,8")
    parser.add_argument("--min-seconds", type=float, default=2.0)
    # Untuned ResNet-18 takes seconds per call at batch 8: its block stops at this, after one call at least.
    parser.add_argument("--max-seconds", type=float, default=10.0)
    args = parser.parse_args()
    batches = [int(b) for b in args.batch.split(",")]
    budget = bench.Budget(warmup=50, min_iterations=500, min_seconds=args.min_seconds, max_seconds=args.max_seconds)
    results, tuning = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            model_results, tuning[name] = measure(name, Path(tmp), batches, budget)
            results += model_results
    report = bench.report(results)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "tuning.json").write_text(json.dumps({**report, "tuning": tuning}, indent=2) + "\n")
    (args.out / "tuning.md").write_text(markdown(report, tuning))
    print(markdown(report, tuning))


if __name__ == "__main__":
    main()
