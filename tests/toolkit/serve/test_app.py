"""The v2 routes on a real server (uvicorn on a free loopback port): conformance, bad requests, errors."""

import asyncio
import json

import httpx
import numpy as np
import pytest

from tests.toolkit.serve.conftest import MAX_BODY_BYTES
from tests.toolkit.serve.helpers import output_array, v2_request
from toolkit import runtime
from toolkit.serve import BackgroundServer, BatchPolicy, build_app


def digits(batch, seed=0):
    return np.random.default_rng(seed).standard_normal((batch, 1, 8, 8)).astype(np.float32)


def test_health_and_server_metadata(server):
    assert httpx.get(f"{server.url}/v2/health/live").json() == {"live": True}
    assert httpx.get(f"{server.url}/v2/health/ready").json() == {"ready": True}
    meta = httpx.get(f"{server.url}/v2").json()
    assert meta["name"] == "dltk" and "version" in meta and isinstance(meta["extensions"], list)


def test_repository_index_lists_every_model(server):
    index = httpx.post(f"{server.url}/v2/repository/index").json()
    assert sorted(m["name"] for m in index) == ["fixed", "gather", "lenet", "lenet_tvm"]
    assert all(m["state"] == "READY" for m in index)


@pytest.mark.parametrize("path", ["/v2/models/lenet", "/v2/models/lenet/versions/1"])
def test_model_metadata_names_tensors_with_v2_types(server, path, lenet_artifact):
    meta = httpx.get(server.url + path).json()
    assert meta == {
        "name": "lenet", "versions": ["1"], "platform": "onnxruntime_onnx",
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 1, 8, 8]}],
        "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]}],
    }
    # an artifact is served by the engine its compile measured fastest
    chosen = runtime.open_artifact(lenet_artifact).manifest["engine"]["chosen"]
    platform = {"tvm": "tvm_relax", "ort": "onnxruntime_onnx"}[chosen]
    assert httpx.get(f"{server.url}/v2/models/lenet_tvm").json()["platform"] == platform
    assert httpx.get(f"{server.url}/v2/models/gather").json()["inputs"][1] == {"name": "idx", "datatype": "INT64", "shape": [-1, 1]}


@pytest.mark.parametrize("path", ["/v2/models/lenet/ready", "/v2/models/lenet/versions/1/ready"])
def test_model_ready(server, path):
    response = httpx.get(server.url + path)
    assert response.status_code == 200 and response.json() == {"name": "lenet", "ready": True}


@pytest.mark.parametrize("model", ["lenet", "lenet_tvm"])
def test_infer_answers_what_the_runtime_computes(server, model, lenet_onnx):
    x = digits(3)
    body = dict(v2_request(input=x), id="req-7")
    for path in (f"/v2/models/{model}/infer", f"/v2/models/{model}/versions/1/infer"):
        response = httpx.post(server.url + path, json=body)
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["model_name"] == model and answer["model_version"] == "1" and answer["id"] == "req-7"
        assert answer["outputs"][0]["datatype"] == "FP32" and answer["outputs"][0]["shape"] == [3, 10]
        expected = runtime.load(lenet_onnx).run({"input": x})["logits"]
        np.testing.assert_allclose(output_array(answer, "logits"), expected, rtol=1e-4, atol=1e-5)


def test_infer_with_two_inputs_and_requested_outputs(server):
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    body = dict(v2_request(x=x, idx=np.array([[1], [3]])), outputs=[{"name": "y"}])
    answer = httpx.post(f"{server.url}/v2/models/gather/infer", json=body).json()
    assert answer["outputs"] == [{"name": "y", "shape": [2, 1], "datatype": "FP32", "data": [1.0, 7.0]}]


def test_nested_data_is_accepted_as_the_spec_allows(server):
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    body = {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": x.tolist()},
                       {"name": "idx", "shape": [2, 1], "datatype": "INT64", "data": [[0], [2]]}]}
    assert httpx.post(f"{server.url}/v2/models/gather/infer", json=body).json()["outputs"][0]["data"] == [0.0, 6.0]


def test_fixed_batch_model_is_served_unbatched(server):
    x = np.ones((2, 3), dtype=np.float32)
    answer = httpx.post(f"{server.url}/v2/models/fixed/infer", json=v2_request(x=x)).json()
    assert answer["outputs"][0]["data"] == [2.0] * 6
    assert httpx.get(f"{server.url}/v2/models/fixed").json()["inputs"][0]["shape"] == [2, 3]
    assert not server.app.state.models["fixed"].batching and server.app.state.models["lenet"].batching


def _with(body, **changes):
    tensor = dict(body["inputs"][0], **changes)
    return {"inputs": [tensor]}


GOOD = v2_request(input=digits(1))


@pytest.mark.parametrize("body, words", [
    (_with(GOOD, name="image"), ["unknown input 'image'", "input"]),
    (_with(GOOD, shape=[1, 1, 4, 16]), ["input 'input'", "(1, 1, 4, 16)", "(batch, 1, 8, 8)"]),
    (_with(GOOD, shape=[2, 1, 8, 8]), ["input 'input'", "128", "64"]),
    (_with(GOOD, datatype="FP64"), ["input 'input'", "FP64", "FP32"]),
    (_with(GOOD, datatype="STRING"), ["input 'input'", "STRING"]),
    (_with(GOOD, data=["a"] * 64), ["input 'input'", "FP32"]),
    (_with(GOOD, shape="1x64"), ["input 'input'", "shape"]),
    ({"inputs": []}, ["'inputs'"]),
    ({"input": GOOD["inputs"]}, ["'inputs'"]),
    ({"inputs": GOOD["inputs"] * 2}, ["given twice"]),
    (dict(GOOD, outputs=[{"name": "probs"}]), ["unknown output 'probs'", "logits"]),
])
def test_bad_requests_answer_400_naming_the_problem(server, body, words):
    response = httpx.post(f"{server.url}/v2/models/lenet/infer", json=body)
    assert response.status_code == 400
    message = response.json()["error"]
    for word in words:
        assert word in message


def test_missing_input_and_not_json_answer_400(server):
    response = httpx.post(f"{server.url}/v2/models/gather/infer", json=v2_request(x=np.zeros((1, 4), np.float32)))
    assert response.status_code == 400 and "missing input 'idx'" in response.json()["error"]
    response = httpx.post(f"{server.url}/v2/models/lenet/infer", content=b"{not json")
    assert response.status_code == 400 and "not JSON" in response.json()["error"]


@pytest.mark.parametrize("method, path", [
    ("GET", "/v2/models/resnet"), ("GET", "/v2/models/resnet/ready"), ("POST", "/v2/models/resnet/infer"),
    ("GET", "/v2/models/lenet/versions/2"), ("POST", "/v2/models/lenet/versions/2/infer"), ("GET", "/v3/anything"),
])
def test_unknown_models_and_routes_answer_404_json(server, method, path):
    response = httpx.request(method, server.url + path, json=GOOD)
    assert response.status_code == 404
    assert response.json()["error"]


def test_wrong_method_answers_405_json(server):
    response = httpx.get(f"{server.url}/v2/models/lenet/infer")
    assert response.status_code == 405 and "error" in response.json()


def test_body_over_the_limit_answers_413_and_the_server_stays_up(server):
    big = v2_request(input=digits(200))  # about 300 KB of JSON, over the 64 KiB limit
    response = httpx.post(f"{server.url}/v2/models/lenet/infer", json=big)
    assert response.status_code == 413 and str(MAX_BODY_BYTES) in response.json()["error"]

    def chunks():  # no Content-Length: the limit is enforced while reading
        data = json.dumps(big).encode()
        for i in range(0, len(data), 16384):
            yield data[i:i + 16384]

    response = httpx.post(f"{server.url}/v2/models/lenet/infer", content=chunks())
    assert response.status_code == 413
    assert httpx.post(f"{server.url}/v2/models/lenet/infer", json=GOOD).status_code == 200


def test_model_failing_at_run_time_answers_500_and_the_server_stays_up(server):
    x = np.zeros((1, 4), np.float32)
    response = httpx.post(f"{server.url}/v2/models/gather/infer", json=v2_request(x=x, idx=np.array([[9]])))
    assert response.status_code == 500
    assert "model 'gather' failed" in response.json()["error"] and "GatherElements" in response.json()["error"]
    ok = httpx.post(f"{server.url}/v2/models/gather/infer", json=v2_request(x=x + 5, idx=np.array([[2]])))
    assert ok.status_code == 200 and ok.json()["outputs"][0]["data"] == [5.0]


async def _post_all(url, bodies):
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=len(bodies))) as client:
        return await asyncio.gather(*(client.post(url, json=body) for body in bodies))


def test_one_bad_request_in_a_batch_fails_alone(gather_onnx):
    """A request that makes the model fail is run apart from its batch: the others still get answers."""
    app = build_app([str(gather_onnx)], BatchPolicy(max_batch_size=16, max_delay_ms=200))
    x = np.arange(4, dtype=np.float32).reshape(1, 4)
    indices = [1, 2, 9, 0, 3, 1]  # 9 is out of range
    with BackgroundServer(app) as srv:
        responses = asyncio.run(_post_all(f"{srv.url}/v2/models/gather/infer",
                                          [v2_request(x=x, idx=np.array([[i]])) for i in indices]))
    for i, response in zip(indices, responses):
        if i == 9:
            assert response.status_code == 500
        else:
            assert response.status_code == 200 and response.json()["outputs"][0]["data"] == [float(i)]


def test_concurrent_clients_get_their_own_answers_in_batches(lenet_onnx):
    """48 clients at once, each with its own input: every answer matches the runtime, and the
    metrics show that the batcher ran batches of more than one request."""
    from prometheus_client.parser import text_string_to_metric_families

    app = build_app([str(lenet_onnx)], BatchPolicy(max_batch_size=16, max_delay_ms=50))
    inputs = [digits(1 + i % 3, seed=i) for i in range(48)]
    reference = runtime.load(lenet_onnx)
    with BackgroundServer(app) as srv:
        responses = asyncio.run(_post_all(f"{srv.url}/v2/models/lenet/infer", [v2_request(input=x) for x in inputs]))
        metrics_text = httpx.get(f"{srv.url}/metrics").text
    for x, response in zip(inputs, responses):
        assert response.status_code == 200, response.text
        np.testing.assert_allclose(output_array(response.json(), "logits"), reference.run({"input": x})["logits"],
                                   rtol=1e-4, atol=1e-5)
    samples = {(s.name, s.labels.get("le")): s.value
               for family in text_string_to_metric_families(metrics_text) for s in family.samples}
    batches = samples[("dltk_batch_size_count", None)]
    assert samples[("dltk_batch_size_sum", None)] == sum(len(x) for x in inputs)  # every row ran once
    assert batches < len(inputs)  # fewer batches than requests
    assert samples[("dltk_batch_size_bucket", "1.0")] < batches  # some batch held more than one row
    assert samples[("dltk_requests_total", None)] == len(inputs)


def test_metrics_count_requests_errors_latency_and_queue_time(server):
    from prometheus_client.parser import text_string_to_metric_families

    httpx.post(f"{server.url}/v2/models/lenet/infer", json=GOOD)
    httpx.post(f"{server.url}/v2/models/lenet/infer", json=_with(GOOD, datatype="INT8"))
    httpx.post(f"{server.url}/v2/models/nope/infer", json=GOOD)
    response = httpx.get(f"{server.url}/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    requests = {(s.labels["model"], s.labels["code"]): s.value for s in families["dltk_requests"].samples if s.name.endswith("_total")}
    errors = {(s.labels["model"], s.labels["code"]): s.value for s in families["dltk_request_errors"].samples if s.name.endswith("_total")}
    assert requests[("lenet", "200")] >= 1 and requests[("lenet", "400")] >= 1 and requests[("", "404")] >= 1
    assert errors[("lenet", "400")] >= 1 and ("lenet", "200") not in errors
    for histogram in ("dltk_request_latency_seconds", "dltk_queue_time_seconds", "dltk_batch_size"):
        assert families[histogram].type == "histogram"
        count = [s.value for s in families[histogram].samples if s.name == f"{histogram}_count" and s.labels["model"] == "lenet"]
        assert count and count[0] >= 1
    assert "dltk_requests_in_flight" in families


def test_outputs_json_cannot_carry_answer_500(tmp_path):
    from onnx import TensorProto, helper

    from tests.toolkit.serve.conftest import _save

    square = _save(helper.make_graph(
        [helper.make_node("Mul", ["x", "x"], ["y"])], "square",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])]), tmp_path / "square.onnx")
    with BackgroundServer(build_app([str(square)])) as srv:
        x = np.full((2, 3), 1e30, np.float32)  # finite, and its square is not
        response = httpx.post(f"{srv.url}/v2/models/square/infer", json=v2_request(x=x))
        assert response.status_code == 500 and "NaN or infinity" in response.json()["error"]


@pytest.mark.parametrize("model", ["lenet", "lenet_tvm"])
@pytest.mark.parametrize("bad", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_input_data_answers_400_on_every_engine(server, model, bad):
    body = json.dumps(GOOD).replace(str(GOOD["inputs"][0]["data"][0]), bad, 1)
    response = httpx.post(f"{server.url}/v2/models/{model}/infer", content=body)
    assert response.status_code == 400, response.text
    assert "not JSON" in response.json()["error"] or "not a finite FP32 number" in response.json()["error"]


@pytest.mark.parametrize("data", [[True] * 64, ["1.0"] * 64, [None] * 64, [[1.0] * 8] * 7 + [[1.0] * 7 + ["x"]]])
def test_strings_booleans_and_nulls_are_not_fp32_data(server, data):
    response = httpx.post(f"{server.url}/v2/models/lenet/infer", json=_with(GOOD, data=data))
    assert response.status_code == 400 and "not a list of FP32 values" in response.json()["error"]


def test_deeply_nested_json_answers_400_and_is_counted(server):
    from prometheus_client.parser import text_string_to_metric_families

    def errors_400():
        families = text_string_to_metric_families(httpx.get(f"{server.url}/metrics").text)
        return sum(s.value for f in families if f.name == "dltk_request_errors" for s in f.samples
                   if s.name.endswith("_total") and s.labels == {"model": "lenet", "code": "400"})

    before = errors_400()
    for body in ("[" * 20_000 + "]" * 20_000, '{"inputs": ' + "[" * 20_000 + "]" * 20_000 + "}",
                 json.dumps(_with(GOOD, data=[[[[[[[[[1.0]]]]]]]]]))):
        response = httpx.post(f"{server.url}/v2/models/lenet/infer", content=body)
        assert response.status_code == 400 and "error" in response.json()
    assert errors_400() == before + 3
