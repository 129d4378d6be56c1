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
