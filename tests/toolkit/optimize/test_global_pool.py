"""Whole-input poolings become global ones: the same values as ONNX Runtime on the pool as
exported, through TVM too, and pools whose window does not cover the input (or whose divisor
would change) are left alone."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from toolkit.compile import build, import_onnx
from toolkit.optimize import whole_input_pools
from toolkit.target import resolve_target


def pool_model(op, kernel, size, **attrs):
    """x (batch, 5, size, size) -> op(x) -> relu: a pooling as the last layer of a CNN."""
    nodes = [helper.make_node(op, ["x"], ["pooled"], kernel_shape=kernel, **attrs),
             helper.make_node("Relu", ["pooled"], ["y"])]
    graph = helper.make_graph(nodes, "pool", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 5, size, size])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 5, None, None])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


WHOLE = {
    # EfficientNet's head as Hugging Face exports it: a window far larger than the map, ceil mode
    "avg-ceil": ("AveragePool", [40, 40], 7, dict(ceil_mode=1, count_include_pad=1, strides=[40, 40])),
    "avg-exact": ("AveragePool", [7, 7], 7, {}),
    "avg-uncounted-end-pad": ("AveragePool", [8, 8], 7, dict(pads=[0, 0, 1, 1])),
    "max-ceil": ("MaxPool", [9, 9], 6, dict(ceil_mode=1, strides=[9, 9])),
}


@pytest.mark.parametrize("op, kernel, size, attrs", WHOLE.values(), ids=WHOLE.keys())
def test_whole_input_pool_becomes_global_and_keeps_its_values(op, kernel, size, attrs):
    import tvm
    from tvm import relax

    model = pool_model(op, kernel, size, **attrs)
    rewritten = whole_input_pools(model)
    assert [n.op_type for n in rewritten.graph.node] == ["Global" + op, "Relu"]
    onnx.checker.check_model(rewritten, full_check=True)
    x = np.random.default_rng(size).standard_normal([3, 5, size, size]).astype(np.float32)
    expected = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    assert expected.shape == (3, 5, 1, 1)
    np.testing.assert_allclose(ort.InferenceSession(rewritten.SerializeToString()).run(None, {"x": x})[0], expected, rtol=1e-6)
    machine = relax.VirtualMachine(build(import_onnx(model), resolve_target("cpu")), tvm.cpu())
    np.testing.assert_allclose(machine["main"](tvm.runtime.tensor(x)).numpy(), expected, rtol=1e-5, atol=1e-6)


LEFT_ALONE = {
    "window-smaller-than-input": ("AveragePool", [3, 3], 7, dict(strides=[3, 3])),
    "leading-padding": ("AveragePool", [8, 8], 7, dict(pads=[1, 1, 0, 0])),
    "counted-padding": ("AveragePool", [8, 8], 7, dict(pads=[0, 0, 1, 1], count_include_pad=1)),
    "dilated": ("MaxPool", [4, 4], 7, dict(dilations=[2, 2])),
    "same-padding": ("MaxPool", [9, 9], 7, dict(auto_pad="SAME_UPPER", strides=[9, 9])),
}


@pytest.mark.parametrize("op, kernel, size, attrs", LEFT_ALONE.values(), ids=LEFT_ALONE.keys())
def test_pools_that_are_not_global_are_left_alone(op, kernel, size, attrs):
    model = pool_model(op, kernel, size, **attrs)
    assert whole_input_pools(model) is model


def test_max_pool_whose_indices_are_used_is_left_alone():
    model = pool_model("MaxPool", [7, 7], 7)
    model.graph.node[0].output.append("indices")
    model.graph.output.append(helper.make_tensor_value_info("indices", TensorProto.INT64, None))
    assert whole_input_pools(model) is model


def test_a_model_with_symbolic_spatial_dims_is_left_alone():
    model = pool_model("AveragePool", [7, 7], 7)
    model.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "height"
    assert whole_input_pools(model) is model
