"""Writing output files: checked before the work, written so that a crash never leaves half of one.

A file is written under an exclusive, unpredictable temporary name beside its place (a planted
symbolic link at a guessable name cannot redirect it), then renamed over the path.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from toolkit.errors import DltkError


@contextlib.contextmanager
def open_atomically(path):
    """Yield a binary file that becomes `path` when the block ends without an error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; an output is as shareable as any new file
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_atomically(path, data: bytes | str) -> Path:
    with open_atomically(path) as f:
        f.write(data.encode() if isinstance(data, str) else data)
    return Path(path)


def copy_atomically(source, path) -> Path:
    with open(source, "rb") as src, open_atomically(path) as f:
        shutil.copyfileobj(src, f, 1 << 20)
    return Path(path)


def check_output_file(path, option: str = "-o") -> Path:
    """Refuse, before any work, an output file path that cannot be written (or that is a directory)."""
    path = Path(path)
    if path.is_dir():
        raise DltkError(f"{option} {path} is a directory", "give a file path")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise DltkError(f"{option} {path}: {parent} is not a directory", "give a path in an existing directory")
    try:  # the only sure test of a directory (permissions, read-only or virtual file systems such as /proc)
        fd, probe = tempfile.mkstemp(prefix=".dltk-probe.", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise DltkError(f"{option} {path}: cannot write in {parent} ({e.strerror})", "give a writable path") from None
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
