"""`dltk debug reduce`: a failing graph bisected to the node that fails."""

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from toolkit.cli import cli
from toolkit.errors import DltkError
from toolkit.reduce import reduce_model

LAYERS = 10
PLANTED = LAYERS // 2  # the layer whose activation is Sigmoid, and where the Det goes


def layered(with_det: bool) -> onnx.ModelProto:
    """LAYERS x (MatMul, activation), with a Reshape whose shape is computed from the input, and
    optionally a Det (TVM has no converter for it) feeding an Add in layer PLANTED."""
    rng = np.random.default_rng(0)
    nodes, initializers, x = [], [], "x"
    nodes.append(helper.make_node("Shape", ["x"], ["x_shape"], name="shape"))
    for i in range(LAYERS):
        initializers.append(numpy_helper.from_array((0.5 * rng.standard_normal((4, 4))).astype(np.float32), f"w{i}"))
        nodes.append(helper.make_node("MatMul", [x, f"w{i}"], [f"m{i}"], name=f"matmul_{i}"))
        nodes.append(helper.make_node("Sigmoid" if i == PLANTED else "Tanh", [f"m{i}"], [f"t{i}"], name=f"act_{i}"))
        x = f"t{i}"
        if i == PLANTED and with_det:
            initializers.append(numpy_helper.from_array(np.array([-1, -2], np.int64), "axes"))
            nodes += [helper.make_node("Det", [x], ["det"], name="planted_det"),
                      helper.make_node("Unsqueeze", ["det", "axes"], ["det_2d"], name="unsqueeze"),
                      helper.make_node("Add", [x, "det_2d"], ["with_det"], name="add_det")]
            x = "with_det"
    nodes.append(helper.make_node("Reshape", [x, "x_shape"], ["y"], name="reshape"))
    graph = helper.make_graph(nodes, "layered", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 4])], initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_import_failure_is_reduced_to_the_op_tvm_lacks(tmp_path):
    source = tmp_path / "det.onnx"
    onnx.save(layered(with_det=True), source)
    result = CliRunner().invoke(cli, ["debug", "reduce", str(source), "-o", str(tmp_path / "min.onnx")])
    assert result.exit_code == 0, result.output
    assert "import failure reduced from 25 to 1 nodes" in result.output
    assert "failing node planted_det (Det)" in result.output
    reduced = onnx.load(tmp_path / "min.onnx")
    onnx.checker.check_model(reduced)
    assert [n.name for n in reduced.graph.node] == ["planted_det"]
    assert [i.name for i in reduced.graph.input] == ["t5"]


def test_divergence_is_reduced_to_the_node_tvm_gets_wrong(monkeypatch):
    from tvm import relax
    from tvm.relax.frontend.onnx import onnx_frontend

    model = layered(with_det=False)
    with pytest.raises(DltkError, match=r"matches the reference \(nothing to reduce"):
        reduce_model(model)
    # Plant a miscompile: TVM's Sigmoid converter emits tanh.
    monkeypatch.setattr(onnx_frontend.Sigmoid, "_impl_v13",
                        classmethod(lambda cls, bb, inputs, attr, params: relax.op.tanh(inputs[0])))
    reduction = reduce_model(model)
    assert reduction.mode == "diverge"
    assert (reduction.failing_node, reduction.failing_op) == (f"act_{PLANTED}", "Sigmoid")
    assert [n.name for n in reduction.model.graph.node] == [f"act_{PLANTED}"]
    assert "tvm vs reference: DIFFER" in reduction.reason
    # The reduced graph alone still shows the planted divergence, fed with any input.
    assert reduce_model(reduction.model, mode="diverge").nodes_after == 1


def test_a_mode_the_model_does_not_fail_in_is_a_usage_error(tmp_path):
    source = tmp_path / "det.onnx"
    onnx.save(layered(with_det=True), source)
    result = CliRunner().invoke(cli, ["debug", "reduce", str(source), "--mode", "diverge", "-o", str(tmp_path / "m.onnx")])
    assert result.exit_code == 2
    assert "error: the model shows no diverge failure" in result.output
    assert not (tmp_path / "m.onnx").exists()


def with_cumsum() -> onnx.ModelProto:
    """MatMul/Tanh layers around a CumSum over a dynamic sequence, as RoBERTa computes its position ids."""
    rng = np.random.default_rng(0)
    nodes, initializers, x = [], [numpy_helper.from_array(np.array(1, np.int64), "axis")], "x"
    for i in range(2):
        initializers.append(numpy_helper.from_array((0.5 * rng.standard_normal((4, 4))).astype(np.float32), f"w{i}"))
        nodes.append(helper.make_node("MatMul", [x, f"w{i}"], [f"m{i}"], name=f"matmul_{i}"))
        nodes.append(helper.make_node("Tanh", [f"m{i}"], [f"t{i}"], name=f"act_{i}"))
        x = f"t{i}"
        if i == 0:
            nodes.append(helper.make_node("CumSum", [x, "axis"], ["summed"], name="planted_cumsum"))
            x = "summed"
    graph = helper.make_graph(nodes, "cumsum", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "sequence", 4])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["batch", "sequence", 4])], initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_compile_failure_is_reduced_to_the_kernel_tvm_cannot_build(tmp_path, monkeypatch):
    from tvm import relax

    from toolkit import tune

    source = tmp_path / "cumsum.onnx"
    onnx.save(with_cumsum(), source)
    # dltk's build pipeline takes the CumSum kernel (toolkit.tune.split_layout_rewrites) ...
    result = CliRunner().invoke(cli, ["debug", "reduce", str(source), "--mode", "compile", "-o", str(tmp_path / "none.onnx")])
    assert result.exit_code == 2 and "shows no compile failure" in result.output, result.output
    # ... which TVM's SplitLayoutRewritePreproc, shown every kernel, refuses.
    monkeypatch.setattr(tune, "split_layout_rewrites", lambda mod: relax.transform.SplitLayoutRewritePreproc()(mod))
    result = CliRunner().invoke(cli, ["debug", "reduce", str(source), "--mode", "compile", "-o", str(tmp_path / "min.onnx")])
    assert result.exit_code == 0, result.output
    assert "compile failure reduced from 5 to 1 nodes" in result.output
    assert "failing node planted_cumsum (CumSum)" in result.output
    assert "There should be a compute block" in result.output
    reduced = onnx.load(tmp_path / "min.onnx")
    assert [n.op_type for n in reduced.graph.node] == ["CumSum"]
