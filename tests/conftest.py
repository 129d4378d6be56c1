"""Shared fixtures: one tiny trained LeNet, its ONNX export and its TVM artifact, made once per run."""

import os

import pytest


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
