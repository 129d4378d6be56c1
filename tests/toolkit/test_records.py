"""Which shipped records a target may use: exact CPU first, then CPUs whose instructions it has."""

from toolkit import records
from toolkit.records import family_key, shipped_for, target_key, write_target

ZEN3 = {"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "znver3", "num-cores": 2}
ZEN4 = dict(ZEN3, mcpu="znver4")


def test_family_names_architecture_instruction_level_and_cores():
    assert family_key(ZEN3) == "llvm-x86_64-avx2-2c"
    assert family_key(ZEN4) == "llvm-x86_64-avx512-2c"
    assert family_key(dict(ZEN3, mcpu="x86-64", **{"num-cores": 4})) == "llvm-x86_64-sse-4c"
    arm = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "neoverse-n1", "num-cores": 4}
    assert family_key(arm) == "llvm-aarch64-neon-4c"
    assert family_key({"kind": "cuda", "arch": "sm_90"}) == "cuda-sm_90"


def _ship(root, target):
    directory = root / target_key(target)
    directory.mkdir(parents=True)
    for name in ("database_workload.json", "database_tuning_record.json"):
        (directory / name).write_text("")
    write_target(directory, target)
    return directory


def test_exact_cpu_first_then_lower_levels_of_the_same_family(tmp_path):
    _ship(tmp_path, ZEN3)
    _ship(tmp_path, ZEN4)
    _ship(tmp_path, dict(ZEN3, mcpu="x86-64"))
    _ship(tmp_path, dict(ZEN3, **{"num-cores": 8}))  # another core count: not this target's
    found = shipped_for(ZEN4, tmp_path)
    assert [(s.key, s.exact) for s in found] == [
        ("llvm-znver4-2c", True), ("llvm-znver3-2c", False), ("llvm-x86-64-2c", False)]
    assert found[1].family == "llvm-x86_64-avx2-2c"


def test_records_needing_instructions_this_cpu_lacks_are_never_offered(tmp_path):
    _ship(tmp_path, ZEN4)
    assert shipped_for(ZEN3, tmp_path) == []  # AVX-512 code cannot run on an AVX2-only CPU
    assert shipped_for(dict(ZEN4, **{"num-cores": 4}), tmp_path) == []


def test_a_directory_without_its_target_is_only_used_by_its_exact_key(tmp_path):
    directory = _ship(tmp_path, ZEN3)
    (directory / records.TARGET_FILE).unlink()
    assert [s.key for s in shipped_for(ZEN3, tmp_path)] == ["llvm-znver3-2c"]
    assert shipped_for(ZEN4, tmp_path) == []
