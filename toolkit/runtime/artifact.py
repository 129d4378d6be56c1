"""The artifact directory written by `dltk compile`: manifest, checks, atomic writes.

    ARTIFACT_DIR/manifest.json   format, model, inputs/outputs, target, files with sha256, ...
    ARTIFACT_DIR/model.so        the TVM Relax executable, weights included
    ARTIFACT_DIR/model.onnx      the source model (provenance, ONNX Runtime fallback)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from toolkit.errors import DltkError
from toolkit.runtime.spec import TensorSpec

FORMAT = "dltk-artifact/1"
MANIFEST = "manifest.json"
LIBRARY = "model.so"
SOURCE_ONNX = "model.onnx"


@dataclass(frozen=True)
class Artifact:
    path: Path
    manifest: dict

    @property
    def inputs(self) -> list[TensorSpec]:
        return [TensorSpec.from_json(t) for t in self.manifest["inputs"]]

    @property
    def outputs(self) -> list[TensorSpec]:
        return [TensorSpec.from_json(t) for t in self.manifest["outputs"]]

    @property
    def device(self) -> str:
        return self.manifest["device"]

    def file(self, name: str) -> Path:
        return self.path / name


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_artifact(path) -> bool:
    return (Path(path) / MANIFEST).is_file()


def open_artifact(path) -> Artifact:
    """Read the manifest and check every file's sha256; refuse anything that does not match."""
    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise DltkError(f"{path} is not a dltk artifact: no {MANIFEST}", "compile one with 'dltk compile'")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DltkError(f"{manifest_path} is not valid JSON: {e}", "recompile the artifact") from e
    if manifest.get("format") != FORMAT:
        raise DltkError(
            f"{path} has format {manifest.get('format')!r}, this dltk reads {FORMAT!r}",
            "recompile it with this dltk",
        )
    for name, entry in manifest["files"].items():
        file = path / name
        if not file.is_file():
            raise DltkError(f"artifact {path} is missing {name}", "recompile the artifact")
        if sha256_file(file) != entry["sha256"]:
            raise DltkError(
                f"artifact {path}: {name} does not match its sha256 in {MANIFEST}",
                "the file was changed or damaged; recompile the artifact",
            )
    return Artifact(path, manifest)


def write_manifest(directory: Path, manifest: dict) -> dict:
    """Hash every file in `directory` into manifest["files"] and write manifest.json."""
    files = sorted(p for p in directory.iterdir() if p.is_file() and p.name != MANIFEST)
    manifest = dict(manifest, format=FORMAT)
    manifest["files"] = {p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size} for p in files}
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


@contextlib.contextmanager
def staging(destination, replaceable=is_artifact, kind: str = "dltk artifact"):
    """Yield a temporary directory beside `destination`, renamed into place on success.

    A crash or an error leaves neither half a result nor a damaged earlier one. Only an
    existing directory for which `replaceable(path)` holds (an earlier `kind`) is replaced;
    any other existing path is refused.
    """
    destination = Path(destination)
    if destination.exists() and not replaceable(destination):
        raise DltkError(f"{destination} exists and is not a {kind}", "choose another output path")
    destination.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", dir=destination.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; what is written here is meant to be shared
    try:
        yield tmp
        if destination.exists():
            old = destination.with_name(f".{destination.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            destination.rename(old)
            tmp.rename(destination)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(destination)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
