"""Versions of the libraries a result depends on, read without importing them."""

from importlib import metadata

import toolkit

_DISTRIBUTIONS = {
    "torch": "torch",
    "onnx": "onnx",
    "onnxruntime": "onnxruntime",
    "tvm": "apache-tvm",
    "numpy": "numpy",
}


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {"dltk": toolkit.__version__}
    for name, dist in _DISTRIBUTIONS.items():
        try:
            found[name] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            found[name] = None
    if found["onnxruntime"] is None:  # the gpu extra installs the same module under another name
        try:
            found["onnxruntime"] = metadata.version("onnxruntime-gpu")
        except metadata.PackageNotFoundError:
            pass
    return found
