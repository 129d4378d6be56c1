"""ONNX -> TVM Relax -> compiled executable, verified against a reference (toolkit.reference), written as an artifact."""

from __future__ import annotations

import dataclasses
import hashlib
import math
import time
from dataclasses import dataclass
from pathlib import Path

import onnx

from toolkit import cuda, optimize, tune, tvm_support
from toolkit.errors import CheckFailed, DltkError, first_line
from toolkit.onnx_file import fix_dims, input_specs, load_onnx, output_specs
from toolkit.parity import ATOL, RTOL, Comparison, compare_outputs
from toolkit.reference import Reference, choose_reference
from toolkit.runtime.artifact import LIBRARY, SOURCE_ONNX, Artifact, check_replaceable, open_artifact, staging, write_manifest
from toolkit.runtime.batch import named_batch_symbols
from toolkit.runtime.model_source import name_from, read_metadata
from toolkit.runtime.ort import OrtSession
from toolkit.runtime.spec import random_feeds
from toolkit.runtime.tvm_runtime import size_thread_pool
from toolkit.target import device_of, resolve_target
from toolkit.versions import versions

VERIFY_SIZES = (1, 3, 8)  # each symbolic dim (batch, sequence) is checked at these sizes, and at each static variant's
MAX_VERIFY_LENGTH = 4096  # a sequence the reference refuses at a size is doubled up to this (see _longer)
MAX_VERIFY_ELEMENTS = 1 << 22  # and while all the inputs together hold no more values than this
PROTOBUF_LIMIT = 2**31 - 2**24  # protobuf refuses messages of 2 GiB; keep a margin
_UNVERIFIED = "not verified: no reference can run this model (ONNX Runtime as given or opset-upgraded, the ONNX reference implementation)"


@dataclass(frozen=True)
class CompileReport:
    artifact: Artifact
    verification: list[Comparison]  # empty when this machine cannot run the target
    seconds: float


def compile_model(
    onnx_path,
    output,
    target: str | dict = "cpu",
    atol: float = ATOL,
    rtol: float = RTOL,
    tuning: tune.TuneOptions = tune.TuneOptions(),
    choose_engine: bool = True,
    log=lambda line: None,
    dims: dict[str, int] | None = None,
) -> CompileReport:
    """Import, simplify, tune (as asked; existing records always apply), build, verify, pick the engine.

    dims: symbolic input dims to make static first (e.g. {"height": 224}); the artifact takes only those sizes."""
    from toolkit.simplify import simplify

    start = time.perf_counter()
    check_replaceable(output)  # before minutes of work, not after
    size_thread_pool()  # before any TVM code runs here: verification and the engine choice time it
    model = load_onnx(onnx_path)
    if dims:
        model = fix_dims(model, dims)
    target = resolve_target(target)
    device = device_of(target)
    nvcc = _nvcc_to_check(target, device)  # before the slow part: a missing nvcc fails at once
    inputs, outputs = input_specs(model), output_specs(model)
    tvm_support.require_importable(model)  # checked on the graph as given, so ops are named in its order
    reference = choose_reference(model, onnx_path, log)
    log(f"importing {onnx_path} into TVM Relax")
    module = _import_source_or_upgrade(model, reference, lambda m: import_onnx(simplify(m, log), target))
    static_dims = _static_dims(model, inputs)
    prepared = tune.prepare(module, target, named_batch_symbols(inputs), tuning, log, static_dims)
    log(f"compiling for {target['kind']} ({target.get('mcpu') or target.get('arch')})")
    executable = build(prepared, target)
    device_code = _device_code(executable, prepared, target, nvcc, log) if device == "cuda" else None
    variants = {str(b): name for b, name in prepared.variants.items()}
    with staging(output) as tmp:
        executable.export_library(str(tmp / LIBRARY))
        save_self_contained(reference.model, tmp / SOURCE_ONNX)  # the ONNX Runtime fallback, upgraded when it had to be
        verification, engine = [], {"chosen": "tvm", "reason": f"not measured: no {device} device here"}
        if not reference.runs:
            log(f"warning: {_UNVERIFIED}: " + "; ".join(reference.failures))
            engine = {"chosen": "tvm", "reason": "not measured: ONNX Runtime cannot load this model"}
        elif _can_run(device):
            log(f"verifying against {reference.name}")
            verification = verify(tmp, inputs, outputs, device, atol, rtol, optimize.sequence_length_limits(model),
                                  prepared.variants, reference.session, static_dims)
            if not reference.onnx_runtime_loads:
                engine = {"chosen": "tvm", "reason": "not measured: ONNX Runtime cannot load this model"}
            elif choose_engine and all(c.passed for c in verification):
                engine = _choose_engine(tmp, inputs, outputs, device, prepared.variants, static_dims, log)
            elif not choose_engine:
                engine = {"chosen": "tvm", "reason": "not measured: engine choice turned off"}
        manifest = {
            "model": name_from(read_metadata(model), onnx_path),
            "inputs": [s.to_json() for s in inputs],
            "outputs": [s.to_json() for s in outputs],
            "target": target,
            "device": device,
            "source_onnx_sha256": hashlib.sha256(Path(onnx_path).read_bytes()).hexdigest(),
            "versions": versions(),
            "tuning": prepared.manifest,
            "variants": variants,
            "variant_dims": static_dims if variants else {},  # what the variants bind besides the batch
            **({"fixed_dims": dims} if dims else {}),
            **({"device_code": device_code} if device_code else {}),
            "engine": engine,
            "verification": _verification_json(verification, device, _verify_sizes(prepared.variants), reference),
        }
        failed = [c for c in verification if not c.passed]
        if failed:
            raise CheckFailed(f"{failed[0].summary()}; {output} not written")
        write_manifest(tmp, manifest)
    return CompileReport(open_artifact(output), verification, time.perf_counter() - start)


def import_onnx(model: onnx.ModelProto, target: dict | None = None):
    """The ONNX graph as a Relax IRModule for `target` (a CPU by default), weights bound as constants."""
    from tvm.relax.frontend.onnx import from_onnx

    tvm_support.require_importable(model)  # every op it lacks named at once, not only the first
    model = optimize.for_tvm(model, cpu=target is None or target["kind"] == "llvm")  # LSTM, GRU, RNN: see optimize
    try:
        with optimize.converters():
            return from_onnx(model, keep_params_in_input=False)
    except Exception as e:  # the importer raises OpNotImplemented, TVMError, ValueError, ...
        raise DltkError(f"TVM cannot import this model: {first_line(e)}", "see 'dltk inspect' for the ops TVM supports") from e


def build(module, target: dict):
    """Compile a Relax module; a `tune.Prepared` one gets its tuning records and static variants."""
    import tvm

    from toolkit import tune

    try:
        if isinstance(module, tune.Prepared):
            return tune.build(module, target)
        return tvm.compile(module, tvm.target.Target(target))
    except DltkError:
        raise
    except Exception as e:
        raise CheckFailed(f"TVM failed to compile the model: {first_line(e)}", "rerun with -v for the trace") from e


def verify(directory: Path, inputs, outputs, device: str, atol: float, rtol: float, length_limits=None,
           variants: dict[int, str] | None = None, reference=None, static_dims: dict[str, int] | None = None) -> list[Comparison]:
    """Run the exported library and the reference on the same random inputs, once per symbolic size
    (every symbolic dim at that size, a sequence at most its static size) and once per static variant
    (at its batch and static_dims). Where the reference refuses a size, the non-batch dims are doubled
    until it accepts; a size it refuses at every length is left out (a ViT whose position table fits
    one image size), unless it refuses them all. Each comparison holds the dims it ran at.

    length_limits: integer inputs holding sequence lengths -> the longest valid length.
    reference: a session (toolkit.reference); by default ONNX Runtime on the artifact's model.onnx.
    """
    from toolkit.runtime.tvm import TvmSession

    static_dims = static_dims or {}
    compiled = TvmSession(directory / LIBRARY, inputs, outputs, device, variants, static_dims)
    reference = reference or OrtSession(directory / SOURCE_ONNX)
    reference_name = {"ort": "onnxruntime"}.get(reference.backend, reference.backend)
    symbols = sorted({d for s in inputs for d in s.shape if isinstance(d, str)})
    comparisons, refused = [], []
    cases = [{s: min(size, static_dims.get(s, size)) for s in symbols} for size in _verify_sizes(variants)] if symbols else [{}]
    if static_dims:  # the variants at the shapes they are bound to, or main at the full length
        cases += [{**dict.fromkeys(symbols, batch), **static_dims} for batch in sorted(variants or {1: "main"})]
    batches = set(named_batch_symbols(inputs))
    for dims in cases:
        for grown in _longer(dims, batches, inputs):
            feeds = _feeds(inputs, grown, length_limits)
            try:
                expected = reference.run(feeds)
            except Exception as e:  # too short for the model (its convolutions, its position table): try longer
                refused.append(e)
                continue
            comparison = compare_outputs(expected, compiled.run(feeds), reference_name, "tvm", atol, rtol)
            comparisons.append(dataclasses.replace(comparison, dims=grown))
            break
    if not comparisons and refused:
        raise refused[0]
    return comparisons


def _longer(dims: dict[str, int], batches: set[str], inputs):
    """`dims`, then its non-batch dims doubled, up to MAX_VERIFY_LENGTH and MAX_VERIFY_ELEMENTS: the
    sizes verification tries until the reference accepts one (an audio model needs more than 8 samples)."""
    yield dims
    while any(s not in batches for s in dims):
        dims = {s: size if s in batches else size * 2 for s, size in dims.items()}
        elements = sum(math.prod(dims.get(d, 1) if isinstance(d, str) else d for d in spec.shape) for spec in inputs)
        if max(dims.values()) > MAX_VERIFY_LENGTH or elements > MAX_VERIFY_ELEMENTS:
            return
        yield dims


def _feeds(inputs, dims: dict[str, int], length_limits) -> dict:
    feeds = random_feeds(inputs, dims, seed=max(dims.values(), default=0))
    for name, longest in (length_limits or {}).items():
        feeds[name] = feeds[name] % (longest + 1)
    return feeds


def _import_source_or_upgrade(model: onnx.ModelProto, reference: Reference, import_model):
    """TVM's module for the source graph; for an old-opset source TVM refuses, its upgraded copy's."""
    try:
        return import_model(model)
    except DltkError:
        if reference.upgraded_from is None:
            raise
        return import_model(reference.model)


def save_self_contained(model: onnx.ModelProto, path: Path) -> None:
    """One file, weights inside, even when the source kept them in external .data files."""
    if model.ByteSize() < PROTOBUF_LIMIT:
        onnx.save_model(model, str(path))
    else:
        onnx.save_model(model, str(path), save_as_external_data=True, location=path.name + ".data")


def _nvcc_to_check(target: dict, device: str) -> str | None:
    """The nvcc that checks CUDA code built here without a GPU; None where TVM compiles it for a local GPU."""
    if device != "cuda" or _can_run(device):
        return None
    return cuda.require_nvcc(_cuda_arch(target))


def _device_code(executable, prepared, target: dict, nvcc: str | None, log) -> dict:
    """How the kernels were scheduled, the form they ship in, and the nvcc check of code built without a GPU."""
    entry = dict(prepared.gpu_schedules or {}, arch=_cuda_arch(target))
    sources = cuda.cuda_sources(executable)
    if not sources:
        return dict(entry, form="binary compiled by TVM for this machine's GPU")
    entry["form"] = "CUDA C source, compiled by the GPU machine when it loads the artifact"
    if nvcc is None:  # a GPU here: verification loads, compiles and runs it
        return entry
    log(f"checking the CUDA code with nvcc for {entry['arch']}")
    return dict(entry, checked=cuda.check_with_nvcc(sources, entry["arch"], nvcc))


def _cuda_arch(target: dict) -> str:
    import tvm

    return str(tvm.target.Target(target).attrs["arch"])


def _can_run(device: str) -> bool:
    import tvm

    return tvm.cpu(0).exist if device == "cpu" else tvm.cuda(0).exist


def _verification_json(comparisons: list[Comparison], device: str, sizes: list[int], reference: Reference) -> dict:
    if not reference.runs:
        return {"status": "skipped", "reason": _UNVERIFIED, "references_tried": reference.failures}
    if not comparisons:
        return {"status": "skipped", "reason": f"no {device} device on the compiling machine", **reference.to_json()}
    return {
        "status": "passed" if all(c.passed for c in comparisons) else "failed",
        **reference.to_json(),
        "max_abs_error": max(c.max_abs for c in comparisons),
        "max_rel_error": max(c.max_rel for c in comparisons),
        "atol": comparisons[0].atol,
        "rtol": comparisons[0].rtol,
        "symbolic_sizes": sizes,
        **({"verified_dims": [c.dims for c in comparisons]} if any(c.dims for c in comparisons) else {}),
    }


def _verify_sizes(variants: dict[int, str] | None) -> list[int]:
    return sorted(set(VERIFY_SIZES) | set(variants or {}))


def _static_dims(model: onnx.ModelProto, inputs) -> dict[str, int]:
    """Symbolic dims besides the batch that tuned static variants bind, from the export's metadata
    (e.g. {"sequence": 64}, the length a zoo transformer was trained at); those the inputs have."""
    import json

    declared = json.loads(read_metadata(model).get("dltk.static_dims", "{}"))
    present = {d for s in inputs for d in s.shape if isinstance(d, str)}
    return {name: int(size) for name, size in declared.items() if name in present}


def _choose_engine(directory: Path, inputs, outputs, device: str, variants: dict[int, str], static_dims, log) -> dict:
    from toolkit import engine

    sessions = engine.candidates(directory, inputs, outputs, device, variants, static_dims)
    try:
        return engine.measure_engines(sessions, engine.batches_to_measure(inputs, variants), log, static_dims)
    except Exception as e:  # random feeds a model refuses (e.g. lengths out of range): keep TVM, say why
        return {"chosen": "tvm", "reason": f"not measured: {type(e).__name__}: {str(e).strip()[:120]}"}

