"""A fresh process end to end, both engines side by side: import, load, first inference, memory.

    PYTHONPATH=. python benchmarks/cold_start.py build/lenet.tvm build/resnet18.tvm \\
        --out benchmarks/results/amd-epyc-2c

For each artifact, fresh Python processes run what an application embedding the runtime runs,
`from toolkit import runtime; runtime.load(ARTIFACT, backend=ENGINE).run(feeds)` at batch 1,
alternating ONNX Runtime and TVM process by process (best of --runs each), and time each step
inside the process; then a few more calls give the steady-state latency the first call is
compared with. A soak process per engine makes --soak-calls calls with random batch sizes from 1
to 64 on the first artifact and follows its resident memory. The install sizes come from
benchmarks/install_size.py. Writes cold_start.{json,md} to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import install_size

ROOT = Path(__file__).resolve().parents[1]
ENGINES = ("ort", "tvm")
STEADY_CALLS = 20

COLD = """
import time
start = time.perf_counter()
import json, sys
from toolkit import runtime
imported = time.perf_counter()
session = runtime.load(sys.argv[1], backend=sys.argv[2])
loaded = time.perf_counter()
feeds = runtime.random_feeds(session.inputs)
session.run(feeds)
first = time.perf_counter()
rss_mb = int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS")).split()[1]) / 1024
steady = []
for _ in range(int(sys.argv[3])):
    t = time.perf_counter()
    session.run(feeds)
    steady.append(time.perf_counter() - t)
steady.sort()
print(json.dumps({
    "import_s": imported - start, "load_s": loaded - imported, "first_inference_s": first - loaded,
    "total_s": first - start, "rss_mb": rss_mb, "steady_s": steady[len(steady) // 2],
    "torch_imported": "torch" in sys.modules, "compiler_mapped": "libtvm_compiler" in open("/proc/self/maps").read(),
}))
"""

SOAK = """
import json, sys
import numpy as np
from toolkit import runtime

def rss_mb():
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS")).split()[1]) / 1024

session = runtime.load(sys.argv[1], backend=sys.argv[2])
calls = int(sys.argv[3])
largest = runtime.random_feeds(session.inputs, {"batch": 64})
batches = np.random.default_rng(0).integers(1, 65, size=calls)
trace = {}
for i, batch in enumerate(batches, 1):
    session.run({name: value[:batch] for name, value in largest.items()})
    if i in (1, 10, 100) or i % 1000 == 0:
        trace[i] = rss_mb()
print(json.dumps({"calls": calls, "rss_mb": trace, "distinct_batches": len(set(batches.tolist()))}))
"""


def child(code: str, *args) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, env=env,
                            check=False)
    if result.returncode != 0:
        raise SystemExit(f"error: the measuring process failed: {result.stderr.strip().splitlines()[-1:]}")
    return json.loads(result.stdout)


def cold_starts(artifact: Path, runs: int) -> dict:
    samples = {engine: [] for engine in ENGINES}
    for _ in range(runs):
        for engine in ENGINES:  # alternating, so that both see the same machine
            samples[engine].append(child(COLD, artifact, engine, STEADY_CALLS))
    result = {}
    for engine, runs_ in samples.items():
        best = min(runs_, key=lambda r: r["total_s"])
        result[engine] = dict(best, total_s_median=statistics.median(r["total_s"] for r in runs_),
                              rss_mb_median=statistics.median(r["rss_mb"] for r in runs_), runs=len(runs_))
    return result


def machine() -> dict:
    info = open("/proc/cpuinfo").read()
    field = lambda name: next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith(name)), "")  # noqa: E731
    isa = "AVX-512" if "avx512f" in field("flags").split() else "AVX2"  # Zen 4 or Zen 3 on these machines
    return {"cpu": field("model name"), "cpu_family": field("cpu family"), "isa": isa, "cores": os.cpu_count(),
            "python": platform.python_version(), "load_average": os.getloadavg()}


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [
        "# Cold start: a fresh process, import + load + first inference, both engines",
        "",
        f"Machine: {m['cpu']} ({m.get('isa', '')}, family {m.get('cpu_family', '')}), {m['cores']} cores, Python {m['python']}; load average "
        f"{report['load_before'][0]:.1f} before and {report['load_after'][0]:.1f} after"
        f"{' (other jobs shared the machine)' if report['load_before'][0] > 0.5 * m['cores'] else ''}. "
        "Written by `benchmarks/cold_start.py`; figures in cold_start.json beside this file.",
        "",
        f"Best of {report['runs']} fresh processes per engine, alternating ONNX Runtime and TVM; batch 1; "
        "times inside the process (Python's own start, about 20 ms, not included).",
        "",
        "| artifact | engine | import (s) | load (s) | first inference (s) | total (s) | total, median (s) | RSS (MB) "
        "| steady call (ms) | first - steady (s) | torch imported | compiler mapped |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, engines in report["cold"].items():
        for engine, r in engines.items():
            lines.append(
                f"| {name} | {engine} | {r['import_s']:.3f} | {r['load_s']:.3f} | {r['first_inference_s']:.3f} | "
                f"{r['total_s']:.3f} | {r['total_s_median']:.3f} | {r['rss_mb_median']:.0f} | {r['steady_s'] * 1e3:.2f} | "
                f"{r['first_inference_s'] - r['steady_s']:.3f} | {'yes' if r['torch_imported'] else 'no'} | "
                f"{'yes' if r['compiler_mapped'] else 'no'} |")
    for name, engines in report["cold"].items():
        ratio = engines["tvm"]["total_s"] / engines["ort"]["total_s"]
        lines.append(f"\n{name}: TVM's cold start is {ratio:.2f}x ONNX Runtime's (best against best).")
    soak = report.get("soak")
    if soak:
        lines += ["", f"## Memory over {soak['calls']:,} calls with random batch sizes 1-64 ({soak['artifact']})", "",
                  "| engine | RSS after 100 calls (MB) | after the last (MB) | largest after 100 (MB) | growth after 100 (MB) |",
                  "| --- | --- | --- | --- | --- |"]
        for engine, r in soak["engines"].items():
            trace = {int(k): v for k, v in r["rss_mb"].items()}
            later = [v for k, v in trace.items() if k >= 100]
            lines.append(f"| {engine} | {trace[100]:.0f} | {trace[max(trace)]:.0f} | {max(later):.0f} | "
                         f"{max(later) - trace[100]:+.0f} |")
    size = report["install"]
    lines += ["", "## Install size on disk", "",
              f"`pip install dltk` (the runtime: {', '.join(size['lean_distributions'])}): {size['lean_mb']:.0f} MB; "
              f"`pip install 'dltk[full]'`: {size['full_mb']:.0f} MB; ratio {size['lean_mb'] / size['full_mb']:.2f}. "
              f"deploy/Dockerfile also deletes TVM's compiler library ({size['compiler_mb']:.0f} MB), which the "
              f"runtime never maps: {size['lean_mb'] - size['compiler_mb']:.0f} MB."]
    return "\n".join(lines) + "\n"


def install_sizes() -> dict:
    lean = install_size.closure(install_size.requirements())
    full = install_size.closure(install_size.requirements(("full",)))
    compiler = next(Path(lean["apache-tvm"].locate_file(f)) for f in lean["apache-tvm"].files
                    if f.name == "libtvm_compiler.so")
    return {"lean_mb": install_size.size_bytes(lean.values()) / 1e6, "full_mb": install_size.size_bytes(full.values()) / 1e6,
            "compiler_mb": compiler.stat().st_size / 1e6, "lean_distributions": sorted(lean)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("artifacts", nargs="+", type=Path)
    parser.add_argument("--runs", type=int, default=5, help="fresh processes per engine and artifact")
    parser.add_argument("--soak-calls", type=int, default=10_000, help="0 skips the memory soak")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    report = {"machine": machine(), "load_before": os.getloadavg(), "runs": args.runs, "cold": {}}
    for artifact in args.artifacts:
        report["cold"][artifact.stem] = cold_starts(artifact, args.runs)
        print(f"{artifact.stem}: " + ", ".join(f"{e} {r['total_s']:.3f} s {r['rss_mb_median']:.0f} MB"
                                                for e, r in report["cold"][artifact.stem].items()), file=sys.stderr)
    if args.soak_calls:
        report["soak"] = {"artifact": args.artifacts[0].stem, "calls": args.soak_calls,
                          "engines": {e: child(SOAK, args.artifacts[0], e, args.soak_calls) for e in ENGINES}}
    report["install"] = install_sizes()
    report["load_after"] = os.getloadavg()
    report["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cold_start.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "cold_start.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
