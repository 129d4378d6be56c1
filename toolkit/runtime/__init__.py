"""The runtime applications embed: one `load()` for ONNX files and compiled artifacts.

    from toolkit import runtime
    sess = runtime.load("lenet.tvm")            # artifact -> the engine its compile measured fastest
    sess = runtime.load("lenet.tvm", backend="tvm")  # the TVM-compiled code, whatever was measured
    sess.inputs, sess.outputs                   # [TensorSpec(name, shape, dtype)]
    out = sess.run({"input": x})                # {name: numpy array}, in the order of sess.outputs

Importing this module pulls in neither torch nor TVM; loading an artifact with the tvm
backend loads TVM's runtime library alone (toolkit.runtime.tvm_runtime), never its compiler.
"""

from __future__ import annotations

from toolkit.errors import DltkError
from toolkit.runtime.artifact import SOURCE_ONNX, Artifact, open_artifact, sha256_file
from toolkit.runtime.model_source import ARTIFACT, ONNX, ModelSource
from toolkit.runtime.session import Session
from toolkit.runtime.spec import TensorSpec, random_feeds, validate_feeds

__all__ = ["Session", "TensorSpec", "load", "random_feeds", "validate_feeds", "Artifact", "open_artifact"]


def load(path, device: str = "cpu", backend: str | None = None, threads: int = 0,
         expected_sha256: str | None = None) -> Session:
    """Open an ONNX file (ONNX Runtime) or an artifact directory (TVM, or ONNX Runtime on its model.onnx).

    An artifact's default backend is the engine `dltk compile` measured fastest on its target
    (manifest "engine"); backend="tvm" always runs the TVM-compiled code.
    expected_sha256 pins what is loaded: the sha256 of an artifact's manifest.json (which lists
    every file's sha256; `Artifact.manifest_sha256`), or of an ONNX file. Anything else is refused.
    """
    source = ModelSource.of(path)
    path = source.path
    if not path.exists():
        raise DltkError(f"no such file or directory: {path}", "check the path")
    source.require(ARTIFACT, ONNX, fix="export it to ONNX with 'dltk export' first")
    if source.kind == ARTIFACT:
        artifact = open_artifact(path, expected_sha256)
        backend = backend or (artifact.manifest.get("engine") or {}).get("chosen", "tvm")
        if backend == "tvm":
            from toolkit.runtime.tvm import TvmSession

            return TvmSession.from_artifact(artifact, device)
        if backend == "ort":
            from toolkit.runtime.ort import OrtSession

            return OrtSession(artifact.file(SOURCE_ONNX), device, threads)
    else:
        backend = backend or "ort"
        if expected_sha256 is not None:
            _check_pinned_file(path, expected_sha256)
        if backend == "ort":
            from toolkit.runtime.ort import OrtSession

            return OrtSession(path, device, threads)
        if backend == "tvm":
            raise DltkError(f"{path} is an ONNX file, not a compiled artifact", "compile it with 'dltk compile' first")
    raise DltkError(f"unknown backend '{backend}'", "use ort or tvm")


def _check_pinned_file(path, expected_sha256: str) -> None:
    digest = sha256_file(path)
    if digest != expected_sha256.strip().lower():
        raise DltkError(f"{path} has sha256 {digest}, not the expected {expected_sha256}",
                        "this is not the model you pinned; get the right one or pin its new hash")
