"""Tuning measured on a 'remote' device: a real TVM RPC tracker and server, both on loopback."""

from toolkit.compile import compile_model
from toolkit.tune import TuneOptions


def test_tuning_measures_candidates_on_the_rpc_device(rpc_device, tmp_path):
    from toolkit.export import export_model

    export_model("mlp", tmp_path / "mlp.onnx")
    options = TuneOptions(trials=4, db=tmp_path / "db", batches=(1,), cost_model="random",
                          strategy="replay-trace", rpc=rpc_device, shipped=False)
    artifact = compile_model(tmp_path / "mlp.onnx", tmp_path / "mlp.tvm", tuning=options, choose_engine=False).artifact
    tuning = artifact.manifest["tuning"]
    assert tuning["measured_on"] == f"rpc {rpc_device.key}@127.0.0.1:{rpc_device.port}"
    assert tuning["trials_run"] >= 1 and artifact.manifest["variants"] == {"1": "main_b1"}
    assert artifact.manifest["verification"]["status"] == "passed"
