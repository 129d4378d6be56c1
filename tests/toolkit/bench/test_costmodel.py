import pytest

from toolkit.bench import costmodel


def test_peak_probe_measures_a_positive_matmul_rate():
    peak = costmodel.measure_peak("cpu", seconds=0.05)
    assert peak["gflops"] > 0.1 and peak["gbytes_per_s"] > 0.1
    assert "matmul" in peak["probe"] and "onnxruntime on every core" in peak["probe"]


def test_result_cost_divides_the_graphs_work_by_the_latency():
    cost = costmodel.result_cost({"flops": 2_000_000, "bytes": 4_000_000}, latency_ms=2.0)
    assert cost.gflops_per_s == pytest.approx(1.0)
    assert cost.gbytes_per_s == pytest.approx(2.0)
