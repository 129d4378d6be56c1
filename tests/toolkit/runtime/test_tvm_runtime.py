"""Running an artifact with TVM's runtime library alone: no compiler mapped, no torch imported."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from toolkit import runtime
from toolkit.errors import DltkError
from toolkit.runtime import random_feeds, tvm_runtime

ROOT = Path(__file__).resolve().parents[3]

# Loads the artifact with backend "tvm" in a fresh process, runs batch 3 and 8 (a tuned variant
# when the artifact has one, else main), saves the outputs, and says what the process holds.
LOAD_AND_RUN = """
from toolkit import runtime
session = runtime.load(ARTIFACT, backend="tvm")
outputs = {f"b{b}": session.run(runtime.random_feeds(session.inputs, {"batch": b}, seed=b))["logits"] for b in (3, 8)}
np.savez(OUT, **outputs)
maps = open("/proc/self/maps").read()
print("torch" in sys.modules, "libtvm_compiler" in maps, "libtvm_runtime" in maps)
"""


def run_python(code: str) -> list[str]:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def script(artifact, out, before: str = "", after: str = "") -> str:
    return (f"import sys\nimport numpy as np\nARTIFACT, OUT = {str(artifact)!r}, {str(out)!r}\n"
            + before + LOAD_AND_RUN + after)


@pytest.fixture(scope="module")
def expected(lenet_artifact):
    """The outputs of the full-TVM path (this process imported all of TVM to compile the artifact)."""
    import tvm
    from tvm import relax

    vm = relax.VirtualMachine(tvm.runtime.load_module(str(lenet_artifact / "model.so")), tvm.cpu())
    inputs = runtime.open_artifact(lenet_artifact).inputs
    return {f"b{b}": vm["main"](tvm.runtime.tensor(random_feeds(inputs, {"batch": b}, seed=b)["input"])).numpy()
            for b in (3, 8)}


def assert_outputs_match(path, expected):
    got = np.load(path)
    for name, value in expected.items():
        np.testing.assert_allclose(got[name], value, rtol=1e-5, atol=1e-6)


def test_loading_an_artifact_maps_no_compiler_and_imports_no_torch(lenet_artifact, expected, tmp_path):
    torch_imported, compiler_mapped, runtime_mapped = run_python(script(lenet_artifact, tmp_path / "out.npz"))
    assert (torch_imported, compiler_mapped, runtime_mapped) == ("False", "False", "True")
    assert_outputs_match(tmp_path / "out.npz", expected)


def test_an_application_that_imported_torch_first_still_works(lenet_artifact, expected, tmp_path):
    before = "import torch\n"
    after = "print(np.array_equal(torch.from_numpy(outputs['b3']).mul(2).numpy(), outputs['b3'] * 2))\n"
    torch_imported, _, _, torch_works = run_python(script(lenet_artifact, tmp_path / "out.npz", before, after))
    assert (torch_imported, torch_works) == ("True", "True")
    assert_outputs_match(tmp_path / "out.npz", expected)


def test_torch_and_the_full_tvm_can_come_after_the_runtime(lenet_artifact, expected, tmp_path):
    after = (
        "import torch\n"
        "print(float(torch.nn.functional.relu(torch.from_numpy(outputs['b3'])).sum()) >= 0)\n"
        "import tvm\nfrom tvm import relax\n"  # compile, tune or profile later in the same process
        "print('libtvm_compiler' in open('/proc/self/maps').read())\n"
        "again = runtime.load(ARTIFACT, backend='tvm').run(runtime.random_feeds(session.inputs, {'batch': 3}, seed=3))\n"
        "print(np.array_equal(again['logits'], outputs['b3']))\n"
    )
    result = run_python(script(lenet_artifact, tmp_path / "out.npz", after=after))
    assert result[:3] == ["False", "False", "True"]
    assert result[3:] == ["True", "True", "True"]  # torch works, the compiler loaded, same outputs
    assert_outputs_match(tmp_path / "out.npz", expected)


def test_the_cuda_device_is_found_as_tvm_finds_it():
    import tvm

    if tvm.cuda(0).exist:
        assert tvm_runtime.device("cuda").dlpack_device_type() == 2
    else:
        with pytest.raises(DltkError, match="no cuda device here"):
            tvm_runtime.device("cuda")
    with pytest.raises(DltkError, match="unknown device 'tpu'"):
        tvm_runtime.device("tpu")


@pytest.mark.parametrize("dtype", ["float32", "int64", "bool", "float16"])
def test_copies_in_and_out_of_tvm_tensors_keep_the_data(dtype):
    array = (np.arange(24).reshape(2, 3, 4) % 5).astype(dtype)
    tensor = tvm_runtime.from_numpy(array)
    np.testing.assert_array_equal(tvm_runtime.to_numpy(tensor), array)
    moved = tvm_runtime.to_cpu(tvm_runtime.to_device(tensor, tvm_runtime.device("cpu")))
    np.testing.assert_array_equal(tvm_runtime.to_numpy(moved), array)


def test_tvm_runs_a_thread_per_physical_core_unless_told_otherwise():
    # TVM's own default is half the logical CPUs on x86, one of two cores on a VM without SMT
    code = ("from toolkit.runtime import tvm_runtime\n"
            "cores = tvm_runtime.physical_cores()\n"
            "print(cores, tvm_runtime.ffi().get_global_func('runtime.NumThreads')())")
    env = {k: v for k, v in os.environ.items() if k not in ("TVM_NUM_THREADS", "OMP_NUM_THREADS")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    cores, threads = map(int, result.stdout.split())
    assert threads == cores >= 1


@pytest.mark.parametrize("cpu_list,count", [("0", 1), ("0,16\n", 2), ("0-3,8-11", 8)])
def test_cpu_lists_are_counted_as_linux_writes_them(cpu_list, count):
    assert tvm_runtime.cpus_in_list(cpu_list) == count
