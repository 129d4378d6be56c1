"""Shared fixtures: one tiny trained LeNet, its ONNX export and its TVM artifact, made once per run."""

import os
import time

import pytest

RPC_KEY = "dltk-loopback"


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory):
    """Benchmarks cache exports and compiles; keep the tests' cache out of the user's home."""
    os.environ["DLTK_CACHE_DIR"] = str(tmp_path_factory.mktemp("dltk-cache"))


@pytest.fixture(scope="session")
def lenet_checkpoint(tmp_path_factory):
    from toolkit.train import train_model

    path = tmp_path_factory.mktemp("lenet") / "lenet.pt"
    train_model("lenet", path, epochs=1)
    return path


@pytest.fixture(scope="session")
def lenet_onnx(lenet_checkpoint):
    from toolkit.export import export_model

    path = lenet_checkpoint.with_suffix(".onnx")
    export_model(str(lenet_checkpoint), path)
    return path


@pytest.fixture(scope="session")
def lenet_artifact(lenet_onnx):
    from toolkit.compile import compile_model

    return compile_model(lenet_onnx, lenet_onnx.with_suffix(".tvm")).artifact.path


@pytest.fixture(scope="session")
def rpc_device():
    """A real TVM RPC tracker and server on loopback, standing in for a remote board."""
    from tvm import rpc
    from tvm.rpc.tracker import Tracker

    from toolkit.rpc import RpcTarget

    tracker = Tracker(host="127.0.0.1", port=9190, port_end=9290, silent=True)
    server = rpc.Server(host="127.0.0.1", port=9300, port_end=9400, key=RPC_KEY,
                        tracker_addr=("127.0.0.1", tracker.port), silent=True)
    try:
        client = rpc.connect_tracker("127.0.0.1", tracker.port)
        for _ in range(100):  # the server registers with the tracker shortly after it starts
            if any(RPC_KEY in str(q) for q in client.summary()["queue_info"]):
                break
            time.sleep(0.1)
        yield RpcTarget("127.0.0.1", tracker.port, RPC_KEY)
    finally:
        server.terminate()
        tracker.terminate()


@pytest.fixture(scope="module")
def tiny_zoo():
    """Every zoo family at its test size, under its own name, for a test module's fixtures."""
    import models

    with pytest.MonkeyPatch.context() as patch:
        for name, spec in list(models.REGISTRY.items()):
            patch.setitem(models.REGISTRY, name, spec.test_size())
        yield
