"""ONNX Runtime session: runs an ONNX file on the CPU, or on the CUDA provider when present."""

from __future__ import annotations

import os

import numpy as np
import onnxruntime as ort

from toolkit.errors import DltkError
from toolkit.runtime.spec import TensorSpec, validate_feeds

# ONNX Runtime's type strings, e.g. "tensor(float)", as numpy dtype names.
_ORT_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
}

_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def providers_for(device: str) -> list[str]:
    if device not in _PROVIDERS:
        raise DltkError(f"unknown device '{device}'", "use cpu or cuda")
    wanted = _PROVIDERS[device]
    if wanted not in ort.get_available_providers():
        raise DltkError(
            f"ONNX Runtime has no {wanted} here",
            "install the gpu extra (onnxruntime-gpu) on a machine with a CUDA GPU",
        )
    return [wanted, "CPUExecutionProvider"] if device == "cuda" else [wanted]


class OrtSession:
    backend = "ort"

    def __init__(self, model: str | os.PathLike | bytes, device: str = "cpu", threads: int = 0):
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads  # 0: ONNX Runtime's default, one per physical core
        options.log_severity_level = 3
        if isinstance(model, os.PathLike):
            model = os.fspath(model)
        try:
            self._session = ort.InferenceSession(model, options, providers=providers_for(device))
        except DltkError:
            raise
        except Exception as e:  # ONNX Runtime raises its own types for unreadable models
            where = model if isinstance(model, str) else "the model"
            raise DltkError(f"ONNX Runtime cannot load {where}: {_first_line(e)}") from e
        self.device = device
        self.inputs = [_spec(i) for i in self._session.get_inputs()]
        self.outputs = [_spec(o) for o in self._session.get_outputs()]
        self._output_names = [o.name for o in self.outputs]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds = validate_feeds(self.inputs, feeds)
        values = self._session.run(self._output_names, feeds)  # thread-safe in ONNX Runtime
        return dict(zip(self._output_names, values))


def _spec(node) -> TensorSpec:
    shape = tuple(d if isinstance(d, int) else (d or "?") for d in node.shape)
    return TensorSpec(node.name, shape, _ORT_DTYPES.get(node.type, node.type))


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__
