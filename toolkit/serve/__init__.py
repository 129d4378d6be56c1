"""`dltk serve`: ONNX files and compiled artifacts behind the Open Inference Protocol v2 (REST).

    from toolkit.serve import BatchPolicy, serve
    serve(["lenet.tvm", "mlp=mlp.onnx"], port=8000, policy=BatchPolicy(max_batch_size=32, max_delay_ms=2))

Modules: protocol (v2 JSON <-> numpy), batching (the dynamic batcher), models (loading and
naming), metrics (Prometheus), app (the routes, a Starlette application), server (uvicorn).
The names below load on first use, so that `toolkit.deploy` can use naming and batching
without the serve extra installed.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "BatchPolicy": "batching",
    "DynamicBatcher": "batching",
    "LocalModel": "models",
    "load_models": "models",
    "Metrics": "metrics",
    "create_app": "app",
    "build_app": "server",
    "serve": "server",
    "listen": "server",
    "BackgroundServer": "server",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'toolkit.serve' has no attribute '{name}'")
    return getattr(importlib.import_module(f"toolkit.serve.{_EXPORTS[name]}"), name)
