import json

import numpy as np
import pytest

from toolkit.errors import DltkError
from toolkit.runtime.artifact import FORMAT, open_artifact, staging, write_manifest


def test_staging_renames_into_place_only_on_success(tmp_path):
    target = tmp_path / "art"
    with pytest.raises(RuntimeError):
        with staging(target) as tmp:
            (tmp / "model.so").write_bytes(b"half")
            raise RuntimeError("crash while compiling")
    assert list(tmp_path.iterdir()) == []

    with staging(target) as tmp:
        (tmp / "model.so").write_bytes(b"whole")
        write_manifest(tmp, {"model": "m", "inputs": [], "outputs": [], "device": "cpu"})
    assert (target / "model.so").read_bytes() == b"whole"
    assert open_artifact(target).manifest["files"]["model.so"]["bytes"] == 5


def test_manifest_of_another_format_is_refused(tmp_path):
    with staging(tmp_path / "a") as tmp:
        write_manifest(tmp, {"model": "m", "inputs": [], "outputs": [], "device": "cpu"})
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["format"] == FORMAT
    manifest["format"] = "dltk-artifact/99"
    (tmp_path / "a" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DltkError, match="format 'dltk-artifact/99'"):
        open_artifact(tmp_path / "a")


def test_missing_file_is_refused(tmp_path):
    with staging(tmp_path / "a") as tmp:
        (tmp / "model.so").write_bytes(b"x")
        write_manifest(tmp, {"model": "m", "inputs": [], "outputs": [], "device": "cpu"})
    (tmp_path / "a" / "model.so").unlink()
    with pytest.raises(DltkError, match="missing model.so"):
        open_artifact(tmp_path / "a")


# --- replacing an artifact: never data loss ------------------------------------------------------

import hashlib  # noqa: E402
import os  # noqa: E402

from toolkit.runtime import artifact as artifact_module  # noqa: E402
from toolkit.runtime.artifact import check_replaceable, is_artifact  # noqa: E402


def _artifact(directory, payload: bytes = b"so") -> None:
    with staging(directory) as tmp:
        (tmp / "model.so").write_bytes(payload)
        write_manifest(tmp, {"model": "m", "inputs": [], "outputs": [], "device": "cpu"})


def test_a_directory_with_a_foreign_manifest_is_not_replaced(tmp_path):
    app = tmp_path / "webapp"
    (app / "src").mkdir(parents=True)
    (app / "manifest.json").write_text('{"name": "my web app", "icons": []}')
    (app / "src" / "app.js").write_text("code")
    with pytest.raises(DltkError, match="exists and is not a dltk artifact"):
        check_replaceable(app)
    with pytest.raises(DltkError, match="exists and is not a dltk artifact"):
        _artifact(app)
    assert (app / "src" / "app.js").read_text() == "code" and not is_artifact(app)


def test_an_old_or_new_artifact_is_at_the_path_at_every_step(tmp_path, monkeypatch):
    target = tmp_path / "a.tvm"
    _artifact(target, b"old")
    real_rename, missing = os.rename, []

    def rename(src, dst):  # a kill -9 may land after any rename: check what it would leave
        real_rename(src, dst)
        if not is_artifact(target):
            missing.append((src, dst))

    monkeypatch.setattr(artifact_module.os, "rename", rename)
    _artifact(target, b"new")
    assert missing == []
    assert (target / "model.so").read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tvm"]


def test_debris_of_killed_runs_is_cleaned_and_a_half_swap_recovered(tmp_path):
    target = tmp_path / "a.tvm"
    _artifact(target, b"old")
    os.rename(target, tmp_path / ".a.tvm.old")  # an older dltk killed between its two renames
    (tmp_path / ".a.tvm.k1ll3d_x").mkdir()  # a killed compile's staging directory
    (tmp_path / ".a.tvm.k1ll3d_x" / "model.so").write_bytes(b"half")
    (tmp_path / ".a.tvm.notes").mkdir()  # not a name dltk makes: left alone
    for debris in (".a.tvm.old", ".a.tvm.k1ll3d_x", ".a.tvm.notes"):
        os.utime(tmp_path / debris, (0, 0))  # left long ago
    check_replaceable(target)
    with staging(target) as live:
        with staging(target):  # a second run to the same path must not take the first's directory
            assert live.is_dir()
            assert not (tmp_path / ".a.tvm.k1ll3d_x").exists() and not (tmp_path / ".a.tvm.old").exists()
            assert (target / "model.so").read_bytes() == b"old"  # the half swap was put back
        (live / "model.so").write_bytes(b"new")
        write_manifest(live, {"model": "m", "inputs": [], "outputs": [], "device": "cpu"})
    assert (target / "model.so").read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".a.tvm.notes", "a.tvm"]


def _stage_after_barrier(target, payload: bytes, barrier, results) -> None:
    try:
        with staging(target) as tmp:
            (tmp / "model.so").write_bytes(payload)
            write_manifest(tmp, {"model": "m", "inputs": [], "outputs": [], "device": "cpu"})
            barrier.wait()  # every run swaps in at once
        results.put("ok")
    except DltkError as e:
        results.put(f"DltkError: {e}")
    except BaseException as e:
        results.put(f"{type(e).__name__}: {e}")


@pytest.mark.parametrize("existing", [False, True])
def test_concurrent_runs_to_one_path_leave_one_valid_artifact(tmp_path, existing):
    import multiprocessing

    context = multiprocessing.get_context("fork")
    target, runs = tmp_path / "a.tvm", 6
    if existing:
        _artifact(target, b"old")
    barrier, results = context.Barrier(runs, timeout=60), context.Queue()
    processes = [context.Process(target=_stage_after_barrier, args=(target, bytes([i]), barrier, results))
                 for i in range(runs)]
    for p in processes:
        p.start()
    try:
        outcomes = [results.get(timeout=90) for _ in processes]
    finally:
        for p in processes:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    failures = [o for o in outcomes if o != "ok"]
    assert len(failures) <= 1 and all(f.startswith("DltkError") for f in failures), failures
    assert open_artifact(target).manifest["files"]["model.so"]["bytes"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tvm"]


def test_the_current_directory_is_never_an_output(tmp_path, monkeypatch):
    _artifact(tmp_path / "a.tvm")
    monkeypatch.chdir(tmp_path / "a.tvm")
    with pytest.raises(DltkError, match="holds the current directory"):
        check_replaceable(".")
    with pytest.raises(DltkError, match="holds the current directory"):
        check_replaceable(tmp_path)


# --- loading an untrusted artifact ---------------------------------------------------------------


def _onnx_artifact(directory):
    """An artifact ONNX Runtime can load (no TVM needed): model.onnx is y = relu(x)."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])])
    with staging(directory) as tmp:
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(tmp / "model.onnx"))
        spec = [{"name": "x", "shape": ["batch", 3], "dtype": "float32"}]
        write_manifest(tmp, {"model": "m", "inputs": spec, "outputs": [dict(spec[0], name="y")], "device": "cpu"})
    return directory


def _rewrite_manifest(directory, change) -> None:
    manifest = json.loads((directory / "manifest.json").read_text())
    change(manifest)
    (directory / "manifest.json").write_text(json.dumps(manifest))


def test_an_unlisted_library_is_never_opened(tmp_path):
    from toolkit import runtime

    art = _onnx_artifact(tmp_path / "a.tvm")
    marker = tmp_path / "constructor-ran"
    source = tmp_path / "evil.c"
    source.write_text(f'#include <stdio.h>\n__attribute__((constructor)) static void run(void) '
                      f'{{ FILE *f = fopen("{marker}", "w"); if (f) fclose(f); }}\n')
    if os.system(f"cc -shared -fPIC -o {art / 'model.so'} {source} 2>/dev/null") != 0:
        pytest.skip("no C compiler to build the planted library")
    with pytest.raises(DltkError, match="does not list model.so"):
        runtime.load(art, backend="tvm")
    assert not marker.exists()


@pytest.mark.parametrize("name", ["../outside.txt", "/etc/hostname", "sub/../../outside.txt", "."])
def test_files_outside_the_artifact_are_refused(tmp_path, name):
    art = _onnx_artifact(tmp_path / "a.tvm")
    (tmp_path / "outside.txt").write_text("secret")
    digest = hashlib.sha256(b"secret").hexdigest()  # even with a correct hash
    _rewrite_manifest(art, lambda m: m["files"].update({name: {"sha256": digest}}))
    with pytest.raises(DltkError, match="not a plain file name inside the artifact"):
        open_artifact(art)


@pytest.mark.parametrize("link", ["model.onnx", "manifest.json"])
def test_symbolic_links_are_refused(tmp_path, link):
    art = _onnx_artifact(tmp_path / "a.tvm")
    moved = tmp_path / f"real-{link}"
    os.rename(art / link, moved)
    os.symlink(moved, art / link)
    with pytest.raises(DltkError, match="is a symbolic link"):
        open_artifact(art)


def test_pinned_manifest_hash(tmp_path):
    from toolkit import runtime

    art = _onnx_artifact(tmp_path / "a.tvm")
    pinned = hashlib.sha256((art / "manifest.json").read_bytes()).hexdigest()
    assert open_artifact(art).manifest_sha256 == pinned
    x = np.ones((2, 3), np.float32)
    assert runtime.load(art, expected_sha256=pinned, backend="ort").run({"x": x})["y"].shape == (2, 3)
    _rewrite_manifest(art, lambda m: m.update(model="other"))  # a consistent, re-hashed, hostile manifest
    with pytest.raises(DltkError, match="not the expected"):
        runtime.load(art, expected_sha256=pinned, backend="ort")
    with pytest.raises(DltkError, match="not the expected"):
        runtime.load(art / "model.onnx", expected_sha256=pinned)


@pytest.mark.parametrize("change, message", [
    (lambda m: m.clear() or m.update(format=FORMAT), "no 'files'"),
    (lambda m: m.update(files="model.onnx"), "no 'files'"),
    (lambda m: m["files"]["model.onnx"].pop("sha256"), "no sha256 for model.onnx"),
    (lambda m: m.update(inputs={"x": 1}), "no valid 'inputs'"),
    (lambda m: m["inputs"][0].update(shape=[0, 3]), "no valid 'inputs'"),
    (lambda m: m["outputs"][0].update(dtype="float99"), "no valid 'outputs'"),
    (lambda m: m.update(device="tpu"), "names device 'tpu'"),
    (lambda m: m.update(variants={"one": "main_b1"}), "'variants'"),
])
def test_malformed_manifests_are_refused_by_name(tmp_path, change, message):
    art = _onnx_artifact(tmp_path / "a.tvm")
    _rewrite_manifest(art, change)
    with pytest.raises(DltkError, match=message):
        open_artifact(art)


def test_a_manifest_that_is_not_an_object_is_refused(tmp_path):
    art = _onnx_artifact(tmp_path / "a.tvm")
    (art / "manifest.json").write_text("[1, 2]")
    with pytest.raises(DltkError, match="not a dltk artifact: its manifest.json has no dltk 'format'"):
        open_artifact(art)
    assert not is_artifact(art)
