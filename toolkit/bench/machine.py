"""What a result was measured on, and what about this machine could skew it."""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
from pathlib import Path

from toolkit.runtime.tvm_runtime import physical_cores
from toolkit.versions import versions

_CPUFREQ = Path("/sys/devices/system/cpu")


def environment() -> dict:
    gpu = _gpu()
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "physical_cores": physical_cores(),
        "gpu": gpu["name"] if gpu else None,
        "gpu_driver": gpu["driver"] if gpu else None,
        "memory_gb": _memory_gb(),
        "cpu_governor": cpu_governor(),
        "cpu_mhz": _cpu_mhz(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": versions(),
    }


def skew_warnings(env: dict) -> list[str]:
    """Reasons this machine's timings may not be repeatable: a power-saving governor, other load."""
    warnings = []
    governor = env.get("cpu_governor")
    if governor and governor != "performance":
        warnings.append(
            f"CPU frequency governor is '{governor}': clocks change under load "
            "(set 'performance' with cpupower frequency-set -g performance for stable numbers)"
        )
    load = env.get("load_average")
    cores = env.get("cores") or 1
    if load and load[0] > 0.5 * cores:
        warnings.append(
            f"the machine was busy before the run (1-minute load {load[0]:.2f} on {cores} cores): "
            "other work shares the CPU; close it and rerun"
        )
    return warnings


def machine_slug(env: dict) -> str:
    """A directory name for this machine's results, e.g. 'amd-epyc-7763-64-core-processor-2c'."""
    name = env.get("gpu") or env.get("cpu") or "unknown"
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower().replace("(r)", "").replace("(tm)", "")).strip("-")
    return f"{slug}-{env.get('cores')}c"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_governor() -> str | None:
    """The scaling governor of cpu0; None where the kernel exposes none (common in VMs)."""
    try:
        return (_CPUFREQ / "cpu0" / "cpufreq" / "scaling_governor").read_text().strip()
    except OSError:
        return None


def _cpu_mhz() -> list[float] | None:
    try:
        return [float(m) for m in re.findall(r"^cpu MHz\s*:\s*([\d.]+)", Path("/proc/cpuinfo").read_text(), re.M)] or None
    except OSError:
        return None


def _memory_gb() -> float | None:
    try:
        kb = int(re.search(r"MemTotal:\s*(\d+)", Path("/proc/meminfo").read_text()).group(1))
    except (OSError, AttributeError):
        return None
    return round(kb / 2**20, 1)


def _gpu() -> dict | None:
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0 or not out.stdout.strip():
        return None
    name, _, driver = out.stdout.strip().splitlines()[0].partition(",")
    return {"name": name.strip(), "driver": driver.strip() or None}
