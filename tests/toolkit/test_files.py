import os

import numpy as np
import pytest

from toolkit.errors import DltkError
from toolkit.files import check_output_file, open_atomically, write_atomically
from toolkit.runner import save_outputs


@pytest.mark.parametrize("planted", [".out.npz.tmp", ".out.npz.tmp.npz"])
def test_a_symlink_planted_at_a_guessable_temporary_name_is_not_followed(tmp_path, planted):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    (tmp_path / planted).symlink_to(victim)
    write_atomically(tmp_path / "out.npz", b"data")
    save_outputs(tmp_path / "out.npz", {"y": np.ones(2, np.float32)})
    assert victim.read_text() == "keep"
    assert np.load(tmp_path / "out.npz")["y"].tolist() == [1.0, 1.0]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([planted, "out.npz", "victim.txt"])


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with open_atomically(path) as f:
            f.write(b"half")
            raise RuntimeError("crash")
    assert path.read_bytes() == b"old" and sorted(os.listdir(tmp_path)) == ["out.bin"]
    write_atomically(path, "new")
    assert path.read_text() == "new" and oct(path.stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_unwritable_output_paths_are_refused_before_work(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(DltkError, match="is not a directory"):
        check_output_file(tmp_path / "file" / "out.npz")
    with pytest.raises(DltkError, match="is a directory"):
        check_output_file(tmp_path)
    with pytest.raises(DltkError, match="cannot write in /proc"):
        check_output_file("/proc/x.npz")
    assert check_output_file(tmp_path / "new" / "deeper" / "out.npz") == tmp_path / "new" / "deeper" / "out.npz"
    assert not (tmp_path / "new").exists()  # checking writes nothing


def test_an_output_inside_an_artifact_is_refused(tmp_path):
    from toolkit.runtime.artifact import refuse_inside_artifact, staging, write_manifest

    with staging(tmp_path / "a.tvm") as tmp:
        (tmp / "model.so").write_bytes(b"so")
        write_manifest(tmp, {"model": "m", "inputs": [], "outputs": [], "device": "cpu"})
    with pytest.raises(DltkError, match="inside the compiled artifact"):
        refuse_inside_artifact(tmp_path / "a.tvm" / "out.npz")
    with pytest.raises(DltkError, match="inside the compiled artifact"):
        refuse_inside_artifact(tmp_path / "a.tvm" / "deeper" / "out.npz")
