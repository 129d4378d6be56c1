"""dltk serve with a quantized model: the server answers what the int8 file computes locally."""

import httpx
import numpy as np
import pytest

import models
from tests.toolkit.serve.helpers import output_array, v2_request
from toolkit import runtime
from toolkit.quantize import QuantizeOptions, quantize_model
from toolkit.serve import BackgroundServer, BatchPolicy, build_app


@pytest.fixture(scope="module")
def quantized_lenet(lenet_onnx, tmp_path_factory):
    """LeNet in both int8 modes: static QDQ (what --mode auto makes of it) and dynamic."""
    directory = tmp_path_factory.mktemp("quantized")
    paths = {"int8": directory / "lenet.int8.onnx", "int8_dynamic": directory / "lenet.int8-dynamic.onnx"}
    quantize_model(lenet_onnx, paths["int8"], QuantizeOptions(mode="static", calibration=16, per_op_report=False))
    quantize_model(lenet_onnx, paths["int8_dynamic"], QuantizeOptions(mode="dynamic", per_op_report=False))
    return paths


def test_a_quantized_model_is_served_with_the_answers_it_gives_locally(quantized_lenet, lenet_onnx):
    x = models.get("lenet").data().test_x[:5].numpy()
    fp32 = runtime.load(lenet_onnx).run({"input": x})["logits"]
    app = build_app([f"{name}={path}" for name, path in quantized_lenet.items()], BatchPolicy(max_batch_size=8, max_delay_ms=5))
    with BackgroundServer(app) as server:
        for name, path in quantized_lenet.items():
            response = httpx.post(f"{server.url}/v2/models/{name}/infer", json=v2_request(input=x))
            assert response.status_code == 200, response.text
            served = output_array(response.json(), "logits")
            np.testing.assert_allclose(served, runtime.load(path).run({"input": x})["logits"], rtol=1e-5, atol=1e-5)
            # the int8 graph answered, not an fp32 one: close to fp32 but not equal to it
            assert not np.allclose(served, fp32, rtol=1e-5, atol=1e-5)
            assert (served.argmax(1) == fp32.argmax(1)).mean() >= 0.8
            metadata = httpx.get(f"{server.url}/v2/models/{name}").json()
            assert metadata["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 1, 8, 8]}]
