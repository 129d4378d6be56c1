"""Building v2 requests and reading v2 answers in tests."""

import numpy as np


def v2_request(**inputs) -> dict:
    """{"inputs": [...]} for numpy arrays given by name."""
    from toolkit.serve.protocol import datatype

    return {"inputs": [{"name": n, "shape": list(x.shape), "datatype": datatype(x.dtype), "data": x.reshape(-1).tolist()}
                       for n, x in inputs.items()]}


def output_array(answer: dict, name: str) -> np.ndarray:
    (tensor,) = [t for t in answer["outputs"] if t["name"] == name]
    return np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
