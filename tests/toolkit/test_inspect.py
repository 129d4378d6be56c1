import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from toolkit.inspect import count_flops, graph_cost, inspect_model, inspect_path


def _gemm_model(batch="batch", *sequence):
    weight = numpy_helper.from_array(np.zeros((64, 10), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"]), helper.make_node("Relu", ["y"], ["z"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, *sequence, 64])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [batch, *sequence, 10])],
        initializer=[weight],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_flops_count_matmul_at_batch_one():
    assert count_flops(_gemm_model()) == 2 * 64 * 10
    assert count_flops(_gemm_model(batch=4)) == 4 * 2 * 64 * 10


def test_graph_cost_counts_flops_and_bytes_at_a_batch():
    cost = graph_cost(_gemm_model(), batch=8)
    assert cost["flops"] == 8 * 2 * 64 * 10
    x, w, y = 8 * 64 * 4, 64 * 10 * 4, 8 * 10 * 4
    assert cost["weight_bytes"] == w
    assert cost["bytes"] == (x + w + y) + (y + y)  # MatMul reads x and w, writes y; Relu reads y, writes z
    assert cost["bytes_min"] == w + x + y


def test_graph_cost_takes_every_symbolic_dim_from_the_shapes_fed():
    # a GPT's sequence is its own dim: bound to the batch, batch 1 would count one token
    model = _gemm_model("batch", "sequence")
    assert graph_cost(model, batch=2, shapes={"x": (2, 64, 64)})["flops"] == 2 * 64 * 2 * 64 * 10
    assert graph_cost(model, batch=2)["flops"] == 2 * 2 * 2 * 64 * 10  # no shapes: every symbol is the batch


def test_report_lists_io_params_ops_and_support():
    info = inspect_model(_gemm_model())
    assert info["inputs"] == [{"name": "x", "shape": ["batch", 64], "dtype": "float32"}]
    assert info["parameters"] == 640
    assert info["ops"] == [
        {"op": "MatMul", "count": 1, "ort": True, "tvm": True},
        {"op": "Relu", "count": 1, "ort": True, "tvm": True},
    ]


def test_ops_tvm_cannot_import_are_marked():
    graph = helper.make_graph(
        [helper.make_node("LSTM", ["x", "w", "r"], ["y"], hidden_size=4), helper.make_node("Det", ["m"], ["d"])], "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in (("x", [3, 1, 2]), ("w", [1, 16, 2]), ("r", [1, 16, 4]), ("m", [2, 2]))],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("y", "d")],
    )
    info = inspect_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)]))
    assert info["ops"] == [  # dltk lowers LSTM into ops TVM imports; nothing does that for Det
        {"op": "Det", "count": 1, "ort": True, "tvm": False},
        {"op": "LSTM", "count": 1, "ort": True, "tvm": True},
    ]


def test_lenet_flops_and_artifact_details(lenet_artifact):
    info = inspect_path(lenet_artifact)
    # conv1 2*16*8*8*9 + conv2 2*32*4*4*16*9 + fc 2*128*64 + 2*64*10
    assert info["flops_batch1"] == 18432 + 147456 + 16384 + 1280
    assert info["metadata"]["dltk.model"] == "lenet"
    assert info["artifact"]["verification"]["status"] == "passed"
    assert info["artifact"]["device"] == "cpu"


def _model_with_ops_tvm_lacks():
    """Det and a Loop (ONNX ops TVM has no converter for, one inside an If branch), a custom-domain op
    twice, and a custom-domain op that shares an ONNX op's name."""
    def value(name, dtype=TensorProto.FLOAT, shape=(2, 2)):
        return helper.make_tensor_value_info(name, dtype, list(shape))

    loop_body = helper.make_graph([helper.make_node("Identity", ["c"], ["c_out"])], "body",
                                  [value("i", TensorProto.INT64, []), value("cond", TensorProto.BOOL, []), value("c")],
                                  [value("cond", TensorProto.BOOL, []), value("c_out")])
    branch = helper.make_graph([helper.make_node("Loop", ["n", "", "m"], ["looped"], body=loop_body, name="inner_loop")],
                               "then", [], [value("looped")])
    kept = helper.make_graph([helper.make_node("Identity", ["m"], ["kept"])], "else", [], [value("kept")])
    nodes = [
        helper.make_node("Det", ["m"], ["d"], name="det"),
        helper.make_node("Scale", ["m"], ["s1"], domain="my.ops", name="scale_1"),
        helper.make_node("Scale", ["s1"], ["s2"], domain="my.ops", name="scale_2"),
        helper.make_node("Relu", ["s2"], ["r"], domain="my.ops", name="my_relu"),
        helper.make_node("Abs", ["r"], ["a"]),
        helper.make_node("If", ["flag"], ["branch"], then_branch=branch, else_branch=kept),
    ]
    graph = helper.make_graph(nodes, "g", [value("m"), value("flag", TensorProto.BOOL, []), value("n", TensorProto.INT64, [])],
                              [value("d", shape=[]), value("a"), value("branch")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("my.ops", 2)])


def test_every_op_tvm_cannot_import_is_named_with_its_opset_and_domain():
    info = inspect_model(_model_with_ops_tvm_lacks())
    assert info["tvm_unsupported"] == [
        {"op": "Det", "domain": "", "opset": 18, "count": 1, "first_node": "det"},
        {"op": "Scale", "domain": "my.ops", "opset": 2, "count": 2, "first_node": "scale_1"},
        {"op": "Relu", "domain": "my.ops", "opset": 2, "count": 1, "first_node": "my_relu"},
        {"op": "Loop", "domain": "", "opset": 18, "count": 1, "first_node": "inner_loop"},
    ]
    support = {o["op"]: o["tvm"] for o in info["ops"]}
    assert support == {"Det": False, "my.ops.Scale": False, "my.ops.Relu": False, "Abs": True, "If": True}


def test_cli_inspect_names_the_ops_tvm_cannot_import(tmp_path):
    from click.testing import CliRunner

    from toolkit.cli import cli

    path = tmp_path / "m.onnx"
    onnx.save(_model_with_ops_tvm_lacks(), path)
    result = CliRunner().invoke(cli, ["inspect", str(path)])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())  # rich wraps long lines at the terminal's width
    line = text[text.index("TVM cannot import it: no TVM converter for 4 ops"):]
    for part in ("Det (opset 18; node det)", "Scale (domain my.ops v2; 2 nodes, first scale_1)",
                 "Relu (domain my.ops v2; node my_relu)", "Loop (opset 18; node inner_loop)"):
        assert part in line
