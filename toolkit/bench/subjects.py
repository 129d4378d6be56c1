"""What is benchmarked: a model, a session per backend and thread count (opened on demand), and its inputs.

Which sessions a model source offers (zoo NAME, checkpoint, ONNX file or artifact) is
toolkit.sources'; a Subject keeps them per thread count and adds the graph's cost.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from toolkit import paths
from toolkit.errors import DltkError
from toolkit.rpc import RpcTarget
from toolkit.runtime import Session, load
from toolkit.sources import TORCH_BACKENDS, TVM_BACKENDS, OrtOptions, compiled_artifact, open_source


class Subject:
    """Sessions per (backend, threads), opened once; feeds per batch size; the graph for the cost model.

    Subject(model, sessions, feeds) wraps sessions opened elsewhere (any backend names, one
    session each, whatever the thread count); open_subject() builds one that opens sessions
    on demand through an opener.
    """

    def __init__(
        self,
        model: str,
        sessions: dict[str, Session] | None,
        feeds: Callable[[int], dict[str, np.ndarray]],
        *,
        opener: Callable[[str, int | None], Session] | None = None,
        backends: list[str] | None = None,
        device: str | None = None,
        onnx_path: Path | None = None,
    ):
        if opener is None:
            fixed = dict(sessions or {})
            opener = lambda backend, threads: fixed[backend]  # noqa: E731
            backends = backends or list(fixed)
            device = device or next(iter(fixed.values())).device
        self.model, self.device, self.backends = model, device or "cpu", list(backends or [])
        self.onnx_path = onnx_path
        self._opener, self._feeds = opener, feeds
        self._sessions: dict[tuple, Session] = {}
        self._costs: dict[int, dict] = {}
        self.metrics: dict[str, dict | None] = {}  # precision -> held-out {metric: value}, with --precision
        self.skipped: list[str] = []  # precisions that could not run, and why

    def session(self, backend: str, threads: int | None = None) -> Session:
        # torch's and TVM's thread pools are per process (set by use_threads before each block);
        # an ONNX Runtime session owns its pool, so each thread count is a session of its own.
        key = (backend, threads if _engine(backend) == "ort" else None)
        if key not in self._sessions:
            self._sessions[key] = self._opener(backend, threads)
        return self._sessions[key]

    @property
    def sessions(self) -> dict[str, Session]:
        return {b: self.session(b) for b in self.backends}

    def feeds(self, batch: int) -> dict[str, np.ndarray]:
        return self._feeds(batch)

    def cost(self, batch: int) -> dict | None:
        """FLOPs and bytes of one inference at `batch`, from the ONNX graph; None without one."""
        if self.onnx_path is None:
            return None
        if batch not in self._costs:
            import onnx

            from toolkit.inspect import graph_cost

            shapes = {name: array.shape for name, array in self.feeds(batch).items()}
            self._costs[batch] = graph_cost(onnx.load(str(self.onnx_path)), batch, shapes)
        return self._costs[batch]


_POOLS_SET: set[str] = set()  # per-process pools this process has moved off their default


def use_threads(backend: str, threads: int | None) -> None:
    """Point the per-process thread pool of `backend` at `threads` (None: the library's default).

    A pool never set explicitly is left alone: None then costs nothing and changes nothing.
    """
    pool = "torch" if backend in TORCH_BACKENDS else _engine(backend)
    if pool not in ("torch", "tvm") or (threads is None and pool not in _POOLS_SET):
        return
    if pool == "torch":
        from toolkit.runtime.torch import TorchSession as Pool
    else:
        from toolkit.runtime.tvm import TvmSession as Pool
    Pool.set_threads(threads)
    if threads is None:
        _POOLS_SET.discard(pool)
    else:
        _POOLS_SET.add(pool)


def open_subject(
    source: str,
    backends: list[str],
    device: str = "cpu",
    ort_options: OrtOptions = OrtOptions(),
    log=lambda line: None,
    rpc: RpcTarget | None = None,
    precisions: tuple[str, ...] = ("fp32",),
) -> Subject:
    """A zoo NAME or checkpoint (every backend, same weights, held-out inputs), an ONNX file or an artifact.

    With `rpc`, an artifact's TVM code runs on the device the RPC tracker hands out for the key.
    Precisions other than fp32 add the ONNX backends on reduced copies of the model (see `with_precisions`).
    """
    opened = open_source(source, backends, device, ort_options, log, rpc)
    subject = Subject(opened.model, None, opened.feeds, opener=opened.open, backends=opened.backends,
                      device=opened.device, onnx_path=opened.onnx_path)
    return with_precisions(subject, precisions, ort_options, log) if precisions != ("fp32",) else subject


def with_precisions(subject: Subject, precisions: tuple[str, ...], ort_options: OrtOptions, log) -> Subject:
    """Add "ort:int8", "tvm:int8", ... backends running reduced copies of the subject's ONNX model,
    measured in the same rounds as the fp32 ones; each precision's held-out metric goes in subject.metrics.

    A precision that cannot be made or compiled is skipped with a line in subject.skipped.
    """
    from toolkit import quantize
    from toolkit.runtime.ort import OrtSession

    device, fp32_opener, fp32_backends = subject.device, subject._opener, list(subject.backends)
    reduced: dict[str, Path] = {}
    subject.backends = [b for b in fp32_backends if "fp32" in precisions]
    subject.metrics["fp32"] = quantize.model_metric(subject.onnx_path)
    for precision in (p for p in precisions if p != "fp32"):
        try:
            reduced[precision] = quantize.reduced_copy(subject.onnx_path, precision, paths.cache_dir() / "reduced", log)
        except DltkError as e:
            subject.skipped.append(f"{subject.model} {precision}: {e}")
            continue
        subject.metrics[precision] = quantize.model_metric(reduced[precision])
        for backend in (b for b in fp32_backends if b in ("ort", "tvm")):
            label = f"{backend}:{precision}"
            if backend == "tvm":
                try:  # compiled now: a model TVM cannot import is skipped, not a failed run
                    artifact = compiled_artifact(reduced[precision], device, log)
                    subject._sessions[(label, None)] = load(artifact, device, backend="tvm")
                except DltkError as e:
                    subject.skipped.append(f"{subject.model} tvm {precision}: {e}")
                    continue
            subject.backends.append(label)

    def opener(label: str, threads: int | None) -> Session:
        backend, _, precision = label.partition(":")
        if not precision:
            return fp32_opener(label, threads)
        return OrtSession(reduced[precision], device, threads or 0, ort_options.optimization,
                          list(ort_options.providers) or None)

    subject._opener = opener
    return subject


def _engine(backend: str) -> str:
    """The engine of a backend label: "ort:int8" runs on ort, "tvm-untuned" on tvm."""
    engine = backend.partition(":")[0]
    return "tvm" if engine in TVM_BACKENDS else engine
