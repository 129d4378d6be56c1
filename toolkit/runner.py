"""Feeds from .npy files and outputs to .npz, for `dltk run`."""

from __future__ import annotations

import os

import numpy as np

from toolkit.errors import DltkError
from toolkit.files import open_atomically
from toolkit.runtime.spec import TensorSpec, random_feeds


def read_feeds(specs: list[TensorSpec], assignments: tuple[str, ...]) -> dict[str, np.ndarray]:
    """`NAME=FILE.npy` assignments; inputs not given get random data (symbolic dims of size 1)."""
    names = {s.name for s in specs}
    given = {}
    for assignment in assignments:
        name, sep, file = assignment.partition("=")
        if not sep or not name or not file:
            raise DltkError(f"--input '{assignment}' is not NAME=FILE.npy")
        if name not in names:
            raise DltkError(f"--input names '{name}', which the model does not take", f"its inputs: {sorted(names)}")
        given[name] = read_npy(file)
    missing = [s for s in specs if s.name not in given]
    return {**random_feeds(missing), **given}


def read_npy(file) -> np.ndarray:
    """An array from a .npy file, checked before it is read: the .npy format, no Python objects, and a
    header whose shape matches the file's size (a damaged or hostile header could claim terabytes)."""
    from numpy.lib import format as npy

    try:
        f = open(file, "rb")
    except FileNotFoundError:
        raise DltkError(f"no such file: {file}", "check the --input path") from None
    except OSError as e:
        raise DltkError(f"cannot read {file}: {e.strerror}", "check the --input path") from None
    not_npy = DltkError(f"{file} is not a .npy array file", "save the array with numpy.save(PATH, array)")
    with f:
        try:
            version = npy.read_magic(f)
            read_header = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
            shape, fortran_order, dtype = read_header(f)
        except (ValueError, EOFError, OSError, SyntaxError, UnicodeDecodeError):
            raise not_npy from None
        if dtype.hasobject:
            raise DltkError(f"{file} holds Python objects, not numbers", "save a numeric array with numpy.save")
        expected = int(np.prod(shape, dtype=object)) * dtype.itemsize
        held = os.fstat(f.fileno()).st_size - f.tell()
        if expected != held:
            raise DltkError(f"{file} is damaged: its header promises {dtype}{list(shape)} ({expected} bytes), "
                            f"the file holds {held}", "save the array again with numpy.save")
        f.seek(0)
        try:
            return npy.read_array(f, allow_pickle=False)
        except (ValueError, EOFError, OSError):
            raise not_npy from None


def save_outputs(path, outputs: dict[str, np.ndarray]) -> None:
    with open_atomically(path) as f:
        np.savez(f, **outputs)


def output_lines(outputs: dict[str, np.ndarray], shown: int = 8) -> list[str]:
    """Each output's dtype, shape and first values."""
    lines = []
    for name, value in outputs.items():
        preview = " ".join(f"{x:.4g}" for x in value.reshape(-1)[:shown])
        lines.append(f"{name}: {value.dtype}{list(value.shape)}  [{preview}{' ...' if value.size > shown else ''}]")
    return lines


def outputs_json(outputs: dict[str, np.ndarray]) -> list[dict]:
    return [{"name": n, "shape": list(v.shape), "dtype": str(v.dtype), "data": v.tolist()} for n, v in outputs.items()]
