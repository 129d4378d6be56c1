import numpy as np
import pytest

from toolkit.bench import OrtOptions, open_subject
from toolkit.errors import DltkError


def test_zoo_model_runs_every_backend_on_the_same_weights_and_real_data(lenet_checkpoint):
    subject = open_subject(str(lenet_checkpoint), ["torch", "ort", "tvm"])
    feeds = subject.feeds(3)
    from models import lenet

    np.testing.assert_array_equal(feeds["input"], lenet.SPEC.sample(3)[0].numpy())  # held-out digits, not noise
    outputs = {name: s.run(feeds)["logits"] for name, s in subject.sessions.items()}
    np.testing.assert_allclose(outputs["ort"], outputs["torch"], atol=1e-4, rtol=1e-3)
    np.testing.assert_allclose(outputs["tvm"], outputs["torch"], atol=1e-4, rtol=1e-3)
    assert subject.cost(1)["flops"] == 183552


def test_ort_options_reach_the_session(lenet_onnx):
    subject = open_subject(str(lenet_onnx), ["ort"], ort_options=OrtOptions("disable", ("CPUExecutionProvider",)))
    session = subject.session("ort", 1)
    assert session.providers == ["CPUExecutionProvider"]
    assert session.run(subject.feeds(2))["logits"].shape == (2, 10)


def test_an_unavailable_provider_is_a_usage_error(lenet_onnx):
    subject = open_subject(str(lenet_onnx), ["ort"], ort_options=OrtOptions(providers=("TensorrtExecutionProvider",)))
    with pytest.raises(DltkError, match="no TensorrtExecutionProvider"):
        subject.session("ort")


def _audio_model(path):
    """(batch, samples) -> a strided Conv1d of kernel 10: ONNX Runtime refuses fewer than 10 samples."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal([4, 1, 10]).astype(np.float32), "w")
    axis = numpy_helper.from_array(np.array([1], np.int64), "axis")
    graph = helper.make_graph(
        [helper.make_node("Unsqueeze", ["audio", "axis"], ["wave"]),
         helper.make_node("Conv", ["wave", "w"], ["y"], kernel_shape=[10], strides=[5])],
        "audio", [helper.make_tensor_value_info("audio", TensorProto.FLOAT, ["batch", "samples"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4, None])], [weight, axis])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_other_symbolic_dims_take_the_largest_size_the_compile_verified(tmp_path):
    from toolkit.runtime.artifact import open_artifact, verified_sizes
    from toolkit.sources import compiled_artifact

    model = _audio_model(tmp_path / "audio.onnx")
    subject = open_subject(str(model), ["ort", "tvm"])
    feeds = subject.feeds(2)  # compiles: the verified sizes are the artifact's
    samples = verified_sizes(open_artifact(compiled_artifact(model, "cpu")).manifest)["samples"]
    assert samples >= 10 and feeds["audio"].shape == (2, samples)
    outputs = {name: s.run(feeds)["y"] for name, s in subject.sessions.items()}  # 1 sample: ORT's "Invalid input shape"
    np.testing.assert_allclose(outputs["tvm"], outputs["ort"], rtol=1e-4, atol=1e-5)
    compiled = open_subject(str(compiled_artifact(model, "cpu")), ["ort", "tvm"])
    assert compiled.feeds(3)["audio"].shape == (3, samples)
    assert open_subject(str(model), ["ort"]).feeds(2)["audio"].shape == (2, 1)  # no compile, no verified size
