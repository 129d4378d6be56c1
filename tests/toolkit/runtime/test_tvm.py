"""TvmSession's memory: bounded under any sequence of batch sizes, released when dropped."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[3]
# Tensors of 37-38 MB: cheap to compute, and above glibc's largest mmap threshold (32 MiB), so
# malloc hands each one back to the system when it is freed and RSS shows what TVM keeps.
WIDTH = 1024
BATCHES = [9000 + i for i in range(24)]  # each size needs buffers of a different page count

# In a fresh process: a session over the artifact runs every batch size once; RSS (MB) after the
# first two calls, after all of them, before the session and after dropping it. ALLOCATOR names
# the policy under test: "cpu" runs the CPU's, "cuda" the GPU's (pooled, capped) on the CPU.
MEASURE = """
import gc, json, sys
import numpy as np
from toolkit import runtime
from toolkit.runtime import tvm as tvm_session

ARTIFACT, POLICY, BATCHES, WIDTH = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4])
tvm_session.ALLOCATORS["cpu"] = tvm_session.ALLOCATORS[POLICY]

def rss_mb():
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS")).split()[1]) / 1024

session = runtime.load(ARTIFACT, backend="tvm")
session.run({"x": np.ones((1, WIDTH), np.float32)})
report = {"before": rss_mb()}
for i, batch in enumerate(BATCHES):
    out = session.run({"x": np.full((batch, WIDTH), -1.0, np.float32)})["y"]
    assert out.shape == (batch, WIDTH) and float(out.max()) == 0.0  # relu(-1) * 2
    del out
    if i == 1:
        report["after_two"] = rss_mb()
report["after_all"] = rss_mb()
del session
gc.collect()
report["dropped"] = rss_mb()
print(json.dumps(report))
"""


@pytest.fixture(scope="module")
def elementwise_artifact(tmp_path_factory):
    """y = relu(x) * 2 over (batch, WIDTH): every call allocates one batch-sized output in the VM."""
    import onnx
    from onnx import TensorProto, helper

    from toolkit.compile import compile_model

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Mul", ["r", "two"], ["y"])],
        "elementwise",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", WIDTH])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", WIDTH])],
        [helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])],
    )
    directory = tmp_path_factory.mktemp("elementwise")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), directory / "m.onnx")
    return compile_model(directory / "m.onnx", directory / "m.tvm", choose_engine=False).artifact.path


@pytest.mark.parametrize("policy, bound_mb", [("cpu", 100), ("cuda", 8 * 37 + 100)])
def test_memory_stays_bounded_over_many_batch_sizes_and_is_released(elementwise_artifact, policy, bound_mb):
    """A VM that kept a buffer per size (the pooled allocator, as before) grew by 22 x 37 = 800 MB
    here. The CPU's allocator returns buffers after each call; the GPU's keeps at most 8 sizes' worth."""
    args = [str(elementwise_artifact), policy, json.dumps(BATCHES), str(WIDTH)]
    result = subprocess.run([sys.executable, "-c", MEASURE, *args], capture_output=True, text=True, cwd=ROOT,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    rss = json.loads(result.stdout)
    assert rss["after_all"] - rss["after_two"] < bound_mb, rss
    assert rss["dropped"] - rss["before"] < 100, rss


@pytest.fixture(scope="module")
def aliasing_artifact(tmp_path_factory):
    """Outputs TVM returns without computing them: the input itself, and a weight; beside a computed one.

    The first comes back as the very buffer the session copied the feed into, the second as the
    model's own constant, so a session that handed them out without a copy would let the next
    call overwrite what the caller holds, and the caller change what the model computes.
    """
    import onnx
    from onnx import TensorProto, helper

    from toolkit.compile import compile_model

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["same"]), helper.make_node("Where", ["mask", "x", "zero"], ["picked"]),
         helper.make_node("Identity", ["table"], ["weights"])],
        "aliases",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4]),
         helper.make_tensor_value_info("mask", TensorProto.BOOL, ["batch", 4])],
        [helper.make_tensor_value_info("same", TensorProto.FLOAT, ["batch", 4]),
         helper.make_tensor_value_info("picked", TensorProto.FLOAT, ["batch", 4]),
         helper.make_tensor_value_info("weights", TensorProto.FLOAT, [3])],
        [helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
         helper.make_tensor("table", TensorProto.FLOAT, [3], [1.0, 2.0, 3.0])],
    )
    directory = tmp_path_factory.mktemp("aliases")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), directory / "m.onnx")
    return compile_model(directory / "m.onnx", directory / "m.tvm", choose_engine=False).artifact.path


def _feeds(batch: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((batch, 4)).astype(np.float32), "mask": rng.integers(0, 2, (batch, 4)) == 1}


def test_outputs_stay_the_callers_after_later_calls(aliasing_artifact):
    from toolkit import runtime

    session = runtime.load(aliasing_artifact, backend="tvm")
    first_feeds = _feeds(2, seed=0)
    first = session.run(first_feeds)
    kept = {name: value.copy() for name, value in first.items()}
    np.testing.assert_array_equal(first["same"], first_feeds["x"])
    np.testing.assert_array_equal(first["weights"], [1.0, 2.0, 3.0])

    second = session.run(_feeds(2, seed=1))  # same shapes: the same buffers inside the session
    for name, value in first.items():
        np.testing.assert_array_equal(value, kept[name], err_msg=f"output '{name}' changed under the caller")
        assert not np.shares_memory(value, second[name])

    for value in (*second.values(), *first_feeds.values()):  # the caller may write to what it holds
        value[...] = 0
    again = session.run(_feeds(2, seed=0))
    for name, value in again.items():
        np.testing.assert_array_equal(value, kept[name], err_msg=f"output '{name}' changed by the caller's writes")


def test_every_shape_agrees_with_onnx_runtime(aliasing_artifact):
    """Shapes that come back, more shapes than a thread keeps buffers for, and feeds too large to keep."""
    from toolkit import runtime

    tvm_session, ort_session = (runtime.load(aliasing_artifact, backend=b) for b in ("tvm", "ort"))
    batches = [1, 3, 1, 8, 3, *range(10, 30), 1, 70000]  # 70000 rows: 1.4 MB of feeds
    for seed, batch in enumerate(batches):
        feeds = _feeds(batch, seed)
        got, expected = tvm_session.run(feeds), ort_session.run(feeds)
        for name in expected:
            np.testing.assert_array_equal(got[name], expected[name], err_msg=f"batch {batch}, output '{name}'")


@pytest.mark.parametrize("change, message", [
    ({"mask": np.ones((2, 4), np.int64)}, "input 'mask' has dtype int64.*expected bool"),
    ({"mask": np.ones((3, 4), bool)}, "input 'mask' has shape \\(3, 4\\).*expected \\(batch, 4\\)"),
    ({"extra": np.ones(1)}, "unknown input 'extra'.*\\['mask', 'x'\\]"),
])
def test_feeds_are_checked_the_same_on_both_engines(aliasing_artifact, change, message):
    from toolkit import runtime
    from toolkit.errors import InputError

    for backend in ("tvm", "ort"):
        session = runtime.load(aliasing_artifact, backend=backend)
        session.run(_feeds(2, seed=0))  # a call that went through first changes nothing
        with pytest.raises(InputError, match=message):
            session.run({**_feeds(2, seed=0), **change})
