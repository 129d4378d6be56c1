import json

import jsonschema
import pytest

from toolkit import bench
from toolkit.bench import output
from toolkit.bench.runner import SCHEMA_FILE, result_warnings
from toolkit.errors import DltkError

TINY = bench.Budget(warmup=1, min_iterations=5, min_seconds=0.0, repeats=2)
SCHEMA = json.loads(SCHEMA_FILE.read_text())


@pytest.fixture(scope="module")
def run(lenet_artifact):
    plan = bench.Plan(backends=("ort", "tvm"), batches=(1, 2), scenarios=bench.SCENARIOS, budget=TINY,
                      server=bench.ServerSettings(p99_bound_ms=100.0), samples_per_query=2)
    lines = []
    result = bench.run_benchmark([str(lenet_artifact)], plan, log=lines.append)
    result.progress = lines
    return result


def test_every_scenario_validates_against_the_schema(run):
    document = json.loads(output.to_json_text(run))
    jsonschema.validate(document, SCHEMA)
    assert {r["scenario"] for r in document["results"]} == set(bench.SCENARIOS)
    assert document["env"]["peak"]["gflops"] > 0
    assert all(0 < r["peak_share"] for r in document["results"])


def test_the_schema_rejects_a_renamed_field(run):
    document = json.loads(output.to_json_text(run))
    document["results"][0]["latency"] = document["results"][0].pop("latency_ms")
    with pytest.raises(jsonschema.ValidationError, match="latency_ms"):
        jsonschema.validate(document, SCHEMA)


def test_progress_counts_every_block(run):
    counted = [line for line in run.progress if line.startswith("[")]
    # single-stream and offline: 2 backends x 2 batches x 2 runs each; multi-stream 2 x 2 runs; server 2 x 2 batches
    assert counted[0].startswith("[1/24] single-stream lenet ort batch 1")
    assert counted[-1].startswith("[24/24] server lenet tvm batch 2")


def test_csv_has_one_line_per_result_with_the_percentiles(run):
    lines = output.to_csv_text(run).splitlines()
    assert len(lines) == 1 + len(run.results)
    header = lines[0].split(",")
    assert {"p50", "p99", "p99.9", "p50_ci95_low", "gflops_per_s", "achieved_qps"} <= set(header)


def test_terminal_tables_one_per_scenario(run):
    from rich.console import Console

    console = Console(width=200, record=True)
    for table in output.tables(run):
        console.print(table)
    text = console.export_text()
    for scenario in bench.SCENARIOS:
        assert f"{scenario} (" in text
    assert "p50/ort" in text and "1.00x" in text and "best" in text


def test_plot_is_a_png(run, tmp_path):
    from toolkit.bench.plot import write_plot

    write_plot(run, tmp_path / "p.png")
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_ratio_plot_is_one_png_and_needs_a_backend_beside_ort(tmp_path):
    from toolkit.bench.plot import write_ratio_plot

    results = [result("ort", 1, 1.0), result("tvm", 1, 0.5), result("ort", 8, 2.0), result("tvm", 8, 6.0)]
    write_ratio_plot(results, tmp_path / "r.png", "title")
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(DltkError, match="nothing to plot: no backend measured beside ort"):
        write_ratio_plot([result("ort", 1, 1.0)], tmp_path / "none.png", "title")
    assert not (tmp_path / "none.png").exists()


def test_server_needs_a_rate_or_a_bound():
    with pytest.raises(DltkError, match="--target-qps"):
        bench.Plan(scenarios=("server",)).check()
    with pytest.raises(DltkError, match="unknown scenario 'batch'"):
        bench.Plan(scenarios=("batch",)).check()


def result(backend="ort", batch=1, p50=1.0, scenario="single-stream", threads=None, cov=0.0, run_cov=0.0):
    latency = bench.Latency(mean=p50, std=cov * p50, min=p50, max=p50, p50=p50, p90=p50, p95=p50, p99=p50)
    return bench.BenchResult(model="m", backend=backend, device="cpu", batch=batch, threads=threads, scenario=scenario,
                             latency_ms=latency, throughput_per_s=batch * 1000 / p50, iterations=10, warmup=1, cov=cov,
                             run_cov=run_cov)


def test_noisy_and_unsteady_results_are_warned_about():
    def row(cov, run_cov):
        return result(cov=cov, run_cov=run_cov)

    warnings = result_warnings([row(0.6, 0.01), row(0.1, 0.2), row(0.1, 0.01)])
    assert len(warnings) == 2
    assert "CoV over 25%) in 1 of 3 results: m ort single-stream b1 (60%)" in warnings[0]
    assert "median spread over 5%) in 1 results: m ort single-stream b1 (20%)" in warnings[1]


def test_ratio_is_relative_to_ort_at_the_same_scenario_batch_and_threads():
    def row(backend, batch, p50, scenario="single-stream", threads=None):
        return result(backend, batch, p50, scenario, threads)

    rows = [row("ort", 1, 2.0), row("tvm", 1, 3.0), row("ort", 8, 4.0), row("tvm", 8, 2.0),
            row("tvm", 1, 1.0, "offline"), row("ort", 1, 1.0, threads=1), row("tvm", 1, 4.0, threads=1)]
    assert bench.row_ratios(rows) == {0: 1.0, 1: 1.5, 2: 1.0, 3: 0.5, 5: 1.0, 6: 4.0}
    # the foundation's key: single-stream at the default thread count
    ratios = bench.ratio_to(rows)
    assert ratios[("m", "tvm", 1)] == 1.5 and ratios[("m", "tvm", 8)] == 0.5 and len(ratios) == 4


def test_sessions_opened_elsewhere_make_a_subject(lenet_onnx):
    from toolkit import runtime

    sessions = {"ort-a": runtime.load(lenet_onnx), "ort-b": runtime.load(lenet_onnx, threads=1)}
    subject = bench.Subject("lenet", sessions, lambda batch: runtime.random_feeds(sessions["ort-a"].inputs, {"batch": batch}))
    rows = bench.single_stream(subject, [2], TINY)
    assert [(r.backend, r.batch, r.iterations) for r in rows] == [("ort-a", 2, 10), ("ort-b", 2, 10)]
    document = bench.report(rows)
    assert json.loads(json.dumps(document))["results"][0]["latency_ms"] == rows[0].latency_ms.to_json()
