"""Compile coverage on models written by others (toolkit.corpus): what `dltk compile` turns into verified artifacts.

    PYTHONPATH=. python benchmarks/coverage.py --out benchmarks/results/amd-epyc-2c
    PYTHONPATH=. python benchmarks/coverage.py --only roberta,opt --out benchmarks/results/amd-epyc-2c

For each corpus model: build its ONNX file into build/corpus/NAME/ (kept; --rebuild makes it
again), compile it for this CPU with `toolkit.compile.compile_model` (verification included,
engine choice off), then time TVM and ONNX Runtime side by side at batch 1 (other symbolic dims at
TIMED_DIMS), alternating blocks. A model that fails is handed to the reducer (`toolkit.reduce`,
the mode its failure shows) and its minimal failing subgraph's ops are recorded, with the upstream
cause when it is known (KNOWN_CAUSES).

coverage.{json,md} in --out are rewritten after every model, merged with what they already hold:
an interrupted run resumes where it stopped (models already there are skipped unless named by
--only), and --only reruns just those models.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build" / "corpus"
TIMED_DIMS = {"sequence": 16, "sequence_length": 16, "decoder_sequence": 16, "samples": 1600}

# Failure text -> what is known of its cause (from what the reducer showed; see the README).
KNOWN_CAUSES: dict[str, str] = {
    # none left: T5 (legacy and dynamo), wav2vec2 and Optimum's ViT failed in TVM's importer until
    # toolkit/optimize/shape_tracking.py, compile's verification lengths and --dim (see the README)
}


def run_one(name: str, rebuild: bool) -> dict:
    """Build, compile, verify and time one corpus model, in this process."""
    import onnx

    from toolkit import corpus
    from toolkit.compile import compile_model
    from toolkit.errors import first_line

    entry = corpus.find(name)
    record = {"name": name, "kind": entry.kind, "source": entry.source, "exporter": entry.exporter,
              **({"fixed_dims": entry.dims} if entry.dims else {})}
    directory = BUILD / name
    path = directory / ("optimum/model.onnx" if entry.exporter.startswith("optimum") else "model.onnx")
    start = time.perf_counter()
    if rebuild or not path.exists():
        try:
            path = corpus.build(name, directory)
        except Exception as e:
            return {**record, "built": False, "compiled": False, "stage": "export", "error": first_line(e)}
    record["build_s"] = round(time.perf_counter() - start, 1)
    model = onnx.load(str(path), load_external_data=False)
    record.update(built=True, opset=next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
                  nodes=len(model.graph.node), external_data=any(t.data_location == onnx.TensorProto.EXTERNAL
                                                                  for t in model.graph.initializer))
    log = []
    start = time.perf_counter()
    try:
        report = compile_model(path, directory / "model.tvm", "cpu", choose_engine=False, log=log.append, dims=entry.dims)
    except Exception as e:
        record.update(compiled=False, stage=_stage(e), error=first_line(e), compile_s=round(time.perf_counter() - start, 1))
        return record
    record["compile_s"] = round(time.perf_counter() - start, 1)
    verification = report.artifact.manifest["verification"]
    record.update(compiled=True, verification=verification.get("status"), reference=verification.get("reference"),
                  max_abs_error=verification.get("max_abs_error"), symbolic_sizes=verification.get("symbolic_sizes"),
                  verified_dims=verification.get("verified_dims"))
    timing, nan = _time_engines(report.artifact.path)
    record.update(timing)
    record["reference_has_nan"] = nan
    record["notes"] = [line for line in log if "warning" in line or "upgrade" in line or "reference implementation" in line]
    return record


def _stage(e: Exception) -> str:
    text = str(e)
    if "cannot import" in text:
        return "import"
    if "failed to compile" in text:
        return "compile"
    if "DIFFER" in text or " vs " in text:
        return "verify"
    return "other"


def _time_engines(artifact: Path, rounds: int = 3) -> tuple[dict, bool]:
    """p50 ms of TVM and ONNX Runtime on the artifact at batch 1, in alternating blocks; and
    whether ONNX Runtime's output holds NaN (then agreement says little)."""
    import numpy as np

    from toolkit import runtime
    from toolkit.runtime.batch import batch_dims
    from toolkit.timing import Budget, measure

    budget = Budget(warmup=3, min_iterations=20, min_seconds=0.2, max_seconds=2.0, repeats=1)
    sessions = {}
    for engine in ("tvm", "ort"):
        try:
            sessions[engine] = runtime.load(artifact, backend=engine)
        except Exception:  # ONNX Runtime cannot load an old-opset source: TVM alone
            pass
    specs = sessions["tvm"].inputs
    dims = {**TIMED_DIMS, **batch_dims(specs, 1)}
    feeds = runtime.random_feeds(specs, {d: dims.get(d, 1) for s in specs for d in s.shape if isinstance(d, str)})
    latencies = {engine: [] for engine in sessions}
    for _ in range(rounds):
        for engine, session in sessions.items():
            latencies[engine] += measure(lambda s=session: s.run(feeds), budget)
    timing = {f"{engine}_p50_ms": round(float(np.median(v)), 4) for engine, v in latencies.items()}
    timing["timed_shapes"] = {s.name: list(v.shape) for s, v in zip(specs, feeds.values())}
    nan = False
    if "ort" in sessions:
        nan = any(np.isnan(v).any() for v in sessions["ort"].run(feeds).values() if v.dtype.kind == "f")
    return timing, bool(nan)


def reduce_one(name: str, stage: str) -> dict:
    """The reducer on a failed model: its minimal failing subgraph's op types and failing node."""
    from toolkit import reduce
    from toolkit.errors import first_line
    from toolkit.onnx_file import load_onnx

    directory = BUILD / name
    path = next(p for p in (directory / "model.onnx", directory / "optimum" / "model.onnx") if p.exists())
    mode = {"import": "import", "compile": "compile", "verify": "diverge"}.get(stage)
    try:
        reduction = reduce.reduce_model(load_onnx(path), mode)
    except Exception as e:
        return {"reduce_error": first_line(e)}
    out = directory / "reduced.onnx"
    out.write_bytes(reduction.model.SerializeToString())
    return {"reduced_ops": [n.op_type for n in reduction.model.graph.node], "reduced_from": reduction.nodes_before,
            "failing_node": f"{reduction.failing_node} ({reduction.failing_op})", "reduced_reason": reduction.reason,
            "reduced_file": str(out.relative_to(ROOT))}


def known_cause(error: str) -> str | None:
    return next((cause for pattern, cause in KNOWN_CAUSES.items() if pattern in error), None)


def run_all(names: list[str], rebuild: bool, out: Path | None, env: dict, redo: bool, log=print) -> list[dict]:
    """Run the models in order; with `out`, skip those it already holds (unless `redo`) and save after each."""
    from toolkit.errors import first_line

    done = _load(out) if out else {}
    for name in names:
        if name in done and not redo:
            continue
        try:
            record = run_one(name, rebuild)
        except Exception as e:  # a failure of this script's own, not of the model: recorded all the same
            record = {"name": name, "compiled": False, "stage": "other", "error": first_line(e)}
        if not passed(record):
            if record.get("built", True) and record.get("stage") in ("import", "compile", "verify"):
                record.update(reduce_one(name, record["stage"]))
            record["cause"] = known_cause(record.get("error", "")) or known_cause(record.get("reduced_reason", ""))
        record["load_average"] = round(os.getloadavg()[0], 1)
        log(_summary(record))
        done[name] = record
        if out:
            env["load"] = ", ".join(f"{x:.1f}" for x in os.getloadavg())
            write(_in_corpus_order(done), out, env)
    return _in_corpus_order(done)


def _load(out: Path) -> dict:
    path = out / "coverage.json"
    return {r["name"]: r for r in json.loads(path.read_text())["models"]} if path.exists() else {}


def _in_corpus_order(done: dict) -> list[dict]:
    from toolkit import corpus

    order = [m.name for m in corpus.models()]
    return sorted(done.values(), key=lambda r: order.index(r["name"]) if r["name"] in order else len(order))


def _summary(r: dict) -> str:
    if r.get("compiled"):
        return (f"{r['name']}: compiled, verification {r['verification']} against {r['reference']} "
                f"(max abs {r['max_abs_error']:.1e}); tvm {r.get('tvm_p50_ms')} ms, ort {r.get('ort_p50_ms')} ms")
    return f"{r['name']}: FAILED at {r.get('stage')}: {r.get('error')}" + (
        f"; reduced to {r['reduced_ops']}" if r.get("reduced_ops") else "")


def passed(r: dict) -> bool:
    return bool(r.get("compiled")) and r.get("verification") == "passed"


def write(results: list[dict], out: Path, env: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    ok = sum(passed(r) for r in results)
    summary = {"models": len(results), "compiled_and_verified": ok, "share": round(ok / len(results), 3)}
    (out / "coverage.json").write_text(json.dumps({"environment": env, "summary": summary, "models": results}, indent=1) + "\n")
    lines = [
        "# Compile coverage: models written by others",
        "",
        f"`benchmarks/coverage.py` on {env['cpu']} ({env['cores']} cores), {env['date']}, load average {env['load']} "
        f"(the machine was shared). {ok} of {len(results)} models ({100 * ok / len(results):.0f}%) compile and match "
        "their reference. p50 at batch 1 (text: 16 tokens; audio: 1,600 samples), TVM and ONNX Runtime timed in "
        "alternating blocks in one process; TVM untuned (dltk's default schedules).",
        "",
        "| model | kind | exporter | opset | nodes | compiled | verified against | max abs error | TVM p50 ms | ORT p50 ms | TVM/ORT |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        tvm, ort = r.get("tvm_p50_ms"), r.get("ort_p50_ms")
        ratio = f"{tvm / ort:.2f}" if tvm and ort else "-"
        verified = (f"{r.get('reference')} ({r.get('verification')})" if r.get("compiled") else "-")
        error = f"{r['max_abs_error']:.1e}" if r.get("max_abs_error") is not None else "-"
        if r.get("reference_has_nan"):
            verified += ", reference output has NaN"
        dims = " ".join(f"--dim {d}={n}" for d, n in r.get("fixed_dims", {}).items())
        exporter = r.get("exporter", "-") + (f"; compiled with {dims}" if dims else "")
        lines.append(f"| {r['name']} | {r.get('kind', '-')} | {exporter} | {r.get('opset', '-')} | {r.get('nodes', '-')} "
                     f"| {'yes' if r.get('compiled') else 'no'} | {verified} | {error} | {tvm or '-'} | {ort or '-'} | {ratio} |")
    failures = [r for r in results if not passed(r)]
    if failures:
        lines += ["", "## Failures", ""]
        for r in failures:
            lines.append(f"- **{r['name']}** ({r.get('stage')}): {r.get('error') or r.get('verification')}")
            if r.get("reduced_ops"):
                lines.append(f"  - reducer: {r['reduced_from']} -> {len(r['reduced_ops'])} nodes, failing node "
                             f"{r['failing_node']}: ops {', '.join(r['reduced_ops'])}; {r.get('reduced_reason')}")
            elif r.get("reduce_error"):
                lines.append(f"  - reducer: {r['reduce_error']}")
            cause = known_cause(r.get("error", "")) or known_cause(r.get("reduced_reason", ""))
            if cause:
                lines.append(f"  - cause: {cause}")
    notes = [r for r in results if r.get("notes")]
    if notes:
        lines += ["", "## Notes from compile", ""]
        lines += [f"- {r['name']}: {'; '.join(n[:200] for n in r['notes'])}" for r in notes]
    (out / "coverage.md").write_text("\n".join(lines) + "\n")


def environment() -> dict:
    from toolkit.bench.machine import cpu_model
    from toolkit.versions import versions

    return {"cpu": cpu_model(), "cores": os.cpu_count(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "load": ", ".join(f"{x:.1f}" for x in os.getloadavg()), "python": platform.python_version(), **versions()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="directory for coverage.{json,md}")
    parser.add_argument("--only", default=None, help="comma-separated corpus names (default: all)")
    parser.add_argument("--rebuild", action="store_true", help="export the models again even when build/corpus has them")
    args = parser.parse_args(argv)
    from toolkit import corpus

    names = args.only.split(",") if args.only else [m.name for m in corpus.models()]
    env = environment()
    results = run_all(names, args.rebuild, args.out, env, redo=bool(args.only))
    print(f"{sum(passed(r) for r in results)} of {len(results)} compiled and verified")
    return 0


if __name__ == "__main__":
    sys.exit(main())
