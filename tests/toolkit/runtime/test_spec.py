"""Random inputs for a model's specs (toolkit.runtime.spec.random_feeds)."""

import numpy as np

from toolkit.runtime.spec import TensorSpec, random_feeds


def test_masks_and_token_types_are_binary_other_integers_are_not():
    specs = [TensorSpec("input_ids", ("batch", "sequence"), "int64"), TensorSpec("attention_mask", ("batch", "sequence"), "int64"),
             TensorSpec("token_type_ids", ("batch", "sequence"), "int64"), TensorSpec("pixels", (2, 3), "float32")]
    feeds = random_feeds(specs, {"batch": 4, "sequence": 64}, seed=0)
    assert feeds["input_ids"].shape == (4, 64) and set(np.unique(feeds["input_ids"])) == set(range(10))
    assert set(np.unique(feeds["attention_mask"])) == {0, 1}
    assert set(np.unique(feeds["token_type_ids"])) == {0, 1}
    assert feeds["pixels"].dtype == np.float32 and feeds["pixels"].shape == (2, 3)
