"""Self-attention fused into ONNX Runtime's Attention node: the zoo's causal (GPT) and bidirectional
(transformer) blocks fuse, in torch.onnx's form and in the form ONNX Runtime's optimizer leaves, with
the same outputs as the graph as exported; a block that differs in any detail stays as it is."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from toolkit.export import export_model
from toolkit.optimize import fuse_attention


@pytest.fixture(scope="module")
def exports(tiny_zoo, tmp_path_factory):
    directory = tmp_path_factory.mktemp("attention")
    paths = {name: directory / f"{name}.onnx" for name in ("gpt", "transformer")}
    for name, path in paths.items():
        export_model(name, path)
    return {name: onnx.load(str(path)) for name, path in paths.items()}


def tokens(batch=3, sequence=7):
    return {"tokens": np.random.default_rng(0).integers(0, 10, size=(batch, sequence)).astype(np.int64)}


def outputs(model: onnx.ModelProto, feeds) -> np.ndarray:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]


def attention_nodes(model):
    return [n for n in model.graph.node if n.op_type == "Attention"]


def unidirectional(node) -> int:
    return next(a.i for a in node.attribute if a.name == "unidirectional")


@pytest.mark.parametrize("name, causal", [("gpt", 1), ("transformer", 0)])
def test_every_block_fuses_and_computes_the_same(exports, name, causal):
    model = exports[name]
    blocks = sum(n.op_type == "Softmax" for n in model.graph.node)
    fused, count = fuse_attention(model)
    onnx.checker.check_model(fused)
    assert count == blocks > 0 and len(attention_nodes(fused)) == blocks
    assert {unidirectional(n) for n in attention_nodes(fused)} == {causal}
    assert not {"Softmax", "Split", "Where", "Not"} & {n.op_type for n in fused.graph.node}  # masks and glue gone
    for feeds in (tokens(1, 1), tokens(3, 7)):
        np.testing.assert_allclose(outputs(fused, feeds), outputs(model, feeds), rtol=1e-5, atol=1e-5)


def test_the_mask_as_onnx_runtimes_optimizer_leaves_it_fuses(exports):
    """Where(Not(mask), -inf, scores) rewritten as Where(mask, scores, -inf), as quant_pre_process does."""
    model = onnx.ModelProto.FromString(exports["gpt"].SerializeToString())
    producer = {o: n for n in model.graph.node for o in n.output}
    for where in [n for n in model.graph.node if n.op_type == "Where"]:
        negate = producer[where.input[0]]
        where.input[:] = [negate.input[0], where.input[2], where.input[1]]
    fused, count = fuse_attention(model)
    assert count == sum(n.op_type == "Softmax" for n in model.graph.node)
    assert {unidirectional(n) for n in attention_nodes(fused)} == {1}
    np.testing.assert_allclose(outputs(fused, tokens()), outputs(exports["gpt"], tokens()), rtol=1e-5, atol=1e-5)


def _first(model, op_type):
    return next(n for n in model.graph.node if n.op_type == op_type)


def _set_constant(model, name, value):
    tensor = next(t for t in model.graph.initializer if t.name == name)
    tensor.CopyFrom(numpy_helper.from_array(value.astype(numpy_helper.to_array(tensor).dtype), name))


def _another_scale(model):
    _set_constant(model, _first(model, "Div").input[1], np.array(3.0))


def _upper_triangle_mask(model):
    slice_ = next(n for n in model.graph.node if n.op_type == "Slice" and n.input[0] in {t.name for t in model.graph.initializer})
    mask = numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == slice_.input[0]))
    _set_constant(model, slice_.input[0], np.triu(np.ones(mask.shape, dtype=bool)))


def _scores_read_elsewhere(model):
    model.graph.output.append(onnx.helper.make_tensor_value_info(_first(model, "Softmax").output[0], onnx.TensorProto.FLOAT, None))


@pytest.mark.parametrize("change", [_another_scale, _upper_triangle_mask, _scores_read_elsewhere])
def test_a_block_that_differs_stays_as_it_is(exports, change):
    model = onnx.ModelProto.FromString(exports["gpt"].SerializeToString())
    change(model)
    blocks = sum(n.op_type == "Softmax" for n in model.graph.node)
    fused, count = fuse_attention(model)
    assert count < blocks  # the changed block (the first, or every one sharing the changed constant) is not fused
    np.testing.assert_allclose(outputs(fused, tokens())[:1], outputs(model, tokens())[:1], rtol=1e-5, atol=1e-5)


def test_a_graph_without_attention_is_returned_unchanged(lenet_onnx):
    model = onnx.load(str(lenet_onnx))
    fused, count = fuse_attention(model)
    assert count == 0 and fused.SerializeToString() == model.SerializeToString()
