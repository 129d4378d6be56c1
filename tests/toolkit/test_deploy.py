"""Deployment material: Triton repositories checked with Triton's own protobuf, KServe manifests as YAML."""

import filecmp
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
import yaml
from google.protobuf import text_format
from onnx import TensorProto, helper
from tritonclient.grpc import model_config_pb2

from toolkit.deploy import describe, kserve_manifest, triton_config, write_triton_repository
from toolkit.errors import DltkError


def parse_config(path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def test_triton_repository_from_an_artifact(lenet_artifact, tmp_path):
    model_dir = write_triton_repository(lenet_artifact, tmp_path / "repo", max_batch_size=16, max_delay_us=500, instances=2)
    assert model_dir == tmp_path / "repo" / "lenet"
    config = parse_config(model_dir / "config.pbtxt")
    assert config.name == "lenet" and config.platform == "onnxruntime_onnx" and config.max_batch_size == 16
    (tensor_in,) = config.input
    assert tensor_in.name == "input" and tensor_in.data_type == model_config_pb2.TYPE_FP32 and list(tensor_in.dims) == [1, 8, 8]
    (tensor_out,) = config.output
    assert tensor_out.name == "logits" and list(tensor_out.dims) == [10]
    assert config.dynamic_batching.max_queue_delay_microseconds == 500
    assert config.instance_group[0].count == 2 and config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    assert filecmp.cmp(model_dir / "1" / "model.onnx", lenet_artifact / "model.onnx", shallow=False)
    assert sorted(p.name for p in (tmp_path / "repo").iterdir()) == ["lenet"]  # no temporary left behind


def test_triton_fixed_batch_model_gets_full_dims_and_no_batching(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "relu",
        [helper.make_tensor_value_info("x", TensorProto.INT32, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [2, 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, str(tmp_path / "relu.onnx"))
    model_dir = write_triton_repository(tmp_path / "relu.onnx", tmp_path / "repo", name="relu_fixed", device="cuda")
    config = parse_config(model_dir / "config.pbtxt")
    assert config.name == "relu_fixed" and config.max_batch_size == 0 and not config.HasField("dynamic_batching")
    assert list(config.input[0].dims) == [2, 3] and config.input[0].data_type == model_config_pb2.TYPE_INT32
    assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU


def test_triton_replaces_its_own_model_but_not_other_directories(lenet_onnx, tmp_path):
    repo = tmp_path / "repo"
    write_triton_repository(lenet_onnx, repo, max_batch_size=4)
    write_triton_repository(lenet_onnx, repo, max_batch_size=8)
    assert parse_config(repo / "lenet" / "config.pbtxt").max_batch_size == 8
    (repo / "taken").mkdir()
    (repo / "taken" / "notes.txt").write_text("mine")
    with pytest.raises(DltkError, match="not a Triton model directory"):
        write_triton_repository(lenet_onnx, repo, name="taken")


def test_triton_deploy_keeps_what_dltk_did_not_write(lenet_onnx, tmp_path):
    repo = tmp_path / "repo"
    model_dir = write_triton_repository(lenet_onnx, repo, max_batch_size=4)
    (model_dir / "2").mkdir()
    (model_dir / "2" / "model.plan").write_bytes(b"a TensorRT engine")
    (model_dir / "README.md").write_text("notes")
    write_triton_repository(lenet_onnx, repo, max_batch_size=8)
    assert parse_config(model_dir / "config.pbtxt").max_batch_size == 8
    assert (model_dir / "2" / "model.plan").read_bytes() == b"a TensorRT engine"
    assert (model_dir / "README.md").read_text() == "notes"
    assert sorted(p.name for p in model_dir.iterdir()) == ["1", "2", "README.md", "config.pbtxt"]


def test_triton_deploy_refuses_a_model_dltk_did_not_write(lenet_onnx, tmp_path):
    other = tmp_path / "repo" / "lenet"
    (other / "1").mkdir(parents=True)
    (other / "config.pbtxt").write_text('name: "lenet"\nplatform: "tensorrt_plan"\n')
    (other / "1" / "model.plan").write_bytes(b"engine")
    with pytest.raises(DltkError, match="dltk did not write"):
        write_triton_repository(lenet_onnx, tmp_path / "repo")
    assert (other / "config.pbtxt").read_text().startswith('name: "lenet"')
    assert sorted(p.name for p in (other / "1").iterdir()) == ["model.plan"]


def test_triton_config_names_symbolic_inner_dims_minus_one(lenet_onnx):
    model = describe(lenet_onnx)
    model.inputs[0] = type(model.inputs[0])("input", ("batch", 1, "h", "w"), "float32")
    config = text_format.Parse(triton_config(model), model_config_pb2.ModelConfig())
    assert list(config.input[0].dims) == [1, -1, -1]


def test_kserve_manifest_for_kserves_onnx_runtime(lenet_artifact):
    manifest = yaml.safe_load(kserve_manifest(lenet_artifact, storage_uri="s3://models/repo", cpu="2", memory="2Gi"))
    assert manifest["apiVersion"] == "serving.kserve.io/v1beta1" and manifest["kind"] == "InferenceService"
    assert manifest["metadata"]["name"] == "lenet"
    model = manifest["spec"]["predictor"]["model"]
    assert model["protocolVersion"] == "v2" and model["modelFormat"] == {"name": "onnx"}
    assert model["storageUri"] == "s3://models/repo" and model["resources"]["limits"] == {"cpu": "2", "memory": "2Gi"}


def test_kserve_manifest_for_the_dltk_image(lenet_artifact):
    manifest = yaml.safe_load(kserve_manifest(lenet_artifact, name="digits_v2", storage_uri="pvc://models/lenet.tvm",
                                              image="registry.example/dltk-serve:0.1.0"))
    assert manifest["metadata"]["name"] == "digits-v2"  # Kubernetes names take no underscores
    (container,) = manifest["spec"]["predictor"]["containers"]
    assert container["image"] == "registry.example/dltk-serve:0.1.0"
    assert container["args"] == ["serve", "digits_v2=/mnt/models", "--host", "0.0.0.0", "--port", "8080"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": 8080}
    assert {"name": "STORAGE_URI", "value": "pvc://models/lenet.tvm"} in container["env"]


def test_deploy_does_not_need_the_server_libraries():
    code = "import sys, toolkit.deploy; print(sorted(m for m in ('starlette', 'uvicorn', 'prometheus_client', 'torch') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                            cwd=Path(__file__).resolve().parents[2])
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stderr


def test_kserve_needs_a_storage_uri_and_a_model(lenet_onnx, tmp_path):
    with pytest.raises(DltkError, match="storage-uri"):
        kserve_manifest(lenet_onnx)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DltkError, match="neither an ONNX file nor a dltk artifact"):
        kserve_manifest(tmp_path / "empty", storage_uri="s3://x")
