"""What reduced precision costs and buys: the held-out metric per precision for trained zoo models,
and ONNX Runtime's p50 for fp32 / int8 / int8-dynamic side by side in one run.

    PYTHONPATH=. python benchmarks/precision.py --checkpoints DIR --latency resnet18 DIR/gpt.pt \\
        --out benchmarks/results/amd-epyc-2c

Metric: every DIR/NAME.pt is exported, reduced with `dltk quantize` (dynamic and static, forced so
that a drop is reported rather than refused) and scored on its held-out data through ONNX Runtime;
the row names the mode `dltk quantize` picks by default (--mode auto).
Latency: what `dltk bench SOURCE --backend ort --batch 1,8 --precision fp32,int8-static,int8-dynamic`
measures (blocks interleaved across precisions, repeated runs). Writes precision.json and precision.md.
--metric-from / --latency-from take either half from an earlier precision.json (the two halves can
run at different times; each says its own load); --rescore NAME... with --checkpoints scores those
models anew and keeps the other rows of --metric-from.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from toolkit import bench
from toolkit.bench.results import BenchResult
from toolkit.errors import DltkError
from toolkit.export import export_model
from toolkit.files import write_atomically
from toolkit.onnx_file import load_onnx
from toolkit.quantize import PRECISION, QuantizeOptions, auto_mode, quantize_model, seven_bit_weights

MODES = ("dynamic", "static")
PRECISIONS = ("fp32", "int8-static", "int8-dynamic")
LATENCY_COLUMNS = (("ort", "fp32"), ("ort", "int8-static"), ("ort", "int8-dynamic"), ("tvm", "fp32"), ("tvm", "int8-static"))
BUDGET = bench.Budget(warmup=5, min_iterations=20, min_seconds=1.0, max_seconds=20.0, repeats=3)


def metric_rows(checkpoints: Path, log, only: list[str] | None = None) -> list[dict]:
    import models
    from models import checkpoint

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in models.REGISTRY:
            path = checkpoints / f"{name}.pt"
            if not path.is_file() or (only and name not in only):
                continue
            info = checkpoint.read(path)["info"]
            onnx_path = Path(tmp) / f"{name}.onnx"
            log(f"{name}: exporting")
            export_model(str(path), onnx_path)
            default, _ = auto_mode(load_onnx(onnx_path), calibrated=True)
            row = {"model": name, "epochs": info.get("epochs"), "default": default, "modes": {}}
            for mode in MODES:
                log(f"{name}: {mode}")
                try:
                    report = quantize_model(onnx_path, Path(tmp) / f"{name}.{mode}.onnx",
                                            QuantizeOptions(mode=mode, force=True, per_op_report=False))
                except DltkError as e:
                    row["modes"][mode] = {"error": str(e)}
                    continue
                metric = report.metric
                row["metric"] = metric.name if metric else None
                row["fp32"] = metric.fp32 if metric else None
                row["modes"][mode] = {
                    "value": metric.reduced if metric else None, "drop": metric.drop if metric else None,
                    "unit": metric.unit if metric else None, "relative_rms": report.error.relative_rms,
                    "nodes": report.reduced_nodes,
                }
            rows.append(row)
    return rows


def latency_run(sources: list[str], one_thread: list[str], on_tvm: list[str], log) -> dict:
    """One bench run per source (those in `one_thread` also at 1 intra-op thread, those in `on_tvm` on TVM as
    well), merged into one JSON, with the mode `dltk quantize` picks by default for each model ("defaults")."""
    from toolkit import paths

    run = None
    for source in sources:
        threads = (None, 1) if source in one_thread else (None,)
        backends = ("ort", "tvm") if source in on_tvm else ("ort",)
        plan = bench.Plan(backends=backends, batches=(1, 8), threads=threads, precisions=PRECISIONS, budget=BUDGET,
                          measure_peak=False)
        part = bench.run_benchmark([source], plan, log).to_json()
        if run is None:
            run = part
        else:
            run["results"] += part["results"]
            run["warnings"] += part["warnings"]
    # the export the bench made of each model: auto_mode reads its graph (Conv or not), not its weights
    exported = {p.parent.name.rsplit("-", 1)[0]: p for p in paths.cache_dir().glob("*/model.onnx")}
    run["defaults"] = {model: auto_mode(load_onnx(exported[model]), calibrated=True)[0]
                       for model in dict.fromkeys(r["model"] for r in run["results"]) if model in exported}
    return run


def markdown(rows: list[dict], run: dict, load_after: list[float], metric_load: list[float], notes: list[str] = ()) -> str:
    """run: a bench run's JSON (BenchRun.to_json())."""
    env = run["env"]
    bits = "7-bit weights (reduce_range: no VNNI on this CPU)" if seven_bit_weights() else "8-bit weights"
    lines = [
        "# Reduced precision: held-out metric and latency", "",
        f"- CPU: {env['cpu']} ({env['cores']} logical cores); onnxruntime {env['versions'].get('onnxruntime')}",
        f"- load average before the latency run: {', '.join(f'{x:.2f}' for x in env.get('load_average') or [])}; "
        f"after: {', '.join(f'{x:.2f}' for x in load_after)} (a shared machine: read ratios, not absolute times); "
        f"after the metric run: {', '.join(f'{x:.2f}' for x in metric_load)}",
        f"- int8: u8 activations, s8 weights, {bits}; static = QDQ calibrated on 64 training samples, "
        "dynamic = activations quantized at run time (ONNX Runtime's quantize_static / quantize_dynamic; dynamic mode "
        "fuses self-attention into ONNX Runtime's Attention first, which quantize_dynamic makes a QAttention); "
        "default = the mode `dltk quantize` picks (--mode auto: static for graphs with Conv, dynamic otherwise); "
        "the output layer (the Linear that computes the logits) stays fp32, as `dltk quantize` leaves it by default",
        "- metric rows: checkpoints trained with each model's recipe (`dltk train NAME`; the epochs column says how "
        "far). Latency rows of a zoo NAME (`resnet18`) time freshly initialised weights, so their metric only shows "
        "that int8 agrees with fp32; those of a checkpoint time its trained weights",
        "- AVX-512 VNNI (Zen 4) figures are not here: no such machine was available to measure them",
        *[f"- {note}" for note in notes],
        "- generated by `benchmarks/precision.py`", "",
        "## Held-out metric per precision", "",
        "| model | epochs trained | metric | fp32 | default | int8 static | drop | int8 dynamic | drop | int8 nodes (default) |",
        "| --- | ---: | --- | ---: | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for row in rows:
        cells = [f"`{row['model']}`", str(row.get("epochs")), row.get("metric") or "none", _number(row.get("fp32")),
                 row.get("default", "")]
        for mode in ("static", "dynamic"):
            result = row["modes"].get(mode, {})
            if "error" in result:
                cells += [f"not quantized: {result['error']}", ""]
            else:
                drop = result.get("drop")
                cells += [_number(result.get("value")),
                          f"{drop:+.2f} {result['unit']}" if drop is not None else f"rel. rms {result['relative_rms']:.3g}"]
        nodes = row["modes"].get(row.get("default"), {}).get("nodes") or {}
        cells.append(", ".join(f"{op} x{n}" for op, n in sorted(nodes.items())))
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Drop: accuracy points lost, or percent worse for lower-is-better metrics (perplexity). "
              "int8 nodes: what ONNX Runtime's quantizer wrote (ONNX Runtime has no int8 GRU: only a GRU model's "
              "classifier MatMul is int8; static QDQ leaves LSTM and GRU cells in fp32).", "",
              "## p50 per precision (single-stream, ms; in brackets: over ONNX Runtime's fp32 p50 in the same run)", "",
              "| model | threads | batch | " + " | ".join(f"{b} {p}" for b, p in LATENCY_COLUMNS) +
              " | default | metric fp32 / int8-static / int8-dynamic |",
              "| --- | ---: | ---: | " + " | ".join("---:" for _ in LATENCY_COLUMNS) + " | --- | --- |"]
    results = [BenchResult.from_json(r) for r in run["results"]]
    by_key = {(r.model, r.backend, r.threads, r.batch, r.precision): r for r in results}
    defaults = run.get("defaults", {})
    for model, threads in dict.fromkeys((r.model, r.threads) for r in results):
        for batch in (1, 8):
            base = by_key.get((model, "ort", threads, batch, "fp32"))
            cells = [f"`{model}`", "default" if threads is None else str(threads), str(batch)]
            for backend, precision in LATENCY_COLUMNS:
                r = by_key.get((model, backend, threads, batch, precision))
                ratio = f" ({r.p50 / base.p50:.2f}x)" if r and base and r is not base else ""
                cells.append(f"{r.p50:.3f}{ratio}" if r else "-")
            metrics = [", ".join(f"{k} {v:.4g}" for k, v in (r.metric or {}).items()) or "-"
                       for r in (by_key.get((model, "ort", threads, batch, p)) for p in PRECISIONS) if r]
            default = defaults.get(model)
            lines.append("| " + " | ".join(cells + [PRECISION[default] if default else "", " / ".join(metrics)]) + " |")
    lines += ["", "-: not measured (TVM cannot import dynamic int8; TVM rows only for the sources given to --tvm)."]
    if run["warnings"]:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in run["warnings"]]
    return "\n".join(lines) + "\n"


def _number(value) -> str:
    return f"{value:.4g}" if isinstance(value, (int, float)) else ""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", type=Path, help="Directory of NAME.pt checkpoints to score.")
    parser.add_argument("--metric-from", type=Path, help="Take the metric rows from this precision.json instead.")
    parser.add_argument("--rescore", nargs="+", default=[],
                        help="With --metric-from and --checkpoints: score these models anew (their recipe changed).")
    parser.add_argument("--latency", nargs="+", default=["resnet18", "gpt"], help="Sources to time (NAME or CKPT).")
    parser.add_argument("--one-thread", nargs="*", default=[], help="Sources also timed at 1 intra-op thread.")
    parser.add_argument("--tvm", nargs="*", default=[], help="Sources also timed on TVM (fp32 and the QDQ copy).")
    parser.add_argument("--latency-from", type=Path, help="Take the latency run from this precision.json instead.")
    parser.add_argument("--note", action="append", default=[], help="A line for the header (how the run was made).")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    if args.metric_from:
        earlier = json.loads(args.metric_from.read_text())
        rows, metric_load = earlier["metric"], earlier["metric_load"]
        if args.rescore:
            if not args.checkpoints:
                parser.error("--rescore needs --checkpoints DIR")
            fresh = {row["model"]: row for row in metric_rows(args.checkpoints, log, args.rescore)}
            rows = [fresh.get(row["model"], row) for row in rows]
    elif args.checkpoints:
        rows, metric_load = metric_rows(args.checkpoints, log), list(os.getloadavg())
    else:
        parser.error("give --checkpoints DIR or --metric-from FILE")
    if args.latency_from:
        earlier = json.loads(args.latency_from.read_text())
        run, load_after = earlier["latency"], earlier["load_after"]
    else:
        run, load_after = latency_run(args.latency, args.one_thread, args.tvm, log), list(os.getloadavg())
    document = {"metric": rows, "metric_load": metric_load, "latency": run, "load_after": load_after, "notes": args.note}
    write_atomically(args.out / "precision.json", json.dumps(document, indent=2) + "\n")
    write_atomically(args.out / "precision.md", markdown(rows, run, load_after, metric_load, args.note))
    print(f"wrote {args.out}/precision.md and precision.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
