import numpy as np
import pytest

from toolkit import timing
from toolkit.bench import stats


def test_measure_runs_warmup_then_until_both_minimums():
    calls = []
    latencies = stats.measure(lambda: calls.append(1), stats.Budget(warmup=3, min_iterations=7, min_seconds=0.0))
    assert len(latencies) == 7 and len(calls) == 10
    assert all(ms >= 0 for ms in latencies)


def _fake_clock(monkeypatch, seconds_per_call: float):
    """A call that takes `seconds_per_call` on a fake clock: the loop's stop rules, exactly."""
    clock = {"now": 0.0}
    monkeypatch.setattr(timing.time, "perf_counter", lambda: clock["now"])

    def call():
        clock["now"] += seconds_per_call

    return call


def test_block_keeps_going_until_the_minimum_duration(monkeypatch):
    call = _fake_clock(monkeypatch, 0.01)
    block = stats.timed_block(call, stats.Budget(warmup=0, min_iterations=1, min_seconds=0.05))
    assert len(block.latencies_ms) == 5 and block.seconds == pytest.approx(0.05)


def test_max_seconds_stops_a_slow_call_before_min_iterations(monkeypatch):
    call = _fake_clock(monkeypatch, 0.02)
    block = stats.timed_block(call, stats.Budget(warmup=0, min_iterations=10_000, min_seconds=0, max_seconds=0.1))
    assert len(block.latencies_ms) == 5


def test_summary_percentiles_are_ordered_and_exact_on_known_data():
    summary = stats.summarize([float(v) for v in range(1, 1001)])
    assert summary["min"] == 1 and summary["max"] == 1000 and summary["mean"] == 500.5
    assert summary["p50"] == pytest.approx(500.5)
    assert summary["p99.9"] == pytest.approx(np.percentile(np.arange(1, 1001), 99.9))
    assert summary["p50"] <= summary["p90"] <= summary["p95"] <= summary["p99"] <= summary["p99.9"] <= summary["max"]
    assert summary["std"] == pytest.approx(np.std(np.arange(1, 1001), ddof=1))


def test_confidence_interval_uses_students_t():
    low, high = stats.confidence_interval([1.0, 2.0, 3.0])
    # mean 2, s = 1, t(2 dof) = 4.303: 2 +- 4.303 / sqrt(3)
    assert (low + high) / 2 == pytest.approx(2.0)
    assert (high - low) / 2 == pytest.approx(4.303 / np.sqrt(3), rel=1e-3)
    assert stats.confidence_interval([1.0]) is None


def test_run_spread_is_the_coefficient_of_variation_of_runs():
    assert stats.run_spread([2.0, 2.0, 2.0]) == 0
    assert stats.run_spread([1.0, 3.0]) == pytest.approx(np.std([1, 3], ddof=1) / 2)


def test_warmup_of_a_slow_call_stops_at_a_quarter_of_the_budget(monkeypatch):
    calls = []
    slow = _fake_clock(monkeypatch, 10.0)
    block = stats.timed_block(lambda: calls.append(slow()), stats.Budget(warmup=20, min_iterations=200, max_seconds=40.0))
    assert len(calls) - len(block.latencies_ms) == 1  # warm-up stopped after 10 s of its 40 / 4
    assert len(block.latencies_ms) == 4  # then timed calls until max_seconds
