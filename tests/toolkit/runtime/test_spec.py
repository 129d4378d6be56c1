"""Random inputs for a model's specs, and the checks of feeds against them (toolkit.runtime.spec)."""

import numpy as np
import pytest

from toolkit.errors import InputError
from toolkit.runtime.spec import TensorSpec, random_feeds, validate_feeds


def test_masks_and_token_types_are_binary_other_integers_are_not():
    specs = [TensorSpec("input_ids", ("batch", "sequence"), "int64"), TensorSpec("attention_mask", ("batch", "sequence"), "int64"),
             TensorSpec("token_type_ids", ("batch", "sequence"), "int64"), TensorSpec("pixels", (2, 3), "float32")]
    feeds = random_feeds(specs, {"batch": 4, "sequence": 64}, seed=0)
    assert feeds["input_ids"].shape == (4, 64) and set(np.unique(feeds["input_ids"])) == set(range(10))
    assert set(np.unique(feeds["attention_mask"])) == {0, 1}
    assert set(np.unique(feeds["token_type_ids"])) == {0, 1}
    assert feeds["pixels"].dtype == np.float32 and feeds["pixels"].shape == (2, 3)


def test_shape_checks_hold_call_after_call():
    """The checks remember which sizes a shape binds; what they accept or refuse must not change with it."""
    specs = [TensorSpec("square", ("n", "n"), "float32"), TensorSpec("row", ("n", 3), "float32")]
    good = {"square": np.zeros((2, 2), np.float32), "row": np.zeros((2, 3), np.float32)}
    for _ in range(2):
        assert validate_feeds(specs, good).keys() == good.keys()
        with pytest.raises(InputError, match=r"input 'square' has shape \(2, 3\)"):  # n bound twice in one shape
            validate_feeds(specs, {**good, "square": np.zeros((2, 3), np.float32)})
        with pytest.raises(InputError, match=r"input 'row' has shape \(4, 3\)"):  # and across inputs
            validate_feeds(specs, {**good, "row": np.zeros((4, 3), np.float32)})
        with pytest.raises(InputError, match=r"input 'row' has shape \(2, 4\).*expected \(n, 3\)"):
            validate_feeds(specs, {**good, "row": np.zeros((2, 4), np.float32)})
        with pytest.raises(InputError, match="unknown input 'col'"):  # as many feeds as inputs, one misnamed
            validate_feeds(specs, {"square": good["square"], "col": good["row"]})
        with pytest.raises(InputError, match="missing input 'row'"):
            validate_feeds(specs, {"square": good["square"]})
