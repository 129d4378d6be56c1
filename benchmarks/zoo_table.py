"""The zoo table: every registry family trained with its default recipe, exported, compiled for
this CPU, checked for parity with PyTorch at batch 1, 3 and 8, and timed at batch 1.

    python benchmarks/zoo_table.py [--out benchmarks/results/MACHINE] [--readme README.md] [NAME ...]

Writes zoo.json and zoo.md to --out; with --readme, replaces the README's table between the
`<!-- zoo-table -->` markers. Latency is single-stream, each backend in its own block (toolkit.bench),
with a small budget: the figures rank backends, they are not a benchmark suite.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import models  # noqa: E402
from toolkit import bench, runtime  # noqa: E402
from toolkit.compile import compile_model  # noqa: E402
from toolkit.export import export_model  # noqa: E402
from toolkit.files import write_atomically  # noqa: E402
from toolkit.inspect import inspect_path  # noqa: E402
from toolkit.parity import compare_outputs  # noqa: E402
from toolkit.runtime.torch import TorchSession  # noqa: E402
from toolkit.train import load_model, train_model  # noqa: E402

PARITY_BATCHES = (1, 3, 8)
BUDGET = bench.Budget(warmup=3, min_iterations=20, min_seconds=0.5, max_seconds=20.0, repeats=1)
MARKER = "<!-- zoo-table -->"


def measure_family(name: str, workdir: Path, log, train_threads: int | None = None) -> dict:
    spec = models.get(name)
    log(f"{name}: training ({spec.recipe.epochs} epochs)")
    threads = torch.get_num_threads()
    torch.set_num_threads(train_threads or threads)
    try:
        trained = train_model(name, workdir / f"{name}.pt")
    finally:
        torch.set_num_threads(threads)
    log(f"{name}: {trained.metric} {trained.value:.4f} in {trained.seconds:.1f} s; exporting and compiling")
    export_model(str(workdir / f"{name}.pt"), workdir / f"{name}.onnx")
    compiled = compile_model(workdir / f"{name}.onnx", workdir / f"{name}.tvm")
    module = load_model(str(workdir / f"{name}.pt")).module
    sessions = {"ort": runtime.load(workdir / f"{name}.onnx"), "tvm": runtime.load(workdir / f"{name}.tvm")}
    sessions = {"torch": TorchSession(module, sessions["ort"].inputs, sessions["ort"].outputs), **sessions}

    def feeds(batch: int) -> dict:
        return {s.name: x.numpy() for s, x in zip(sessions["ort"].inputs, spec.sample(batch))}

    parity = {}
    for backend in ("ort", "tvm"):
        checks = [compare_outputs(sessions["torch"].run(feeds(b)), sessions[backend].run(feeds(b)), "torch", backend)
                  for b in PARITY_BATCHES]
        parity[backend] = {"passed": all(c.passed for c in checks), "max_abs_error": max(c.max_abs for c in checks)}
    log(f"{name}: timing batch 1")
    results = bench.single_stream(bench.Subject(name, sessions, feeds), [1], BUDGET)
    ops = inspect_path(workdir / f"{name}.onnx")["ops"]
    return {
        "name": name,
        "family": spec.family,
        "parameters": spec.parameters(),
        "dataset": spec.dataset,
        "metric": {"name": trained.metric, "value": trained.value, "epochs": trained.epochs,
                   "train_seconds": trained.seconds, "optimizer": spec.recipe.optimizer,
                   "train_threads": train_threads or threads},
        "onnx_ops": {op["op"]: op["count"] for op in ops},
        "compile_seconds": compiled.seconds,
        "parity": parity,
        "latency_ms_batch1_p50": {r.backend: r.p50 for r in results},
    }


def markdown(rows: list[dict], env: dict) -> str:
    lines = [
        f"Measured on {env['cpu']}, {env['cores']} cores, {time.strftime('%Y-%m-%d')}; default recipe, "
        f"seed 0. Parity: max abs error against PyTorch over batches {', '.join(map(str, PARITY_BATCHES))} "
        "through one dynamic-batch export and one artifact (tolerance atol 1e-4 + rtol 1e-3). "
        "Latency: batch 1, p50 ms, single-stream.",
        "",
        "| name | params | data | held-out metric (epochs, train s) | ONNX ops | ORT = torch | TVM = torch | torch ms | ORT ms | TVM ms |",
        "| --- | ---: | --- | --- | --- | --- | --- | ---: | ---: | ---: |",
    ]
    for r in rows:
        m, p, lat = r["metric"], r["parity"], r["latency_ms_batch1_p50"]
        ops = sorted(r["onnx_ops"], key=lambda op: -r["onnx_ops"][op])
        shown = ", ".join(ops[:6]) + (f" +{len(ops) - 6}" if len(ops) > 6 else "")
        def verdict(backend, p=p):
            return f"{'yes' if p[backend]['passed'] else 'NO'} ({p[backend]['max_abs_error']:.0e})"

        lines.append(
            f"| `{r['name']}` | {r['parameters']:,} | {r['dataset']} | {m['name']} {m['value']:.4g} "
            f"({m['epochs']}, {m['train_seconds']:.0f} s) | {shown} | {verdict('ort')} | {verdict('tvm')} | "
            f"{lat['torch']:.3f} | {lat['ort']:.3f} | {lat['tvm']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="families to run [default: the whole registry]")
    parser.add_argument("--out", type=Path, help="directory for zoo.json and zoo.md [default: benchmarks/results/MACHINE]")
    parser.add_argument("--readme", type=Path, help="README whose zoo table (between the markers) to replace")
    parser.add_argument("--keep", type=Path, help="keep checkpoints, exports and artifacts in this directory")
    parser.add_argument("--train-threads", type=int, help="torch threads while training [default: torch's]; "
                        "1 keeps small models fast on a machine shared with other work")
    args = parser.parse_args()
    env = bench.environment()
    out = args.out or ROOT / "benchmarks" / "results" / bench.machine_slug(env)
    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    rows = {}
    if (out / "zoo.json").is_file():  # rerunning some families keeps the others' rows
        rows = {r["name"]: r for r in json.loads((out / "zoo.json").read_text())["families"]}
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="dltk-zoo-"))
    for name in args.names or list(models.REGISTRY):
        rows[name] = measure_family(name, workdir, log, args.train_threads)
        ordered = [rows[n] for n in models.REGISTRY if n in rows]
        table = markdown(ordered, env)
        write_atomically(out / "zoo.json", json.dumps({"env": env, "families": ordered}, indent=2) + "\n")
        write_atomically(out / "zoo.md", "# The zoo, trained, exported, compiled and timed\n\n" + table)
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    if args.readme:
        text = args.readme.read_text()
        before, _, rest = text.partition(MARKER)
        _, _, after = rest.partition(MARKER)
        args.readme.write_text(f"{before}{MARKER}\n{table}{MARKER}{after}")
    print(table)


if __name__ == "__main__":
    main()
