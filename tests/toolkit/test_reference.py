"""Verification without ONNX Runtime: old opsets upgraded for it, the ONNX reference implementation
for what it lacks, and a compile that says so when nothing can check it."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from toolkit import runtime
from toolkit.compile import compile_model
from toolkit.reference import ONNX_REFERENCE, ONNX_RUNTIME, choose_reference
from toolkit.runtime.artifact import sha256_file


def _save(tmp_path, name, nodes, inputs, outputs, opset, initializers=(), extra_opsets=()):
    graph = helper.make_graph(nodes, name, inputs, outputs, list(initializers))
    # IR version 3, as exporters of opset 1-6 wrote them: initializers are listed as graph inputs too
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), *extra_opsets],
                              ir_version=3 if opset < 7 else 8)
    onnx.checker.check_model(model)
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, path)
    return path


def average_pool_v1(tmp_path):
    """AveragePool-1, which ONNX Runtime has no kernel for."""
    node = helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[2, 2], strides=[2, 2])
    return _save(tmp_path, "pool1", [node], [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2, 8, 8])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2, 4, 4])], opset=1)


def batch_norm_v6(tmp_path):
    """Conv then BatchNormalization-6 (is_test), as old Caffe2 and CNTK exports have it."""
    rng = np.random.default_rng(0)
    weights = {"w": rng.standard_normal((3, 2, 3, 3)), "scale": rng.random(3) + 0.5, "bias": rng.standard_normal(3),
               "mean": rng.standard_normal(3), "var": rng.random(3) + 0.5}
    initializers = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "scale", "bias", "mean", "var"], ["y"], epsilon=1e-5, is_test=1)]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2, 6, 6])]
    inputs += [helper.make_tensor_value_info(t.name, TensorProto.FLOAT, list(t.dims)) for t in initializers]
    return _save(tmp_path, "bn6", nodes, inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3, 6, 6])],
                 opset=6, initializers=initializers)


def relu_int16(tmp_path, with_contrib_op=False):
    """Relu on int16: ONNX Runtime has no such kernel at any opset; the ONNX reference runs it.

    with_contrib_op adds com.microsoft's FastGelu, which TVM imports but the ONNX reference does not know.
    """
    nodes = [helper.make_node("Relu", ["x"], ["y"])]
    inputs = [helper.make_tensor_value_info("x", TensorProto.INT16, ["batch", 5])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.INT16, ["batch", 5])]
    extra = []
    if with_contrib_op:
        nodes.append(helper.make_node("FastGelu", ["f"], ["g"], domain="com.microsoft"))
        inputs.append(helper.make_tensor_value_info("f", TensorProto.FLOAT, ["batch", 5]))
        outputs.append(helper.make_tensor_value_info("g", TensorProto.FLOAT, ["batch", 5]))
        extra = [helper.make_opsetid("com.microsoft", 1)]
    return _save(tmp_path, "relu16" + ("_gelu" if with_contrib_op else ""), nodes, inputs, outputs, opset=18,
                 extra_opsets=extra)


@pytest.mark.parametrize("make, op", [(average_pool_v1, "AveragePool"), (batch_norm_v6, "BatchNormalization")])
def test_old_opset_is_verified_against_onnx_runtime_on_an_upgraded_copy(tmp_path, make, op):
    source = make(tmp_path)
    with pytest.raises(Exception, match=f"NOT_IMPLEMENTED.*{op}"):  # the premise: ONNX Runtime refuses the file
        ort.InferenceSession(str(source))
    artifact = compile_model(source, tmp_path / "out.tvm", choose_engine=False).artifact
    verification = artifact.manifest["verification"]
    assert verification["status"] == "passed"
    assert verification["reference"] == ONNX_RUNTIME
    assert "upgraded to 17" in verification["reference_model"]
    assert artifact.manifest["source_onnx_sha256"] == sha256_file(source)
    # The artifact's model.onnx is the upgraded copy: the ONNX Runtime fallback loads and agrees with TVM.
    assert onnx.load(artifact.file("model.onnx")).opset_import[0].version == 17
    x = np.random.default_rng(1).standard_normal((2, *artifact.inputs[0].shape[1:])).astype(np.float32)
    on_ort = runtime.load(artifact.path, backend="ort").run({"x": x})["y"]
    on_tvm = runtime.load(artifact.path, backend="tvm").run({"x": x})["y"]
    np.testing.assert_allclose(on_tvm, on_ort, atol=1e-4, rtol=1e-3)
    if op == "AveragePool":  # and both are right
        np.testing.assert_allclose(on_tvm, x.reshape(2, 2, 4, 2, 4, 2).mean(axis=(3, 5)), atol=1e-5)


def test_reference_implementation_verifies_what_onnx_runtime_lacks(tmp_path):
    source = relu_int16(tmp_path)
    report = compile_model(source, tmp_path / "out.tvm")
    manifest = report.artifact.manifest
    assert manifest["verification"]["status"] == "passed"
    assert manifest["verification"]["reference"] == ONNX_REFERENCE
    assert any("onnxruntime" in why for why in manifest["verification"]["reference_fallback_because"])
    assert manifest["engine"]["chosen"] == "tvm" and "ONNX Runtime cannot load" in manifest["engine"]["reason"]
    assert {c.reference for c in report.verification} == {ONNX_REFERENCE}
    x = np.array([[-3, 0, 7, -32768, 32767]], np.int16)
    np.testing.assert_array_equal(runtime.load(report.artifact.path).run({"x": x})["y"], np.maximum(x, 0))


def test_model_no_reference_runs_is_compiled_unverified_with_a_warning(tmp_path):
    source = relu_int16(tmp_path, with_contrib_op=True)
    lines = []
    artifact = compile_model(source, tmp_path / "out.tvm", log=lines.append).artifact
    verification = artifact.manifest["verification"]
    assert verification["status"] == "skipped" and "no reference can run" in verification["reason"]
    assert any("FastGelu" in why for why in verification["references_tried"])
    assert any(line.startswith("warning: not verified") for line in lines)
    x = np.array([[-3, 0, 7, 1, 2]], np.int16)
    out = runtime.load(artifact.path).run({"x": x, "f": np.zeros((1, 5), np.float32)})
    np.testing.assert_array_equal(out["y"], np.maximum(x, 0))


def test_a_model_onnx_runtime_loads_keeps_onnx_runtime(lenet_onnx):
    model = onnx.load(lenet_onnx)
    reference = choose_reference(model, lenet_onnx)
    assert reference.name == ONNX_RUNTIME and reference.upgraded_from is None and reference.model is model
    assert json.dumps(reference.to_json()) == json.dumps({"reference": ONNX_RUNTIME})
