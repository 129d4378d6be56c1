"""What a model argument names: an ONNX file, a compiled artifact, a PyTorch checkpoint or a zoo NAME.

    source = ModelSource.of("lenet.tvm")
    source.kind          # ARTIFACT, ONNX, CHECKPOINT or ZOO
    source.onnx_path     # the ONNX graph (an artifact's model.onnx); None for a checkpoint or a NAME
    source.metadata()    # the graph's metadata_props (dltk.model, dltk.generation, ...)
    source.name          # the model's name

A directory is an artifact; a file is a checkpoint when named .pt/.pth or when it holds a
torch.save archive, else an ONNX file; a path that does not exist is a zoo NAME unless it looks
like a path (a separator or a suffix). Nothing is loaded to tell the kinds apart.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from toolkit.errors import DltkError
from toolkit.runtime.artifact import MANIFEST, SOURCE_ONNX, open_artifact

ONNX, ARTIFACT, CHECKPOINT, ZOO = "ONNX file", "artifact", "checkpoint", "zoo model"
CHECKPOINT_SUFFIXES = (".pt", ".pth")
NAME_KEY = "dltk.model"  # the metadata entry `dltk export` writes the model's name under
ARCHIVE_MAGIC = b"PK\x03\x04"  # torch.save writes a zip archive


def read_metadata(model) -> dict[str, str]:
    """An ONNX ModelProto's metadata_props as a dict."""
    return {p.key: p.value for p in model.metadata_props}


def name_from(metadata: dict[str, str], path) -> str:
    """The model's name: what `dltk export` recorded, else the file's stem."""
    path = Path(path)
    return metadata.get(NAME_KEY) or (path.stem if path.suffix else path.name)


@dataclass(frozen=True)
class ModelSource:
    path: Path
    kind: str

    @classmethod
    def of(cls, source) -> ModelSource:
        path = Path(source)
        if path.is_dir():
            return cls(path, ARTIFACT)
        if path.suffix == ".onnx":
            return cls(path, ONNX)
        if path.suffix in CHECKPOINT_SUFFIXES or (path.is_file() and _is_archive(path)):
            return cls(path, CHECKPOINT)
        if path.is_file():
            return cls(path, ONNX)
        looks_like_path = "/" in str(source) or path.suffix
        return cls(path, CHECKPOINT if looks_like_path else ZOO)

    @property
    def onnx_path(self) -> Path | None:
        if self.kind == ARTIFACT:
            return self.path / SOURCE_ONNX
        return self.path if self.kind == ONNX else None

    def metadata(self) -> dict[str, str]:
        """The ONNX graph's metadata, read without its weights ({} for a checkpoint or a NAME)."""
        if self.onnx_path is None:
            return {}
        if not self.onnx_path.is_file():
            raise DltkError(f"no such ONNX file or artifact: {self.path}", "check the path")
        import onnx

        # An artifact's files are read only once its manifest lists them and their hashes match.
        onnx_path = open_artifact(self.path).file(SOURCE_ONNX) if self.kind == ARTIFACT else self.onnx_path
        try:
            return read_metadata(onnx.load(str(onnx_path), load_external_data=False))
        except Exception as e:  # protobuf and onnx raise several types for foreign files
            raise DltkError(f"{self.onnx_path} is not an ONNX model ({type(e).__name__})",
                            "give an exported model or an artifact") from e

    @property
    def name(self) -> str:
        """An artifact's manifest "model", an ONNX file's dltk.model metadata, else the file's stem (or the NAME)."""
        if self.kind == ARTIFACT:
            try:
                return json.loads((self.path / MANIFEST).read_text())["model"]
            except (OSError, json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError):
                pass  # open_artifact says what is wrong with it
        if self.kind == ZOO:
            return str(self.path)
        try:
            metadata = self.metadata()
        except DltkError:  # not readable as ONNX: loading it says why
            metadata = {}
        return name_from(metadata, self.path)

    def require(self, *kinds: str, fix: str) -> ModelSource:
        """This source, or a usage error naming what it is and what was wanted."""
        if self.kind not in kinds:
            if not self.path.exists():
                raise DltkError(f"no such file or directory: {self.path}", "check the path")
            wanted = " or ".join(_article(k) for k in kinds)
            raise DltkError(f"{self.path} is {_article(self.kind)}, not {wanted}", fix)
        return self


def _article(kind: str) -> str:
    return f"an {kind}" if kind[0] in "aeiouAEIOU" else f"a {kind}"


def _is_archive(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == ARCHIVE_MAGIC
    except OSError:
        return False
