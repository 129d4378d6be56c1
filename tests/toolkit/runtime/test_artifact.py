import json

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
