"""What is benchmarked: a model, a session per backend (opened on demand), and its inputs.

A zoo NAME or a checkpoint runs every backend on the same weights and on held-out samples
of the model's own dataset; an ONNX file or an artifact runs the ONNX backends on random
inputs. Exports and compiles are cached by content under DLTK_CACHE_DIR (~/.cache/dltk).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from toolkit.errors import DltkError
from toolkit.runtime import Session, load
from toolkit.runtime.artifact import SOURCE_ONNX, is_artifact, open_artifact
from toolkit.tune import RpcTarget

BACKENDS = ("torch", "torch.compile", "ort", "tvm")
DEFAULT_BACKENDS = ("torch", "ort", "tvm")  # torch.compile takes minutes to compile: asked for by name
TORCH_BACKENDS = ("torch", "torch.compile")


@dataclass(frozen=True)
class OrtOptions:
    optimization: str = "all"  # disable | basic | extended | all
    providers: tuple[str, ...] = ()  # empty: the device's provider


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

            self._costs[batch] = graph_cost(onnx.load(str(self.onnx_path)), batch)
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


def cache_dir() -> Path:
    return Path(os.environ.get("DLTK_CACHE_DIR") or Path.home() / ".cache" / "dltk")


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
    subject = _open_subject(source, backends, device, ort_options, log, rpc)
    return with_precisions(subject, precisions, device, ort_options, log) if precisions != ("fp32",) else subject


def _open_subject(source: str, backends: list[str], device: str, ort_options: OrtOptions, log,
                  rpc: RpcTarget | None) -> Subject:
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown:
        raise DltkError(f"unknown backend '{unknown[0]}'", f"use any of {','.join(BACKENDS)}")
    if not backends:
        raise DltkError("no backend given", f"use any of {','.join(BACKENDS)}")
    path = Path(source)
    if rpc and not path.is_dir():
        raise DltkError(f"a remote device runs a compiled artifact, not {source}",
                        "compile for the device first: dltk compile MODEL.onnx -o DIR --target JSON")
    if path.is_dir():
        return _artifact_subject(path, backends, device, ort_options, rpc)
    if path.suffix == ".onnx":
        return _onnx_subject(path, backends, device, ort_options, log)
    return _zoo_subject(source, backends, device, ort_options, log)


def with_precisions(subject: Subject, precisions: tuple[str, ...], device: str, ort_options: OrtOptions, log) -> Subject:
    """Add "ort:int8", "tvm:int8", ... backends running reduced copies of the subject's ONNX model,
    measured in the same rounds as the fp32 ones; each precision's held-out metric goes in subject.metrics.

    A precision that cannot be made or compiled is skipped with a line in subject.skipped.
    """
    from toolkit import quantize

    fp32_opener, fp32_backends = subject._opener, list(subject.backends)
    reduced: dict[str, Path] = {}
    subject.backends = [b for b in fp32_backends if "fp32" in precisions]
    subject.metrics["fp32"] = quantize.model_metric(subject.onnx_path)
    for precision in (p for p in precisions if p != "fp32"):
        try:
            reduced[precision] = quantize.reduced_copy(subject.onnx_path, precision, cache_dir() / "reduced", log)
        except DltkError as e:
            subject.skipped.append(f"{subject.model} {precision}: {e}")
            continue
        subject.metrics[precision] = quantize.model_metric(reduced[precision])
        for backend in (b for b in fp32_backends if b in ("ort", "tvm")):
            label = f"{backend}:{precision}"
            if backend == "tvm":
                try:  # compiled now: a model TVM cannot import is skipped, not a failed run
                    subject._sessions[(label, None)] = load(_compiled(reduced[precision], device, log), device, backend="tvm")
                except DltkError as e:
                    subject.skipped.append(f"{subject.model} tvm {precision}: {e}")
                    continue
            subject.backends.append(label)

    def opener(label: str, threads: int | None) -> Session:
        backend, _, precision = label.partition(":")
        if not precision:
            return fp32_opener(label, threads)
        return _ort(reduced[precision], device, threads, ort_options)

    subject._opener = opener
    return subject


def _engine(backend: str) -> str:
    """The engine of a backend label: "ort:int8" runs on ort."""
    return backend.partition(":")[0]


def _ort(path: Path, device: str, threads: int | None, options: OrtOptions) -> Session:
    from toolkit.runtime.ort import OrtSession

    if not path.is_file():
        raise DltkError(f"no such file: {path}", "check the path")
    return OrtSession(path, device, threads or 0, options.optimization, list(options.providers) or None)


def _zoo_subject(source: str, backends: list[str], device: str, ort_options: OrtOptions, log) -> Subject:
    from toolkit.export import export_model
    from toolkit.train import load_model

    loaded = load_model(source)
    entry = cache_dir() / f"{loaded.spec.name}-{_weights_key(loaded.module)}"
    onnx_path = entry / "model.onnx"
    if not onnx_path.is_file():
        log(f"exporting {loaded.spec.name} to {onnx_path}")
        export_model(source, onnx_path)
    specs = load(onnx_path, "cpu")

    def opener(backend: str, threads: int | None) -> Session:
        if backend in TORCH_BACKENDS:
            from toolkit.runtime.torch import TorchSession

            if backend == "torch.compile":
                log(f"torch.compile: {loaded.spec.name} compiles on its first call per batch size (slow)")
            return TorchSession(loaded.module, specs.inputs, specs.outputs, device, compiled=backend == "torch.compile")
        if backend == "ort":
            return _ort(onnx_path, device, threads, ort_options)
        return load(_compiled(onnx_path, device, log), device, backend="tvm")

    def feeds(batch: int) -> dict[str, np.ndarray]:
        sample = loaded.spec.sample(batch)
        return {s.name: x.numpy() for s, x in zip(specs.inputs, sample)}

    return Subject(loaded.spec.name, None, feeds, opener=opener, backends=backends, device=device, onnx_path=onnx_path)


def _onnx_subject(path: Path, backends: list[str], device: str, ort_options: OrtOptions, log) -> Subject:
    _refuse_torch(backends, path)
    specs = _ort(path, "cpu", None, OrtOptions())

    def opener(backend: str, threads: int | None) -> Session:
        if backend == "ort":
            return _ort(path, device, threads, ort_options)
        return load(_compiled(path, device, log), device, backend="tvm")

    return Subject(path.stem, None, _random_feeds(specs.inputs), opener=opener, backends=backends, device=device,
                   onnx_path=path)


def _artifact_subject(path: Path, backends: list[str], device: str, ort_options: OrtOptions,
                      rpc: RpcTarget | None) -> Subject:
    _refuse_torch(backends, path)
    artifact = open_artifact(path)

    def opener(backend: str, threads: int | None) -> Session:
        if backend == "ort":
            return _ort(artifact.file(SOURCE_ONNX), device, threads, ort_options)
        if rpc:
            from toolkit.remote import RemoteTvmSession

            return RemoteTvmSession(artifact, rpc)
        return load(path, device, backend="tvm")

    return Subject(artifact.manifest["model"], None, _random_feeds(artifact.inputs), opener=opener, backends=backends,
                   device=device, onnx_path=artifact.file(SOURCE_ONNX))


def _refuse_torch(backends: list[str], path: Path) -> None:
    torch_like = [b for b in backends if b in TORCH_BACKENDS]
    if torch_like:
        raise DltkError(
            f"the {torch_like[0]} backend needs a zoo model or a checkpoint, not {path} (an ONNX graph has no PyTorch code)",
            f"drop {torch_like[0]} from --backend, or give the zoo NAME or the .pt checkpoint",
        )


def _random_feeds(specs) -> Callable[[int], dict[str, np.ndarray]]:
    def feeds(batch: int) -> dict[str, np.ndarray]:
        from toolkit.runtime.spec import random_feeds

        dims = {}
        for spec in specs:
            if spec.shape and isinstance(spec.shape[0], str):
                dims[spec.shape[0]] = batch
            elif spec.shape and spec.shape[0] != batch:
                raise DltkError(f"input '{spec.name}' has a fixed batch of {spec.shape[0]}", f"use --batch {spec.shape[0]}")
        return random_feeds(specs, dims)

    return feeds


def _compiled(onnx_path: Path, device: str, log) -> Path:
    """The artifact for this ONNX file and device, compiled once and cached by content."""
    from toolkit.compile import compile_model
    import toolkit
    from toolkit.tune import SHIPPED

    digest = hashlib.sha256(onnx_path.read_bytes())
    # New shipped tuning records (or a new dltk) make a different artifact from the same model.
    for records in sorted(SHIPPED.glob("*/*.json")):
        digest.update(records.read_bytes())
    digest.update(toolkit.__version__.encode())
    artifact = cache_dir() / "compiled" / f"{digest.hexdigest()[:16]}-{device}"
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
