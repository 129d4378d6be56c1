"""Dynamic sequence lengths through TVM: the arange rewrite, and the zoo's transformer and GPT
exported with a dynamic sequence, compiled once, right at every length."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import models
from toolkit import runtime
from toolkit.compile import compile_model
from toolkit.export import export_model
from toolkit.optimize.dynamic_shapes import rewrite_ranges


def _positions_model(opset: int, gather: bool) -> onnx.ModelProto:
    """positions = arange(x.shape[1]) + x, the limit read by Shape(start, end) + Squeeze or by Gather."""
    if gather:
        nodes = [helper.make_node("Shape", ["x"], ["shape"]),
                 helper.make_node("Gather", ["shape", "one"], ["length"], axis=0)]
    else:
        nodes = [helper.make_node("Shape", ["x"], ["shape"], start=1, end=2),
                 helper.make_node("Squeeze", ["shape"], ["length"])]
    nodes += [helper.make_node("Range", ["zero", "length", "one"], ["positions"]),
              helper.make_node("Add", ["x", "positions"], ["y"])]
    initializers = [numpy_helper.from_array(np.array(0, np.int64), "zero"), numpy_helper.from_array(np.array(1, np.int64), "one")]
    graph = helper.make_graph(nodes, "positions", [helper.make_tensor_value_info("x", TensorProto.INT64, ["batch", "sequence"])],
                              [helper.make_tensor_value_info("y", TensorProto.INT64, ["batch", "sequence"])], initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


@pytest.mark.parametrize("opset, gather", [(18, False), (18, True), (14, True)])
def test_arange_of_a_dimension_becomes_row_sums_with_the_same_values(opset, gather):
    model = _positions_model(opset, gather)
    rewritten = rewrite_ranges(model)
    assert "Range" not in {n.op_type for n in rewritten.graph.node}
    assert {"ConstantOfShape", "Trilu", "ReduceSum"} <= {n.op_type for n in rewritten.graph.node}
    onnx.checker.check_model(rewritten, full_check=True)
    x = np.arange(15, dtype=np.int64).reshape(3, 5)
    before = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    after = ort.InferenceSession(rewritten.SerializeToString()).run(None, {"x": x})[0]
    np.testing.assert_array_equal(after, before)
    np.testing.assert_array_equal(after, x + np.arange(5))


def test_arange_of_arithmetic_on_a_dimension_is_rewritten_too():
    """arange(x.shape[1] + 1), as T5's dynamo export writes its causal mask's columns."""
    nodes = [helper.make_node("Shape", ["x"], ["shape"], start=1, end=2),
             helper.make_node("Squeeze", ["shape"], ["length"]),
             helper.make_node("Add", ["length", "one"], ["limit"]),
             helper.make_node("Range", ["zero", "limit", "one"], ["y"])]
    initializers = [numpy_helper.from_array(np.array(0, np.int64), "zero"), numpy_helper.from_array(np.array(1, np.int64), "one")]
    graph = helper.make_graph(nodes, "columns", [helper.make_tensor_value_info("x", TensorProto.INT64, ["batch", "sequence"])],
                              [helper.make_tensor_value_info("y", TensorProto.INT64, [None])], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    rewritten = rewrite_ranges(model)
    assert "Range" not in {n.op_type for n in rewritten.graph.node}
    onnx.checker.check_model(rewritten, full_check=True)
    x = np.zeros((2, 5), np.int64)
    np.testing.assert_array_equal(ort.InferenceSession(rewritten.SerializeToString()).run(None, {"x": x})[0], np.arange(6))


def test_other_ranges_are_left_alone():
    model = _positions_model(18, gather=False)
    model.graph.initializer[0].CopyFrom(numpy_helper.from_array(np.array(2, np.int64), "zero"))  # start 2
    assert rewrite_ranges(model) is model
    old = _positions_model(13, gather=True)  # Trilu needs opset 14
    assert rewrite_ranges(old) is old


@pytest.fixture(scope="module")
def tiny_sequence_models():
    with pytest.MonkeyPatch.context() as patch:
        for name in ("transformer", "gpt"):
            patch.setitem(models.REGISTRY, name, models.get(name).test_size())
        yield


def test_transformer_exports_a_dynamic_sequence_and_one_artifact_runs_any_length(tmp_path, tiny_sequence_models):
    spec = models.get("transformer")
    export_model("transformer", tmp_path / "t.onnx")
    model = onnx.load(tmp_path / "t.onnx")
    assert [d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim] == ["batch", "sequence"]
    assert json.loads({p.key: p.value for p in model.metadata_props}["dltk.static_dims"]) == {"sequence": spec.max_sequence}
    artifact = compile_model(tmp_path / "t.onnx", tmp_path / "t.tvm", choose_engine=False).artifact
    verification = artifact.manifest["verification"]
    assert verification["status"] == "passed" and verification["symbolic_sizes"] == [1, 3, 8]  # 3 lengths, 3 batches
    compiled, reference = runtime.load(artifact.path, backend="tvm"), ort.InferenceSession(str(tmp_path / "t.onnx"))
    rng = np.random.default_rng(0)
    for batch, length in ((1, 1), (2, 5), (4, spec.max_sequence)):
        tokens = rng.integers(0, 10, (batch, length)).astype(np.int64)
        np.testing.assert_allclose(compiled.run({"tokens": tokens})["logits"], reference.run(None, {"tokens": tokens})[0],
                                   atol=1e-4, rtol=1e-3)
