import json
from pathlib import Path

import jsonschema
import pytest

from toolkit.bench.results import BenchResult, Latency
from toolkit.bench.runner import SCHEMA_FILE

COMMITTED = sorted((Path(__file__).resolve().parents[3] / "benchmarks" / "results").glob("*/bench.json"))


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.parent.name)
def test_committed_results_read_back_and_write_out_unchanged(path):
    document = json.loads(path.read_text())
    results = [BenchResult.from_json(r) for r in document["results"]]
    assert [r.to_json() for r in results] == document["results"]  # same fields, same order
    jsonschema.validate({"env": document["env"], "results": [r.to_json() for r in results]},
                        json.loads(SCHEMA_FILE.read_text()))


def test_each_scenario_writes_its_own_fields():
    latency = Latency(mean=2.0, std=0.5, min=1.0, max=4.0, p50=2.0, p90=3.0, p95=3.5, p99=3.9, p99_9=4.0)
    base = dict(model="m", backend="ort", device="cpu", batch=1, threads=None, latency_ms=latency,
                throughput_per_s=500.0, iterations=10, warmup=1, cov=latency.cov)
    single = BenchResult(scenario="single-stream", run_p50_ms=[2.0], **base).to_json()
    server = BenchResult(scenario="server", target_qps=10.0, achieved_qps=9.9, **base).to_json()
    offline = BenchResult(scenario="offline", run_throughput_per_s=[500.0], best=True, **base).to_json()
    assert single["latency_ms"]["p99.9"] == 4.0 and single["cov"] == 0.25
    assert "run_p50_ms" in single and "target_qps" not in single and "best" not in single
    assert server["target_qps"] == 10.0 and "run_p50_ms" not in server and server["p99_bound_ms"] is None
    assert offline["best"] is True and offline["run_throughput_per_s"] == [500.0]
    assert "flops" not in single and "peak_share" not in single  # no graph cost measured, no fields for it
