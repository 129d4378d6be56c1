"""Tuning measured on a 'remote' device: a real TVM RPC tracker and server, both on loopback."""

import time

import pytest

from toolkit.compile import compile_model
from toolkit.tune import RpcTarget, TuneOptions

KEY = "dltk-loopback"


@pytest.fixture(scope="module")
def rpc_device():
    from tvm import rpc
    from tvm.rpc.tracker import Tracker

    tracker = Tracker(host="127.0.0.1", port=9190, port_end=9290, silent=True)
    server = rpc.Server(host="127.0.0.1", port=9300, port_end=9400, key=KEY,
                        tracker_addr=("127.0.0.1", tracker.port), silent=True)
    try:
        client = rpc.connect_tracker("127.0.0.1", tracker.port)
        for _ in range(100):  # the server registers with the tracker shortly after it starts
            if any(KEY in str(q) for q in client.summary()["queue_info"]):
                break
            time.sleep(0.1)
        yield RpcTarget("127.0.0.1", tracker.port, KEY)
    finally:
        server.terminate()
        tracker.terminate()


def test_tuning_measures_candidates_on_the_rpc_device(rpc_device, tmp_path):
    from toolkit.export import export_model

    export_model("mlp", tmp_path / "mlp.onnx")
    options = TuneOptions(trials=4, db=tmp_path / "db", batches=(1,), cost_model="random",
                          strategy="replay-trace", rpc=rpc_device, shipped=False)
    artifact = compile_model(tmp_path / "mlp.onnx", tmp_path / "mlp.tvm", tuning=options, choose_engine=False).artifact
    tuning = artifact.manifest["tuning"]
    assert tuning["measured_on"] == f"rpc {KEY}@127.0.0.1:{rpc_device.port}"
    assert tuning["trials_run"] >= 1 and artifact.manifest["variants"] == {"1": "main_b1"}
    assert artifact.manifest["verification"]["status"] == "passed"


def test_remote_session_matches_the_local_one(rpc_device, lenet_artifact):
    import numpy as np

    from toolkit import runtime
    from toolkit.remote import RemoteTvmSession

    remote = RemoteTvmSession(runtime.open_artifact(lenet_artifact), rpc_device)
    x = np.random.default_rng(0).standard_normal((3, 1, 8, 8)).astype(np.float32)
    local = runtime.load(lenet_artifact, backend="tvm").run({"input": x})["logits"]
    np.testing.assert_allclose(remote.run({"input": x})["logits"], local, atol=1e-6)


def test_unreachable_tracker_or_unknown_key_is_a_usage_error(rpc_device, lenet_artifact):
    from toolkit import runtime
    from toolkit.errors import DltkError
    from toolkit.remote import RemoteTvmSession

    artifact = runtime.open_artifact(lenet_artifact)
    with pytest.raises(DltkError, match="cannot get device 'x' from the RPC tracker at 127.0.0.1:1"):
        RemoteTvmSession(artifact, RpcTarget("127.0.0.1", 1, "x"))
    with pytest.raises(DltkError, match="no server registered with that key"):
        RemoteTvmSession(artifact, RpcTarget("127.0.0.1", rpc_device.port, "nobody"))
