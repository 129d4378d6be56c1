"""Latency benchmarks: the single-stream scenario over any backend that answers the Session interface.

Each (batch, backend) pair is measured in its own block: warm-up, then timed calls until both
a minimum count and a minimum duration are reached. Blocks, not call-by-call alternation,
because ONNX Runtime's spinning threads slow whatever runs right after them.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from toolkit.errors import DltkError
from toolkit.runtime import Session, load
from toolkit.runtime.artifact import SOURCE_ONNX, is_artifact, open_artifact
from toolkit.versions import versions

BACKENDS = ("torch", "ort", "tvm")
HIGH_COV = 0.25  # coefficient of variation above which a result gets a warning


@dataclass(frozen=True)
class Budget:
    warmup: int = 20
    min_iterations: int = 200
    min_seconds: float = 1.0
    max_seconds: float = 60.0


@dataclass
class Subject:
    """What is benchmarked: a session per backend, and the feeds for a batch size."""

    model: str
    sessions: dict[str, Session]
    feeds: Callable[[int], dict[str, np.ndarray]]


def measure(call: Callable[[], object], budget: Budget) -> list[float]:
    """Latencies in ms of `call`, after warm-up."""
    for _ in range(budget.warmup):
        call()
    latencies = []
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter_ns()
        call()
        latencies.append((time.perf_counter_ns() - t0) / 1e6)
        elapsed = time.perf_counter() - start
        enough = len(latencies) >= budget.min_iterations and elapsed >= budget.min_seconds
        if enough or elapsed >= budget.max_seconds:
            return latencies


def summarize(latencies_ms: list[float]) -> dict:
    values = np.asarray(latencies_ms)
    p = np.percentile(values, [50, 90, 95, 99])
    mean = float(values.mean())
    std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return {
        "mean": mean,
        "std": std,
        "min": float(values.min()),
        "p50": float(p[0]),
        "p90": float(p[1]),
        "p95": float(p[2]),
        "p99": float(p[3]),
        "max": float(values.max()),
    }


def single_stream(subject: Subject, batches: list[int], budget: Budget = Budget(), log=lambda line: None) -> list[dict]:
    results = []
    for batch in batches:
        feeds = subject.feeds(batch)
        for backend, session in subject.sessions.items():
            log(f"measuring {subject.model} {backend} batch {batch}")
            if hasattr(session, "device_latencies"):  # a remote device: timed there, without the network
                measure(lambda: session.run(feeds), Budget(warmup=budget.warmup, min_iterations=0, min_seconds=0))
                latencies = session.device_latencies(feeds, budget.min_iterations)
            else:
                latencies = measure(lambda: session.run(feeds), budget)
            stats = summarize(latencies)
            results.append(
                {
                    "model": subject.model,
                    "backend": backend,
                    "device": session.device,
                    "batch": batch,
                    "scenario": "single-stream",
                    "latency_ms": stats,
                    "throughput_per_s": batch * 1000.0 / stats["mean"],
                    "iterations": len(latencies),
                    "warmup": budget.warmup,
                    "cov": stats["std"] / stats["mean"] if stats["mean"] else 0.0,
                }
            )
    return results


def environment() -> dict:
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "gpu": _gpu_name(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": versions(),
    }


def report(results: list[dict]) -> dict:
    return {"env": environment(), "results": results}


def noisy(results: list[dict]) -> list[dict]:
    return [r for r in results if r["cov"] > HIGH_COV]


# --- what to benchmark ------------------------------------------------------------------


def cache_dir() -> Path:
    return Path(os.environ.get("DLTK_CACHE_DIR") or Path.home() / ".cache" / "dltk")


def open_subject(source: str, backends: list[str], device: str = "cpu", log=lambda line: None, rpc=None) -> Subject:
    """A zoo NAME or checkpoint (every backend, same weights, held-out inputs), an ONNX file or an artifact.

    With `rpc` (a toolkit.tune.RpcTarget), the tvm backend runs on the tracker's device for its key.
    """
    subject = _open_subject(source, backends, device, log)
    if rpc is not None and "tvm" in subject.sessions:
        from toolkit.remote import RemoteTvmSession

        artifact = open_artifact(subject.sessions["tvm"].artifact_path)
        subject.sessions["tvm"] = RemoteTvmSession(artifact, rpc)
    return subject


def _open_subject(source: str, backends: list[str], device: str, log) -> Subject:
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown:
        raise DltkError(f"unknown backend '{unknown[0]}'", f"use any of {','.join(BACKENDS)}")
    path = Path(source)
    if path.is_dir():
        return _artifact_subject(path, backends, device)
    if path.suffix == ".onnx":
        return _onnx_subject(path, backends, device, log)
    return _zoo_subject(source, backends, device, log)


def _zoo_subject(source: str, backends: list[str], device: str, log) -> Subject:
    from toolkit.export import export_model
    from toolkit.runtime.torch import TorchSession
    from toolkit.train import load_model

    loaded = load_model(source)
    entry = cache_dir() / f"{loaded.spec.name}-{_weights_key(loaded.module)}"
    onnx_path = entry / "model.onnx"
    if not onnx_path.is_file():
        log(f"exporting {loaded.spec.name} to {onnx_path}")
        export_model(source, onnx_path)
    reference = load(onnx_path, device)
    sessions = {}
    for backend in backends:
        if backend == "torch":
            sessions[backend] = TorchSession(loaded.module, reference.inputs, reference.outputs, device)
        elif backend == "ort":
            sessions[backend] = reference
        else:
            sessions[backend] = load(_compiled(onnx_path, device, log), device, backend="tvm")

    def feeds(batch: int) -> dict[str, np.ndarray]:
        sample = loaded.spec.sample(batch)
        return {s.name: x.numpy() for s, x in zip(reference.inputs, sample)}

    return Subject(loaded.spec.name, sessions, feeds)


def _onnx_subject(path: Path, backends: list[str], device: str, log) -> Subject:
    _refuse_torch(backends, path)
    sessions = {}
    for backend in backends:
        if backend == "ort":
            sessions[backend] = load(path, device)
        else:
            sessions[backend] = load(_compiled(path, device, log), device, backend="tvm")
    return _random_subject(path.stem, sessions)


def _artifact_subject(path: Path, backends: list[str], device: str) -> Subject:
    _refuse_torch(backends, path)
    artifact = open_artifact(path)
    sessions = {b: load(path, device, backend=b) for b in backends}
    return _random_subject(artifact.manifest["model"], sessions)


def _refuse_torch(backends: list[str], path: Path) -> None:
    if "torch" in backends:
        raise DltkError(f"the torch backend needs a zoo model or a checkpoint, not {path}", "drop torch from --backend")


def _random_subject(model: str, sessions: dict[str, Session]) -> Subject:
    specs = next(iter(sessions.values())).inputs

    def feeds(batch: int) -> dict[str, np.ndarray]:
        from toolkit.runtime.spec import random_feeds

        dims = {}
        for spec in specs:
            if spec.shape and isinstance(spec.shape[0], str):
                dims[spec.shape[0]] = batch
            elif spec.shape and spec.shape[0] != batch:
                raise DltkError(f"input '{spec.name}' has a fixed batch of {spec.shape[0]}", f"use --batch {spec.shape[0]}")
        return random_feeds(specs, dims)

    return Subject(model, sessions, feeds)


def _compiled(onnx_path: Path, device: str, log) -> Path:
    """The artifact for this ONNX file and device, compiled once and cached by content."""
    from toolkit.compile import compile_model

    digest = hashlib.sha256(onnx_path.read_bytes()).hexdigest()[:16]
    artifact = cache_dir() / "compiled" / f"{digest}-{device}"
    if not is_artifact(artifact):
        log(f"compiling {onnx_path} for {device} into {artifact}")
        compile_model(onnx_path, artifact, target=device, log=log)
    return artifact


def _weights_key(module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _gpu_name() -> str | None:
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None


def ratio_to(results: list[dict], baseline: str = "ort") -> dict[tuple, float]:
    """p50 of each result over the baseline backend's p50 at the same model and batch."""
    base = {(r["model"], r["batch"]): r["latency_ms"]["p50"] for r in results if r["backend"] == baseline}
    return {
        (r["model"], r["backend"], r["batch"]): r["latency_ms"]["p50"] / base[(r["model"], r["batch"])]
        for r in results
        if (r["model"], r["batch"]) in base
    }
