import numpy as np
import pytest

from toolkit.bench import Budget, ServerSettings, open_subject, scenarios

TINY = Budget(warmup=2, min_iterations=5, min_seconds=0.0, repeats=2)


@pytest.fixture(scope="module")
def subject(lenet_artifact):
    return open_subject(str(lenet_artifact), ["ort", "tvm"])


def test_single_stream_measures_each_backend_and_batch_in_repeated_runs(subject):
    measured = scenarios.single_stream(subject, [1, 4], TINY)
    rows = list(measured)
    assert [(r.backend, r.batch) for r in rows] == [("ort", 1), ("tvm", 1), ("ort", 4), ("tvm", 4)]
    for m, r in zip(measured, rows):
        assert r.model == "lenet" and r.device == "cpu" and r.scenario == "single-stream"
        assert r.runs == 2 and len(r.run_p50_ms) == 2 and r.iterations == 10 and r.warmup == 2
        assert len(m.latencies_ms) == 10
        assert r.latency_ms.p50 == pytest.approx(np.percentile(m.latencies_ms, 50))
        low, high = r.p50_ci95_ms
        assert low <= np.mean(r.run_p50_ms) <= high
        assert r.throughput_per_s == pytest.approx(r.batch * 1000 / r.latency_ms.mean)
    # the cost model: conv1 2*16*8*8*9 + conv2 2*32*4*4*16*9 + fc 2*128*64 + 2*64*10 per sample
    assert rows[0].cost.flops == 183552 and rows[2].cost.flops == 4 * 183552
    assert rows[0].cost.gflops_per_s == pytest.approx(183552 / (rows[0].latency_ms.p50 / 1e3) / 1e9)


def test_thread_counts_are_swept_and_recorded(subject):
    rows = list(scenarios.single_stream(subject, [1], TINY, threads=(1, 2)))
    assert [(r.backend, r.threads) for r in rows] == [("ort", 1), ("tvm", 1), ("ort", 2), ("tvm", 2)]
    assert subject.session("ort", 1) is not subject.session("ort", 2)  # ONNX Runtime: a pool per session


def test_offline_marks_the_batch_with_the_most_samples_per_second(subject):
    rows = list(scenarios.offline(subject, [1, 8], TINY))
    for backend in ("ort", "tvm"):
        mine = [r for r in rows if r.backend == backend]
        best = [r for r in mine if r.best]
        assert len(best) == 1 and best[0].throughput_per_s == max(r.throughput_per_s for r in mine)
        for r in mine:
            assert r.throughput_per_s == pytest.approx(np.mean(r.run_throughput_per_s))


def test_multi_stream_queries_carry_n_samples(subject):
    rows = list(scenarios.multi_stream(subject, 3, TINY))
    assert {(r.scenario, r.batch, r.samples_per_query) for r in rows} == {("multi-stream", 3, 3)}


def test_poisson_arrivals_have_the_target_rate():
    arrivals = scenarios.arrival_times(qps=1000.0, count=20_000, seed=1)
    gaps = np.diff(arrivals)
    assert np.all(gaps >= 0)
    assert gaps.mean() == pytest.approx(1e-3, rel=0.03)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, rel=0.05)  # exponential: CoV 1
    np.testing.assert_array_equal(arrivals, scenarios.arrival_times(1000.0, 20_000, seed=1))


def _queue_model(service_ms: float):
    """A run whose p99 grows as the rate nears the service rate, as a one-worker queue's does."""
    capacity = 1000.0 / service_ms

    def trial(qps: float) -> scenarios.PoissonRun:
        utilisation = qps / capacity
        p99 = service_ms * (1 + 4.6 * utilisation / max(1e-9, 1 - utilisation)) if utilisation < 1 else 1e6
        return scenarios.PoissonRun(qps, qps, [p99] * 100)

    return trial, capacity


def test_qps_search_finds_the_highest_rate_under_the_bound():
    trial, capacity = _queue_model(service_ms=1.0)
    # p99 = 1 + 4.6 u / (1 - u) <= 5.6  <=>  u <= 0.5
    trials, best = scenarios.search_qps(trial, capacity, bound_ms=5.6)
    assert best.passed(5.6) and all(t.target_qps <= best.target_qps for t in trials if t.passed(5.6))
    assert 0.47 * capacity <= best.target_qps <= 0.5 * capacity


def test_qps_search_reports_when_no_rate_meets_the_bound():
    trial, capacity = _queue_model(service_ms=1.0)
    trials, best = scenarios.search_qps(trial, capacity, bound_ms=0.5)
    assert not best.passed(0.5) and best.target_qps == min(t.target_qps for t in trials)


def test_a_run_that_falls_behind_its_target_does_not_pass():
    assert not scenarios.PoissonRun(100.0, 80.0, [1.0] * 10).passed(None)
    assert scenarios.PoissonRun(100.0, 99.0, [1.0] * 10).passed(2.0)


def test_server_row_records_the_rates_and_the_search(subject):
    budget = Budget(warmup=1, min_iterations=20, min_seconds=0.0, repeats=1)
    rows = list(scenarios.server(subject, [1], ServerSettings(p99_bound_ms=50.0), budget))
    assert [r.backend for r in rows] == ["ort", "tvm"]
    for r in rows:
        assert r.scenario == "server" and r.p99_bound_ms == 50.0 and r.search
        assert r.iterations == 20 and r.achieved_qps > 0
        assert r.max_qps_under_bound in (0.0, r.target_qps)
    fixed = scenarios.server(subject, [1], ServerSettings(target_qps=200.0), budget)[0]
    assert fixed.target_qps == 200.0 and fixed.max_qps_under_bound is None and len(fixed.search) == 1
