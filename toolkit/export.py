"""PyTorch -> ONNX: export with a dynamic batch axis, check, compare ONNX Runtime with PyTorch."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch

from toolkit import kv_cache
from toolkit.errors import CheckFailed, DltkError, first_line
from toolkit.files import check_output_file, write_atomically
from toolkit.parity import ATOL, RTOL, Comparison, compare_outputs
from toolkit.runtime.artifact import refuse_inside_artifact
from toolkit.runtime.model_source import NAME_KEY
from toolkit.runtime.ort import OrtSession
from toolkit.runtime.spec import TensorSpec
from toolkit.train import LoadedModel, load_model
from toolkit.versions import versions

DEFAULT_OPSET = 18
PARITY_SAMPLES = 32  # held-out inputs compared between PyTorch and ONNX Runtime
BATCH_DIM = "batch"
SEQUENCE_DIM = "sequence"
STATIC_DIMS_KEY = "dltk.static_dims"  # symbolic dims -> the size compile's tuned static variants bind them to


@dataclass(frozen=True)
class ExportReport:
    path: Path
    model: str
    opset: int
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    parity: Comparison
    trained: bool  # False when a zoo NAME gave freshly initialised weights
    decode: Path | None = None  # text models: the KV-cache decode step written beside the export


def export_model(
    source: str,
    output,
    opset: int = DEFAULT_OPSET,
    batch: int | None = None,
    atol: float = ATOL,
    rtol: float = RTOL,
) -> ExportReport:
    """Export a zoo NAME or a checkpoint to `output`.

    batch=None exports a dynamic batch axis; an int fixes it. The file is written only
    when onnx.checker passes and ONNX Runtime matches PyTorch within tolerance.
    """
    if batch is not None and batch < 1:
        raise DltkError(f"--batch must be at least 1, got {batch}")
    refuse_inside_artifact(output)
    check_output_file(output)
    loaded = load_model(source)
    sample = loaded.spec.sample(batch or PARITY_SAMPLES)
    proto = to_onnx(loaded, sample, opset, dynamic=batch is None)
    _add_metadata(proto, loaded)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as e:
        raise CheckFailed(f"onnx.checker rejected the export: {first_line(e)}") from e
    model_bytes = proto.SerializeToString()
    session = OrtSession(model_bytes)
    parity = compare_outputs(
        _torch_outputs(loaded, sample),
        session.run({s.name: x.numpy() for s, x in zip(session.inputs, sample)}),
        reference="torch",
        candidate="onnxruntime",
        atol=atol,
        rtol=rtol,
    )
    if not parity.passed:
        raise CheckFailed(f"{parity.summary()}; {output} not written", "look for ops that export differently")
    write_atomically(output, model_bytes)
    decode = kv_cache.export_decode_step(loaded, output, opset, atol, rtol, write_atomically)
    return ExportReport(
        Path(output), loaded.spec.name, opset, session.inputs, session.outputs, parity, trained=bool(loaded.info),
        decode=decode,
    )


def to_onnx(loaded: LoadedModel, sample: tuple[torch.Tensor, ...], opset: int, dynamic: bool) -> onnx.ModelProto:
    spec = loaded.spec
    dynamic_shapes = None
    if dynamic:
        batch = torch.export.Dim(BATCH_DIM, min=1, max=1 << 16)
        dynamic_shapes = tuple(dict.fromkeys(dims, batch) for dims in spec.dynamic_dims())
        if spec.sequence_dims:  # up to the trained length: position embeddings end there
            sequence = torch.export.Dim(SEQUENCE_DIM, min=1, max=spec.max_sequence)
            dynamic_shapes = tuple({**by_dim, **dict.fromkeys(dims, sequence)}
                                   for by_dim, dims in zip(dynamic_shapes, spec.sequence_dims))
    # The exporter narrates each pass on stdout and warns about optional packages; keep
    # stdout for results (--json) and show the exporter's words only when it fails.
    chatter = io.StringIO()
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # "torchvision is not installed" notices
    try:
        with contextlib.redirect_stdout(chatter), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                loaded.module,
                sample,
                input_names=list(spec.input_names),
                output_names=list(spec.output_names),
                opset_version=opset,
                dynamic_shapes=dynamic_shapes,
                dynamo=True,
                verbose=False,
            )
    except Exception as e:
        raise DltkError(
            f"torch.onnx.export failed for {spec.name}: {first_line(e)}",
            "rerun with -v for the exporter's log" + ("; try a static --batch" if dynamic else ""),
        ) from e
    return program.model_proto


@torch.no_grad()
def _torch_outputs(loaded: LoadedModel, sample) -> dict[str, np.ndarray]:
    result = loaded.module(*sample)
    values = result if isinstance(result, (tuple, list)) else (result,)
    return {name: v.numpy() for name, v in zip(loaded.spec.output_names, values)}


def _add_metadata(proto: onnx.ModelProto, loaded: LoadedModel) -> None:
    props = {
        NAME_KEY: loaded.spec.name,
        "dltk.dataset": loaded.spec.dataset,
        "dltk.metric": json.dumps(loaded.info.get("metric", {})),
        "dltk.trained": json.dumps({k: v for k, v in loaded.info.items() if k != "metric"}),
        "dltk.versions": json.dumps(versions()),
    }
    if loaded.spec.generation:
        props["dltk.generation"] = json.dumps(loaded.spec.generation)
    if loaded.spec.sequence_dims:
        props[STATIC_DIMS_KEY] = json.dumps({SEQUENCE_DIM: loaded.spec.max_sequence})
    del proto.metadata_props[:]
    for key, value in props.items():
        proto.metadata_props.add(key=key, value=value)

