"""The Python steps of benchmarks/gpu_check.sh.

    python benchmarks/gpu_check.py gpu                      # exit 0 when torch and TVM both see a CUDA GPU
    python benchmarks/gpu_check.py parity -o parity.json    # every zoo model: torch, ort, tvm on CUDA, batch 1 and 32
    python benchmarks/gpu_check.py summary DIR STATUS.tsv   # DIR/gpu-check.md from the step table and the results

parity compiles each model for the local GPU with dlight's default schedules (into the dltk cache,
where `dltk bench` finds it again) and compares ONNX Runtime's CUDA provider and the TVM artifact
with PyTorch on CUDA. A model that fails is recorded and the others go on.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

BATCHES = (1, 32)
# cuDNN convolutions (PyTorch's and ONNX Runtime's) run in TF32 by default on Ampere and later.
ATOL, RTOL = 1e-3, 1e-2


def gpu() -> int:
    import torch

    if not torch.cuda.is_available():
        print("no CUDA GPU here: torch.cuda.is_available() is False")
        return 1
    import tvm

    if not tvm.cuda(0).exist:
        print(f"torch sees {torch.cuda.get_device_name(0)} but TVM sees no CUDA device")
        return 1
    print(f"GPU: {torch.cuda.get_device_name(0)} (compute {tvm.cuda(0).compute_version}), torch {torch.__version__}")
    return 0


def parity(output: Path) -> int:
    import models
    from toolkit.parity import compare_outputs
    from toolkit.sources import open_source

    rows = []
    for name in models.REGISTRY:
        start, row = time.perf_counter(), {"model": name}
        try:
            opened = open_source(name, ["torch", "ort", "tvm"], "cuda", log=lambda line: print(f"  {line}", flush=True))
            sessions = {b: opened.open(b, None) for b in ("torch", "ort", "tvm")}
            row["ort_providers"] = getattr(sessions["ort"], "providers", None)
            for batch in BATCHES:
                feeds = opened.feeds(batch)
                expected = sessions["torch"].run(feeds)
                for backend in ("ort", "tvm"):
                    diff = compare_outputs(expected, sessions[backend].run(feeds), "torch", backend, ATOL, RTOL)
                    row[f"{backend}_b{batch}"] = {"passed": diff.passed, "max_abs": diff.max_abs, "max_rel": diff.max_rel}
        except Exception as e:  # one model's failure is a result; the others still run
            row["error"] = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
            traceback.print_exc()
        row["seconds"] = round(time.perf_counter() - start, 1)
        rows.append(row)
        print(f"{name}: {_verdict(row)} ({row['seconds']} s)", flush=True)
        output.write_text(json.dumps({"atol": ATOL, "rtol": RTOL, "reference": "torch on cuda", "models": rows}, indent=1))
    return 0 if all(_verdict(r) == "match" for r in rows) else 1


def _verdict(row: dict) -> str:
    if "error" in row:
        return f"error: {row['error'][:200]}"
    failed = [k for k, v in row.items() if isinstance(v, dict) and not v["passed"]]
    return "match" if not failed else "differs: " + ", ".join(failed)


def summary(directory: Path, status_file: Path) -> int:
    lines = [f"# GPU check: {directory.name}", ""]
    steps = [line.split("\t") for line in status_file.read_text().splitlines() if line.strip()]
    lines += ["| step | status | seconds | note |", "| --- | --- | ---: | --- |"]
    lines += [f"| {s[0]} | {s[1]} | {s[2]} | {s[3] if len(s) > 3 else ''} |" for s in steps]
    parity_file = directory / "parity.json"
    if parity_file.is_file():
        data = json.loads(parity_file.read_text())
        lines += ["", f"## Parity with {data['reference']} (atol {data['atol']}, rtol {data['rtol']}), batch 1 and 32", "",
                  "| model | result | ort providers | seconds |", "| --- | --- | --- | ---: |"]
        for row in data["models"]:
            providers = ", ".join(row.get("ort_providers") or [])
            lines.append(f"| {row['model']} | {_verdict(row)} | {providers} | {row['seconds']} |")
    for name, title in (("bench.json", "torch, ort, tvm"), ("torch-compile.json", "torch.compile")):
        bench_file = directory / name
        if bench_file.is_file():
            lines += ["", f"## Latency, {title} (`{name}`): p50 ms, single-stream", ""] + _latency_table(json.loads(bench_file.read_text()))
    (directory / "gpu-check.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def _latency_table(run: dict) -> list[str]:
    env = run.get("env", {})
    cells = {}
    for r in run.get("results", []):
        cells.setdefault((r["model"], r["batch"]), {})[r["backend"]] = r["latency_ms"]["p50"]
    backends = sorted({b for row in cells.values() for b in row})
    lines = [f"GPU {env.get('gpu')} (driver {env.get('gpu_driver')}), CPU {env.get('cpu')}; tvm/torch is TVM's p50 over torch eager's.", "",
             "| model | batch | " + " | ".join(backends) + " | tvm/torch |", "| --- | ---: |" + " ---: |" * (len(backends) + 1)]
    for (model, batch), row in sorted(cells.items()):
        ratio = f"{row['tvm'] / row['torch']:.2f}x" if "tvm" in row and "torch" in row else ""
        lines.append(f"| {model} | {batch} | " + " | ".join(f"{row[b]:.3f}" if b in row else "" for b in backends) + f" | {ratio} |")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("gpu")
    parity_parser = sub.add_parser("parity")
    parity_parser.add_argument("-o", "--output", type=Path, required=True)
    summary_parser = sub.add_parser("summary")
    summary_parser.add_argument("directory", type=Path)
    summary_parser.add_argument("status", type=Path)
    args = parser.parse_args()
    if args.command == "gpu":
        return gpu()
    if args.command == "parity":
        return parity(args.output)
    return summary(args.directory, args.status)


if __name__ == "__main__":
    sys.exit(main())
