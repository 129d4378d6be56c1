"""v2 JSON <-> numpy without a server."""

import numpy as np
import pytest

from toolkit.runtime.spec import TensorSpec
from toolkit.serve.protocol import ProtocolError, decode_request, encode_response, model_metadata, parse_json

INPUTS = [TensorSpec("tokens", ("batch", 4), "int64"), TensorSpec("mask", ("batch", 4), "bool")]
OUTPUTS = [TensorSpec("logits", ("batch", 2), "float16"), TensorSpec("hidden", ("batch", 8), "float32")]


def test_decode_makes_arrays_of_the_declared_types_and_shapes():
    payload = {"inputs": [
        {"name": "mask", "shape": [1, 4], "datatype": "BOOL", "data": [True, False, True, True]},
        {"name": "tokens", "shape": [1, 4], "datatype": "INT64", "data": [[1, 2, 3, 4]]},
    ], "outputs": [{"name": "hidden"}]}
    feeds, wanted = decode_request(payload, INPUTS, OUTPUTS)
    assert feeds["tokens"].dtype == np.int64 and feeds["tokens"].shape == (1, 4)
    assert feeds["mask"].dtype == np.bool_ and feeds["mask"].tolist() == [[True, False, True, True]]
    assert wanted == ["hidden"]


def test_encode_flattens_row_major_with_v2_types():
    outputs = {"logits": np.array([[1, 2], [3, 4]], np.float16), "hidden": np.zeros((2, 8), np.float32)}
    answer = encode_response("m", outputs, ["logits"], request_id=None)
    assert answer == {"model_name": "m", "model_version": "1",
                      "outputs": [{"name": "logits", "shape": [2, 2], "datatype": "FP16", "data": [1.0, 2.0, 3.0, 4.0]}]}


def test_metadata_writes_symbolic_dims_as_minus_one():
    meta = model_metadata("m", "onnxruntime_onnx", INPUTS, OUTPUTS)
    assert meta["inputs"][1] == {"name": "mask", "datatype": "BOOL", "shape": [-1, 4]}
    assert meta["outputs"][0]["datatype"] == "FP16"


@pytest.mark.parametrize("body", [b"[1, 2]", b"\xff\xfe", b""])
def test_parse_json_refuses_what_is_not_an_object(body):
    with pytest.raises(ProtocolError):
        parse_json(body)


def test_negative_and_boolean_dims_are_refused():
    for shape in ([1, -4], [True, 4]):
        payload = {"inputs": [{"name": "tokens", "shape": shape, "datatype": "INT64", "data": [1, 2, 3, 4]},
                              {"name": "mask", "shape": [1, 4], "datatype": "BOOL", "data": [1, 1, 1, 1]}]}
        with pytest.raises(ProtocolError, match="'tokens'"):
            decode_request(payload, INPUTS, OUTPUTS)


@pytest.mark.parametrize("data, message", [
    ([1, 2, True, 4], "not a list of INT64 values"),
    ([1, 2, 3.5, 4], "not a list of INT64 values"),
    (["1", 2, 3, 4], "not a list of INT64 values"),
    ([[1, 2], [3, [4]]], "not a list of INT64 values"),
    ([2**70, 1, 1, 1], "out of range for INT64"),
])
def test_data_types_are_strict(data, message):
    request = {"inputs": [{"name": "tokens", "shape": [1, 4], "datatype": "INT64", "data": data},
                          {"name": "mask", "shape": [1, 4], "datatype": "BOOL", "data": [True, False, True, True]}]}
    with pytest.raises(ProtocolError, match=message):
        decode_request(request, INPUTS, OUTPUTS)
    request["inputs"][0]["data"] = [1, 2, 3, 4]
    request["inputs"][1]["data"] = [1, 0, 1, 1]  # numbers are not booleans
    with pytest.raises(ProtocolError, match="not a list of BOOL values"):
        decode_request(request, INPUTS, OUTPUTS)


@pytest.mark.parametrize("body", [b'{"inputs": NaN}', b'{"a": Infinity}', b"[" * 100000 + b"]" * 100000])
def test_parse_json_refuses_non_json_numbers_and_deep_nesting(body):
    with pytest.raises(ProtocolError):
        parse_json(body)
