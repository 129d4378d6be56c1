import numpy as np
from onnx import TensorProto, helper, numpy_helper

from toolkit.inspect import count_flops, graph_cost, inspect_model, inspect_path


def _gemm_model(batch="batch"):
    weight = numpy_helper.from_array(np.zeros((64, 10), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"]), helper.make_node("Relu", ["y"], ["z"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 64])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [batch, 10])],
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
