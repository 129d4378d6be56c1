"""Which shipped tuning records a target may use: its own CPU's first, then a compatible family's.

Records are schedules (TIR traces), not machine code: a record tuned on one CPU compiles for
any CPU that has the instructions it was tuned with. So each shipped directory is named by the
exact target it was tuned on (`llvm-znver3-2c`) and keeps that target in `target.json`; from it
follows its instruction-set family (`llvm-x86_64-avx2-2c`). A compile for a Zen 4 (AVX-512)
finds no `llvm-znver4-2c` records, then takes the AVX2 family's: AVX-512 CPUs run AVX2 code.

Records from another CPU are a guess about this one, so `tune.prepare` measures each foreign
record against the kernel's default schedule here before it may replace the default.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from toolkit import paths

TARGET_FILE = "target.json"  # the target a shipped directory's records were tuned on

# Instruction-set levels per architecture, lowest first: code for a level runs on every higher one.
_LEVELS = {
    "x86_64": [("sse", []), ("avx2", ["avx2", "fma"]), ("avx512", ["avx512f", "avx512bw", "avx512vl"])],
    "aarch64": [("neon", []), ("sve", ["sve"])],
}


@dataclass(frozen=True)
class ShippedRecords:
    directory: Path
    key: str  # the exact target it was tuned on, e.g. llvm-znver3-2c
    family: str  # e.g. llvm-x86_64-avx2-2c
    exact: bool  # tuned on this very CPU and core count


def target_key(target: dict) -> str:
    """A directory name for a target's records: llvm-znver3-2c, cuda-sm_90."""
    if target["kind"] == "cuda":
        return f"cuda-{target.get('arch', 'unknown')}"
    return f"{target['kind']}-{target.get('mcpu', 'generic')}-{target.get('num-cores', 0)}c"


def isa_level(target: dict) -> tuple[str, int]:
    """(architecture, index of its highest instruction-set level this CPU has) for an LLVM target."""
    import tvm
    from tvm.target import codegen

    arch = _arch(target)
    levels = _LEVELS.get(arch, [("generic", [])])
    tvm_target = tvm.target.Target(target)
    best = 0
    for index, (_, features) in enumerate(levels):
        if features and codegen.target_has_features(features, tvm_target):
            best = index
    return arch, best


def family_key(target: dict) -> str:
    """The records' family: architecture, instruction-set level and core count (llvm-x86_64-avx512-2c)."""
    if target["kind"] == "cuda":
        return target_key(target)
    arch, level = isa_level(target)
    name = _LEVELS.get(arch, [("generic", [])])[level][0]
    return f"llvm-{arch}-{name}-{target.get('num-cores', 0)}c"


def shipped_for(target: dict, root: Path | None = None) -> list[ShippedRecords]:
    """The shipped record sets this target may use, best first: its exact key, then the same
    family (another CPU with the same instructions), then lower levels of its architecture."""
    root = root or paths.SHIPPED_RECORDS
    key = target_key(target)
    exact = root / key
    found = [ShippedRecords(exact, key, family_key(target), True)] if _has_records(exact) else []
    if target["kind"] != "llvm":
        return found
    arch, level = isa_level(target)
    cores = target.get("num-cores", 0)
    compatible = []
    for directory in sorted(p for p in root.glob("*") if p.is_dir() and p != exact and _has_records(p)):
        tuned_on = _tuned_on(directory)
        if tuned_on is None or tuned_on.get("kind") != "llvm" or tuned_on.get("num-cores", 0) != cores:
            continue
        their_arch, their_level = isa_level(tuned_on)
        if their_arch == arch and their_level <= level:
            compatible.append((level - their_level, ShippedRecords(directory, directory.name, family_key(tuned_on), False)))
    return found + [records for _, records in sorted(compatible, key=lambda pair: pair[0])]


def write_target(directory: Path, target: dict) -> None:
    (directory / TARGET_FILE).write_text(json.dumps(target, indent=1, sort_keys=True) + "\n")


def _tuned_on(directory: Path) -> dict | None:
    try:
        target = json.loads((directory / TARGET_FILE).read_text())
    except (OSError, ValueError):
        return None
    return target if isinstance(target, dict) and "kind" in target else None


def _has_records(directory: Path) -> bool:
    return (directory / "database_workload.json").is_file() and (directory / "database_tuning_record.json").is_file()


def _arch(target: dict) -> str:
    triple = str(target.get("mtriple", "x86_64"))
    return "aarch64" if triple.startswith(("aarch64", "arm64")) else triple.split("-")[0]
