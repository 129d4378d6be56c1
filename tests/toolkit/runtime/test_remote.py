"""Artifacts run and timed on a 'remote' device: a real TVM RPC tracker and server on loopback."""

import json

import jsonschema
import numpy as np
import pytest
from click.testing import CliRunner

from toolkit import runtime
from toolkit.bench.runner import SCHEMA_FILE
from toolkit.cli import cli
from toolkit.errors import DltkError
from toolkit.rpc import RpcTarget
from toolkit.runtime.remote import RemoteTvmSession
from toolkit.timing import Budget


def test_remote_session_matches_the_local_one(rpc_device, lenet_artifact):
    remote = RemoteTvmSession(runtime.open_artifact(lenet_artifact), rpc_device)
    x = np.random.default_rng(0).standard_normal((3, 1, 8, 8)).astype(np.float32)
    local = runtime.load(lenet_artifact, backend="tvm").run({"input": x})["logits"]
    np.testing.assert_allclose(remote.run({"input": x})["logits"], local, atol=1e-6)


def test_unreachable_tracker_or_unknown_key_is_a_usage_error(rpc_device, lenet_artifact):
    artifact = runtime.open_artifact(lenet_artifact)
    with pytest.raises(DltkError, match="cannot get device 'x' from the RPC tracker at 127.0.0.1:1"):
        RemoteTvmSession(artifact, RpcTarget("127.0.0.1", 1, "x"))
    with pytest.raises(DltkError, match="no server registered with that key"):
        RemoteTvmSession(artifact, RpcTarget("127.0.0.1", rpc_device.port, "nobody"))


def test_remote_block_times_each_call_on_the_device(rpc_device, lenet_artifact):
    remote = RemoteTvmSession(runtime.open_artifact(lenet_artifact), rpc_device)
    x = np.zeros((8, 1, 8, 8), np.float32)
    block = remote.timed_block({"input": x}, Budget(warmup=2, min_iterations=5, min_seconds=0.0))
    assert len(block.latencies_ms) == 5 and all(ms > 0 for ms in block.latencies_ms)
    assert block.seconds == pytest.approx(sum(block.latencies_ms) / 1e3)
    with pytest.raises(ValueError, match="input"):  # inputs are checked before anything is sent
        remote.timed_block({"input": np.zeros((8, 3), np.float32)}, Budget())


def test_bench_measures_an_artifact_on_the_rpc_device(rpc_device, lenet_artifact):
    result = CliRunner().invoke(cli, [
        "bench", str(lenet_artifact), "--rpc-tracker", f"127.0.0.1:{rpc_device.port}", "--rpc-key", rpc_device.key,
        "--batch", "1,8", "--warmup", "2", "--min-iterations", "10", "--min-seconds", "0", "--repeats", "2",
        "--json", "-",
    ])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    jsonschema.validate(report, json.loads(SCHEMA_FILE.read_text()))
    assert report["env"]["remote"] == f"rpc {rpc_device.key}@127.0.0.1:{rpc_device.port}"
    rows = report["results"]
    assert [(r["backend"], r["batch"]) for r in rows] == [("tvm", 1), ("tvm", 8)]  # tvm only, by default
    assert all(r["device"] == "cpu" and r["latency_ms"]["p50"] > 0 for r in rows)


@pytest.mark.parametrize("args, message", [
    (["--backend", "ort,tvm"], "a remote device measures the compiled TVM code only"),
    (["--scenario", "server", "--target-qps", "10"], "a remote device measures the compiled TVM code only"),
    (["--rpc-key", ""], "needs both --rpc-tracker HOST:PORT and --rpc-key KEY"),
])
def test_bench_rpc_usage_errors(rpc_device, lenet_artifact, args, message):
    base = ["bench", str(lenet_artifact), "--rpc-tracker", f"127.0.0.1:{rpc_device.port}", "--rpc-key", rpc_device.key]
    result = CliRunner().invoke(cli, base + args)
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


def test_bench_rpc_needs_an_artifact(rpc_device, lenet_onnx):
    result = CliRunner().invoke(cli, ["bench", str(lenet_onnx), "--rpc-tracker", f"127.0.0.1:{rpc_device.port}",
                                      "--rpc-key", rpc_device.key])
    assert result.exit_code == 2 and "a remote device runs a compiled artifact" in result.output
