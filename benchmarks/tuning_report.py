"""Untuned TVM vs tuned TVM (the shipped records) vs ONNX Runtime, side by side in one run.

    PYTHONPATH=. python benchmarks/tuning_report.py mlp lenet --out benchmarks/results/amd-epyc-2c

Each zoo model is exported once, compiled twice for this CPU (without any tuning records, and
with the records under toolkit/shipped_records/ for this target), and the three engines are measured
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
from toolkit.profile import profile_artifact
from toolkit.runtime.artifact import open_artifact
from toolkit.runtime.ort import OrtSession
from toolkit.runtime.tvm import TvmSession
from toolkit.tune import TuneOptions

PROFILE_RUNS = 20
TOP_KERNELS = 4  # per model and batch in the "where the time goes" table


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def measure(name: str, workdir: Path, batches: list[int], budget: bench.Budget) -> tuple[list[dict], dict, list[dict]]:
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
    profiles = [profile_artifact(tuned.path, batch, runs=PROFILE_RUNS) for batch in batches]
    return results, open_artifact(tuned.path).manifest["tuning"], profiles


def where_the_time_goes(profiles: list[dict]) -> list[str]:
    """The tuned artifact's costliest kernels beside ONNX Runtime's costliest op types."""
    lines = [
        "## Where the time goes",
        "",
        f"`dltk inspect ARTIFACT --profile` on the tuned artifact, mean of {PROFILE_RUNS} runs: the {TOP_KERNELS} costliest",
        "TVM kernels and ONNX Runtime op types, in us per inference and share of the engine's total.",
        "",
        "| model | batch | TVM kernels total us | costliest TVM kernels | ORT nodes total us | costliest ORT op types |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for p in profiles:
        kernels = ", ".join(f"{k['name']} {k['us']:.1f} ({k['share']:.0%})" for k in p["tvm"]["kernels"][:TOP_KERNELS])
        ops = ", ".join(f"{o['op']} {o['us']:.1f} ({o['share']:.0%})" for o in p["ort"]["op_types"][:TOP_KERNELS])
        lines.append(f"| {p['model']} | {p['batch']} | {p['tvm']['total_us']:.1f} | {kernels} | "
                     f"{p['ort']['total_us']:.1f} | {ops} |")
    return lines


def markdown(report: dict, tuning: dict[str, dict], profiles: list[dict]) -> str:
    env = report["env"]
    results = [bench.BenchResult.from_json(r) for r in report["results"]]
    ratios = bench.ratio_to(results, "ort")
    lines = [
        "# TVM tuning on the reference CPU",
        "",
        f"Machine: {env['cpu']}, {env['cores']} cores; {env['platform']}; TVM {env['versions']['tvm']}, "
        f"onnxruntime {env['versions']['onnxruntime']}.",
        "",
        "p50 latency in ms, single-stream, measured side by side in one run (blocks per engine).",
        "`tvm-untuned`: TVM's default CPU pipeline; `tvm-tuned`: the records shipped in",
        "`toolkit/shipped_records/` applied to static batch-1 and batch-8 variants. Ratio = p50 / ONNX Runtime's p50",
        "(below 1.00 is faster than ONNX Runtime; 0.95-1.05 is a tie on this machine).",
        "",
        "| model | batch | ort | tvm-untuned | tvm-tuned | untuned / ort | tuned / ort |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    by_key = {(r.model, r.backend, r.batch): r.p50 for r in results}
    for model, batch in sorted({(r.model, r.batch) for r in results}):
        lines.append(
            f"| {model} | {batch} | {by_key[(model, 'ort', batch)]:.4f} | {by_key[(model, 'tvm-untuned', batch)]:.4f} | "
            f"{by_key[(model, 'tvm-tuned', batch)]:.4f} | {ratios[(model, 'tvm-untuned', batch)]:.2f} | "
            f"{ratios[(model, 'tvm-tuned', batch)]:.2f} |"
        )
    lines += ["", "Tuning records used:", ""]
    for model, t in tuning.items():
        lines.append(f"- {model}: {json.dumps(t)}")
    lines += [""] + where_the_time_goes(profiles)
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
    results, tuning, profiles = [], {}, []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            model_results, tuning[name], model_profiles = measure(name, Path(tmp), batches, budget)
            results += model_results
            profiles += model_profiles
    report = bench.report(results)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "tuning.json").write_text(json.dumps({**report, "tuning": tuning, "profiles": profiles}, indent=2) + "\n")
    (args.out / "tuning.md").write_text(markdown(report, tuning, profiles))
    print(markdown(report, tuning, profiles))


if __name__ == "__main__":
    main()
