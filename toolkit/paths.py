"""Where dltk keeps what it makes and finds what it ships.

cache_dir()        exports and compiles cached by content, and the default tuning database:
                   $DLTK_CACHE_DIR, else ~/.cache/dltk
SHIPPED_RECORDS    tuning records shipped with dltk, one directory per target key
"""

from __future__ import annotations

import os
from pathlib import Path

SHIPPED_RECORDS = Path(__file__).resolve().parent / "shipped_records"  # package data: installed with dltk


def cache_dir() -> Path:
    return Path(os.environ.get("DLTK_CACHE_DIR") or Path.home() / ".cache" / "dltk")


def tuning_db_root() -> Path:
    """The tuning database a compile uses when given no --db."""
    return cache_dir() / "tuning"
