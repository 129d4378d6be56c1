"""TvmSession's memory: bounded under any sequence of batch sizes, released when dropped."""

import json
import subprocess
import sys
from pathlib import Path

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
