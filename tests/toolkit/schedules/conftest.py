"""Helpers for the schedule rules' tests: one-node ONNX graphs, compiled as `dltk compile` does."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from toolkit.target import host_cpu

# Two cores whatever runs the suite, so the parallel branch of each rule is exercised.
TARGET = dict(host_cpu(), **{"num-cores": 2})


def one_node_model(op: str, inputs: dict, weights: dict, output_rank: int, **attrs) -> onnx.ModelProto:
    """A graph of one `op`: `inputs` name -> shape (a str dim is symbolic), `weights` name -> array."""
    node = helper.make_node(op, [*inputs, *weights], ["y"], **attrs)
    graph = helper.make_graph(
        [node], op.lower(),
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape) for name, shape in inputs.items()],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None] * output_rank)],
        [numpy_helper.from_array(w.astype(np.float32), name) for name, w in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    return model


def with_relu(model: onnx.ModelProto) -> onnx.ModelProto:
    """The same graph with a Relu after its output (an epilogue the rules fuse)."""
    graph = model.graph
    graph.node[-1].output[0] = "pre"
    graph.node.append(helper.make_node("Relu", ["pre"], ["y"]))
    return model


def scheduled_rules(model: onnx.ModelProto) -> dict[str, str | None]:
    """Kernel name -> the rule that scheduled it (None: TVM's default)."""
    import tvm

    from toolkit import schedules, tune
    from toolkit.compile import import_onnx

    target = tvm.target.Target(TARGET)
    fused = tune.fuse(import_onnx(model), target)
    with target:
        scheduled = schedules.apply(fused, target)
    return {gv.name_hint: schedules.rule_of(f) for gv, f in scheduled.functions_items() if isinstance(f, tvm.tirx.PrimFunc)}


def scheduled_scripts(model: onnx.ModelProto) -> str:
    import tvm

    from toolkit import schedules, tune
    from toolkit.compile import import_onnx

    target = tvm.target.Target(TARGET)
    with target:
        scheduled = schedules.apply(tune.fuse(import_onnx(model), target), target)
    return "\n".join(f.script() for _, f in scheduled.functions_items() if isinstance(f, tvm.tirx.PrimFunc))


def assert_matches_onnxruntime(model: onnx.ModelProto, feeds_per_run: list[dict]) -> None:
    """Compile with the records-then-rules pipeline and compare with ONNX Runtime on each feed."""
    import tvm
    from tvm import relax

    from toolkit import tune
    from toolkit.compile import import_onnx

    prepared = tune.prepare(import_onnx(model), TARGET, [], tune.TuneOptions(shipped=False))
    vm = relax.VirtualMachine(tune.build(prepared, TARGET), tvm.cpu())
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for feeds in feeds_per_run:
        expected = session.run(None, feeds)[0]
        got = vm["main"](*[tvm.runtime.tensor(x) for x in feeds.values()]).numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


@pytest.fixture
def rng():
    return np.random.default_rng(0)
