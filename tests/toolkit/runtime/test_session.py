import numpy as np
import pytest

from toolkit.errors import InputError
from toolkit.runtime.session import Session, StaticVariants
from toolkit.runtime.spec import TensorSpec
from toolkit.timing import Budget


class Doubler(Session):
    """An engine as a new backend would write one: a constructor and _run."""

    backend, device = "numpy", "cpu"

    def __init__(self):
        self.inputs = [TensorSpec("x", ("batch", 2), "float32")]
        self.outputs = [TensorSpec("y", ("batch", 2), "float32")]
        self.calls = 0

    def _run(self, feeds):
        self.calls += 1
        return {"y": feeds["x"] * 2}


def test_a_new_engine_gets_checked_feeds_and_timed_blocks_from_the_base():
    session = Doubler()
    np.testing.assert_array_equal(session.run({"x": np.ones((3, 2), np.float32)})["y"], np.full((3, 2), 2.0))
    with pytest.raises(InputError, match="input 'x' has dtype float64"):
        session.run({"x": np.ones((3, 2))})
    with pytest.raises(InputError, match="missing input 'x'"):
        session.run({})
    assert session.calls == 1  # the engine never saw the bad feeds
    block = session.timed_block({"x": np.ones((1, 2), np.float32)}, Budget(warmup=2, min_iterations=5, min_seconds=0))
    assert len(block.latencies_ms) == 5 and session.calls == 1 + 2 + 5


def test_static_variants_run_the_copy_for_the_batch_else_main():
    variants = StaticVariants([TensorSpec("x", ("batch", 2), "float32")], {"1": "main_b1", 8: "main_b8"})
    assert variants.by_batch == {1: "main_b1", 8: "main_b8"}
    assert variants.entry_for({"x": np.zeros((8, 2), np.float32)}) == "main_b8"
    assert variants.entry_for({"x": np.zeros((3, 2), np.float32)}) == "main"
    fixed = StaticVariants([TensorSpec("x", (4, 2), "float32")], {4: "main_b4"})
    assert fixed.entry_for({"x": np.zeros((4, 2), np.float32)}) == "main"  # no symbolic batch: nothing to pick
