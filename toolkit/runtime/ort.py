"""ONNX Runtime session: runs an ONNX file on the CPU, or on the CUDA provider when present."""

from __future__ import annotations

import os

import numpy as np
import onnxruntime as ort

from toolkit.errors import DltkError, first_line
from toolkit.runtime.session import Session
from toolkit.runtime.spec import TensorSpec, check_input_dims

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

# Graph optimization levels, as `dltk bench --ort-opt` names them.
OPTIMIZATION_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


def providers_for(device: str) -> list[str]:
    if device not in _PROVIDERS:
        raise DltkError(f"unknown device '{device}'", "use cpu or cuda")
    wanted = _PROVIDERS[device]
    if wanted not in ort.get_available_providers():
        raise DltkError(
            f"ONNX Runtime has no {wanted} here",
            "install the gpu extra (onnxruntime-gpu) on a machine with a CUDA GPU",
        )
    if device == "cuda" and hasattr(ort, "preload_dlls"):
        # onnxruntime-gpu finds CUDA and cuDNN from torch or the nvidia-* wheels only once told to.
        ort.preload_dlls()
    return [wanted, "CPUExecutionProvider"] if device == "cuda" else [wanted]


def check_providers(providers: list[str]) -> list[str]:
    missing = [p for p in providers if p not in ort.get_available_providers()]
    if missing:
        raise DltkError(
            f"ONNX Runtime has no {missing[0]} here",
            f"available: {', '.join(ort.get_available_providers())}",
        )
    return providers


class OrtSession(Session):
    backend = "ort"

    def __init__(
        self,
        model: str | os.PathLike | bytes,
        device: str = "cpu",
        threads: int = 0,
        optimization: str = "all",
        providers: list[str] | None = None,
    ):
        """threads 0: ONNX Runtime's default, one per physical core. providers: default from device."""
        if optimization not in OPTIMIZATION_LEVELS:
            raise DltkError(f"unknown graph optimization level '{optimization}'", f"use one of {', '.join(OPTIMIZATION_LEVELS)}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.graph_optimization_level = OPTIMIZATION_LEVELS[optimization]
        options.log_severity_level = 3
        providers = check_providers(providers) if providers else providers_for(device)
        if isinstance(model, os.PathLike):
            model = os.fspath(model)
        try:
            self._session = ort.InferenceSession(model, options, providers=providers)
        except DltkError:
            raise
        except Exception as e:  # ONNX Runtime raises its own types for unreadable models
            where = model if isinstance(model, str) else "the model"
            raise DltkError(f"ONNX Runtime cannot load {where}: {first_line(e)}") from e
        self.device = device
        self.providers = self._session.get_providers()
        if providers[0] not in self.providers:
            # ONNX Runtime falls back to the next provider, with a log line only, when one fails to load.
            raise DltkError(f"ONNX Runtime could not start its {providers[0]}; it would run on {self.providers[0]}",
                            "for CUDA, check that the CUDA 13 and cuDNN 9 libraries load (onnxruntime.print_debug_info())")
        self.inputs = check_input_dims([_spec(i) for i in self._session.get_inputs()],
                                       model if isinstance(model, str) else "the model")
        self.outputs = [_spec(o) for o in self._session.get_outputs()]
        self._output_names = [o.name for o in self.outputs]

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = self._session.run(self._output_names, feeds)  # thread-safe in ONNX Runtime
        return dict(zip(self._output_names, values))


def _spec(node) -> TensorSpec:
    shape = tuple(d if isinstance(d, int) else (d or "?") for d in node.shape)
    return TensorSpec(node.name, shape, _ORT_DTYPES.get(node.type, node.type))

