"""Served throughput and latency against calling the runtime in process, with and without dynamic batching.

    python -m benchmarks.serve [--duration 2] [--rounds 3] [--threads 1] -o benchmarks/results/MACHINE

Two models, both run by ONNX Runtime: the zoo LeNet exported to ONNX (untrained weights: speed
does not depend on them), about 0.03 ms a call, where HTTP and JSON cost far more than the model;
and `wide-mlp`, three 1024x1024 fully connected layers (12 MB of weights, read once per call),
where a call costs about a millisecond and stacking requests pays. Each server runs in its own
process (`dltk serve --port 0`), the load generator (toolkit.loadtest) in this one, both on
loopback, so on a small machine they share its cores.
Setups, taking turns in each round:
  in-process          runtime.load(...).run() called from N threads, batch 1
  served, unbatched   dltk serve --max-batch-size 1
  served, batched     dltk serve --max-batch-size 32 --max-delay-ms 2
Loads: closed loop with 1 and 16 clients, and Poisson arrivals at one rate for both servers.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from toolkit import runtime
from toolkit.bench import environment
from toolkit.export import export_model
from toolkit.loadtest import load_in_process, load_server

SERVERS = {"served, unbatched": ["--max-batch-size", "1"], "served, batched (32 rows, 2 ms)": ["--max-batch-size", "32", "--max-delay-ms", "2"]}
CLIENTS = (1, 16)


def start_server(model_path: Path, options: list[str]):
    process = subprocess.Popen([sys.executable, "-m", "toolkit", "serve", str(model_path), "--port", "0", *options],
                               stderr=subprocess.PIPE, text=True)
    for line in process.stderr:
        found = re.search(r"serving on (http://\S+:\d+)", line)
        if found:
            return process, found.group(1)
    raise RuntimeError(f"the server did not start (exit {process.wait()})")


def wide_mlp(path: Path, width: int = 1024, layers: int = 3) -> Path:
    """x (batch, width) -> [Gemm, Relu] x layers: a model whose weights dominate a batch-1 call."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, weights, current = [], [], "x"
    for i in range(layers):
        weights += [numpy_helper.from_array((rng.standard_normal((width, width)) / width**0.5).astype(np.float32), f"w{i}"),
                    numpy_helper.from_array(np.zeros(width, np.float32), f"b{i}")]
        nodes += [helper.make_node("Gemm", [current, f"w{i}", f"b{i}"], [f"h{i}"]), helper.make_node("Relu", [f"h{i}"], [f"a{i}"])]
        current = f"a{i}"
    nodes.append(helper.make_node("Identity", [current], ["y"]))
    graph = helper.make_graph(nodes, "wide_mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", width])], initializer=weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


def run(duration: float, threads: int, rounds: int, log=print) -> dict:
    load_before = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        export_model("lenet", Path(tmp) / "lenet.onnx")
        wide_mlp(Path(tmp) / "wide-mlp.onnx")
        for model in ("lenet", "wide-mlp"):
            rows += run_model(model, Path(tmp) / f"{model}.onnx", duration, threads, rounds, log)
    # The machine's load average (1, 5, 15 min) before and after: other work on it shows here.
    return {"env": environment(), "backend": "ort", "threads": threads, "duration_s": duration, "rounds": rounds,
            "load_average": {"before": load_before, "after": os.getloadavg()}, "results": rows}


def run_model(model: str, onnx_path: Path, duration: float, threads: int, rounds: int, log) -> list[dict]:
    """Every setup and load once per round, rounds one after another, so that other work on the
    machine falls on all setups alike; each row reports the median over the rounds."""
    session = runtime.load(onnx_path, threads=threads)
    servers = {setup: start_server(onnx_path, [*options, "--threads", str(threads)]) for setup, options in SERVERS.items()}
    runs: dict[tuple, list[dict]] = {}
    rate = None
    try:
        for round_number in range(rounds):
            for clients in CLIENTS:
                runs.setdefault(("in-process", clients), []).append(
                    load_in_process(session, model, concurrency=clients, duration=duration).to_json())
            for setup, (_process, url) in servers.items():
                for clients in CLIENTS:
                    runs.setdefault((setup, clients), []).append(_load_with_batches(url, concurrency=clients, duration=duration))
            # One Poisson rate for both servers: 70% of what the unbatched server managed with 16 clients.
            rate = rate or max(10.0, round(0.7 * runs[(next(iter(SERVERS)), CLIENTS[-1])][0]["qps"], -1))
            for setup, (_process, url) in servers.items():
                runs.setdefault((setup, "poisson"), []).append(_load_with_batches(url, rate=rate, duration=duration))
            log(f"{model}: round {round_number + 1} of {rounds} done")
    finally:
        for process, _url in servers.values():
            process.terminate()
            process.wait(60)
    rows = []
    for (setup, load), results in runs.items():
        row = dict(results[0], setup=setup, rounds=results)
        row["qps"] = statistics.median(r["qps"] for r in results)
        row["errors"] = sum(r["errors"] for r in results)
        row["requests"] = sum(r["requests"] for r in results)
        row["latency_ms"] = {k: statistics.median(r["latency_ms"][k] for r in results) for k in results[0]["latency_ms"]}
        if "batch_rows_mean" in results[0]:
            row["batch_rows_mean"] = statistics.median(r["batch_rows_mean"] for r in results)
        rows.append(row)
        log(f"{model} {setup}, {load}: {row['qps']:,.0f}/s, p50 {row['latency_ms']['p50']:.2f} ms, p99 {row['latency_ms']['p99']:.2f} ms")
    return rows


def _fetch(url: str) -> str:
    import urllib.request

    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read().decode()


def _load_with_batches(url: str, **load) -> dict:
    """One load on a server, with the mean rows per batch it ran meanwhile (from its metrics;
    the warm-up's batches are counted too)."""
    before = _batch_totals(_fetch(f"{url}/metrics"))
    result = load_server(url, duration=load.pop("duration"), **load).to_json()
    after = _batch_totals(_fetch(f"{url}/metrics"))
    batches = after[1] - before[1]
    result["batch_rows_mean"] = (after[0] - before[0]) / batches if batches else None
    return result


def _batch_totals(metrics_text: str) -> tuple[float, float]:
    """(rows, batches) so far, from the dltk_batch_size histogram."""
    total = re.search(r"^dltk_batch_size_sum\{[^}]*\} (\S+)$", metrics_text, re.M)
    count = re.search(r"^dltk_batch_size_count\{[^}]*\} (\S+)$", metrics_text, re.M)
    return (float(total.group(1)), float(count.group(1))) if total and count else (0.0, 0.0)


def markdown(report: dict, note: str) -> str:
    env = report["env"]
    lines = [
        "# `dltk serve` against the runtime in process, with and without dynamic batching",
        "",
        f"Machine: {env['cpu']}, {env['cores']} cores, {env['platform']}; Python {env['python']}; "
        f"onnxruntime {env['versions'].get('onnxruntime')}, {report['threads']} ONNX Runtime thread(s) per session. "
        f"Each row: the median of {report['rounds']} rounds of {report['duration_s']:g} s (after 0.5 s of warm-up), "
        "the setups taking turns within each round; made by `python -m benchmarks.serve`.",
        "Server and load generator ran on this machine over loopback (127.0.0.1), sharing its cores. "
        "Latency is per request (one row each); in process it is the `run()` call alone, served it is the whole HTTP round trip.",
        f"Load average (1/5/15 min) before: {' / '.join(f'{x:.2f}' for x in report['load_average']['before'])}, "
        f"after: {' / '.join(f'{x:.2f}' for x in report['load_average']['after'])}.",
        "",
        note,
        "",
        "| model | setup | load | requests/s | p50 ms | p99 ms | errors | mean rows per batch |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in report["results"]:
        if r["scenario"] == "closed-loop":
            load = f"{r['concurrency']} {'threads' if r['target'] == 'in-process' else 'clients'}"
        else:
            load = f"Poisson {r['rate_per_s']:g}/s"
        batch = f"{r['batch_rows_mean']:.2f}" if r.get("batch_rows_mean") else ""
        lat = r["latency_ms"]
        lines.append(f"| {r['model']} | {r['setup']} | {load} | {r['qps']:,.0f} | {lat['p50']:.3f} | {lat['p99']:.3f} | {r['errors']} | {batch} |")
    lines += ["", "Mean rows per batch: from the server's `dltk_batch_size` histogram, before and after each load."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per load per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads, in process and served alike")
    parser.add_argument("-o", "--output", type=Path, required=True, help="directory for serve.json and serve.md")
    parser.add_argument("--note", default="", help="a line for the markdown, such as what else ran on the machine")
    args = parser.parse_args(argv)
    report = run(args.duration, args.threads, args.rounds, log=lambda line: print(line, file=sys.stderr))
    report["note"] = args.note
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "serve.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.output / "serve.md").write_text(markdown(report, args.note))
    print(f"wrote {args.output}/serve.json and serve.md")


if __name__ == "__main__":
    main()
