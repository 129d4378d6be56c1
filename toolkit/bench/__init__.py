"""Latency benchmarks that can be trusted: MLPerf LoadGen's scenarios over every backend, side by side.

    from toolkit import bench
    run = bench.run_benchmark(["lenet"], bench.Plan(backends=("torch", "ort", "tvm"), batches=(1, 8)))
    run.to_json()                      # the bench JSON of docs/DESIGN.md (bench/schema.json)

Modules: stats (timing loops, percentiles, confidence intervals), subjects (what runs: sessions
per backend), results (BenchResult, the typed result of one measurement), scenarios
(single-stream, multi-stream, offline, server), machine (the machine and what may skew it),
costmodel (FLOPs, bytes, the CPU's peak), runner (a plan, a run), output (table, JSON, CSV,
markdown), plot (PNG), suite (the zoo into benchmarks/results/).
"""

from toolkit.bench.machine import environment, machine_slug, skew_warnings
from toolkit.bench.results import BenchResult, Latency
from toolkit.bench.runner import BenchRun, Plan, ratio_to, report, row_ratios, run_benchmark
from toolkit.bench.scenarios import SCENARIOS, ServerSettings, offline, server, single_stream
from toolkit.bench.stats import Budget, measure, summarize
from toolkit.bench.subjects import Subject, open_subject
from toolkit.sources import BACKENDS, DEFAULT_BACKENDS, OrtOptions

__all__ = [
    "BACKENDS", "DEFAULT_BACKENDS", "SCENARIOS", "BenchResult", "BenchRun", "Latency", "Budget", "OrtOptions", "Plan", "ServerSettings",
    "Subject", "environment", "machine_slug", "report", "row_ratios", "measure", "offline", "open_subject", "ratio_to",
    "run_benchmark", "server", "single_stream", "skew_warnings", "summarize",
]
