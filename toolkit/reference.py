"""The reference a compiled model is verified against, for models ONNX Runtime cannot load too.

In order of preference:
1. ONNX Runtime on the model as given.
2. ONNX Runtime on a copy upgraded with `onnx.version_converter` (ONNX Runtime has no kernels for
   many old-opset ops, e.g. AveragePool-1, BatchNormalization-6, which published models still
   use). The upgraded copy becomes the artifact's model.onnx, so the artifact keeps an ONNX
   Runtime fallback.
3. The ONNX reference implementation (`onnx.reference.ReferenceEvaluator`, numpy, slow but
   close to the spec), for ops or types ONNX Runtime lacks (e.g. Relu on int16).
When none of them can run the model, `choose_reference` says why (`runs` is False); the caller
compiles it anyway and records the verification as skipped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx

from toolkit.errors import DltkError
from toolkit.onnx_file import input_specs, output_specs

ONNX_RUNTIME = "onnxruntime"
ONNX_REFERENCE = "onnx.reference"
UPGRADE_OPSETS = (17, 13)  # targets tried in turn; 17 is well within ONNX Runtime's range, 13 needs fewer adapters


@dataclass
class Reference:
    name: str | None  # ONNX_RUNTIME, ONNX_REFERENCE, or None when nothing here can run the model
    session: object | None  # .inputs, .outputs, .run(feeds) -> {name: array}
    model: onnx.ModelProto  # the graph the reference runs: the source, or its upgraded copy
    upgraded_from: int | None = None  # the source's opset when `model` is an upgraded copy
    failures: list[str] = field(default_factory=list)  # why the references before this one were passed over

    @property
    def runs(self) -> bool:
        return self.session is not None

    @property
    def onnx_runtime_loads(self) -> bool:
        return self.name == ONNX_RUNTIME

    def to_json(self) -> dict:
        """What the manifest's verification records about the reference."""
        record = {"reference": self.name} if self.runs else {}
        if self.upgraded_from is not None:
            record["reference_model"] = f"model.onnx: opset {self.upgraded_from} upgraded to {default_opset(self.model)} with onnx.version_converter"
        if self.failures:
            record["reference_fallback_because"] = self.failures
        return record


def choose_reference(model: onnx.ModelProto, path, log=lambda line: None) -> Reference:
    """The first reference that can load `model`, saved at `path` (see the module's docstring)."""
    failures = []
    try:
        return Reference(ONNX_RUNTIME, _ort_session(path, ort_optimization(model)), model)
    except DltkError as e:
        failures.append(f"{ONNX_RUNTIME}: {e}")
    opset = default_opset(model)
    for target in (t for t in UPGRADE_OPSETS if t > opset):
        try:
            upgraded = upgrade(model, target)
            session = _ort_session(upgraded.SerializeToString())  # old-opset models are small
        except DltkError as e:
            failures.append(f"{ONNX_RUNTIME} on an opset-{target} upgrade: {e}")
            continue
        log(f"ONNX Runtime cannot load the model at opset {opset}; verifying against its opset-{target} upgrade")
        return Reference(ONNX_RUNTIME, session, upgraded, upgraded_from=opset, failures=failures)
    try:
        session = ReferenceSession(model)
    except DltkError as e:
        failures.append(f"{ONNX_REFERENCE}: {e}")
        return Reference(None, None, model, failures=failures)
    log("ONNX Runtime cannot load the model; verifying against the ONNX reference implementation")
    return Reference(ONNX_REFERENCE, session, model, failures=failures)


def upgrade(model: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    """`model` converted to `opset` by onnx.version_converter, checked; DltkError when it cannot be."""
    from onnx import version_converter

    try:
        upgraded = version_converter.convert_version(model, opset)
        onnx.checker.check_model(upgraded)
    except Exception as e:  # the converter raises RuntimeError/ValidationError for ops it has no adapter for
        raise DltkError(f"onnx.version_converter cannot upgrade it: {_first_line(e)}") from e
    upgraded.ClearField("metadata_props")
    upgraded.metadata_props.extend(model.metadata_props)
    return upgraded


def default_opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


class ReferenceSession:
    """`onnx.reference.ReferenceEvaluator` behind the runtime's session interface."""

    backend = ONNX_REFERENCE

    def __init__(self, model: onnx.ModelProto):
        from onnx.reference import ReferenceEvaluator

        self.inputs, self.outputs = input_specs(model), output_specs(model)
        self._names = [o.name for o in self.outputs]
        try:
            self._evaluator = ReferenceEvaluator(model)
        except Exception as e:  # unknown ops and domains raise at construction
            raise DltkError(f"the ONNX reference implementation cannot run it: {_first_line(e)}") from e

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from toolkit.runtime.spec import validate_feeds

        values = self._evaluator.run(self._names, validate_feeds(self.inputs, feeds))
        return {name: np.asarray(value) for name, value in zip(self._names, values)}


def ort_optimization(model: onnx.ModelProto) -> str:
    """ONNX Runtime's graph optimizations for the reference run.

    An int8 QDQ model is checked against ONNX Runtime running its QuantizeLinear/DequantizeLinear
    nodes as written, which is what TVM compiles; with all optimizations ONNX Runtime fuses them into
    integer kernels that round differently (a quantization step or so), which no tolerance for fp32 fits.
    """
    return "disable" if any(n.op_type == "QuantizeLinear" for n in model.graph.node) else "all"


def _ort_session(model, optimization: str = "all"):
    """ONNX Runtime on the CPU: the reference runs here whatever the target."""
    from toolkit.runtime.ort import OrtSession

    return OrtSession(model, optimization=optimization)


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__
