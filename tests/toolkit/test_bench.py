import numpy as np
import pytest

from toolkit import bench
from toolkit.errors import DltkError

TINY = bench.Budget(warmup=2, min_iterations=5, min_seconds=0.0)


def test_measure_runs_warmup_then_until_both_minimums():
    calls = []
    latencies = bench.measure(lambda: calls.append(1), bench.Budget(warmup=3, min_iterations=7, min_seconds=0.0))
    assert len(latencies) == 7 and len(calls) == 10
    assert all(ms >= 0 for ms in latencies)


def test_summary_percentiles_are_ordered_and_exact_on_known_data():
    stats = bench.summarize([float(v) for v in range(1, 101)])
    assert stats["min"] == 1 and stats["max"] == 100 and stats["mean"] == 50.5
    assert stats["p50"] == pytest.approx(50.5)
    assert stats["p50"] <= stats["p90"] <= stats["p95"] <= stats["p99"] <= stats["max"]
    assert stats["std"] == pytest.approx(np.std(np.arange(1, 101), ddof=1))


def test_zoo_model_runs_every_backend_on_the_same_weights(lenet_checkpoint):
    subject = bench.open_subject(str(lenet_checkpoint), ["torch", "ort", "tvm"])
    feeds = subject.feeds(3)
    assert feeds["input"].shape == (3, 1, 8, 8)
    outputs = {name: s.run(feeds)["logits"] for name, s in subject.sessions.items()}
    np.testing.assert_allclose(outputs["ort"], outputs["torch"], atol=1e-4, rtol=1e-3)
    np.testing.assert_allclose(outputs["tvm"], outputs["torch"], atol=1e-4, rtol=1e-3)


def test_single_stream_results_follow_the_design_schema(lenet_artifact):
    subject = bench.open_subject(str(lenet_artifact), ["ort", "tvm"])
    results = bench.single_stream(subject, [1, 4], TINY)
    assert [(r["backend"], r["batch"]) for r in results] == [("ort", 1), ("tvm", 1), ("ort", 4), ("tvm", 4)]
    for r in results:
        assert r["model"] == "lenet" and r["device"] == "cpu" and r["scenario"] == "single-stream"
        assert set(r["latency_ms"]) == {"mean", "std", "min", "p50", "p90", "p95", "p99", "max"}
        assert r["iterations"] == 5 and r["warmup"] == 2
        assert r["throughput_per_s"] == pytest.approx(r["batch"] * 1000 / r["latency_ms"]["mean"])
    report = bench.report(results)
    assert set(report["env"]) >= {"cpu", "cores", "gpu", "versions"}
    assert set(report["env"]["versions"]) >= {"torch", "onnxruntime", "tvm"}


def test_ratio_is_relative_to_ort_at_the_same_batch():
    def row(backend, batch, p50):
        return {"model": "m", "backend": backend, "batch": batch, "latency_ms": {"p50": p50}}

    ratios = bench.ratio_to([row("ort", 1, 2.0), row("tvm", 1, 3.0), row("ort", 8, 4.0), row("tvm", 8, 2.0)])
    assert ratios[("m", "tvm", 1)] == 1.5 and ratios[("m", "tvm", 8)] == 0.5


def test_torch_backend_needs_a_zoo_model(lenet_onnx):
    with pytest.raises(DltkError, match="torch backend needs a zoo model"):
        bench.open_subject(str(lenet_onnx), ["torch", "ort"])


def test_unknown_backend_is_a_usage_error():
    with pytest.raises(DltkError, match="unknown backend 'tensorrt'"):
        bench.open_subject("lenet", ["tensorrt"])
