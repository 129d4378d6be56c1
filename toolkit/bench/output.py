"""A run as a terminal table (rich), JSON, CSV and a markdown table. Files are written whole or not at all."""

from __future__ import annotations

import csv
import io
import json

from toolkit.bench.results import BenchResult
from toolkit.bench.runner import BenchRun, precision_ratios, row_ratios
from toolkit.files import write_atomically

CSV_COLUMNS = (
    "model", "backend", "device", "scenario", "batch", "threads", "p50", "p90", "p95", "p99", "p99.9",
    "mean", "std", "min", "max", "cov", "runs", "p50_ci95_low", "p50_ci95_high", "throughput_per_s",
    "iterations", "flops", "gflops_per_s", "peak_share", "target_qps", "achieved_qps", "p99_bound_ms",
    "samples_per_query", "best", "precision", "metric",
)


def write_files(run: BenchRun, json_path=None, csv_path=None, plot_path=None) -> list[str]:
    """The files asked for; returns their paths."""
    written = []
    if json_path:
        write_atomically(json_path, to_json_text(run))
        written.append(str(json_path))
    if csv_path:
        write_atomically(csv_path, to_csv_text(run))
        written.append(str(csv_path))
    if plot_path:
        from toolkit.bench.plot import write_plot

        write_plot(run, plot_path)
        written.append(str(plot_path))
    return written


def to_json_text(run: BenchRun) -> str:
    return json.dumps(run.to_json(), indent=2) + "\n"


def to_csv_text(run: BenchRun) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for result in run.results:
        r = result.to_json()
        flat = dict(r, **r["latency_ms"])
        ci = r.get("p50_ci95_ms") or [None, None]
        flat["p50_ci95_low"], flat["p50_ci95_high"] = ci
        flat["metric"] = _metric(r.get("metric"))
        writer.writerow({k: ("" if flat.get(k) is None else flat.get(k)) for k in CSV_COLUMNS})
    return out.getvalue()


def tables(run: BenchRun) -> list:
    """One rich table per scenario."""
    from rich.table import Table

    env = run.env
    ratios, fp32_ratios = row_ratios(run.results, "ort"), precision_ratios(run.results)
    peak = env.get("peak") or {}
    machine = f"{env['cpu']}, {env['cores']} cores" + (f", {env['gpu']}" if env.get("gpu") else "")
    if peak.get("gflops"):
        machine += f"; peak {peak['gflops']:,.0f} GFLOP/s"
    out = []
    for scenario in dict.fromkeys(r.scenario for r in run.results):
        indexed = [(i, r) for i, r in enumerate(run.results) if r.scenario == scenario]
        table = Table(title=f"{scenario} ({machine})", box=None, title_justify="left")
        columns, render = _LAYOUTS[scenario]
        # a thread column only when threads were set, precision columns only with --precision:
        # narrower tables fit a terminal
        with_precision = any(r.precision is not None for _, r in indexed)
        keep = [(c != "threads" or any(r.threads is not None for _, r in indexed))
                and (c not in _PRECISION_COLUMNS or with_precision) for c in columns]
        for column, kept in zip(columns, keep):
            if kept:
                table.add_column(column, justify="left" if column in ("model", "backend") else "right")
        for i, r in indexed:
            cells = render(r, ratios.get(i))
            if scenario in ("single-stream", "multi-stream"):
                cells += [_metric(r.metric), _ratio(fp32_ratios.get(i))]
            cells.insert(2, r.precision or "fp32")
            table.add_row(*[cell for cell, kept in zip(cells, keep) if kept])
        out.append(table)
    return out


def _latency_cells(r: BenchResult, ratio) -> list[str]:
    lat, ci = r.latency_ms, r.p50_ci95_ms
    return [
        r.model, r.backend, str(r.batch), _threads(r.threads), f"{lat.p50:.3f}",
        f"{(ci[1] - ci[0]) / 2:.3f}" if ci else "", f"{lat.p90:.3f}", f"{lat.p99:.3f}", f"{lat.p99_9:.3f}",
        f"{lat.mean:.3f}", f"{r.cov:.0%}", f"{r.throughput_per_s:,.0f}", *_gflops(r),
        _ratio(ratio),
    ]


def _offline_cells(r: BenchResult, ratio) -> list[str]:
    ci = r.throughput_ci95
    return [r.model, r.backend, str(r.batch), _threads(r.threads), f"{r.throughput_per_s:,.0f}",
            f"{(ci[1] - ci[0]) / 2:,.0f}" if ci else "", "best" if r.best else "",
            f"{r.latency_ms.p50:.3f}", *_gflops(r)]


def _server_cells(r: BenchResult, ratio) -> list[str]:
    lat, bound = r.latency_ms, r.p99_bound_ms
    verdict = ""
    if bound is not None:
        verdict = f"max {r.max_qps_under_bound:,.0f} QPS" if r.max_qps_under_bound else "none met it"
    return [r.model, r.backend, str(r.batch), _threads(r.threads), f"{r.target_qps:,.0f}",
            f"{r.achieved_qps:,.0f}", f"{lat.p50:.3f}", f"{lat.p99:.3f}",
            f"{bound:g}" if bound is not None else "", verdict]


_PRECISION_COLUMNS = ("precision", "held-out metric", "p50/fp32")
_LATENCY_COLUMNS = ("model", "backend", "precision", "batch", "threads", "p50 ms", "±95%", "p90", "p99", "p99.9",
                    "mean", "CoV", "samples/s", "GFLOP/s", "% peak", "p50/ort", "held-out metric", "p50/fp32")
_LAYOUTS = {
    "single-stream": (_LATENCY_COLUMNS, _latency_cells),
    "multi-stream": (_LATENCY_COLUMNS, _latency_cells),
    "offline": (("model", "backend", "precision", "batch", "threads", "samples/s", "±95%", "", "p50 ms per batch",
                 "GFLOP/s", "% peak"), _offline_cells),
    "server": (("model", "backend", "precision", "batch", "threads", "target QPS", "achieved QPS", "p50 ms",
                "p99 ms", "p99 bound ms", "search"), _server_cells),
}


def _ratio(value) -> str:
    return f"{value:.2f}x" if value is not None else ""


def _metric(metric: dict | None) -> str:
    return ", ".join(f"{name} {value:.4g}" for name, value in metric.items()) if metric else ""


def markdown(run: BenchRun, note: str = "") -> str:
    """RESULTS.md: the machine, then a table per scenario, then the warnings of the run."""
    env = run.env
    peak = env.get("peak") or {}
    lines = [
        "# Benchmark results", "",
        f"- CPU: {env['cpu']} ({env['cores']} logical cores, {env.get('physical_cores') or '?'} physical), "
        f"{env.get('memory_gb') or '?'} GB; GPU: {env.get('gpu') or 'none'}",
        f"- CPU governor: {env.get('cpu_governor') or 'not exposed (a VM?)'}; "
        f"load before the run: {', '.join(f'{x:.2f}' for x in env.get('load_average') or [])}",
        f"- peak: {_number(peak.get('gflops'))} GFLOP/s, {_number(peak.get('gbytes_per_s'))} GB/s "
        f"({peak.get('probe', 'not probed')})",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v),
        f"- budget per measurement: {_budget(run)}",
    ]
    if note:
        lines += ["", note]
    ratios = row_ratios(run.results, "ort")
    for table in tables(run):
        lines += ["", f"## {table.title.split(' (')[0]}", ""]
        headers = [str(c.header) or "note" for c in table.columns]
        lines.append("| " + " | ".join(headers) + " |")
        lines.append("|" + "|".join(" --- " for _ in headers) + "|")
        for row in zip(*[list(c.cells) for c in table.columns]):
            lines.append("| " + " | ".join(row) + " |")
    if "single-stream" in {r.scenario for r in run.results} and ratios:
        lines += ["", "p50/ort: the backend's median latency over ONNX Runtime's at the same batch and threads, "
                  "measured side by side in one process; on a shared machine a ratio within 0.95-1.05 is a tie."]
    if any(r.precision is not None for r in run.results):
        lines += ["", "p50/fp32: a reduced model's median latency over the same backend's fp32 model, measured in the "
                  "same rounds; held-out metric: the zoo model's metric on its held-out data at that precision "
                  "(through ONNX Runtime)."]
    if run.warnings:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in run.warnings]
    return "\n".join(lines) + "\n"


def _budget(run: BenchRun) -> str:
    b = run.plan.budget
    return (f"{b.warmup} warm-up calls, then at least {b.min_iterations} calls and {b.min_seconds:g} s, "
            f"{b.repeats} runs interleaved across backends")


def _gflops(r: BenchResult) -> list[str]:
    if r.cost is None or r.cost.gflops_per_s is None:
        return ["", ""]
    share = r.peak_share
    return [f"{r.cost.gflops_per_s:.2f}", f"{share:.1%}" if share is not None else ""]


def _threads(count) -> str:
    return "default" if count is None else str(count)


def _number(value) -> str:
    return f"{value:,.1f}" if isinstance(value, (int, float)) else "?"
