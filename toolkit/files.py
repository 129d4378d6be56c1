"""Write a file so that a crash never leaves half of one: write beside it, then rename."""

from __future__ import annotations

import os
from pathlib import Path


def write_atomically(path, data: bytes | str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    if isinstance(data, str):
        tmp.write_text(data)
    else:
        tmp.write_bytes(data)
    os.replace(tmp, path)
    return path
