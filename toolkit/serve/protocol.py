"""Open Inference Protocol v2 (KServe v2 / Triton REST) JSON <-> numpy, without any web framework.

A request reads `{"id"?, "inputs": [{"name", "shape", "datatype", "data"}], "outputs"?: [{"name"}]}`;
an answer `{"model_name", "model_version", "id"?, "outputs": [{"name", "shape", "datatype", "data"}]}`
with `data` flattened in row-major order. Symbolic dimensions are -1 in metadata.
"""

from __future__ import annotations

import json
import math

import numpy as np

from toolkit.runtime.spec import TensorSpec

# v2 datatype names and the numpy dtypes they carry. BYTES (strings) is not supported: no dltk model takes text.
DATATYPES = {
    "BOOL": "bool",
    "UINT8": "uint8",
    "UINT16": "uint16",
    "UINT32": "uint32",
    "UINT64": "uint64",
    "INT8": "int8",
    "INT16": "int16",
    "INT32": "int32",
    "INT64": "int64",
    "FP16": "float16",
    "FP32": "float32",
    "FP64": "float64",
}
_V2_NAMES = {dtype: name for name, dtype in DATATYPES.items()}

MODEL_VERSION = "1"  # one version per served model; the v2 routes with /versions/1 reach it too


class ProtocolError(Exception):
    """A request the client must fix: answered 400 with this message."""


def datatype(dtype: str) -> str:
    return _V2_NAMES.get(str(dtype), str(dtype).upper())


def tensor_metadata(spec: TensorSpec) -> dict:
    return {"name": spec.name, "datatype": datatype(spec.dtype), "shape": [d if isinstance(d, int) else -1 for d in spec.shape]}


def model_metadata(name: str, platform: str, inputs: list[TensorSpec], outputs: list[TensorSpec]) -> dict:
    return {
        "name": name,
        "versions": [MODEL_VERSION],
        "platform": platform,
        "inputs": [tensor_metadata(s) for s in inputs],
        "outputs": [tensor_metadata(s) for s in outputs],
    }


def parse_json(body: bytes) -> dict:
    try:
        payload = json.loads(body, parse_constant=_refuse_constant)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ProtocolError(f"the request body is not JSON: {e}") from None
    except RecursionError:
        raise ProtocolError("the request body is nested too deeply") from None
    if not isinstance(payload, dict):
        raise ProtocolError("the request body must be a JSON object with an 'inputs' list")
    return payload


def decode_request(payload: dict, inputs: list[TensorSpec], outputs: list[TensorSpec]):
    """(feeds as numpy arrays, names of the outputs to answer). Raises ProtocolError naming what is wrong."""
    tensors = payload.get("inputs")
    if not isinstance(tensors, list) or not tensors:
        raise ProtocolError("the request needs an 'inputs' list with one entry per model input")
    expected = {s.name: s for s in inputs}
    feeds = {}
    for tensor in tensors:
        if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
            raise ProtocolError("each entry of 'inputs' needs a 'name'")
        name = tensor["name"]
        if name not in expected:
            raise ProtocolError(f"unknown input '{name}' (the model takes {sorted(expected)})")
        if name in feeds:
            raise ProtocolError(f"input '{name}' is given twice")
        feeds[name] = _decode_tensor(tensor, expected[name])
    missing = [name for name in expected if name not in feeds]
    if missing:
        raise ProtocolError(f"missing input '{missing[0]}' (the model takes {sorted(expected)})")
    return feeds, _requested_outputs(payload.get("outputs"), outputs)


def _decode_tensor(tensor: dict, spec: TensorSpec) -> np.ndarray:
    name, given_type, shape = spec.name, tensor.get("datatype"), tensor.get("shape")
    if given_type not in DATATYPES:
        raise ProtocolError(f"input '{name}' has datatype {given_type!r}; supported: {', '.join(DATATYPES)}")
    if given_type != datatype(spec.dtype):
        raise ProtocolError(f"input '{name}' has datatype {given_type}, the model expects {datatype(spec.dtype)}")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise ProtocolError(f"input '{name}' needs a 'shape' list of non-negative integers, got {shape!r}")
    if "data" not in tensor:
        raise ProtocolError(f"input '{name}' has no 'data'")
    scalars = _flatten(tensor["data"], len(shape))
    if scalars is None or not set(map(type, scalars)) <= _JSON_TYPES[given_type]:
        raise ProtocolError(f"input '{name}': 'data' is not a list of {given_type} values")
    try:
        with np.errstate(over="raise"):
            values = np.asarray(scalars, dtype=DATATYPES[given_type])
    except (ValueError, TypeError, OverflowError, FloatingPointError) as e:
        raise ProtocolError(f"input '{name}': 'data' holds a value out of range for {given_type} ({e})") from None
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        raise ProtocolError(f"input '{name}': 'data' holds a value that is not a finite {given_type} number "
                            "(NaN and infinity are refused: a model's answer to them means nothing)")
    if values.size != math.prod(shape):
        raise ProtocolError(f"input '{name}' has shape {shape}, which needs {math.prod(shape)} values; 'data' has {values.size}")
    return values.reshape(shape)


# The JSON types each datatype accepts: no strings, and booleans only for BOOL.
_JSON_TYPES = {name: ({bool} if name == "BOOL" else {int} if "INT" in name else {int, float}) for name in DATATYPES}


def _refuse_constant(name: str):
    raise ProtocolError(f"the request body holds {name}, which is not JSON (and not a number a model can use)")


def _flatten(data, depth: int) -> list | None:
    """The scalars of a flat or nested (at most `depth` levels) list, row-major; None when it is neither."""
    if not isinstance(data, list):
        return None
    scalars = data
    for _ in range(depth):
        if not any(isinstance(v, list) for v in scalars):
            return scalars
        if not all(isinstance(v, list) for v in scalars):
            return None
        scalars = [v for row in scalars for v in row]
    return None if any(isinstance(v, list) for v in scalars) else scalars


def _requested_outputs(requested, outputs: list[TensorSpec]) -> list[str]:
    names = [s.name for s in outputs]
    if requested is None:
        return names
    if not isinstance(requested, list):
        raise ProtocolError("'outputs' must be a list of {\"name\": ...} entries")
    chosen = []
    for entry in requested:
        name = entry.get("name") if isinstance(entry, dict) else None
        if name not in names:
            raise ProtocolError(f"unknown output {name!r} (the model has {names})")
        chosen.append(name)
    return chosen


def encode_response(model_name: str, outputs: dict[str, np.ndarray], names: list[str], request_id=None) -> dict:
    answer = {"model_name": model_name, "model_version": MODEL_VERSION}
    if request_id is not None:
        answer["id"] = request_id
    answer["outputs"] = [
        {"name": n, "shape": list(outputs[n].shape), "datatype": datatype(outputs[n].dtype), "data": outputs[n].reshape(-1).tolist()}
        for n in names
    ]
    return answer
