"""dltk bench --precision: reduced copies measured beside fp32, with the held-out metric beside the latency."""

import json

import jsonschema
from click.testing import CliRunner

from toolkit import bench
from toolkit.bench.runner import SCHEMA_FILE
from toolkit.cli import cli

TINY = bench.Budget(warmup=1, min_iterations=5, min_seconds=0.0, repeats=2)


def test_a_precision_tvm_cannot_import_is_skipped_with_a_warning(lenet_onnx):
    plan = bench.Plan(backends=("ort", "tvm"), precisions=("int8-dynamic",), budget=TINY, measure_peak=False)
    run = bench.run_benchmark([str(lenet_onnx)], plan)
    # TVM cannot import dynamic int8 (ConvInteger): that row is skipped with a warning, the rest is measured
    assert [(r.backend, r.precision) for r in run.results] == [("ort", "int8-dynamic")] * 1
    assert any("skipped" in w and "tvm int8-dynamic" in w and "ConvInteger" in w for w in run.warnings)
    assert set(run.results[0].metric) == {"accuracy"}


def test_cli_table_has_precision_metric_and_ratio_columns(lenet_onnx, tmp_path):
    args = ["bench", str(lenet_onnx), "--backend", "ort", "--precision", "fp32,int8", "--warmup", "1",
            "--min-iterations", "5", "--min-seconds", "0", "--repeats", "1", "--json", str(tmp_path / "out.json")]
    result = CliRunner().invoke(cli, args, env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    assert "precision" in result.output and "held-out metric" in result.output and "p50/fp32" in result.output
    document = json.loads((tmp_path / "out.json").read_text())
    jsonschema.validate(document, json.loads(SCHEMA_FILE.read_text()))
    results = document["results"]
    assert [r["precision"] for r in results] == ["fp32", "int8"]
    fp32, int8 = (r["metric"]["accuracy"] for r in results)
    assert 0 <= int8 <= 1 and abs(fp32 - int8) <= 0.05  # the held-out digits, scored at each precision
    ratio = results[1]["latency_ms"]["p50"] / results[0]["latency_ms"]["p50"]
    assert f"{ratio:.2f}x" in result.output


def test_cli_unknown_precision_is_one_line_and_exit_2(lenet_onnx):
    result = CliRunner().invoke(cli, ["bench", str(lenet_onnx), "--backend", "ort", "--precision", "int4"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1].startswith("error: unknown precision 'int4'")
