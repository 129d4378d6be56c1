"""1-D convolutions become 2-D ones of height 1: the same values as ONNX Runtime on the graph as
exported (groups, padding, stride, dilation, auto_pad, old opsets), through TVM too, where dltk's
conv2d rule then schedules them; 2-D convolutions are left alone."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from toolkit.compile import build, import_onnx
from toolkit.optimize import conv1d_as_conv2d
from toolkit.target import resolve_target


def conv1d_model(channels, filters, kernel, opset=17, bias=True, **attrs):
    """x (batch, channels, length) -> Conv1d -> Relu, weights stored as initializers."""
    rng = np.random.default_rng(kernel)
    group = attrs.get("group", 1)
    weights = [numpy_helper.from_array(rng.standard_normal([filters, channels // group, kernel]).astype(np.float32), "w")]
    if bias:
        weights.append(numpy_helper.from_array(rng.standard_normal([filters]).astype(np.float32), "b"))
    nodes = [helper.make_node("Conv", ["x", *[w.name for w in weights]], ["conv"], name="conv", kernel_shape=[kernel], **attrs),
             helper.make_node("Relu", ["conv"], ["y"])]
    graph = helper.make_graph(nodes, "conv1d", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", channels, "length"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", filters, None])], weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


CASES = {
    # wav2vec2's positional convolution: 2 groups, kernel 8, padded both ends
    "grouped padded": (16, 16, 8, {}, dict(group=2, pads=[4, 4])),
    # its feature extractor: raw audio, a long strided kernel
    "strided": (1, 8, 10, dict(bias=False), dict(strides=[5])),
    "dilated, uneven padding": (4, 12, 3, {}, dict(dilations=[2], pads=[1, 2])),
    "opset 11 (axes as attributes)": (4, 8, 3, dict(opset=11), dict(group=2, pads=[1, 1])),
}


@pytest.mark.parametrize("channels, filters, kernel, options, attrs", CASES.values(), ids=CASES.keys())
def test_conv1d_becomes_conv2d_of_height_1_and_keeps_its_values(channels, filters, kernel, options, attrs):
    import tvm
    from tvm import relax

    from tests.toolkit.schedules.conftest import scheduled_rules

    model = conv1d_model(channels, filters, kernel, **options, **attrs)
    rewritten = conv1d_as_conv2d(model)
    assert [n.op_type for n in rewritten.graph.node] == ["Unsqueeze", "Conv", "Squeeze", "Relu"]
    assert [len(t.dims) for t in rewritten.graph.initializer if t.name.endswith("weight")] == [4]
    assert "w" not in {t.name for t in rewritten.graph.initializer}  # the 3-D weight went with its convolution
    onnx.checker.check_model(rewritten, full_check=True)
    assert "conv2d" in set(scheduled_rules(model).values())  # import_onnx rewrites it: the conv2d rule takes it
    reference = ort.InferenceSession(model.SerializeToString())
    machine = relax.VirtualMachine(build(import_onnx(model), resolve_target("cpu")), tvm.cpu())
    for batch, length in ((1, 37), (2, 64)):
        x = np.random.default_rng(length).standard_normal([batch, channels, length]).astype(np.float32)
        expected = reference.run(None, {"x": x})[0]
        np.testing.assert_allclose(ort.InferenceSession(rewritten.SerializeToString()).run(None, {"x": x})[0], expected,
                                   rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(machine["main"](tvm.runtime.tensor(x)).numpy(), expected, rtol=1e-4, atol=1e-4)


def _same_on_onnxruntime(model, rewritten, x):
    np.testing.assert_allclose(ort.InferenceSession(rewritten.SerializeToString()).run(None, {"x": x})[0],
                               ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0], rtol=1e-5, atol=1e-5)


def test_same_padding_carries_over():
    # ONNX Runtime only: TVM's importer refuses auto_pad SAME over a symbolic length, in 1-D as in 2-D
    model = conv1d_model(6, 8, 4, auto_pad="SAME_UPPER", strides=[2])
    rewritten = conv1d_as_conv2d(model)
    assert [n.op_type for n in rewritten.graph.node] == ["Unsqueeze", "Conv", "Squeeze", "Relu"]
    _same_on_onnxruntime(model, rewritten, np.random.default_rng(0).standard_normal([2, 6, 21]).astype(np.float32))


def test_a_weight_computed_in_the_graph_is_unsqueezed_by_a_node():
    model = conv1d_model(4, 8, 3)
    graph = model.graph
    graph.node.insert(0, helper.make_node("Neg", ["w"], ["w_neg"]))
    graph.node[1].input[1] = "w_neg"
    rewritten = conv1d_as_conv2d(model)
    assert [n.op_type for n in rewritten.graph.node] == ["Neg", "Unsqueeze", "Unsqueeze", "Conv", "Squeeze", "Relu"]
    _same_on_onnxruntime(model, rewritten, np.random.default_rng(0).standard_normal([2, 4, 20]).astype(np.float32))


def test_a_weight_listed_as_a_graph_input_stays_an_initializer():
    model = conv1d_model(4, 8, 3)
    model.graph.input.append(helper.make_tensor_value_info("w", TensorProto.FLOAT, [8, 4, 3]))  # IR 3 style
    rewritten = conv1d_as_conv2d(model)
    assert "w" in {t.name for t in rewritten.graph.initializer}
    _same_on_onnxruntime(model, rewritten, np.random.default_rng(0).standard_normal([1, 4, 9]).astype(np.float32))


def test_conv2d_and_models_without_conv1d_are_returned_as_they_are():
    conv2d = helper.make_model(helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3, 3])], "conv2d",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.ones([4, 2, 3, 3], np.float32), "w")]), opset_imports=[helper.make_opsetid("", 17)])
    assert conv1d_as_conv2d(conv2d) is conv2d
