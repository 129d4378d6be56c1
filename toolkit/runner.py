"""Feeds from .npy files and outputs to .npz, for `dltk run`."""

from __future__ import annotations

import numpy as np

from toolkit.errors import DltkError
from toolkit.files import replacing
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
        try:
            given[name] = np.load(file, allow_pickle=False)
        except FileNotFoundError:
            raise DltkError(f"no such file: {file}", "check the --input path") from None
        except (ValueError, OSError) as e:
            raise DltkError(f"{file} is not a .npy array: {e}") from None
    missing = [s for s in specs if s.name not in given]
    return {**random_feeds(missing), **given}


def save_outputs(path, outputs: dict[str, np.ndarray]) -> None:
    with replacing(path, suffix=".npz") as tmp:  # savez adds .npz to a name without it
        np.savez(tmp, **outputs)


def output_lines(outputs: dict[str, np.ndarray], shown: int = 8) -> list[str]:
    """Each output's dtype, shape and first values."""
    lines = []
    for name, value in outputs.items():
        preview = " ".join(f"{x:.4g}" for x in value.reshape(-1)[:shown])
        lines.append(f"{name}: {value.dtype}{list(value.shape)}  [{preview}{' ...' if value.size > shown else ''}]")
    return lines


def outputs_json(outputs: dict[str, np.ndarray]) -> list[dict]:
    return [{"name": n, "shape": list(v.shape), "dtype": str(v.dtype), "data": v.tolist()} for n, v in outputs.items()]
