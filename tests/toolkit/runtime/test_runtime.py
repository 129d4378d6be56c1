import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from toolkit import runtime
from toolkit.errors import DltkError
from toolkit.runtime import TensorSpec, random_feeds, validate_feeds


@pytest.fixture(scope="module", params=["onnx", "artifact"])
def session(request, lenet_onnx, lenet_artifact):
    if request.param == "onnx":
        return runtime.load(lenet_onnx)
    return runtime.load(lenet_artifact, backend="tvm")


def test_backend_is_chosen_from_the_path(lenet_onnx, lenet_artifact):
    assert runtime.load(lenet_onnx).backend == "ort"
    chosen = runtime.open_artifact(lenet_artifact).manifest["engine"]["chosen"]
    assert chosen in ("tvm", "ort")
    assert runtime.load(lenet_artifact).backend == chosen  # the engine compile measured fastest
    assert runtime.load(lenet_artifact, backend="tvm").backend == "tvm"
    assert runtime.load(lenet_artifact, backend="ort").backend == "ort"


def test_inputs_and_outputs_are_described(session):
    assert session.inputs == [TensorSpec("input", ("batch", 1, 8, 8), "float32")]
    assert session.outputs == [TensorSpec("logits", ("batch", 10), "float32")]


def test_ort_and_tvm_agree(lenet_onnx, lenet_artifact):
    feeds = random_feeds(runtime.load(lenet_onnx).inputs, {"batch": 5}, seed=1)
    ort_out = runtime.load(lenet_onnx).run(feeds)["logits"]
    tvm_out = runtime.load(lenet_artifact, backend="tvm").run(feeds)["logits"]
    assert ort_out.shape == (5, 10)
    np.testing.assert_allclose(tvm_out, ort_out, atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize(
    "feeds, message",
    [
        ({"image": np.zeros((1, 1, 8, 8), np.float32)}, "unknown input 'image'.*'input'"),
        ({}, "missing input 'input'.*\\(batch, 1, 8, 8\\)"),
        ({"input": np.zeros((1, 1, 8, 8), np.float64)}, "input 'input' has dtype float64.*expected float32"),
        ({"input": np.zeros((1, 8, 8), np.float32)}, "input 'input' has shape \\(1, 8, 8\\).*expected \\(batch, 1, 8, 8\\)"),
        ({"input": np.zeros((2, 1, 8, 9), np.float32)}, "has shape \\(2, 1, 8, 9\\)"),
    ],
)
def test_wrong_feeds_raise_a_value_error_naming_the_input(session, feeds, message):
    with pytest.raises(ValueError, match=message):
        session.run(feeds)


def test_symbolic_dims_must_agree_across_inputs():
    specs = [TensorSpec("a", ("batch", 2), "float32"), TensorSpec("b", ("batch",), "int64")]
    validate_feeds(specs, {"a": np.zeros((3, 2), np.float32), "b": np.zeros(3, np.int64)})
    with pytest.raises(ValueError, match="input 'b' has shape \\(4\\)"):
        validate_feeds(specs, {"a": np.zeros((3, 2), np.float32), "b": np.zeros(4, np.int64)})


def test_session_is_safe_from_several_threads(session):
    batches = [random_feeds(session.inputs, {"batch": 1 + i % 4}, seed=i) for i in range(16)]
    expected = [session.run(feeds)["logits"] for feeds in batches]
    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(lambda feeds: session.run(feeds)["logits"], batches * 4))
    for i, value in enumerate(got):
        np.testing.assert_array_equal(value, expected[i % 16])


def test_load_refuses_what_it_cannot_run(tmp_path, lenet_onnx):
    with pytest.raises(DltkError, match="no such file or directory"):
        runtime.load(tmp_path / "nothing.onnx")
    with pytest.raises(DltkError, match="not a dltk artifact"):
        runtime.load(tmp_path)
    with pytest.raises(DltkError, match="is an ONNX file, not a compiled artifact"):
        runtime.load(lenet_onnx, backend="tvm")
    bad = tmp_path / "bad.onnx"
    bad.write_text("not onnx")
    with pytest.raises(DltkError, match="ONNX Runtime cannot load"):
        runtime.load(bad)


def test_importing_the_runtime_pulls_in_neither_torch_nor_tvm():
    code = "import sys, toolkit.runtime; print(sorted(m for m in ('torch', 'tvm', 'onnx') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_onnx_session_runs_without_torch_or_tvm(lenet_onnx):
    code = (
        "import sys, numpy as np; from toolkit import runtime; "
        f"s = runtime.load({str(lenet_onnx)!r}); "
        "print(s.run({'input': np.zeros((2, 1, 8, 8), np.float32)})['logits'].shape, "
        "'torch' in sys.modules, 'tvm' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "(2, 10) False False"


def test_dlpack_hand_off_shares_memory_both_ways(lenet_artifact, monkeypatch):
    """run_dlpack passes the caller's tensor to TVM as is and returns TVM's own output, no copies."""
    import torch

    session = runtime.load(lenet_artifact, backend="tvm")
    x = torch.randn(3, 1, 8, 8)
    handed, function_of = [], session._function

    def recording(name):
        function = function_of(name)

        def call(*args):
            handed.extend(args)
            return function(*args)

        return call

    monkeypatch.setattr(session, "_function", recording)
    outputs = session.run_dlpack({"input": x})

    (tensor,) = handed
    assert tensor.data_ptr() == x.data_ptr()  # the input went in through DLPack, not copied
    logits = outputs["logits"]
    as_torch = torch.from_dlpack(logits)
    assert as_torch.data_ptr() == logits.data_ptr() and as_torch.shape == (3, 10)  # and came out the same way
    np.testing.assert_allclose(as_torch.numpy(), session.run({"input": x.numpy()})["logits"], atol=1e-6)

    with pytest.raises(DltkError, match="input 'input' has shape \\(3, 8, 8\\)"):
        session.run_dlpack({"input": torch.randn(3, 8, 8)})
    with pytest.raises(DltkError, match="input 'input' has dtype float64"):
        session.run_dlpack({"input": torch.randn(3, 1, 8, 8, dtype=torch.float64)})
    with pytest.raises(DltkError, match="input 'input' is not contiguous"):
        session.run_dlpack({"input": torch.randn(3, 1, 8, 16)[..., ::2]})  # every other column: strided
    with pytest.raises(DltkError, match="input 'input' cannot be handed to TVM through DLPack"):
        session.run_dlpack({"input": [[1.0]]})  # no DLPack at all


def test_ort_refuses_to_run_on_a_provider_it_fell_back_to(tmp_path, monkeypatch):
    """ONNX Runtime runs on the next provider, with a log line only, when the first fails to start
    (its CUDA provider without CUDA libraries): the session refuses instead of timing the CPU."""
    import onnx
    from onnx import TensorProto, helper

    from toolkit.runtime import ort as ort_runtime

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), tmp_path / "relu.onnx")
    first = next(p for p in ort_runtime.ort.get_available_providers() if p != "CPUExecutionProvider")

    class FellBack(ort_runtime.ort.InferenceSession):
        def get_providers(self):
            return ["CPUExecutionProvider"]

    monkeypatch.setattr(ort_runtime.ort, "InferenceSession", FellBack)
    with pytest.raises(DltkError, match=f"could not start its {first}; it would run on CPUExecutionProvider"):
        ort_runtime.OrtSession(tmp_path / "relu.onnx", providers=[first, "CPUExecutionProvider"])
