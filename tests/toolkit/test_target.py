import json

import pytest
import tvm

from toolkit.errors import DltkError
from toolkit.target import device_of, resolve_target


def test_cpu_is_this_host_as_a_dict():
    target = resolve_target("cpu")
    assert target["kind"] == "llvm"
    assert target["mcpu"] == tvm.target.codegen.llvm_get_system_cpu() != "native"
    assert target["num-cores"] >= 1
    assert device_of(target) == "cpu"


def test_json_target_is_accepted_and_cuda_gets_a_host():
    target = resolve_target(json.dumps({"kind": "cuda", "arch": "sm_80"}))
    assert target["host"]["kind"] == "llvm" and device_of(target) == "cuda"


@pytest.mark.parametrize("text", ["tpu", '{"kind": "metal"}', "[1, 2]"])
def test_unknown_targets_are_usage_errors(text):
    with pytest.raises(DltkError) as info:
        resolve_target(text)
    assert info.value.exit_code == 2


def test_cuda_without_a_gpu_asks_for_json():
    if tvm.cuda(0).exist:
        pytest.skip("this machine has a GPU")
    with pytest.raises(DltkError, match="no CUDA GPU here.*JSON"):
        resolve_target("cuda")
