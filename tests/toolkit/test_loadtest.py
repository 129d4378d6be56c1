"""The load generator against a real server on loopback, and the same load in process."""

import pytest

from toolkit import runtime
from toolkit.errors import DltkError
from toolkit.loadtest import load_in_process, load_server
from toolkit.serve import BackgroundServer, BatchPolicy, build_app


@pytest.fixture(scope="module")
def lenet_server(lenet_onnx):
    app = build_app([str(lenet_onnx)], BatchPolicy(max_batch_size=8, max_delay_ms=2), max_body_bytes=32 * 1024)
    with BackgroundServer(app) as server:
        yield server


def test_closed_loop_counts_every_answered_request(lenet_server):
    result = load_server(lenet_server.url, concurrency=4, duration=0.5)
    assert result.model == "lenet" and result.scenario == "closed-loop" and result.errors == 0
    assert result.requests > 0 and result.qps == pytest.approx(result.requests / result.seconds)
    assert 0 < result.latency_ms["p50"] <= result.latency_ms["p99"] <= result.latency_ms["max"]
    served = lenet_server.app.state.metrics.requests.labels("lenet", "200")._value.get()
    assert served >= result.requests  # the server saw them all (and the warm-up)


def test_poisson_arrivals_and_json(lenet_server):
    result = load_server(lenet_server.url, model="lenet", rate=100, duration=0.5, batch=2)
    data = result.to_json()
    assert data["scenario"] == "poisson" and data["rate_per_s"] == 100 and data["batch"] == 2
    assert data["errors"] == 0 and 10 < data["requests"] < 200  # about 50 arrivals in 0.5 s


def test_errors_are_counted_by_kind(lenet_server):
    result = load_server(lenet_server.url, concurrency=2, duration=0.3, batch=64)  # over the 32 KiB body limit
    assert result.requests == result.errors > 0 and set(result.error_kinds) == {"HTTP 413"}


def test_unreachable_server_and_unknown_model_are_user_errors(lenet_server):
    with pytest.raises(DltkError, match="cannot reach"):
        load_server("http://127.0.0.1:9", duration=0.1)
    with pytest.raises(DltkError, match="404"):
        load_server(lenet_server.url, model="resnet", duration=0.1)


def test_in_process_baseline(lenet_onnx):
    result = load_in_process(runtime.load(lenet_onnx), "lenet", concurrency=2, duration=0.3, batch=4)
    assert result.target == "in-process" and result.errors == 0 and result.requests > 0 and result.batch == 4
