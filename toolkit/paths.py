"""Where dltk keeps what it makes and finds what it ships.

cache_dir()        exports and compiles cached by content, and the default tuning database:
                   $DLTK_CACHE_DIR, else ~/.cache/dltk
code_digest()      what part of a cache key dltk's own code is: new code makes new entries
SHIPPED_RECORDS    tuning records shipped with dltk, one directory per target key
"""

from __future__ import annotations

import functools
import hashlib
import os
import tempfile
from pathlib import Path

from toolkit.errors import DltkError

SHIPPED_RECORDS = Path(__file__).resolve().parent / "shipped_records"  # package data: installed with dltk


def cache_dir() -> Path:
    """$DLTK_CACHE_DIR (default ~/.cache/dltk), made if missing; refused early when it cannot be written."""
    path = Path(os.environ.get("DLTK_CACHE_DIR") or Path.home() / ".cache" / "dltk")
    try:
        path.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
    except OSError as e:
        raise DltkError(f"the dltk cache {path} is not a writable directory ({e.strerror})",
                        "set DLTK_CACHE_DIR to a writable directory") from None
    return path


@functools.cache
def code_digest() -> bytes:
    """A digest of every module of the installed toolkit package (read once per process)."""
    digest = hashlib.sha256()
    for source in sorted(Path(__file__).resolve().parent.rglob("*.py")):
        digest.update(source.read_bytes())
    return digest.digest()


def tuning_db_root() -> Path:
    """The tuning database a compile uses when given no --db."""
    return cache_dir() / "tuning"
