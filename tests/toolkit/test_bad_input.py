"""A corpus of bad input, made by the tests, through every CLI command and the runtime API.

Each case must end with exit 2, one `error:` line naming what is wrong, no traceback, and nothing
written anywhere under the corpus directory or the working directory.
"""

import json
import os

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

import models
from models import checkpoint
from toolkit import runtime
from toolkit.errors import DltkError
from toolkit.runtime.artifact import staging, write_manifest


def _relu_model(shape=("batch", 3)):
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(shape))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    return model


def _artifact(path, change=None, plant=None):
    """A small artifact (its model.onnx runs on ONNX Runtime), its manifest then changed as a case needs."""
    with staging(path) as tmp:
        onnx.save(_relu_model(), str(tmp / "model.onnx"))
        (tmp / "model.so").write_bytes(b"not a library")
        spec = {"name": "x", "shape": ["batch", 3], "dtype": "float32"}
        write_manifest(tmp, {"model": "relu", "inputs": [spec], "outputs": [dict(spec, name="y")], "device": "cpu",
                             "engine": {"chosen": "ort"}})
    if change is not None:
        manifest = json.loads((path / "manifest.json").read_text())
        manifest = change(manifest)
        (path / "manifest.json").write_text(json.dumps(manifest))
    if plant is not None:
        plant(path)
    return path


def _symlinked_library(path):
    (path / "model.so").rename(path.parent / "elsewhere.so")
    (path / "model.so").symlink_to(path.parent / "elsewhere.so")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad-input")
    files = {}

    def put(name, data: bytes):
        (root / name).write_bytes(data)
        files[name] = root / name

    onnx.save(_relu_model(), str(root / "good.onnx"))
    good = (root / "good.onnx").read_bytes()
    put("empty.onnx", b"")
    put("text.onnx", b"this is not a model\n")
    put("truncated.onnx", good[: len(good) // 2])
    onnx.save(_relu_model((0, 3)), str(root / "dim0.onnx"))
    onnx.save(_relu_model((-1, 3)), str(root / "negative.onnx"))

    np.save(root / "good.npy", np.ones((2, 3), np.float32))
    put("empty.npy", b"")
    put("text.npy", b"1 2 3\n")
    np.savez(root / "arrays.npz", x=np.ones((2, 3), np.float32))
    os.rename(root / "arrays.npz", root / "npz.npy")
    header = (root / "good.npy").read_bytes()
    put("huge.npy", header.replace(b"'shape': (2, 3), ", b"'shape': (99999999, 99999), "))  # claims 40 TB
    np.save(root / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.save(root / "wrong-dtype.npy", np.ones((2, 3), np.float64))

    put("empty.pt", b"")
    put("text.pt", b"not a checkpoint")
    mlp = models.get("mlp").create(0)
    checkpoint.save(root / "crc.pt", "mlp", mlp, {})
    data = bytearray((root / "crc.pt").read_bytes())
    at = bytes(data).index(next(iter(mlp.state_dict().values())).numpy().tobytes())
    data[at + 1] ^= 0x10
    (root / "crc.pt").write_bytes(bytes(data))
    checkpoint.save(root / "other-model.pt", "lenet", mlp, {})
    torch.save({"format": checkpoint.FORMAT, "model": "mlp", "info": {}, "state_dict": {}}, root / "no-weights.pt")
    torch.save({"weights": torch.zeros(2)}, root / "foreign.pt")

    _artifact(root / "good.tvm")
    _artifact(root / "list.tvm", lambda m: [m])
    _artifact(root / "no-files.tvm", lambda m: {k: v for k, v in m.items() if k != "files"})
    _artifact(root / "files-string.tvm", lambda m: dict(m, files="model.so"))
    _artifact(root / "no-sha.tvm", lambda m: dict(m, files={n: {"bytes": 1} for n in m["files"]}))
    _artifact(root / "traversal.tvm", lambda m: dict(m, files={**m["files"], "../good.onnx": m["files"]["model.onnx"]}))
    _artifact(root / "absolute.tvm", lambda m: dict(m, files={**m["files"], "/etc/hostname": m["files"]["model.onnx"]}))
    _artifact(root / "unlisted-so.tvm", lambda m: dict(m, files={"model.onnx": m["files"]["model.onnx"]}))
    _artifact(root / "symlink-so.tvm", plant=_symlinked_library)
    _artifact(root / "bad-variant.tvm", lambda m: dict(m, variants={"b1": "main_b1"}))
    _artifact(root / "zero-dim.tvm", lambda m: dict(m, inputs=[dict(m["inputs"][0], shape=[0, 3])]))
    (root / "webapp").mkdir()
    (root / "webapp" / "manifest.json").write_text('{"name": "app"}')
    (root / "webapp" / "index.html").write_text("<html>")
    (root / "a-file").write_text("x")
    return root


def _snapshot(*roots):
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) if not p.is_symlink() else "link"
            for root in roots for p in sorted(root.rglob("*"))}


def c(name: str) -> str:
    """A path in the corpus, filled in by the test."""
    return "{c}/" + name


BAD_MODELS = ["empty.onnx", "text.onnx", "truncated.onnx", "dim0.onnx", "missing.onnx", "list.tvm", "no-files.tvm",
              "files-string.tvm", "no-sha.tvm", "traversal.tvm", "absolute.tvm", "symlink-so.tvm", "bad-variant.tvm",
              "zero-dim.tvm", "webapp"]
BAD_ARRAYS = ["empty.npy", "text.npy", "npz.npy", "huge.npy", "objects.npy", "wrong-dtype.npy", "missing.npy"]
BAD_CHECKPOINTS = ["empty.pt", "text.pt", "crc.pt", "other-model.pt", "no-weights.pt", "foreign.pt"]
BAD_OUTPUTS = ["/proc/x.out", c("a-file/x.out"), c("good.tvm/x.out")]
GOOD, FAST_BENCH = c("good.onnx"), ["--backend", "ort", "--min-iterations", "1", "--min-seconds", "0", "--warmup", "0"]

CASES = (
    [["run", c(m)] for m in BAD_MODELS] + [["run", c("unlisted-so.tvm"), "--backend", "tvm"]]
    + [["inspect", c(m)] for m in BAD_MODELS]
    + [["compile", c(m), "-o", "out.tvm"] for m in ["empty.onnx", "text.onnx", "dim0.onnx", "negative.onnx", "missing.onnx"]]
    + [["compile", GOOD, "-o", c("webapp")], ["compile", GOOD, "-o", c("a-file")], ["compile", GOOD, "-o", "."]]
    + [["bench", c("traversal.tvm"), *FAST_BENCH]]  # bench takes seconds to start: one case
    + [["compare", c(m), "--backend", "ort,ort"] for m in ["text.onnx", "dim0.onnx", "no-sha.tvm"]]
    + [["deploy", "triton", c(m), "-o", "repo"] for m in ["text.onnx", "list.tvm", "no-files.tvm", "traversal.tvm", "webapp"]]
    + [["deploy", "triton", GOOD, "-o", "."]]
    + [["deploy", "kserve", c(m), "--storage-uri", "s3://x"] for m in ["text.onnx", "no-sha.tvm"]]
    + [["generate", c(m)] for m in ["text.onnx", "files-string.tvm"]]
    + [["serve", c(m), "--port", "0"] for m in ["text.onnx", "symlink-so.tvm", "list.tvm"]] + [["serve", GOOD, "--port", "99999"]]
    + [["run", GOOD, "--input", "x=" + c(a)] for a in BAD_ARRAYS]
    + [["run", GOOD, "-o", o] for o in BAD_OUTPUTS + [c("webapp")]]
    + [["export", c(p), "-o", "x.onnx"] for p in BAD_CHECKPOINTS]
    + [["export", "mlp", "-o", o] for o in BAD_OUTPUTS]
    + [["generate", GOOD, "-o", o] for o in BAD_OUTPUTS]
    + [["train", "mlp", "-o", o] for o in BAD_OUTPUTS]
    + [["deploy", "kserve", GOOD, "--storage-uri", "s3://x", "-o", o] for o in BAD_OUTPUTS]
    + [["bench", GOOD, *FAST_BENCH, "--json", o] for o in BAD_OUTPUTS]
)


@pytest.mark.parametrize("argv", CASES, ids=[" ".join(a.replace("{c}/", "") for a in case) for case in CASES])
def test_cli_refuses_bad_input_in_one_line_and_writes_nothing(corpus, argv, capfd, monkeypatch, tmp_path):
    from toolkit.cli import cli

    monkeypatch.chdir(corpus / "good.tvm" if argv[-1] == "." else tmp_path)  # `-o .` inside an artifact
    argv = [a.format(c=corpus) for a in argv]
    before = _snapshot(corpus, tmp_path)
    capfd.readouterr()
    code = cli.main(args=argv, prog_name="dltk", standalone_mode=False)
    err = capfd.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2, err
    assert len(errors) == 1 and err.strip().splitlines()[-1] == errors[0], err
    assert "Traceback" not in err and "allow_pickle" not in err and "weights_only" not in err
    assert _snapshot(corpus, tmp_path) == before


@pytest.mark.parametrize("name, backend", [(m, b) for m in BAD_MODELS if m != "webapp" for b in (None, "tvm")]
                         + [("unlisted-so.tvm", "tvm"), ("good.onnx/x", None)])
def test_runtime_load_refuses_bad_models_with_a_dltk_error(corpus, name, backend):
    with pytest.raises(DltkError):
        session = runtime.load(corpus / name, backend=backend)
        session.run({"x": np.ones((1, 3), np.float32)})
