"""dltk quantize: int8 (dynamic, static QDQ) and fp16 through ONNX Runtime's tools, the accuracy
report and its gate, and a quantized model through compile, the runtime and the CLI."""

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

import models
from toolkit import runtime
from toolkit.cli import cli
from toolkit.compile import compile_model
from toolkit.errors import CheckFailed, DltkError
from toolkit.export import export_model
from toolkit.quantize import QuantizeOptions, quantize_model
from toolkit.runtime.model_source import read_metadata

FAST = dict(per_op_report=False)  # the per-op-type report quantizes once per op type: asked for where tested


def held_out(n=64):
    return models.get("lenet").data().test_x[:n].numpy()


def run(path, x):
    return runtime.load(path).run({"input": x})["logits"]


def ops(path):
    return {n.op_type for n in onnx.load(str(path)).graph.node}


def without_metadata(source, target):
    """The same graph with no dltk metadata: a model that is not a zoo export."""
    model = onnx.load(str(source))
    del model.metadata_props[:]
    onnx.save(model, str(target))
    return target


def test_dynamic_int8_stays_close_to_fp32_and_reports_the_held_out_accuracy(lenet_onnx, tmp_path):
    out = tmp_path / "lenet.int8.onnx"
    report = quantize_model(lenet_onnx, out, QuantizeOptions(mode="dynamic", **FAST))
    assert {"DynamicQuantizeLinear", "ConvInteger", "MatMulInteger"} <= ops(out)
    x = held_out()
    fp32, int8 = run(lenet_onnx, x), run(out, x)
    assert (fp32.argmax(1) == int8.argmax(1)).mean() >= 0.95
    assert np.sqrt(np.mean((fp32 - int8) ** 2)) < 0.05 * np.sqrt(np.mean(fp32**2))
    assert report.metric.name == "accuracy" and abs(report.metric.drop) <= 1.0
    assert 0 < report.error.relative_rms < 0.05 and report.error.samples == 64
    metadata = read_metadata(onnx.load(str(out)))
    assert metadata["dltk.precision"] == "int8-dynamic" and metadata["dltk.model"] == "lenet"
    stored = json.loads(metadata["dltk.quantization"])
    assert stored["metric"]["fp32"] == report.metric.fp32 and stored["metric"]["reduced"] == report.metric.reduced


def test_static_int8_is_qdq_calibrated_on_the_models_data_and_names_the_op_types_that_hurt(lenet_onnx, tmp_path):
    out = tmp_path / "lenet.qdq.onnx"
    report = quantize_model(lenet_onnx, out, QuantizeOptions(mode="static", calibration=32, per_channel=True))
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops(out)
    assert report.calibration == "32 samples of lenet's training data"
    x = held_out()
    assert (run(lenet_onnx, x).argmax(1) == run(out, x).argmax(1)).mean() >= 0.95
    assert {c.op_type for c in report.per_op} >= {"Conv", "Gemm"}
    assert all(c.drop is not None and c.relative_rms > 0 for c in report.per_op)
    assert read_metadata(onnx.load(str(out)))["dltk.precision"] == "int8-static"


def test_auto_mode_is_static_qdq_for_a_conv_model_and_dynamic_without_calibration_inputs(lenet_onnx, tmp_path):
    report = quantize_model(lenet_onnx, tmp_path / "auto.onnx", QuantizeOptions(calibration=16, **FAST))
    assert report.mode == "static" and "Conv nodes: static QDQ" in report.mode_reason
    assert report.lines()[0].startswith("--mode auto chose static")
    assert "QLinearConv" not in ops(tmp_path / "auto.onnx") and "QuantizeLinear" in ops(tmp_path / "auto.onnx")
    plain = without_metadata(lenet_onnx, tmp_path / "plain.onnx")  # not a zoo export: nothing to calibrate on
    report = quantize_model(plain, tmp_path / "plain.int8.onnx", QuantizeOptions(calibration=4, **FAST))
    assert report.mode == "dynamic" and "--calibration-data" in report.mode_reason
    assert "ConvInteger" in ops(tmp_path / "plain.int8.onnx")


def test_fp16_keeps_fp32_inputs_and_outputs(lenet_onnx, tmp_path):
    out = tmp_path / "lenet.fp16.onnx"
    report = quantize_model(lenet_onnx, out, QuantizeOptions(mode="fp16"))
    session = runtime.load(out)
    assert [s.dtype for s in session.inputs + session.outputs] == ["float32", "float32"]
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in onnx.load(str(out)).graph.initializer)
    assert report.error.relative_rms < 1e-2 and abs(report.metric.drop) <= 1.0


def test_the_gate_refuses_a_drop_over_max_drop_and_writes_nothing(lenet_onnx, tmp_path):
    out = tmp_path / "refused.onnx"
    # Any drop, even none, is over -1 points: the gate must refuse.
    with pytest.raises(CheckFailed, match=r"over --max-drop -1; .*refused.onnx not written"):
        quantize_model(lenet_onnx, out, QuantizeOptions(mode="dynamic", max_drop=-1, **FAST))
    assert list(tmp_path.iterdir()) == []
    quantize_model(lenet_onnx, out, QuantizeOptions(mode="dynamic", max_drop=-1, force=True, **FAST))
    assert out.is_file()


def test_cli_refusal_is_one_line_and_exit_1(lenet_onnx, tmp_path):
    out = tmp_path / "refused.onnx"
    result = CliRunner().invoke(cli, ["quantize", str(lenet_onnx), "-o", str(out), "--max-drop", "-1"])
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "not written" in errors[0] and "Traceback" not in result.output
    assert not out.exists()


def test_cli_writes_and_prints_the_report(lenet_onnx, tmp_path):
    out = tmp_path / "q.onnx"
    result = CliRunner().invoke(cli, ["quantize", str(lenet_onnx), "-o", str(out), "--mode", "static",
                                      "--calibration", "16", "--exclude", "Gemm", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{"):])
    assert report["precision"] == "int8-static" and report["metric"]["name"] == "accuracy"
    assert [c["op_type"] for c in report["per_op"]] == ["Conv"]  # Gemm was excluded
    graph = onnx.load(str(out)).graph
    initializers = {t.name: t.data_type for t in graph.initializer}
    gemm_weights = [n.input[1] for n in graph.node if n.op_type == "Gemm"]
    conv_weights = [n.input[1] for n in graph.node if n.op_type == "Conv"]
    assert gemm_weights and all(initializers.get(w) == onnx.TensorProto.FLOAT for w in gemm_weights)
    assert conv_weights and not any(w in initializers for w in conv_weights)  # Conv reads dequantized int8


@pytest.mark.parametrize("args, message", [
    (["--mode", "bf16"], "bf16 does not run here"),
    (["--exclude", "LSTM"], "--exclude LSTM: no such op type"),
    (["--calibration", "0"], "--calibration must be at least 1"),
    (["--calibration-data", "missing.npz"], "no such file"),
])
def test_cli_bad_input_is_one_line_and_exit_2(lenet_onnx, tmp_path, args, message):
    out = tmp_path / "q.onnx"
    result = CliRunner().invoke(cli, ["quantize", str(lenet_onnx), "-o", str(out), *args])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0]
    assert not out.exists()


def test_a_model_outside_the_zoo_calibrates_on_the_users_files(lenet_onnx, tmp_path):
    plain = without_metadata(lenet_onnx, tmp_path / "plain.onnx")
    with pytest.raises(DltkError, match="static quantization needs calibration inputs"):
        quantize_model(plain, tmp_path / "q.onnx", QuantizeOptions(mode="static", **FAST))
    np.save(tmp_path / "calib.npy", held_out(24))
    np.savez(tmp_path / "wrong.npz", image=held_out(4))
    with pytest.raises(DltkError, match="wrong.npz has no array 'input'"):
        quantize_model(plain, tmp_path / "q.onnx", QuantizeOptions(mode="static", calibration_data=(str(tmp_path / "wrong.npz"),)))
    report = quantize_model(plain, tmp_path / "q.onnx",
                            QuantizeOptions(mode="static", calibration_data=(str(tmp_path / "calib.npy"),), max_drop=-1))
    # No zoo model, so no metric and no gate: the output error on the user's inputs is the report.
    assert report.metric is None and "not a zoo export" in report.metric_note
    assert report.calibration == "24 samples from calib.npy" and report.error.samples == 24
    assert 0 < report.error.relative_rms < 0.1


def test_an_already_quantized_model_is_refused(lenet_onnx, tmp_path):
    once = tmp_path / "once.onnx"
    quantize_model(lenet_onnx, once, QuantizeOptions(mode="dynamic", **FAST))
    with pytest.raises(DltkError, match="already quantized"):
        quantize_model(once, tmp_path / "twice.onnx", QuantizeOptions(mode="dynamic"))


def test_static_int8_compiles_with_tvm_and_runs_through_the_runtime(lenet_onnx, tmp_path):
    qdq = tmp_path / "lenet.int8.onnx"
    quantize_model(lenet_onnx, qdq, QuantizeOptions(mode="static", calibration=16, **FAST))
    report = compile_model(qdq, tmp_path / "lenet.int8.tvm")
    assert report.verification and all(c.passed for c in report.verification)
    x = held_out(8)
    on_ort = run(qdq, x)
    for backend in ("tvm", "ort"):
        out = runtime.load(tmp_path / "lenet.int8.tvm", backend=backend).run({"input": x})["logits"]
        assert out.shape == (8, 10)
        # TVM runs the QDQ nodes in float, ONNX Runtime fuses them into int8 kernels: same answers
        assert (out.argmax(1) == on_ort.argmax(1)).mean() >= 0.85


def test_dynamic_int8_is_refused_by_tvm_in_one_line_that_says_what_to_do(lenet_onnx, tmp_path):
    dynamic = tmp_path / "lenet.dyn.onnx"
    quantize_model(lenet_onnx, dynamic, QuantizeOptions(mode="dynamic", **FAST))
    result = CliRunner().invoke(cli, ["compile", str(dynamic), "-o", str(tmp_path / "d.tvm")])
    assert result.exit_code == 2
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "TVM cannot import" in errors[0] and "--mode static" in errors[0]
    assert not (tmp_path / "d.tvm").exists()


@pytest.fixture
def tiny_gpt(monkeypatch, tmp_path):
    monkeypatch.setitem(models.REGISTRY, "gpt", models.get("gpt").test_size())
    path = tmp_path / "gpt.onnx"
    export_model("gpt", path)
    return path


def test_a_language_model_reports_perplexity_worse_in_percent(tiny_gpt, tmp_path, monkeypatch):
    working = tmp_path / "cwd"
    working.mkdir()
    monkeypatch.chdir(working)
    report = quantize_model(tiny_gpt, tmp_path / "gpt.int8.onnx", QuantizeOptions(max_drop=100))
    assert list(working.iterdir()) == []  # ONNX Runtime's shape inference left nothing in the working directory
    assert report.mode == "dynamic" and report.mode_reason.startswith("no Conv")  # auto: MatMuls, no Conv
    assert report.metric.name == "perplexity" and report.metric.unit == "% worse"
    expected = 100 * (report.metric.reduced - report.metric.fp32) / report.metric.fp32
    assert report.metric.drop == pytest.approx(expected)
    assert report.per_op and report.per_op[0].op_type in {"MatMul", "Gather"}
    # the head computes the logits: left in fp32, on fp32 weights; every other Linear is int8
    graph = onnx.load(str(tmp_path / "gpt.int8.onnx")).graph
    head = [n for n in graph.node if n.name in report.fp32_layers]
    assert len(head) == 1 and head[0].op_type == "MatMul" and head[0].output[0] == graph.output[0].name
    # each block's attention is one int8 QAttention (its QKV Linear inside); the other Linears are MatMulInteger
    fp32 = onnx.load(str(tiny_gpt)).graph
    weights = {t.name for t in fp32.initializer}
    linears = sum(n.op_type == "MatMul" and n.input[1] in weights for n in fp32.node)
    blocks = sum(n.op_type == "Softmax" for n in fp32.node)
    assert blocks and report.reduced_nodes["QAttention"] == blocks
    assert report.reduced_nodes["MatMulInteger"] == linears - 1 - blocks


def fp32_linears(path) -> list[str]:
    """MatMul and Gemm nodes that still read fp32 weights (int8 ones read dequantized or integer weights)."""
    graph = onnx.load(str(path)).graph
    weights = {t.name for t in graph.initializer if t.data_type == onnx.TensorProto.FLOAT}
    return [n.name for n in graph.node if n.op_type in ("MatMul", "Gemm") and n.input[1] in weights]


@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_the_output_layer_stays_fp32_unless_asked(lenet_onnx, tmp_path, mode):
    kept = tmp_path / "kept.onnx"
    report = quantize_model(lenet_onnx, kept, QuantizeOptions(mode=mode, calibration=16, **FAST))
    # LeNet's last Linear computes the logits (quantize_dynamic renames a Gemm NAME to NAME_MatMul + NAME_Add)
    assert report.fp32_layers == fp32_linears(kept) and len(report.fp32_layers) == 1
    assert report.fp32_layers[0].startswith("node_linear_1")
    assert f"output layer kept fp32: {report.fp32_layers[0]}" in report.lines()[0]
    assert report.reduced_nodes.get("ConvInteger", 0) + report.reduced_nodes.get("QuantizeLinear", 0) > 0  # the rest is int8
    whole = tmp_path / "whole.onnx"
    report = quantize_model(lenet_onnx, whole, QuantizeOptions(mode=mode, calibration=16, quantize_output_layer=True, **FAST))
    assert report.fp32_layers == [] == fp32_linears(whole) and "output layer" not in report.lines()[0]
    x = held_out()
    reference = run(lenet_onnx, x)
    for path in (kept, whole):
        assert np.sqrt(np.mean((run(path, x) - reference) ** 2)) < 0.05 * np.sqrt(np.mean(reference**2))


def test_a_model_whose_only_layer_is_the_output_layer_is_still_quantized(tmp_path):
    from onnx import helper, numpy_helper

    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((16, 4)).astype(np.float32), "weight")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "weight"], ["y"], name="only")], "linear",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", 16])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["batch", 4])], [weight])
    source = tmp_path / "linear.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(source))
    report = quantize_model(source, tmp_path / "linear.int8.onnx", QuantizeOptions(mode="dynamic", calibration=8, **FAST))
    assert report.fp32_layers == [] and report.reduced_nodes == {"DynamicQuantizeLinear": 1, "MatMulInteger": 1}
    assert 0 < report.error.relative_rms < 0.05


def test_cli_quantize_output_layer_flag(lenet_onnx, tmp_path):
    out = tmp_path / "q.onnx"
    result = CliRunner().invoke(cli, ["quantize", str(lenet_onnx), "-o", str(out), "--mode", "dynamic",
                                      "--quantize-output-layer", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{"):])
    assert report["fp32_layers"] == [] and report["reduced_nodes"]["MatMulInteger"] == 2  # both Gemms
