"""The Ray Serve application on a local Ray instance: the same v2 routes, Ray's batching, two replicas."""

import asyncio
import socket

import httpx
import numpy as np
import pytest

from tests.toolkit.serve.helpers import output_array, v2_request
from toolkit import runtime

ray = pytest.importorskip("ray", reason="the ray extra is not installed")


@pytest.fixture(scope="module")
def ray_app(lenet_onnx):
    from ray import serve

    from deploy.ray_serve import build

    with socket.socket() as s:  # Ray Serve binds the port itself: pick a free one
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        app = build([f"digits={lenet_onnx}"], replicas=2, max_batch_size=16, max_delay_ms=50, cpus_per_replica=0.5)
        serve.run(app, name="dltk", route_prefix="/")
        yield f"http://127.0.0.1:{port}", serve.get_deployment_handle("digits", app_name="dltk")
    finally:
        serve.shutdown()
        ray.shutdown()


async def _post_all(url, bodies):
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=len(bodies))) as client:
        return await asyncio.gather(*(client.post(url, json=body) for body in bodies))


def test_ray_serve_speaks_v2_and_batches_across_replicas(ray_app, lenet_onnx):
    url, handle = ray_app
    meta = httpx.get(f"{url}/v2/models/digits", timeout=30).json()
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 1, 8, 8]}]
    assert httpx.get(f"{url}/v2/health/ready").status_code == 200

    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal((1 + i % 2, 1, 8, 8)).astype(np.float32) for i in range(40)]
    responses = asyncio.run(_post_all(f"{url}/v2/models/digits/infer", [v2_request(input=x) for x in inputs]))
    reference = runtime.load(lenet_onnx)
    for x, response in zip(inputs, responses):
        assert response.status_code == 200, response.text
        np.testing.assert_allclose(output_array(response.json(), "logits"), reference.run({"input": x})["logits"],
                                   rtol=1e-4, atol=1e-5)

    batch_rows = [n for _ in range(8) for n in handle.stats.remote().result()["batch_rows"]]
    assert max(batch_rows) > 1  # Ray's batcher stacked requests

    bad = httpx.post(f"{url}/v2/models/digits/infer", json=v2_request(input=np.zeros((1, 1, 8, 9), np.float32)))
    assert bad.status_code == 400 and "input 'input'" in bad.json()["error"]
    assert httpx.post(f"{url}/v2/models/lenet/infer", json=v2_request(input=inputs[0])).status_code == 404
    assert 'dltk_requests_total{code="200",model="digits"}' in httpx.get(f"{url}/metrics").text
