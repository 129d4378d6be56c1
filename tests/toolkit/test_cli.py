import json
import logging
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from toolkit import runtime
from toolkit.cli import cli


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def assert_one_line_error(result, code, message):
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and message in lines[-1], lines
    assert sum(line.startswith("error") for line in lines) == 1


def test_models_lists_the_zoo_as_json():
    result = invoke("models", "--json")
    assert result.exit_code == 0
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert rows["lenet"]["parameters"] == 13802 and rows["lenet"]["metric"] == "accuracy"
    assert "pooling" in rows["lenet"]["teaches"]


def test_train_reports_the_metric_and_writes_a_checkpoint(tmp_path):
    out = tmp_path / "mlp.pt"
    result = invoke("train", "mlp", "-o", out, "--epochs", 2, "--optimizer", "momentum", "--seed", 1)
    assert result.exit_code == 0, result.output
    assert "held-out accuracy" in result.stdout and out.exists()
    assert "epoch 2/2" in result.stderr  # progress goes to stderr


def test_export_compile_run_inspect_bench(tmp_path, lenet_checkpoint):
    onnx_path, artifact = tmp_path / "m.onnx", tmp_path / "m.tvm"
    result = invoke("export", lenet_checkpoint, "-o", onnx_path)
    assert result.exit_code == 0, result.output
    assert "onnxruntime vs torch: match" in result.stdout

    result = invoke("compile", onnx_path, "-o", artifact, "--target", "cpu")
    assert result.exit_code == 0, result.output
    assert "tvm vs onnxruntime: match" in result.stdout

    x = np.random.default_rng(0).standard_normal((2, 1, 8, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    result = invoke("run", artifact, "--backend", "tvm", "--input", f"input={tmp_path / 'x.npy'}", "--json", "-o", tmp_path / "out.npz")
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert printed["backend"] == "tvm" and printed["outputs"][0]["shape"] == [2, 10]
    expected = runtime.load(onnx_path).run({"input": x})["logits"]
    np.testing.assert_allclose(np.array(printed["outputs"][0]["data"]), expected, atol=1e-4)
    np.testing.assert_allclose(np.load(tmp_path / "out.npz")["logits"], expected, atol=1e-4)

    result = invoke("inspect", artifact, "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["artifact"]["device"] == "cpu"
    result = invoke("inspect", onnx_path)
    assert result.exit_code == 0 and "input: float32[batch, 1, 8, 8]" in result.stdout

    result = invoke("bench", artifact, "--backend", "ort,tvm", "--batch", "1,2", "--warmup", 1,
                    "--min-iterations", 3, "--min-seconds", 0, "--json", tmp_path / "b.json")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "b.json").read_text())
    assert [(r["backend"], r["batch"]) for r in report["results"]] == [("ort", 1), ("tvm", 1), ("ort", 2), ("tvm", 2)]
    assert "p50" in result.stdout and "tvm" in result.stdout


def test_bench_zoo_name_prints_json_to_stdout():
    result = invoke("bench", "mlp", "--backend", "torch,ort", "--warmup", 1, "--min-iterations", 3,
                    "--min-seconds", 0, "--json", "-")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert {r["backend"] for r in report["results"]} == {"torch", "ort"}


def test_bench_writes_csv_and_plot_and_sweeps_threads(tmp_path, lenet_artifact):
    result = invoke("bench", lenet_artifact, "--backend", "ort", "--batch", "1,4", "--threads", "1,2", "--warmup", 1,
                    "--min-iterations", 3, "--min-seconds", 0, "--repeats", 2, "--csv", tmp_path / "b.csv",
                    "--plot", tmp_path / "b.png", "--scenario", "single-stream,offline")
    assert result.exit_code == 0, result.output
    rows = (tmp_path / "b.csv").read_text().splitlines()
    assert len(rows) == 1 + 2 * 2 * 2  # header; 2 scenarios x 2 batches x 2 thread counts
    assert (tmp_path / "b.png").read_bytes()[:4] == b"\x89PNG"
    assert "single-stream (" in result.stdout and "offline (" in result.stdout and "threads" in result.stdout
    assert "[16/16]" in result.stderr


def test_bench_usage_errors_exit_2():
    assert_one_line_error(invoke("bench"), 2, "give a model to benchmark or --zoo")
    assert_one_line_error(invoke("bench", "mlp", "--scenario", "server"), 2, "--target-qps")
    assert_one_line_error(invoke("bench", "mlp", "--backend", "ort", "--scenario", "burst"), 2, "unknown scenario 'burst'")


def test_missing_file_exits_2(tmp_path):
    assert_one_line_error(invoke("compile", tmp_path / "nope.onnx", "-o", tmp_path / "a"), 2, "no such file")
    assert_one_line_error(invoke("run", tmp_path / "nope.onnx"), 2, "no such file")
    assert_one_line_error(invoke("inspect", tmp_path / "nope.onnx"), 2, "no such file")


def test_not_onnx_exits_2(tmp_path):
    path = tmp_path / "notes.onnx"
    path.write_text("hello")
    assert_one_line_error(invoke("compile", path, "-o", tmp_path / "a"), 2, "not an ONNX model")
    assert not (tmp_path / "a").exists()


def test_truncated_onnx_exits_2(tmp_path, lenet_onnx):
    path = tmp_path / "cut.onnx"
    path.write_bytes(lenet_onnx.read_bytes()[:1000])
    assert_one_line_error(invoke("compile", path, "-o", tmp_path / "a"), 2, "truncated")
    assert_one_line_error(invoke("inspect", path), 2, "truncated")


def test_unknown_model_exits_2(tmp_path):
    assert_one_line_error(invoke("export", "alexnet", "-o", tmp_path / "a.onnx"), 2, "unknown model 'alexnet'")
    assert_one_line_error(invoke("train", "alexnet"), 2, "unknown model 'alexnet'")
    assert_one_line_error(invoke("bench", "alexnet"), 2, "unknown model 'alexnet'")


def test_wrong_input_shape_exits_2(tmp_path, lenet_artifact):
    np.save(tmp_path / "x.npy", np.zeros((1, 8, 8), np.float32))
    result = invoke("run", lenet_artifact, "--input", f"input={tmp_path / 'x.npy'}")
    assert_one_line_error(result, 2, "input 'input' has shape (1, 8, 8) (expected (batch, 1, 8, 8))")


def test_bad_usage_is_one_line_with_exit_2(tmp_path):
    assert_one_line_error(invoke("compile"), 2, "Missing argument")
    assert_one_line_error(invoke("bench", "lenet", "--batch", "1,x"), 2, "comma-separated integers")
    assert_one_line_error(invoke("run", "x.onnx", "--frobnicate"), 2, "No such option")


def test_failed_check_exits_1(tmp_path, lenet_onnx):
    result = invoke("compile", lenet_onnx, "-o", tmp_path / "a", "--atol", 0, "--rtol", 0)
    assert_one_line_error(result, 1, "tvm vs onnxruntime: DIFFER")
    assert not (tmp_path / "a").exists()


def test_verbose_shows_the_traceback(tmp_path):
    result = invoke("-v", "inspect", tmp_path / "nope.onnx")
    assert result.exit_code == 2 and "Traceback" in result.stderr
    result = invoke("inspect", tmp_path / "nope.onnx", "-v")
    assert result.exit_code == 2 and "Traceback" in result.stderr


def test_verbose_ends_with_its_call(tmp_path):
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    assert invoke("-v", "inspect", tmp_path / "nope.onnx").exit_code == 2
    assert root.level == level and root.handlers == handlers  # no debug logging left for later calls
    assert_one_line_error(invoke("inspect", tmp_path / "nope.onnx"), 2, "no such file")  # nor the traceback


def test_python_dash_m_runs_the_same_cli():
    out = subprocess.run([sys.executable, "-m", "toolkit", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for command in ("models", "train", "export", "inspect", "compile", "run", "bench"):
        assert command in out.stdout


@pytest.mark.parametrize("value", ["height", "height=", "height=0", "=32"])
def test_compile_refuses_a_malformed_dim(tmp_path, value):
    result = invoke("compile", tmp_path / "m.onnx", "-o", tmp_path / "m.tvm", "--dim", value)
    assert result.exit_code == 2 and "expected NAME=SIZE with a positive size" in result.output
