"""Timing loops and the statistics read from them: percentiles, spread, confidence intervals."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

HIGH_COV = 0.25  # within-run coefficient of variation above which a result gets a warning
HIGH_RUN_COV = 0.05  # run-to-run spread of the median above which repeated runs disagree
PERCENTILES = {"p50": 50, "p90": 90, "p95": 95, "p99": 99, "p99.9": 99.9}

# Student's t, two-sided 95%, by degrees of freedom; 1.96 beyond the table.
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262,
        10: 2.228, 12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042}


@dataclass(frozen=True)
class Budget:
    """How long each measurement runs: warm-up calls, then until both minimums are met (or max_seconds)."""

    warmup: int = 20
    min_iterations: int = 200
    min_seconds: float = 1.0
    max_seconds: float = 60.0
    repeats: int = 3  # runs of each measurement, interleaved across backends, for a confidence interval


@dataclass(frozen=True)
class Block:
    latencies_ms: list[float]
    seconds: float  # wall time of the timed calls, loop included


def measure(call: Callable[[], object], budget: Budget) -> list[float]:
    """Latencies in ms of `call`, after warm-up."""
    return timed_block(call, budget).latencies_ms


def timed_block(call: Callable[[], object], budget: Budget) -> Block:
    for _ in range(budget.warmup):
        call()
    latencies = []
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter_ns()
        call()
        latencies.append((time.perf_counter_ns() - t0) / 1e6)
        elapsed = time.perf_counter() - start
        enough = len(latencies) >= budget.min_iterations and elapsed >= budget.min_seconds
        if enough or elapsed >= budget.max_seconds:
            return Block(latencies, elapsed)


def summarize(latencies_ms) -> dict:
    values = np.asarray(latencies_ms, dtype=np.float64)
    p = np.percentile(values, list(PERCENTILES.values()))
    mean = float(values.mean())
    stats = {
        "mean": mean,
        "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
        "min": float(values.min()),
        "max": float(values.max()),
    }
    stats.update({name: float(v) for name, v in zip(PERCENTILES, p)})
    return stats


def cov(stats: dict) -> float:
    return stats["std"] / stats["mean"] if stats["mean"] else 0.0


def confidence_interval(run_values: list[float]) -> list[float] | None:
    """95% interval of the mean of per-run values (Student's t); None with fewer than 2 runs."""
    n = len(run_values)
    if n < 2:
        return None
    values = np.asarray(run_values, dtype=np.float64)
    dof = n - 1
    t = _T95.get(dof) or next((v for k, v in sorted(_T95.items()) if k >= dof), 1.96)
    half = t * float(values.std(ddof=1)) / math.sqrt(n)
    centre = float(values.mean())
    return [centre - half, centre + half]


def run_spread(run_values: list[float]) -> float:
    """Coefficient of variation across runs (0 with one run)."""
    if len(run_values) < 2:
        return 0.0
    values = np.asarray(run_values, dtype=np.float64)
    return float(values.std(ddof=1) / values.mean()) if values.mean() else 0.0
