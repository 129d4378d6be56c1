"""Where a compiled artifact's time goes: per-kernel times in TVM, per-op times in ONNX Runtime.

TVM 0.27's Relax VM has no profiler any more (`VirtualMachine(..., profile=True)` and
`vm.profile` are gone), so the calls the VM makes are timed through its instrument hook. Kernels
(the compiled TIR functions) are reported; the VM's builtins (allocation, shape checks) are only
counted, as their measured time is mostly the hook's own cost, about a microsecond a call. Each
kernel's time carries that cost too, so `wall_us`, a whole inference without the hook, is given
beside the kernels' sum.

ONNX Runtime profiles itself: its trace's "Node" events from the runs after the warm-up give
the time per node and per op type.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import onnxruntime as ort
import tvm

from toolkit.errors import DltkError
from toolkit.runtime.artifact import SOURCE_ONNX, is_artifact, open_artifact, verified_sizes
from toolkit.runtime.batch import batch_dims, batch_input, fixed_batch
from toolkit.runtime.model_source import ARTIFACT, ModelSource
from toolkit.runtime.spec import TensorSpec, random_feeds
from toolkit.runtime.tvm import TvmSession

ROWS_SHOWN = 15  # kernels in the terminal table; --json has them all
WARMUP = 5  # untimed calls before the profiled ones, in each engine
_BUILTIN = "vm.builtin."  # prefix of the Relax VM's own functions: allocation, shape checks


def profile_artifact(path, batch: int | None = None, runs: int = 20) -> dict:
    """Profile an artifact on random inputs at `batch` (None: 1, or the model's fixed batch)."""
    if runs < 1:
        raise DltkError(f"runs must be at least 1, not {runs}")
    artifact = _open_cpu_artifact(path)
    batch, feeds = batch_feeds(artifact.inputs, batch, verified_sizes(artifact.manifest))
    session = TvmSession.from_artifact(artifact)
    entry = session.entry_for(feeds)
    return {
        "model": artifact.manifest.get("model"),
        "batch": batch,
        "entry": entry,
        "runs": runs,
        "tvm": profile_tvm(session, entry, feeds, runs),
        "ort": profile_ort(artifact.file(SOURCE_ONNX), feeds, runs),
    }


def _open_cpu_artifact(path):
    if ModelSource.of(path).kind != ARTIFACT or not is_artifact(path):
        raise DltkError(
            f"{path} is not a dltk artifact, and profiling needs one",
            f"compile it with 'dltk compile {path} -o DIR', then profile DIR",
        )
    artifact = open_artifact(path)
    if artifact.device != "cpu":
        raise DltkError(
            f"{path} is compiled for {artifact.device}; profiling covers cpu artifacts only",
            "compile the model with --target cpu to profile it",
        )
    return artifact


def batch_feeds(inputs: list[TensorSpec], batch: int | None,
                other_dims: dict[str, int] | None = None) -> tuple[int, dict[str, np.ndarray]]:
    """Random feeds: a symbolic first dimension takes `batch`, other symbolic dims their size in
    `other_dims` (else 1); fixed shapes allow only their own batch."""
    if batch is not None and batch < 1:
        raise DltkError(f"batch must be at least 1, not {batch}")
    other_dims = other_dims or {}
    if batch_input(inputs) is not None:
        batch = batch or 1
        return batch, random_feeds(inputs, {**other_dims, **batch_dims(inputs, batch)})
    fixed = fixed_batch(inputs) or 1
    if batch not in (None, fixed):
        raise DltkError(f"the model's inputs have a fixed batch of {fixed}", f"profile it at batch {fixed}")
    return fixed, random_feeds(inputs, other_dims)


def profile_renderables(path, report: dict) -> list:
    """profile_artifact's report for a terminal: lines (rich markup) and the kernel and op tables."""
    from rich.markup import escape
    from rich.table import Column, Table

    tvm_report, ort_report = report["tvm"], report["ort"]
    lines: list = [
        f"[bold]{escape(str(path))}[/bold]  {report['model']} at batch {report['batch']}, "
        f"TVM entry {report['entry']}, mean of {report['runs']} runs",
        f"TVM: kernels {tvm_report['total_us']:.1f} us per inference (whole run {tvm_report['wall_us']:.1f} us "
        f"unprofiled; {tvm_report['builtin_calls']} VM builtin calls not timed)",
    ]
    table = Table("kernel", *(Column(h, justify="right") for h in ("calls", "us", "%")), box=None)
    for k in tvm_report["kernels"][:ROWS_SHOWN]:
        table.add_row(escape(k["name"]), str(k["calls"]), f"{k['us']:.1f}", f"{100 * k['share']:.1f}")
    lines.append(table)
    if len(tvm_report["kernels"]) > ROWS_SHOWN:
        lines.append(f"  ... {len(tvm_report['kernels']) - ROWS_SHOWN} more kernels (--json lists them all)")
    lines.append(f"ONNX Runtime: nodes {ort_report['total_us']:.1f} us per inference (whole run {ort_report['wall_us']:.1f} us)")
    table = Table("op", *(Column(h, justify="right") for h in ("us", "%")), box=None)
    for op in ort_report["op_types"]:
        table.add_row(escape(op["op"]), f"{op['us']:.1f}", f"{100 * op['share']:.1f}")
    lines.append(table)
    return lines


# --- TVM ---------------------------------------------------------------------------------------


class _CallTimer:
    """The VM's instrument hook: time and count per called function, nested calls excluded."""

    def __init__(self):
        self.ns: dict[str, int] = defaultdict(int)
        self.calls: Counter[str] = Counter()
        self._open: list[list[int]] = []  # [start_ns, ns spent in nested calls] per call under way

    def __call__(self, func, symbol, before_run, ret_value, *args):
        now = time.perf_counter_ns()
        if before_run:
            self._open.append([now, 0])
        else:
            start, nested = self._open.pop()
            elapsed = now - start
            self.ns[symbol] += elapsed - nested
            self.calls[symbol] += 1
            if self._open:
                self._open[-1][1] += elapsed
        return 0  # VMInstrumentReturnKind.NO_OP: run the call as usual


def profile_tvm(session: TvmSession, entry: str, feeds: dict[str, np.ndarray], runs: int) -> dict:
    vm = session.virtual_machine()
    args = [tvm.runtime.tensor(np.ascontiguousarray(feeds[s.name])) for s in session.inputs]
    function = vm[entry]
    for _ in range(WARMUP):
        function(*args)
    start = time.perf_counter()
    for _ in range(runs):
        function(*args)
    wall_us = (time.perf_counter() - start) / runs * 1e6

    vm["set_instrument"](_CallTimer())
    function(*args)  # the hook's own first call is slower: keep it out of the profile
    timer = _CallTimer()
    vm["set_instrument"](timer)
    for _ in range(runs):
        function(*args)

    kernel_us = {name: ns / runs / 1e3 for name, ns in timer.ns.items() if not name.startswith(_BUILTIN)}
    total_us = sum(kernel_us.values())
    kernels = [
        {"name": name, "us": round(us, 3), "calls": timer.calls[name] // runs, "share": _share(us, total_us)}
        for name, us in sorted(kernel_us.items(), key=lambda kv: -kv[1])
    ]
    builtin_calls = sum(n for name, n in timer.calls.items() if name.startswith(_BUILTIN)) // runs
    return {"wall_us": round(wall_us, 3), "total_us": round(total_us, 3), "kernels": kernels,
            "builtin_calls": builtin_calls}


def _share(us: float, total_us: float) -> float:
    return round(us / total_us, 4) if total_us else 0.0


# --- ONNX Runtime ------------------------------------------------------------------------------


def profile_ort(onnx_path: Path, feeds: dict[str, np.ndarray], runs: int) -> dict:
    events = _ort_trace(onnx_path, feeds, runs)
    # Each run is a "model_run" event; the node events of the warm-up runs come before the first timed one.
    timed_runs = sorted((e for e in events if e.get("name") == "model_run"), key=lambda e: e["ts"])[WARMUP:]
    first_ts = timed_runs[0]["ts"]
    node_us: dict[str, float] = defaultdict(float)
    op_us: dict[str, float] = defaultdict(float)
    node_op: dict[str, str] = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= first_ts:
            name, op = e["name"].removesuffix("_kernel_time"), e["args"]["op_name"]
            node_us[name] += e["dur"] / runs
            op_us[op] += e["dur"] / runs
            node_op[name] = op
    total_us = sum(node_us.values())
    return {
        "wall_us": round(sum(e["dur"] for e in timed_runs) / len(timed_runs), 3),
        "total_us": round(total_us, 3),
        "op_types": [{"op": op, "us": round(us, 3), "share": _share(us, total_us)}
                     for op, us in sorted(op_us.items(), key=lambda kv: -kv[1])],
        "nodes": [{"name": name, "op": node_op[name], "us": round(us, 3), "share": _share(us, total_us)}
                  for name, us in sorted(node_us.items(), key=lambda kv: -kv[1])],
    }


def _ort_trace(onnx_path: Path, feeds: dict[str, np.ndarray], runs: int) -> list[dict]:
    """The trace events of WARMUP + runs profiled runs; the trace file goes with its temp dir."""
    with tempfile.TemporaryDirectory(prefix="dltk-profile-") as tmp:
        options = ort.SessionOptions()
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "ort")
        options.log_severity_level = 3
        session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        for _ in range(WARMUP + runs):
            session.run(None, feeds)
        return json.loads(Path(session.end_profiling()).read_text())
