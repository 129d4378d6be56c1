"""Compiled code keeps NaN meaning NaN (toolkit/nan.py): the TVM engine against ONNX Runtime."""

import numpy as np
import onnx
from onnx import TensorProto, helper

from toolkit import runtime
from toolkit.compile import compile_model


def _elementwise_model(path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in
               [("relu", [2, 4]), ("clip", [2, 4]), ("rowmax", [2]), ("softmax", [2, 4])]]
    nodes = [
        helper.make_node("Relu", ["x"], ["relu"]),
        helper.make_node("Clip", ["x", "lo", "hi"], ["clip"]),
        helper.make_node("ReduceMax", ["x", "axes"], ["rowmax"], keepdims=0),
        helper.make_node("Softmax", ["x"], ["softmax"]),
    ]
    constants = [helper.make_tensor("lo", TensorProto.FLOAT, [], [0.0]), helper.make_tensor("hi", TensorProto.FLOAT, [], [6.0]),
                 helper.make_tensor("axes", TensorProto.INT64, [1], [1])]
    graph = helper.make_graph(nodes, "nan", [x], outputs, constants)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path


def _same_nan_and_values(expected: dict, got: dict) -> None:
    for name, want in expected.items():
        np.testing.assert_array_equal(np.isnan(got[name]), np.isnan(want), err_msg=f"NaN positions of {name}")
        np.testing.assert_allclose(got[name], want, rtol=1e-5, err_msg=name)  # NaN equals NaN here


def test_relu_clip_and_max_reductions_propagate_nan_as_onnx_runtime_does(tmp_path):
    onnx_path = _elementwise_model(tmp_path / "m.onnx")
    artifact = compile_model(onnx_path, tmp_path / "m.tvm", choose_engine=False).artifact.path
    x = np.array([[np.nan, -1.0, 2.0, 7.0], [np.inf, -np.inf, 0.5, -2.0]], np.float32)
    expected = runtime.load(onnx_path).run({"x": x})
    _same_nan_and_values(expected, runtime.load(artifact, backend="tvm").run({"x": x}))


def test_lenet_gives_nan_for_nan_and_infinite_pixels(lenet_onnx, lenet_artifact):
    reference, compiled = runtime.load(lenet_onnx), runtime.load(lenet_artifact, backend="tvm")
    for bad in (np.nan, np.inf):
        x = np.random.default_rng(0).standard_normal((2, 1, 8, 8)).astype(np.float32)
        x[0, 0, 4, 4] = bad  # one bad pixel in the first sample; the second stays clean
        expected, got = reference.run({"input": x}), compiled.run({"input": x})
        assert np.isnan(next(iter(expected.values()))[0]).all()
        _same_nan_and_values(expected, got)
