"""Write a file so that a crash never leaves half of one: write beside it, then rename over it."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

_UMASK = os.umask(0)  # read once: the mode a plainly created file would get
os.umask(_UMASK)


@contextlib.contextmanager
def replacing(path, suffix: str = ".tmp"):
    """Yield a new empty file beside `path` to write; on success it replaces `path` in one rename.

    The temporary name is unique (created exclusively), so two writers never share one; on an
    error it is removed and `path` is left as it was. `suffix` keeps writers that go by the
    extension (numpy's savez, matplotlib's savefig) writing the right format.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(handle)
    tmp = Path(name)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes it private; the result is an ordinary file
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomically(path, data: bytes | str) -> Path:
    with replacing(path) as tmp:
        if isinstance(data, str):
            tmp.write_text(data)
        else:
            tmp.write_bytes(data)
    return Path(path)
