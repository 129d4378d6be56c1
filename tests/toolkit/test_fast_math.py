"""The fast-math rewrite (toolkit/fast_math.py): exp, tanh, sigmoid and erf compiled to polynomials
match ONNX Runtime, edge values included, and no call to the libm functions is left."""

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from tests.toolkit.schedules.conftest import TARGET

OPS = ("Exp", "Tanh", "Sigmoid", "Erf")


def _model(length: int):
    """x -> one output per op, and GELU (x * 0.5 * (1 + erf(x / sqrt 2))) as GPT exports it."""
    nodes = [helper.make_node(op, ["x"], [op.lower()]) for op in OPS]
    nodes += [
        helper.make_node("Div", ["x", "sqrt2"], ["scaled"]),
        helper.make_node("Erf", ["scaled"], ["e"]),
        helper.make_node("Add", ["e", "one"], ["e1"]),
        helper.make_node("Mul", ["x", "e1"], ["xe"]),
        helper.make_node("Mul", ["xe", "half"], ["gelu"]),
    ]
    constants = [helper.make_tensor(n, TensorProto.FLOAT, [], [v]) for n, v in (("sqrt2", 2**0.5), ("one", 1.0), ("half", 0.5))]
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [length]) for n in [op.lower() for op in OPS] + ["gelu"]]
    graph = helper.make_graph(nodes, "fast_math", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [length])], outputs, constants)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    return model


@pytest.fixture(scope="module")
def compiled():

    from toolkit import tune
    from toolkit.compile import import_onnx

    values = np.concatenate([np.linspace(-100, 100, 601), np.linspace(-10, 10, 401), np.linspace(-1e-3, 1e-3, 51),
                             [0.0, -0.0, 88.0, -88.0, 89.0, -104.0, np.inf, -np.inf, np.nan]]).astype(np.float32)
    model = _model(len(values))
    executable = tune.build(tune.prepare(import_onnx(model), TARGET, [], tune.TuneOptions(shipped=False)), TARGET)
    return model, executable, values


def test_matches_onnxruntime_on_edge_values_and_nan(compiled):
    import tvm
    from tvm import relax

    model, executable, x = compiled
    expected = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    got = relax.VirtualMachine(executable, tvm.cpu())["main"](tvm.runtime.tensor(x))
    for name, want, have in zip([*OPS, "GELU"], expected, [t.numpy() for t in got]):
        np.testing.assert_array_equal(np.isnan(have), np.isnan(want), err_msg=f"NaN positions of {name}")
        np.testing.assert_allclose(have, want, rtol=1e-5, atol=1e-6, err_msg=name)


def test_no_libm_call_is_left(compiled):
    _, executable, _ = compiled
    llvm = executable.mod.imports[0].inspect_source("ll")
    for function in ("erff", "expf", "tanhf", "llvm.exp."):
        assert function not in llvm
