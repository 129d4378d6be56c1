"""dltk: export PyTorch models to ONNX, compile them with TVM, run and benchmark them.

Kept free of heavy imports: `import toolkit.runtime` must not pull in torch or TVM.
"""

from toolkit.errors import CheckFailed, DltkError

__version__ = "0.1.0"
__all__ = ["CheckFailed", "DltkError", "__version__"]
