"""The shape-tracking rewrites: each planted pattern (as T5, T5's dynamo export and wav2vec2 write
it) stops TVM's importer as exported, imports after `optimize.for_tvm`, and matches ONNX Runtime at
several lengths."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from toolkit.compile import build, import_onnx
from toolkit.optimize import keep_shapes, rewrite_ranges
from toolkit.target import resolve_target

LENGTHS = (6, 9, 16)


def _constant(name, value):
    return numpy_helper.from_array(np.array(value, np.int64), name)


def _model(nodes, inputs, output, initializers, opset=17):
    graph = helper.make_graph(nodes, "planted", inputs, [output], initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def tail_slice_model():
    """y = reshape(x[:, -n:, :] + x, (batch, -1)) with n = x.shape[1], T5's slice of its position bias."""
    nodes = [helper.make_node("Shape", ["x"], ["shape"]),
             helper.make_node("Gather", ["shape", "one"], ["n"], axis=0),
             helper.make_node("Neg", ["n"], ["minus_n"]),
             helper.make_node("Unsqueeze", ["minus_n", "axis0"], ["starts"]),
             helper.make_node("Slice", ["x", "starts", "open_end", "axis1"], ["tail"]),
             helper.make_node("Add", ["tail", "x"], ["sum"]),
             helper.make_node("Reshape", ["sum", "flat"], ["y"])]
    initializers = [_constant("one", 1), _constant("axis0", [0]), _constant("axis1", [1]), _constant("open_end", [2**63 - 1]),
                    _constant("flat", [0, -1])]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "sequence", 4])],
                  helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", None]), initializers)


def scalar_reshape_model():
    """y = x.sum(1, keepdim=True) * ones(n + 1) with the length reshaped to [-1], as T5's dynamo export writes it."""
    nodes = [helper.make_node("Shape", ["x"], ["dim"], start=1, end=2),
             helper.make_node("Squeeze", ["dim"], ["n"]),
             helper.make_node("Add", ["n", "one"], ["n_plus_one"]),
             helper.make_node("Reshape", ["n_plus_one", "minus_one"], ["length"]),
             helper.make_node("ConstantOfShape", ["length"], ["ones"], value=numpy_helper.from_array(np.array([1.0], np.float32))),
             helper.make_node("ReduceSum", ["x", "axis1"], ["sums"], keepdims=1),
             helper.make_node("Mul", ["sums", "ones"], ["y"])]
    initializers = [_constant("one", 1), _constant("minus_one", [-1]), _constant("axis1", [1])]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "sequence"])],
                  helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", None]), initializers, opset=18)


def trimmed_conv_model():
    """h = strided_conv(x); y = reshape(h + conv(h)[..., :-1], (batch, -1)): wav2vec2's feature
    extractor (a length of `samples // 2 - 1`, which may be negative for all TVM knows) and its
    positional convolution ("same" padding for an even kernel, then the last position cut)."""
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)
               for name, shape in (("features", (4, 4, 4)), ("positions", (4, 2, 6)))]
    nodes = [helper.make_node("Conv", ["x", "features"], ["h"], kernel_shape=[4], strides=[2]),
             helper.make_node("Conv", ["h", "positions"], ["conv"], group=2, kernel_shape=[6], pads=[3, 3]),
             helper.make_node("Slice", ["conv", "axis0", "minus_one", "axis2"], ["trimmed"]),
             helper.make_node("Add", ["h", "trimmed"], ["sum"]),
             helper.make_node("Shape", ["sum"], ["shape"]),
             helper.make_node("Gather", ["shape", "zero"], ["batch"], axis=0),
             helper.make_node("Unsqueeze", ["batch", "axis0"], ["batch_vector"]),
             helper.make_node("Concat", ["batch_vector", "minus_one"], ["flat"], axis=0),
             helper.make_node("Reshape", ["sum", "flat"], ["y"])]
    initializers = [*weights, _constant("zero", 0), _constant("axis0", [0]), _constant("axis2", [2]), _constant("minus_one", [-1])]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4, "samples"])],
                  helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", None]), initializers)


PLANTED = {"tail-slice": (tail_slice_model, "known shape"), "scalar-reshape": (scalar_reshape_model, "PrimType"),
           "trimmed-conv": (trimmed_conv_model, "shape_of expects a tensor input")}


@pytest.mark.parametrize("make, failure", PLANTED.values(), ids=PLANTED.keys())
def test_planted_pattern_imports_after_the_rewrite_and_matches_onnxruntime(make, failure):
    import tvm
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    model = make()
    onnx.checker.check_model(model, full_check=True)
    with pytest.raises(Exception, match=failure):  # as exported, the importer stops
        from_onnx(model, keep_params_in_input=False)
    rewritten = rewrite_ranges(keep_shapes(model))
    assert rewritten is not model
    onnx.checker.check_model(rewritten, full_check=True)
    machine = relax.VirtualMachine(build(import_onnx(model), resolve_target("cpu")), tvm.cpu())
    source = ort.InferenceSession(model.SerializeToString())
    shape = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    for length in LENGTHS:
        x = np.random.default_rng(length).standard_normal([2 if d == "batch" else length if isinstance(d, str) else d
                                                            for d in shape]).astype(np.float32)
        expected = source.run(None, {"x": x})[0]
        np.testing.assert_allclose(ort.InferenceSession(rewritten.SerializeToString()).run(None, {"x": x})[0], expected, atol=1e-5)
        np.testing.assert_allclose(machine["main"](tvm.runtime.tensor(x)).numpy(), expected, atol=1e-5, rtol=1e-5)


def test_patterns_it_cannot_prove_equivalent_are_left_alone():
    model = tail_slice_model()
    model.graph.initializer[3].CopyFrom(_constant("open_end", [3]))  # a bounded end: not a suffix
    assert keep_shapes(model) is model
    model = trimmed_conv_model()
    model.graph.node[1].attribute[-1].ints[:] = [3, 0]  # no end padding to give back
    assert keep_shapes(model) is model
    model = scalar_reshape_model()
    model.graph.initializer[1].CopyFrom(_constant("minus_one", [1, -1]))  # not a plain vector
    assert keep_shapes(model) is model

