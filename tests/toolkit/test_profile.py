import json
import shutil
import tempfile

import pytest
from click.testing import CliRunner

from toolkit.cli import cli
from toolkit.errors import DltkError
from toolkit.profile import batch_feeds, profile_artifact, verified_sizes
from toolkit.runtime.artifact import MANIFEST, open_artifact
from toolkit.runtime.spec import TensorSpec

RUNS = 3


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_lenet_profile_has_conv_kernels_and_shares_that_sum_to_one(lenet_artifact):
    report = profile_artifact(lenet_artifact, batch=1, runs=RUNS)
    assert report["model"] == "lenet" and report["batch"] == 1 and report["runs"] == RUNS
    tvm, ort = report["tvm"], report["ort"]

    assert tvm["total_us"] > 0 and tvm["wall_us"] > 0
    assert any("conv2d" in k["name"] for k in tvm["kernels"])
    assert not any(k["name"].startswith("vm.builtin.") for k in tvm["kernels"])  # counted, not timed
    assert tvm["builtin_calls"] > 0
    assert all(k["calls"] >= 1 for k in tvm["kernels"])
    assert [k["us"] for k in tvm["kernels"]] == sorted((k["us"] for k in tvm["kernels"]), reverse=True)
    assert sum(k["share"] for k in tvm["kernels"]) == pytest.approx(1, abs=1e-3)
    assert sum(k["us"] for k in tvm["kernels"]) == pytest.approx(tvm["total_us"], rel=1e-3)

    assert ort["total_us"] > 0 and ort["wall_us"] > 0
    assert "Conv" in {o["op"] for o in ort["op_types"]}
    assert sum(o["share"] for o in ort["op_types"]) == pytest.approx(1, abs=1e-3)
    assert sum(n["us"] for n in ort["nodes"]) == pytest.approx(ort["total_us"], rel=1e-3)
    assert {n["op"] for n in ort["nodes"]} == {o["op"] for o in ort["op_types"]}


def test_profile_runs_the_static_variant_for_its_batch_else_main(lenet_artifact):
    variants = {int(b): name for b, name in open_artifact(lenet_artifact).manifest.get("variants", {}).items()}
    for batch in (1, 3):  # 3 is never a variant: the dynamic main serves it
        report = profile_artifact(lenet_artifact, batch=batch, runs=1)
        assert report["batch"] == batch
        assert report["entry"] == variants.get(batch, "main")


def test_profile_leaves_no_trace_file_behind(lenet_artifact, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    profile_artifact(lenet_artifact, runs=1)
    assert list(tmp_path.iterdir()) == []


def test_profile_refuses_a_cuda_artifact_with_one_line(lenet_artifact, tmp_path):
    cuda_artifact = shutil.copytree(lenet_artifact, tmp_path / "lenet-cuda.tvm")
    manifest = json.loads((cuda_artifact / MANIFEST).read_text())
    (cuda_artifact / MANIFEST).write_text(json.dumps(dict(manifest, device="cuda")))
    with pytest.raises(DltkError, match="compiled for cuda; profiling covers cpu artifacts only"):
        profile_artifact(cuda_artifact)


def test_batch_feeds_fill_the_symbolic_batch_and_keep_fixed_shapes():
    batch, feeds = batch_feeds([TensorSpec("x", ("batch", 3), "float32")], 4)
    assert batch == 4 and feeds["x"].shape == (4, 3)
    batch, feeds = batch_feeds([TensorSpec("x", (2, 3), "float32")], None)
    assert batch == 2 and feeds["x"].shape == (2, 3)
    with pytest.raises(DltkError, match="fixed batch of 2"):
        batch_feeds([TensorSpec("x", (2, 3), "float32")], 8)


def test_cli_prints_kernel_and_op_tables(lenet_artifact):
    result = invoke("inspect", lenet_artifact, "--profile")
    assert result.exit_code == 0, result.output
    assert "TVM: kernels" in result.stdout and "ONNX Runtime: nodes" in result.stdout
    assert "conv2d" in result.stdout and "Conv" in result.stdout
    assert "profiling" in result.stderr  # progress goes to stderr


def test_cli_json_is_the_report(lenet_artifact):
    result = invoke("inspect", lenet_artifact, "--profile", "--batch", 2, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["batch"] == 2 and report["model"] == "lenet"
    assert report["tvm"]["kernels"] and report["ort"]["op_types"]


def test_cli_profile_of_an_onnx_file_is_a_usage_error(lenet_onnx):
    result = invoke("inspect", lenet_onnx, "--profile")
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and "is not a dltk artifact, and profiling needs one" in lines[-1]
    assert "Traceback" not in result.output and sum(line.startswith("error") for line in lines) == 1


def test_cli_batch_without_profile_is_a_usage_error(lenet_onnx):
    result = invoke("inspect", lenet_onnx, "--batch", 4)
    assert result.exit_code == 2
    assert "--batch goes with --profile" in result.stderr


def test_other_symbolic_dims_take_the_largest_size_the_compile_verified():
    manifest = {"verification": {"verified_dims": [{"batch": 1, "samples": 32}, {"batch": 8, "samples": 24}]}}
    sizes = verified_sizes(manifest)
    assert sizes == {"batch": 8, "samples": 32}
    batch, feeds = batch_feeds([TensorSpec("audio", ("batch", "samples"), "float32")], 2, sizes)
    assert batch == 2 and feeds["audio"].shape == (2, 32)  # the batch asked for, the verified length
    assert verified_sizes({}) == {}
