"""Models for the server tests, made once: besides the zoo LeNet (tests/conftest.py), two small ONNX
graphs that show what LeNet cannot: a model that fails at run time on some values, and a fixed batch."""

import onnx
import pytest
from onnx import TensorProto, helper

from toolkit.serve import BackgroundServer, BatchPolicy, build_app


def _save(graph, path):
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="session")
def gather_onnx(tmp_path_factory):
    """y = GatherElements(x, idx, axis=1): two inputs on a dynamic batch; an index past 3 makes ONNX Runtime fail."""
    graph = helper.make_graph(
        [helper.make_node("GatherElements", ["x", "idx"], ["y"], axis=1)], "gather",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4]),
         helper.make_tensor_value_info("idx", TensorProto.INT64, ["batch", 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1])],
    )
    return _save(graph, tmp_path_factory.mktemp("gather") / "gather.onnx")


@pytest.fixture(scope="session")
def fixed_onnx(tmp_path_factory):
    """y = x + 1 on a fixed (2, 3) input: no batch axis to stack requests on."""
    one = helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "one"], ["y"])], "fixed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])], initializer=[one],
    )
    return _save(graph, tmp_path_factory.mktemp("fixed") / "fixed.onnx")


MAX_BODY_BYTES = 64 * 1024


@pytest.fixture(scope="session")
def server(lenet_onnx, lenet_artifact, gather_onnx, fixed_onnx):
    """One server for the protocol tests: LeNet from ONNX and from its TVM artifact, gather, fixed."""
    app = build_app(
        [str(lenet_onnx), f"lenet_tvm={lenet_artifact}", str(gather_onnx), str(fixed_onnx)],
        BatchPolicy(max_batch_size=8, max_delay_ms=5), max_body_bytes=MAX_BODY_BYTES,
    )
    with BackgroundServer(app) as running:
        yield running
