"""`dltk serve`, `dltk loadtest` and `dltk deploy` through click's CliRunner (the running server:
tests/toolkit/serve/test_shutdown.py)."""

import json

import pytest
import yaml
from click.testing import CliRunner

from toolkit.cli import cli
from toolkit.serve import BackgroundServer, build_app


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_serve_refuses_two_models_of_one_name(lenet_onnx):
    result = invoke("serve", lenet_onnx, lenet_onnx)
    assert result.exit_code == 2 and "two models are named 'lenet'" in result.output


def test_serve_refuses_a_port_in_use(lenet_onnx):
    with BackgroundServer(build_app([str(lenet_onnx)])) as server:
        result = invoke("serve", lenet_onnx, "--port", server.port)
    assert result.exit_code == 2 and "cannot listen on 127.0.0.1" in result.output


def test_serve_options_are_checked(lenet_onnx):
    assert invoke("serve", lenet_onnx, "--max-batch-size", "0").exit_code == 2
    assert invoke("serve").exit_code == 2


def test_loadtest_prints_a_summary_and_json(lenet_onnx):
    with BackgroundServer(build_app([str(lenet_onnx)])) as server:
        result = invoke("loadtest", server.url, "--duration", "0.3", "--concurrency", "2")
        assert result.exit_code == 0, result.output
        assert "requests/s" in result.output and "p99" in result.output and "0 errors" in result.output
        result = invoke("loadtest", server.url, "--duration", "0.3", "--rate", "50", "--json")
        assert result.exit_code == 0
        data = json.loads(result.output[result.output.index("{"):])
        assert data["scenario"] == "poisson" and data["errors"] == 0 and data["requests"] > 0


def test_loadtest_unreachable_is_exit_2():
    result = invoke("loadtest", "http://127.0.0.1:9", "--duration", "0.1")
    assert result.exit_code == 2 and "error: cannot reach" in result.output


def test_deploy_triton_writes_a_repository(lenet_artifact, tmp_path):
    result = invoke("deploy", "triton", lenet_artifact, "-o", tmp_path / "repo", "--max-batch-size", "8")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "repo" / "lenet" / "config.pbtxt").is_file()
    assert (tmp_path / "repo" / "lenet" / "1" / "model.onnx").is_file()


def test_deploy_triton_refuses_a_file_that_is_not_onnx(tmp_path):
    (tmp_path / "bad.onnx").write_bytes(b"not a model")
    result = invoke("deploy", "triton", tmp_path / "bad.onnx", "-o", tmp_path / "repo")
    assert result.exit_code == 2 and "is not an ONNX model" in result.output
    assert not (tmp_path / "repo" / "bad").exists()


@pytest.mark.parametrize("extra", [[], ["--image", "dltk-serve:0.1.0"]])
def test_deploy_kserve_to_stdout_and_file(lenet_onnx, tmp_path, extra):
    result = invoke("deploy", "kserve", lenet_onnx, "--storage-uri", "s3://b/lenet", *extra)
    assert result.exit_code == 0
    assert yaml.safe_load(result.output)["kind"] == "InferenceService"
    result = invoke("deploy", "kserve", lenet_onnx, "--storage-uri", "s3://b/lenet", "-o", tmp_path / "isvc.yaml", *extra)
    assert result.exit_code == 0 and yaml.safe_load((tmp_path / "isvc.yaml").read_text())["metadata"]["name"] == "lenet"
