"""The runtime-only install (`pip install dltk`, what deploy/Dockerfile installs): a fresh venv with
dltk's base package runs an artifact built by the full install, without torch.

The venv gets no download: the distributions that dltk's base requirements need (read from
pyproject.toml, followed through their own requirements) are linked in from this environment,
where `make setup` installed them, file by file as their RECORDs list them (TVM's compiler library
left out, as the image deletes it); dltk itself is built into a wheel and installed with pip.
`pip check` then proves the base requirements are complete.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks.install_size import closure, requirements
from toolkit import runtime

ROOT = Path(__file__).resolve().parents[2]
COMPILER_LIBRARY = "libtvm_compiler.so"
LEFT_OUT = {"torch", "onnx", "onnxscript", "onnxslim", "scikit-learn", "scipy", "rich", "networkx"}


def run(*args, **kwargs):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")} | {"PYTHONNOUSERSITE": "1"}
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, env=env, timeout=300, **kwargs)
    return result


@pytest.fixture(scope="module")
def lean_venv(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lean")
    venv = tmp / "venv"
    assert run(sys.executable, "-m", "venv", "--without-pip", venv).returncode == 0
    site = next((venv / "lib").glob("python3.*")) / "site-packages"
    for distribution in closure(requirements()).values():
        for file in distribution.files:
            source = Path(distribution.locate_file(file))
            if file.parts[0] == ".." or "__pycache__" in file.parts or not source.is_file():
                continue  # scripts outside site-packages, bytecode caches
            if file.name == COMPILER_LIBRARY:
                continue  # deploy/Dockerfile deletes it: running an artifact must not need it
            (site / file).parent.mkdir(parents=True, exist_ok=True)
            (site / file).symlink_to(source)

    source = tmp / "src"  # a copy, so that building the wheel leaves nothing in the checkout
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".*", "__pycache__", "build", "tests", "benchmarks",
                                                                "*.egg-info", "deploy"))
    wheel = run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
                "-w", tmp / "wheel", source)
    assert wheel.returncode == 0, wheel.stderr
    python = venv / "bin" / "python"
    install = run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "-q",
                  *(tmp / "wheel").glob("dltk-*.whl"))
    assert install.returncode == 0, install.stderr
    return venv


def test_the_base_requirements_leave_the_toolkit_out():
    installed = set(closure(requirements()))
    assert not installed & LEFT_OUT
    assert {"numpy", "onnxruntime", "apache-tvm", "apache-tvm-ffi"} <= installed


def test_the_lean_venv_has_every_requirement_and_runs_an_artifact_on_both_engines(lean_venv, lenet_artifact, tmp_path):
    check = run(sys.executable, "-m", "pip", "--python", lean_venv / "bin" / "python", "check")
    assert check.returncode == 0, check.stdout + check.stderr
    x = np.random.default_rng(0).standard_normal((4, 1, 8, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    expected = runtime.load(lenet_artifact, backend="tvm").run({"input": x})["logits"]
    for backend in ("tvm", "ort"):
        out = tmp_path / f"{backend}.npz"
        result = run(lean_venv / "bin" / "dltk", "run", lenet_artifact, "--backend", backend,
                     "--input", f"input={tmp_path / 'x.npy'}", "-o", out, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        np.testing.assert_allclose(np.load(out)["logits"], expected, atol=1e-4, rtol=1e-3)

    code = ("import sys, importlib.util; import toolkit.runtime as r; "
            f"r.load({str(lenet_artifact)!r}, backend='tvm'); "
            "print(importlib.util.find_spec('torch') is None, 'libtvm_compiler' in open('/proc/self/maps').read())")
    result = run(lean_venv / "bin" / "python", "-c", code, cwd=tmp_path)
    assert result.stdout.split() == ["True", "False"], result.stderr


def test_a_toolkit_command_in_the_lean_venv_names_the_full_install(lean_venv, lenet_onnx, tmp_path):
    result = run(lean_venv / "bin" / "dltk", "compile", lenet_onnx, "-o", tmp_path / "m.tvm", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("error: this command needs ") and "pip install 'dltk[full]'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
