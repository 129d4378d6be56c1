"""Benchmark results as types: one BenchResult per (model, backend, batch, threads, scenario).

They mirror toolkit/bench/schema.json: `to_json()` writes exactly the schema's result object
(the fields a scenario has, in a fixed order) and `from_json()` reads one back, as
benchmarks/summary.py does with committed results.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from toolkit.bench.stats import summarize

LATENCY_SCENARIOS = ("single-stream", "multi-stream", "offline")  # timed in blocks, repeated runs


@dataclass(frozen=True)
class Latency:
    """Milliseconds per call: mean, spread and percentiles (schema: latency_ms)."""

    mean: float
    std: float
    min: float
    max: float
    p50: float
    p90: float
    p95: float
    p99: float
    p99_9: float | None = None  # "p99.9" in JSON

    def to_json(self) -> dict:
        out = {"mean": self.mean, "std": self.std, "min": self.min, "max": self.max,
               "p50": self.p50, "p90": self.p90, "p95": self.p95, "p99": self.p99}
        if self.p99_9 is not None:
            out["p99.9"] = self.p99_9
        return out

    @classmethod
    def from_json(cls, d: dict) -> Latency:
        return cls(d["mean"], d["std"], d["min"], d["max"], d["p50"], d["p90"], d["p95"], d["p99"], d.get("p99.9"))

    @classmethod
    def of(cls, latencies_ms) -> Latency:
        """The statistics of measured latencies."""
        return cls.from_json(summarize(latencies_ms))

    @property
    def cov(self) -> float:
        """Coefficient of variation: std over mean."""
        return self.std / self.mean if self.mean else 0.0


@dataclass(frozen=True)
class QpsTrial:
    """One Poisson run of the server scenario's search (schema: search[])."""

    target_qps: float
    achieved_qps: float
    p99_ms: float
    passed: bool

    def to_json(self) -> dict:
        return {"target_qps": self.target_qps, "achieved_qps": self.achieved_qps, "p99_ms": self.p99_ms,
                "passed": self.passed}

    @classmethod
    def from_json(cls, d: dict) -> QpsTrial:
        return cls(d["target_qps"], d["achieved_qps"], d["p99_ms"], d["passed"])


@dataclass
class Cost:
    """The graph's work at this batch and the rate it was done at its median latency."""

    flops: int
    bytes: int
    gflops_per_s: float | None
    gbytes_per_s: float | None


@dataclass
class BenchResult:
    model: str
    backend: str
    device: str
    batch: int
    threads: int | None  # None: the library's default
    scenario: str
    latency_ms: Latency
    throughput_per_s: float
    iterations: int
    warmup: int
    cov: float
    runs: int = 1
    # single-stream, multi-stream, offline: the repeated runs
    run_p50_ms: list[float] = field(default_factory=list)
    p50_ci95_ms: list[float] | None = None
    run_cov: float = 0.0
    cost: Cost | None = None
    peak_share: float | None = None
    samples_per_query: int | None = None  # multi-stream
    # offline
    run_throughput_per_s: list[float] = field(default_factory=list)
    throughput_ci95: list[float] | None = None
    best: bool = False
    # server
    target_qps: float | None = None
    achieved_qps: float | None = None
    p99_bound_ms: float | None = None
    max_qps_under_bound: float | None = None
    search: list[QpsTrial] = field(default_factory=list)
    # --precision: the model's precision (fp32, int8, ...) and its held-out metric at that precision
    precision: str | None = None
    metric: dict | None = None
    # every latency behind the figures, for plots; not in the JSON
    latencies_ms: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False, compare=False)

    @property
    def p50(self) -> float:
        return self.latency_ms.p50

    def where(self) -> str:
        """How warnings name a result."""
        precision = f" {self.precision}" if self.precision is not None else ""
        return f"{self.model} {self.backend}{precision} {self.scenario} b{self.batch}"

    def to_json(self) -> dict:
        out = {
            "model": self.model, "backend": self.backend, "device": self.device, "batch": self.batch,
            "threads": self.threads, "scenario": self.scenario, "latency_ms": self.latency_ms.to_json(),
            "throughput_per_s": self.throughput_per_s, "iterations": self.iterations, "warmup": self.warmup,
            "cov": self.cov, "runs": self.runs,
        }
        if self.scenario in LATENCY_SCENARIOS:
            out.update(run_p50_ms=self.run_p50_ms, p50_ci95_ms=self.p50_ci95_ms, run_cov=self.run_cov)
        else:
            out.update(target_qps=self.target_qps, achieved_qps=self.achieved_qps, p99_bound_ms=self.p99_bound_ms,
                       max_qps_under_bound=self.max_qps_under_bound, search=[t.to_json() for t in self.search])
        if self.cost is not None:
            out.update(flops=self.cost.flops, bytes=self.cost.bytes, gflops_per_s=self.cost.gflops_per_s,
                       gbytes_per_s=self.cost.gbytes_per_s)
        if self.scenario == "multi-stream":
            out["samples_per_query"] = self.samples_per_query
        if self.scenario == "offline":
            out.update(run_throughput_per_s=self.run_throughput_per_s, throughput_ci95=self.throughput_ci95,
                       best=self.best)
        if self.peak_share is not None:
            out["peak_share"] = self.peak_share
        if self.precision is not None:
            out.update(precision=self.precision, metric=self.metric)
        return out

    @classmethod
    def from_json(cls, d: dict) -> BenchResult:
        cost = None
        if "flops" in d:
            cost = Cost(d["flops"], d["bytes"], d.get("gflops_per_s"), d.get("gbytes_per_s"))
        return cls(
            model=d["model"], backend=d["backend"], device=d["device"], batch=d["batch"], threads=d.get("threads"),
            scenario=d["scenario"], latency_ms=Latency.from_json(d["latency_ms"]),
            throughput_per_s=d["throughput_per_s"], iterations=d["iterations"], warmup=d["warmup"], cov=d["cov"],
            runs=d.get("runs", 1), run_p50_ms=d.get("run_p50_ms", []), p50_ci95_ms=d.get("p50_ci95_ms"),
            run_cov=d.get("run_cov", 0.0), cost=cost, peak_share=d.get("peak_share"),
            samples_per_query=d.get("samples_per_query"), run_throughput_per_s=d.get("run_throughput_per_s", []),
            throughput_ci95=d.get("throughput_ci95"), best=d.get("best", False), target_qps=d.get("target_qps"),
            achieved_qps=d.get("achieved_qps"), p99_bound_ms=d.get("p99_bound_ms"),
            max_qps_under_bound=d.get("max_qps_under_bound"), search=[QpsTrial.from_json(t) for t in d.get("search", [])],
            precision=d.get("precision"), metric=d.get("metric"),
        )
