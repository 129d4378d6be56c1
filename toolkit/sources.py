"""A model source of any kind opened as sessions: a zoo NAME, a checkpoint, an ONNX file or an artifact.

A zoo NAME or a checkpoint runs every backend on the same weights and on held-out samples
of the model's own dataset; an ONNX file or an artifact runs the ONNX backends on random
inputs. Exports and compiles are cached by content under the dltk cache (toolkit.paths).
"""

from __future__ import annotations

import functools
import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from toolkit import compile as compiler
from toolkit import paths
from toolkit.errors import DltkError
from toolkit.rpc import RpcTarget
from toolkit.runtime import Session, load
from toolkit.runtime.artifact import SOURCE_ONNX, open_artifact, verified_sizes
from toolkit.runtime.batch import batch_dims, batch_symbol
from toolkit.runtime.model_source import ARTIFACT, ONNX, ModelSource
from toolkit.runtime.spec import random_feeds
from toolkit.tune import TuneOptions

# tvm-untuned: compiled with no tuning record at all (neither shipped nor the user's), only the
# default schedules; for a zoo NAME or an ONNX file, beside tvm, to show what tuning adds.
BACKENDS = ("torch", "torch.compile", "ort", "tvm", "tvm-untuned")
DEFAULT_BACKENDS = ("torch", "ort", "tvm")  # torch.compile takes minutes to compile: asked for by name
TORCH_BACKENDS = ("torch", "torch.compile")
TVM_BACKENDS = ("tvm", "tvm-untuned")

Opener = Callable[[str, "int | None"], Session]  # (backend, threads) -> a new session
Feeds = Callable[[int], dict[str, np.ndarray]]  # batch size -> inputs


@dataclass(frozen=True)
class OrtOptions:
    optimization: str = "all"  # disable | basic | extended | all
    providers: tuple[str, ...] = ()  # empty: the device's provider


@dataclass(frozen=True)
class SourceSessions:
    """What a source offers: its name, a session per backend on request, inputs per batch size."""

    model: str
    backends: list[str]
    device: str
    open: Opener
    feeds: Feeds
    onnx_path: Path | None  # the ONNX graph behind the sessions (for cost models, per-layer checks)


def open_source(
    source: str,
    backends: list[str],
    device: str = "cpu",
    ort_options: OrtOptions = OrtOptions(),
    log=lambda line: None,
    rpc: RpcTarget | None = None,
) -> SourceSessions:
    """A zoo NAME or checkpoint (every backend, same weights, held-out inputs), an ONNX file or an artifact.

    With `rpc`, an artifact's TVM code runs on the device the RPC tracker hands out for the key.
    """
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown:
        raise DltkError(f"unknown backend '{unknown[0]}'", f"use any of {','.join(BACKENDS)}")
    if not backends:
        raise DltkError("no backend given", f"use any of {','.join(BACKENDS)}")
    model = ModelSource.of(source)
    if rpc and model.kind != ARTIFACT:
        raise DltkError(f"a remote device runs a compiled artifact, not {source}",
                        "compile for the device first: dltk compile MODEL.onnx -o DIR --target JSON")
    if model.kind == ARTIFACT:
        return _artifact_source(model.path, backends, device, ort_options, rpc)
    if model.kind == ONNX:
        return _onnx_source(model, backends, device, ort_options, log)
    return _zoo_source(source, backends, device, ort_options, log)


def compiled_artifact(onnx_path: Path, device: str, log=lambda line: None, untuned: bool = False) -> Path:
    """The artifact for this ONNX file and device, compiled once and cached by content.

    `untuned` compiles with no tuning record at all: the default schedules alone.
    """
    digest = hashlib.sha256(onnx_path.read_bytes())
    # New tuning records, shipped or the user's, or other dltk code make a different artifact from the same model.
    if not untuned:
        for records in sorted(paths.SHIPPED_RECORDS.glob("*/*.json")):
            digest.update(records.read_bytes())
        for records in sorted(paths.tuning_db_root().rglob("*.json")):
            digest.update(f"{records}:{records.stat().st_size}:{records.stat().st_mtime_ns}".encode())
    digest.update(paths.code_digest())
    artifact = paths.cache_dir() / "compiled" / f"{digest.hexdigest()[:16]}-{device}{'-untuned' if untuned else ''}"
    if not (artifact.exists() and _cached(lambda: open_artifact(artifact), artifact, log)):
        log(f"compiling {onnx_path} for {device}{' without tuning records' if untuned else ''} into {artifact}")
        tuning = TuneOptions(shipped=False, db=paths.cache_dir() / "no-records") if untuned else TuneOptions()
        # the caller names its engine, so the engine choice's timing runs would be wasted
        compiler.compile_model(onnx_path, artifact, target=device, tuning=tuning, choose_engine=False, log=log)
    return artifact


def _cached(open_entry, entry: Path, log):
    """What `open_entry()` gives for a cache entry; None, with the entry deleted, when it is damaged."""
    try:
        return open_entry()
    except DltkError as e:
        log(f"rebuilding the damaged cache entry {entry}: {e}")
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
        return None


def _ort(path: Path, device: str, threads: int | None, options: OrtOptions) -> Session:
    from toolkit.runtime.ort import OrtSession

    if not path.is_file():
        raise DltkError(f"no such file: {path}", "check the path")
    return OrtSession(path, device, threads or 0, options.optimization, list(options.providers) or None)


def _zoo_source(source: str, backends: list[str], device: str, ort_options: OrtOptions, log) -> SourceSessions:
    from toolkit.export import export_model  # torch
    from toolkit.train import load_model  # torch

    loaded = load_model(source)
    entry = paths.cache_dir() / f"{loaded.spec.name}-{_weights_key(loaded.module)}"
    onnx_path = entry / "model.onnx"
    specs = _cached(lambda: load(onnx_path, "cpu"), onnx_path, log) if onnx_path.is_file() else None
    if specs is None:
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
        return load(compiled_artifact(onnx_path, device, log, backend == "tvm-untuned"), device, backend="tvm")

    def feeds(batch: int) -> dict[str, np.ndarray]:
        sample = loaded.spec.sample(batch)
        return {s.name: x.numpy() for s, x in zip(specs.inputs, sample)}

    return SourceSessions(loaded.spec.name, list(backends), device, opener, feeds, onnx_path)


def _onnx_source(model: ModelSource, backends: list[str], device: str, ort_options: OrtOptions, log) -> SourceSessions:
    path = model.path
    _refuse_torch(backends, path)
    specs = _ort(path, "cpu", None, OrtOptions())

    def opener(backend: str, threads: int | None) -> Session:
        if backend == "ort":
            return _ort(path, device, threads, ort_options)
        return load(compiled_artifact(path, device, log, backend == "tvm-untuned"), device, backend="tvm")

    compiled = next((b for b in backends if b in TVM_BACKENDS), None)

    def sizes() -> dict[str, int]:  # what the compile verified, where TVM runs it (ONNX Runtime alone: none known)
        if compiled is None:
            return {}
        return verified_sizes(open_artifact(compiled_artifact(path, device, log, compiled == "tvm-untuned")).manifest)

    return SourceSessions(model.name, list(backends), device, opener, _random_feeds(specs.inputs, sizes), path)


def _artifact_source(path: Path, backends: list[str], device: str, ort_options: OrtOptions,
                     rpc: RpcTarget | None) -> SourceSessions:
    _refuse_torch(backends, path)
    if "tvm-untuned" in backends:
        raise DltkError(f"the tvm-untuned backend compiles the model anew; {path} is compiled already",
                        "give the ONNX file or the zoo NAME, or compile with --no-shipped-records")
    artifact = open_artifact(path)

    def opener(backend: str, threads: int | None) -> Session:
        if backend == "ort":
            return _ort(artifact.file(SOURCE_ONNX), device, threads, ort_options)
        if rpc:
            from toolkit.runtime.remote import RemoteTvmSession

            return RemoteTvmSession(artifact, rpc)
        return load(path, device, backend="tvm")

    return SourceSessions(artifact.manifest["model"], list(backends), device, opener,
                          _random_feeds(artifact.inputs, lambda: verified_sizes(artifact.manifest)), artifact.file(SOURCE_ONNX))


def _refuse_torch(backends: list[str], path: Path) -> None:
    torch_like = [b for b in backends if b in TORCH_BACKENDS]
    if torch_like:
        raise DltkError(
            f"the {torch_like[0]} backend needs a zoo model or a checkpoint, not {path} (an ONNX graph has no PyTorch code)",
            f"drop {torch_like[0]} from --backend, or give the zoo NAME or the .pt checkpoint",
        )


def _random_feeds(specs, sizes: Callable[[], dict[str, int]] = dict) -> Feeds:
    """Random inputs at a batch size; other symbolic dims take their size in `sizes()` (the largest
    the compile verified: wav2vec2 refuses 1 audio sample, the default), else 1."""
    other_dims = any(isinstance(d, str) and d not in batch_dims(specs, 1) for spec in specs for d in spec.shape)
    sizes = functools.cache(sizes)  # an ONNX file's: found by hashing the file and dltk's code

    def feeds(batch: int) -> dict[str, np.ndarray]:
        for spec in specs:
            if batch_symbol(spec) is None and spec.shape and spec.shape[0] != batch:
                raise DltkError(f"input '{spec.name}' has a fixed batch of {spec.shape[0]}", f"use --batch {spec.shape[0]}")
        return random_feeds(specs, {**(sizes() if other_dims else {}), **batch_dims(specs, batch)})

    return feeds


def _weights_key(module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]
