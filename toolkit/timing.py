"""The timing loop every measurement uses: warm-up, then timed calls until a count and a duration.

Kept apart from toolkit.bench so that compile-time measurements (engine choice) use the same loop
without depending on the benchmark stage.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable


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
    # Warm-up gets at most a quarter of the time budget: a model that takes seconds per call
    # (untuned TVM ResNet-18 at batch 32) would otherwise spend many minutes warming up.
    warm_start = time.perf_counter()
    for _ in range(budget.warmup):
        call()
        if time.perf_counter() - warm_start >= budget.max_seconds / 4:
            break
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
