"""Timing loops and the statistics read from them: percentiles, spread, confidence intervals."""

from __future__ import annotations

import math

import numpy as np

from toolkit.timing import Block, Budget, measure, timed_block  # noqa: F401  (the bench API)

HIGH_COV = 0.25  # within-run coefficient of variation above which a result gets a warning
HIGH_RUN_COV = 0.05  # run-to-run spread of the median above which repeated runs disagree
PERCENTILES = {"p50": 50, "p90": 90, "p95": 95, "p99": 99, "p99.9": 99.9}

# Student's t, two-sided 95%, by degrees of freedom; 1.96 beyond the table.
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262,
        10: 2.228, 12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042}


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
