"""Reduced precision: int8 (dynamic, static QDQ) and fp16 ONNX models, with an accuracy report.

    quantize_model("lenet.onnx", "lenet.int8.onnx")  # mode "auto": static QDQ here (LeNet has Conv)

Every reduction goes through ONNX Runtime's own tooling (quant_pre_process, quantize_dynamic,
quantize_static with a calibration reader; onnxruntime.transformers.float16). One pass of ours comes
first in dynamic mode: self-attention fused into ONNX Runtime's Attention node (toolkit/optimize/attention.py),
which quantize_dynamic turns into its int8 QAttention kernel, as ONNX Runtime's own transformer optimizer does
for the BERT and GPT-2 graphs it recognises (it does not recognise torch.onnx's). The report says what the
reduction costs:

- the held-out metric of a zoo model (the export's metadata names it) before and after, scored by
  the zoo task's own evaluate() with the ONNX graph standing in for the PyTorch module;
- for any model, the output error against the fp32 model on the calibration inputs;
- per op type, what quantizing only that op type costs (the op types that hurt most).

The output layer (the MatMul or Gemm that computes a graph output) stays fp32 unless asked: its int8
error goes straight into the logits, with no later layer to average it out. On the zoo GPT it held the
whole perplexity cost of dynamic int8 (1% worse with it quantized, none without) for 1% of the weights.

A metric that drops more than `max_drop` (accuracy points, or percent worse for metrics where
lower is better) stops the write unless forced. The file is written atomically, with its
precision and the report in its metadata (dltk.precision, dltk.quantization).
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import onnx

from toolkit import paths
from toolkit.errors import CheckFailed, DltkError
from toolkit.files import write_atomically
from toolkit.onnx_file import input_specs, load_onnx
from toolkit.optimize import fuse_attention
from toolkit.runtime.model_source import NAME_KEY, read_metadata
from toolkit.runtime.ort import OrtSession
from toolkit.runtime.spec import random_feeds

MODES = ("auto", "dynamic", "static", "fp16", "bf16")
PRECISION = {"dynamic": "int8-dynamic", "static": "int8-static", "fp16": "fp16", "bf16": "bf16"}
# `dltk bench --precision` names: "int8" is what `dltk quantize` makes by default (mode auto)
BENCH_PRECISIONS = {"int8": "auto", "int8-static": "static", "int8-dynamic": "dynamic", "fp16": "fp16"}
DEFAULT_CALIBRATION = 64  # samples
CALIBRATION_BATCH = 8  # samples per calibration call: ResNet-18's activations at 64 at once take GBs
EVAL_BATCH = 64  # held-out samples per ONNX Runtime call when scoring the metric
HIGHER_IS_BETTER = {"accuracy"}
# Node types whose second input is a weight: the layers int8 is for (output_layers keeps the last one fp32)
WEIGHT_LAYERS = {"MatMul", "Gemm", "Conv", "ConvTranspose", "LSTM", "GRU", "RNN"}
# Node types ONNX Runtime's quantizers write: their count says how much of a graph was reduced.
QUANTIZED_OPS = {"QuantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger", "QLinearConv",
                 "QLinearMatMul", "DynamicQuantizeMatMul", "QAttention", "DynamicQuantizeLSTM", "QGemm"}


@dataclass(frozen=True)
class QuantizeOptions:
    mode: str = "auto"  # the int8 mode that is faster for this graph (see auto_mode)
    calibration: int = DEFAULT_CALIBRATION  # samples of the zoo model's data (static mode, and the error report)
    calibration_data: tuple[str, ...] = ()  # .npz (arrays keyed by input name) or .npy (one-input models)
    per_channel: bool = False
    exclude: tuple[str, ...] = ()  # op types left in fp32
    max_drop: float = 1.0  # accuracy points, or percent worse for lower-is-better metrics
    force: bool = False  # write even when the metric drops more than max_drop
    per_op_report: bool = True  # quantize one op type at a time to see which hurt most
    quantize_output_layer: bool = False  # int8 for the layer that computes the outputs too (see output_layers)


@dataclass(frozen=True)
class Metric:
    name: str
    fp32: float
    reduced: float

    @property
    def drop(self) -> float:
        """Accuracy points lost, or percent worse for a metric where lower is better (perplexity, error)."""
        return metric_drop(self.name, self.fp32, self.reduced)

    @property
    def unit(self) -> str:
        return "points" if self.name in HIGHER_IS_BETTER else "% worse"

    def summary(self) -> str:
        return f"held-out {self.name} {self.fp32:.4g} -> {self.reduced:.4g} (drop {self.drop:+.2f} {self.unit})"


@dataclass(frozen=True)
class OutputError:
    """The reduced model against the fp32 one on the same inputs, over every output element."""

    max_abs: float
    mean_abs: float
    relative_rms: float  # rms(error) / rms(fp32 output)
    samples: int

    def summary(self) -> str:
        return (f"output error vs fp32 on {self.samples} calibration samples: max abs {self.max_abs:.3g}, "
                f"mean abs {self.mean_abs:.3g}, relative rms {self.relative_rms:.3g}")


@dataclass(frozen=True)
class OpTypeCost:
    op_type: str
    nodes: int  # nodes of this type in the graph
    drop: float | None  # metric drop with only this op type reduced (None: no metric)
    relative_rms: float  # output error with only this op type reduced


@dataclass(frozen=True)
class QuantizeReport:
    path: Path
    mode: str  # the mode used (auto resolved to static or dynamic)
    mode_reason: str  # why auto chose it ("" when the mode was asked for)
    precision: str
    model: str | None  # the zoo model scored, when there is one
    calibration: str  # where the calibration inputs came from
    weight_bits: int | None  # int8 weights: 7 where this CPU's int8 kernels would saturate 8-bit weights (see seven_bit_weights)
    fp32_layers: list[str]  # output layers left in fp32 (see output_layers)
    reduced_nodes: dict[str, int]  # node types the reduction wrote (QuantizeLinear, MatMulInteger, ...)
    error: OutputError
    metric: Metric | None
    metric_note: str  # why there is no metric, when there is none
    per_op: list[OpTypeCost]
    max_drop: float
    forced: bool

    def lines(self) -> list[str]:
        nodes = ", ".join(f"{op} x{n}" for op, n in sorted(self.reduced_nodes.items())) or "casts only"
        bits = f", {self.weight_bits}-bit weights" if self.weight_bits == 7 else ""
        kept = f"; output layer kept fp32: {', '.join(self.fp32_layers)}" if self.fp32_layers else ""
        lines = [f"{self.precision} ({self.mode}{bits}): {nodes}{kept}; calibration: {self.calibration}", self.error.summary()]
        if self.mode_reason:
            lines.insert(0, f"--mode auto chose {self.mode}: {self.mode_reason}")
        lines.append(self.metric.summary() if self.metric else f"held-out metric: none ({self.metric_note})")
        if self.per_op:
            lines.append("one op type at a time (worst first):")
            for cost in self.per_op:
                drop = f"drop {cost.drop:+.2f} {self.metric.unit}, " if cost.drop is not None else ""
                lines.append(f"  {cost.op_type:<20} {cost.nodes:>4} nodes  {drop}relative rms {cost.relative_rms:.3g}")
        return lines

    def to_json(self) -> dict:
        data = asdict(self)
        data["path"] = str(self.path)
        if self.metric:
            data["metric"]["drop"], data["metric"]["unit"] = self.metric.drop, self.metric.unit
        return data


def metric_drop(name: str, fp32: float, reduced: float) -> float:
    if name in HIGHER_IS_BETTER:
        return 100.0 * (fp32 - reduced)
    return 100.0 * (reduced - fp32) / max(abs(fp32), 1e-12)


def quantize_model(source, output, options: QuantizeOptions = QuantizeOptions(), log=lambda line: None) -> QuantizeReport:
    """Reduce `source` to `options.mode`, report what it costs, and write it unless the metric drops too far."""
    _check(options)
    model = load_onnx(source)
    if any(n.op_type in QUANTIZED_OPS | {"DequantizeLinear"} for n in model.graph.node):
        raise DltkError(f"{source} is already quantized", "give the fp32 model")
    spec, spec_note = zoo_spec(model)
    mode_reason = ""
    if options.mode == "auto":
        mode, mode_reason = auto_mode(model, calibrated=spec is not None or bool(options.calibration_data))
        options = replace(options, mode=mode)
    feeds, calibration = calibration_feeds(model, spec, options)
    log(f"reducing {source} to {PRECISION[options.mode]} ({options.mode}; calibration: {calibration})")
    reduced = reduce(model, options.mode, feeds, options.per_channel, _op_types(model, options),
                     options.quantize_output_layer)
    reduced_nodes = _reduced_nodes(model, reduced)
    if options.mode in ("dynamic", "static") and not reduced_nodes:
        raise DltkError(f"nothing in {source} was quantized ({options.mode} mode)",
                        "see 'dltk inspect' for its ops; try the other --mode, or fewer --exclude")
    fp32_session = OrtSession(model.SerializeToString())
    reduced_session = _session(reduced, options.mode)
    error = output_error(fp32_session, reduced_session, feeds)
    metric, metric_note = None, spec_note
    if spec is not None:
        log(f"scoring {spec.name}'s held-out {spec.metric} at fp32 and {PRECISION[options.mode]}")
        before, metric_note = held_out_metric(fp32_session, spec)
        if before is not None:
            metric = Metric(spec.metric, before, held_out_metric(reduced_session, spec)[0])
    per_op = []
    if options.per_op_report and options.mode in ("dynamic", "static"):
        per_op = _per_op_costs(model, options, feeds, spec, fp32_session, metric, log)
    int8 = options.mode in ("dynamic", "static")
    weight_bits = (7 if seven_bit_weights() else 8) if int8 else None
    fp32_layers = output_layers(reduced) if int8 else []  # still MatMul/Gemm on fp32 weights after quantizing
    report = QuantizeReport(Path(output), options.mode, mode_reason, PRECISION[options.mode], spec.name if spec else None,
                            calibration, weight_bits, fp32_layers, reduced_nodes, error, metric, metric_note, per_op,
                            options.max_drop, options.force)
    if metric and metric.drop > options.max_drop and not options.force:
        raise CheckFailed(
            f"{metric.summary()} is over --max-drop {options.max_drop:g}; {output} not written",
            "try --mode static --per-channel, --exclude the op types that hurt most, or --force",
        )
    _add_metadata(reduced, model, report)
    write_atomically(output, reduced.SerializeToString())
    return report


def auto_mode(model: onnx.ModelProto, calibrated: bool) -> tuple[str, str]:
    """The int8 mode that is faster for this graph on ONNX Runtime's CPU kernels, and why.

    Measured side by side on Zen 3 (benchmarks/results/amd-epyc-2c/precision.md): static QDQ runs Conv as
    QLinearConv, 0.5-0.6x the fp32 time on ResNet-18, where dynamic int8's ConvInteger took 2.8-4.3x. On the
    GPT's MatMuls dynamic int8 (DynamicQuantizeMatMul, scales per call) is the faster one and keeps the
    perplexity, where static QDQ was slower and cost a third of it (fixed activation ranges through attention).
    """
    convs = sum(n.op_type == "Conv" for n in model.graph.node)
    if convs and calibrated:
        return "static", f"{convs} Conv nodes: static QDQ runs them as int8 QLinearConv (dynamic ConvInteger is slower than fp32)"
    if convs:
        return "dynamic", (f"{convs} Conv nodes but no calibration inputs: dynamic int8 "
                           "(--calibration-data FILE.npz gives static QDQ, faster on Conv)")
    return "dynamic", "no Conv: dynamic int8 (MatMul weights int8, activation scales computed per call)"


def reduce(model: onnx.ModelProto, mode: str, feeds: list[dict], per_channel: bool = False,
           op_types: list[str] | None = None, quantize_output_layer: bool = False) -> onnx.ModelProto:
    """The reduced model, made by ONNX Runtime's tools; op_types limits the reduction to those node types.
    int8 leaves the output layer in fp32 unless quantize_output_layer (or it is the model's only layer)."""
    try:
        if mode == "fp16":
            return _half(model, op_types)
        return _quantize(model, mode, feeds, per_channel, op_types, quantize_output_layer)
    except DltkError:
        raise
    except Exception as e:  # ONNX Runtime's tools raise plain exceptions on graphs they cannot handle
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckFailed(f"ONNX Runtime's {PRECISION[mode]} conversion failed: {first}",
                          "try --exclude on the op type it names, or another --mode") from e


def _half(model: onnx.ModelProto, op_types) -> onnx.ModelProto:
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    blocked = sorted({n.op_type for n in model.graph.node} - set(op_types)) if op_types is not None else None
    # keep_io_types: the model still takes and returns fp32, so every caller and server works unchanged
    half = OnnxModel(convert_float_to_float16(onnx.ModelProto.FromString(model.SerializeToString()),
                                              keep_io_types=True, op_block_list=blocked))
    half.topological_sort()  # the converter appends the input casts last; onnx.checker wants them first
    return half.model


def output_layers(model: onnx.ModelProto) -> list[str]:
    """Names of the MatMul and Gemm nodes on fp32 weights that compute a graph output, directly or through
    one bias Add (a classifier's last Linear, a language model's head)."""
    weights = {t.name for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT}
    outputs = {o.name for o in model.graph.output}
    readers = Counter(name for n in model.graph.node for name in n.input)
    bias_add = {name: n.output[0] for n in model.graph.node if n.op_type == "Add" for name in n.input if name not in weights}
    return [n.name for n in model.graph.node
            if n.op_type in ("MatMul", "Gemm") and n.name and len(n.input) > 1 and n.input[1] in weights
            and (n.output[0] in outputs or (readers[n.output[0]] == 1 and bias_add.get(n.output[0]) in outputs))]


def _kept_fp32(model: onnx.ModelProto, mode: str, op_types) -> list[str]:
    """The output layers to leave in fp32: none when no other weight layer would be quantized (a perceptron,
    or a GRU model: ONNX Runtime has no int8 GRU, its classifier is all there is to quantize)."""
    kept = output_layers(model)
    quantizable = set(op_types) if op_types is not None else set(_quantizable(model, mode))
    weights = {t.name for t in model.graph.initializer}
    others = [n for n in model.graph.node if n.name not in kept and len(n.input) > 1 and n.input[1] in weights
              and n.op_type in WEIGHT_LAYERS and _as_quantized(n.op_type, mode) in quantizable]
    return kept if others else []


def _quantize(model: onnx.ModelProto, mode: str, feeds: list[dict], per_channel: bool, op_types,
              quantize_output_layer: bool) -> onnx.ModelProto:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="dltk-quantize-") as tmp:
        source, prepared, reduced = Path(tmp) / "source.onnx", Path(tmp) / "prepared.onnx", Path(tmp) / "reduced.onnx"
        # From a file: given a ModelProto, quant_pre_process may move its weights to a made-up external file in place.
        onnx.save_model(model, str(source))
        # shape inference and graph cleanup first, as ONNX Runtime's docs ask; in the temporary directory, because
        # its symbolic inference saves what it could not finish to the working directory (sym_shape_infer_temp.onnx)
        with contextlib.chdir(tmp):
            try:
                quant_pre_process(str(source), str(prepared), skip_symbolic_shape=_has_sequence_ops(model))
            except Exception:  # it gives up on some dynamic axes (a sequence): plain inference suffices
                quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        # names from the prepared graph: its cleanup may have merged nodes (MatMul + Add into Gemm)
        kept = [] if quantize_output_layer else _kept_fp32(onnx.load(str(prepared)), mode, op_types)
        if mode == "dynamic":
            if op_types is None or "MatMul" in op_types:
                op_types = _with_attention_fused(prepared, op_types)
            # quantize_dynamic first rewrites each Gemm NAME as NAME_MatMul + NAME_Add: exclude by either name
            quantize_dynamic(prepared, reduced, op_types_to_quantize=op_types, per_channel=per_channel,
                             reduce_range=seven_bit_weights(), weight_type=QuantType.QInt8,
                             nodes_to_exclude=kept + [f"{name}_MatMul" for name in kept])
        else:
            quantize_static(prepared, reduced, _Reader(feeds), quant_format=QuantFormat.QDQ,
                            op_types_to_quantize=op_types, per_channel=per_channel, reduce_range=seven_bit_weights(),
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_exclude=kept)
        return onnx.load(str(reduced))


def _with_attention_fused(path: Path, op_types: list[str] | None) -> list[str] | None:
    """Fuse the self-attention blocks of the model at `path` in place (quantize_dynamic makes each a QAttention,
    see toolkit/optimize/attention.py); the op types to quantize, Attention among them where some were fused."""
    fused, count = fuse_attention(onnx.load(str(path)))
    if not count:
        return op_types
    onnx.save_model(fused, str(path))
    return None if op_types is None else [*op_types, "Attention"]


class _Reader:
    """ONNX Runtime's CalibrationDataReader protocol over a list of feeds."""

    def __init__(self, feeds: list[dict]):
        self._feeds = iter(feeds)

    def get_next(self):
        return next(self._feeds, None)

    def rewind(self):  # called by some calibrators; ours are read once
        pass


def zoo_spec(model: onnx.ModelProto):
    """(the zoo spec the export's metadata names, None) or (None, why there is none)."""
    import models

    name = read_metadata(model).get(NAME_KEY)
    if not name:
        return None, "not a zoo export (no dltk.model in its metadata)"
    if name not in models.REGISTRY:
        return None, f"its metadata names '{name}', which is not in the zoo"
    spec = models.get(name)
    wanted = [tuple(x.shape) for x in spec.sample(1)]
    given = [s.shape for s in input_specs(model)]
    if len(wanted) != len(given) or not all(_fits(w, g) for w, g in zip(wanted, given)):
        return None, f"its inputs do not have the shapes of the zoo's {name}"
    return spec, ""


def calibration_feeds(model: onnx.ModelProto, spec, options: QuantizeOptions) -> tuple[list[dict], str]:
    """Feeds for calibration and the error report, and a line saying where they came from."""
    inputs = input_specs(model)
    if options.calibration_data:
        arrays = _read_calibration_files(options.calibration_data, inputs)
        source = f"{_count(arrays)} samples from {', '.join(Path(f).name for f in options.calibration_data)}"
    elif spec is not None:
        arrays = _zoo_samples(spec, options.calibration)
        source = f"{_count(arrays)} samples of {spec.name}'s training data" if spec.inputs is None else \
            f"{_count(arrays)} samples of {spec.name}'s inputs (models.{spec.name} sample())"
    elif options.mode == "static":
        raise DltkError("static quantization needs calibration inputs and this is not a zoo export",
                        "give --calibration-data FILE.npz (arrays keyed by input name) or FILE.npy")
    else:
        dims = {d: 1 for s in inputs for d in s.shape if isinstance(d, str)}
        arrays = {k: np.concatenate([random_feeds(inputs, dims, seed=i)[k] for i in range(options.calibration)])
                  for k in (s.name for s in inputs)}
        source = f"{options.calibration} random samples (not a zoo export; --calibration-data gives real ones)"
    return _split(arrays, inputs), source


def held_out_metric(session: OrtSession, spec) -> tuple[float | None, str]:
    """The zoo task's held-out metric with the ONNX graph in place of the module, or (None, why not)."""
    data = spec.data()
    forward = _OnnxForward(session, chunked=_chunkable(spec))
    try:
        return float(spec.task.evaluate(forward, data.test_x, data.test_y)), ""
    except AttributeError:  # the task calls more of the module than its exported forward (the VAE's encoder)
        return None, f"{spec.name}'s {spec.metric} needs more of the model than its exported graph"


def output_error(reference: OrtSession, candidate: OrtSession, feeds: list[dict]) -> OutputError:
    errors, scales = [], []
    for feed in feeds:
        want, got = reference.run(feed), candidate.run(feed)
        for name, value in want.items():
            errors.append((got[name].astype(np.float64) - value).reshape(-1))
            scales.append(value.astype(np.float64).reshape(-1))
    error, scale = np.concatenate(errors), np.concatenate(scales)
    rms = float(np.sqrt(np.mean(scale**2))) or 1.0
    samples = sum(len(next(iter(f.values()))) for f in feeds)
    return OutputError(float(np.abs(error).max()), float(np.abs(error).mean()),
                       float(np.sqrt(np.mean(error**2))) / rms, samples)


def seven_bit_weights() -> bool:
    """True on an x86 CPU without VNNI: ONNX Runtime's u8 x s8 kernels there (vpmaddubsw) saturate
    their 16-bit sums, which its docs fix with 7-bit weights (reduce_range). With AVX-512 VNNI or
    AVX-VNNI, or on another architecture, the weights keep all 8 bits."""
    import platform

    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return True
    return not ({"avx512_vnni", "avx_vnni"} & set(flags))


def reduced_copy(onnx_path, precision: str, directory: Path, log=lambda line: None) -> Path:
    """`onnx_path` reduced to a precision `dltk bench` names (BENCH_PRECISIONS: int8 is the default recipe),
    made once and cached by content in `directory`. No gate: a benchmark shows the metric beside the latency."""
    import hashlib

    modes = BENCH_PRECISIONS
    if precision not in modes:
        raise DltkError(f"unknown precision '{precision}'", f"use any of fp32, {', '.join(modes)}")
    # dltk's code in the key: a new quantization recipe (the attention fusion, say) makes a new copy
    digest = hashlib.sha256(Path(onnx_path).read_bytes() + paths.code_digest()).hexdigest()[:16]
    path = Path(directory) / f"{digest}-{precision}.onnx"
    if not path.is_file():
        log(f"reducing {onnx_path} to {precision} into {path}")
        quantize_model(onnx_path, path, QuantizeOptions(mode=modes[precision], force=True, per_op_report=False))
    return path


def model_metric(onnx_path) -> dict[str, float] | None:
    """{metric: value} of a zoo export on its held-out data through ONNX Runtime, None for other models."""
    spec, _ = zoo_spec(load_onnx(onnx_path))
    if spec is None:
        return None
    value, _ = held_out_metric(OrtSession(Path(onnx_path)), spec)
    return None if value is None else {spec.metric: value}


# --- helpers --------------------------------------------------------------------------------


def _check(options: QuantizeOptions) -> None:
    if options.mode not in MODES:
        raise DltkError(f"unknown --mode '{options.mode}'", f"use one of {', '.join(MODES)}")
    if options.mode == "bf16":
        raise DltkError("bf16 does not run here: ONNX Runtime's CPU provider has no bfloat16 kernels (not even Add)",
                        "use --mode fp16 or int8 on this machine")
    if options.calibration < 1:
        raise DltkError(f"--calibration must be at least 1, got {options.calibration}")


def _session(model: onnx.ModelProto, mode: str) -> OrtSession:
    try:
        return OrtSession(model.SerializeToString())
    except DltkError as e:
        raise CheckFailed(f"ONNX Runtime cannot run the {PRECISION[mode]} model: {e}", "try --exclude on the op it names") from e


def _op_types(model: onnx.ModelProto, options: QuantizeOptions) -> list[str] | None:
    """The op types to reduce: what the mode can reduce minus --exclude (None: the tool's defaults)."""
    if not options.exclude:
        return None
    present = {n.op_type for n in model.graph.node}
    unknown = [op for op in options.exclude if op not in present]
    if unknown:
        raise DltkError(f"--exclude {unknown[0]}: no such op type in the model", f"it has {', '.join(sorted(present))}")
    if options.mode == "fp16":
        return sorted(present - set(options.exclude))
    return sorted(set(_quantizable(model, options.mode)) - {_as_quantized(op, options.mode) for op in options.exclude})


def _quantizable(model: onnx.ModelProto, mode: str) -> Counter:
    """Op types (as ONNX Runtime's quantizer names them) that the mode can reduce, with their node counts."""
    from onnxruntime.quantization.registry import IntegerOpsRegistry, QDQRegistry

    registry = IntegerOpsRegistry if mode == "dynamic" else QDQRegistry
    counts = Counter(_as_quantized(n.op_type, mode) for n in model.graph.node)
    return Counter({op: n for op, n in counts.items() if op in registry})


def _as_quantized(op_type: str, mode: str) -> str:
    # quantize_dynamic rewrites each Gemm as MatMul + Add and quantizes the MatMul: one type there
    return "MatMul" if mode == "dynamic" and op_type == "Gemm" else op_type


def _per_op_costs(model, options: QuantizeOptions, feeds, spec, fp32_session, metric: Metric | None, log) -> list[OpTypeCost]:
    counts = _quantizable(model, options.mode)
    excluded = {_as_quantized(op, options.mode) for op in options.exclude}
    costs = []
    for op_type in sorted(set(counts) - excluded):
        log(f"  {op_type} alone")
        reduced = reduce(model, options.mode, feeds, options.per_channel, [op_type], options.quantize_output_layer)
        if not _reduced_nodes(model, reduced):
            continue  # ONNX Runtime leaves this type alone unless its neighbours are quantized too
        session = _session(reduced, options.mode)
        drop = None
        if metric is not None:
            drop = metric_drop(metric.name, metric.fp32, held_out_metric(session, spec)[0])
        costs.append(OpTypeCost(op_type, counts[op_type], drop, output_error(fp32_session, session, feeds).relative_rms))
    return sorted(costs, key=lambda c: (c.drop if c.drop is not None else 0.0, c.relative_rms), reverse=True)


def _reduced_nodes(before: onnx.ModelProto, after: onnx.ModelProto) -> dict[str, int]:
    had = Counter(n.op_type for n in before.graph.node)
    now = Counter(n.op_type for n in after.graph.node)
    return {op: n - had[op] for op, n in now.items() if op in QUANTIZED_OPS and n > had[op]}


def _has_sequence_ops(model: onnx.ModelProto) -> bool:
    # ONNX Runtime's symbolic shape inference stops on some recurrent graphs; plain inference suffices there
    return any(n.op_type in ("LSTM", "GRU", "RNN", "Loop", "Scan") for n in model.graph.node)


def _zoo_samples(spec, count: int) -> dict[str, np.ndarray]:
    if spec.inputs is not None:
        values = spec.inputs(count)
    else:  # training data: the held-out split stays unseen until the metric is scored
        train = spec.data().train_x
        import torch

        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:count]
        values = (train[order],)
    return {name: v.numpy() for name, v in zip(spec.input_names, values)}


def _read_calibration_files(paths, inputs) -> dict[str, np.ndarray]:
    names = [s.name for s in inputs]
    parts: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for path in map(Path, paths):
        if not path.is_file():
            raise DltkError(f"no such file: {path}", "check the --calibration-data path")
        try:
            loaded = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as e:
            raise DltkError(f"{path} is not a .npy or .npz file ({e})", "save arrays with numpy.save or numpy.savez") from e
        if isinstance(loaded, np.ndarray):
            if len(names) != 1:
                raise DltkError(f"{path} holds one array but the model takes {', '.join(names)}",
                                "give an .npz with one array per input name")
            loaded = {names[0]: loaded}
        missing = [n for n in names if n not in loaded]
        if missing:
            raise DltkError(f"{path} has no array '{missing[0]}'", f"the model takes {', '.join(names)}")
        for spec in inputs:
            value = loaded[spec.name]
            if value.dtype != spec.dtype or value.ndim != len(spec.shape):
                raise DltkError(f"{path}: '{spec.name}' is {value.dtype}{list(value.shape)}",
                                f"the model takes {spec.dtype} with {len(spec.shape)} dims, samples along the first")
            parts[spec.name].append(value)
    return {n: np.concatenate(v) for n, v in parts.items()}


def _split(arrays: dict[str, np.ndarray], inputs) -> list[dict]:
    """Calibration calls of CALIBRATION_BATCH samples; one call when the batch is not only the first dim."""
    symbols = [d for s in inputs for d in s.shape if isinstance(d, str)]
    firsts = [s.shape[0] if s.shape else None for s in inputs]
    if len(symbols) != len(inputs) or any(not isinstance(d, str) for d in firsts):
        return [arrays]  # a graph (the GCN's adjacency) or a fixed batch: all at once
    count = _count(arrays)
    return [{k: v[i : i + CALIBRATION_BATCH] for k, v in arrays.items()} for i in range(0, count, CALIBRATION_BATCH)]


def _count(arrays: dict[str, np.ndarray]) -> int:
    return len(next(iter(arrays.values())))


def _fits(sample_shape: tuple, model_shape: tuple) -> bool:
    """A zoo sample fits an input when the model's fixed dims past the batch are the sample's."""
    return len(sample_shape) == len(model_shape) and all(
        want == got for want, got in zip(sample_shape[1:], model_shape[1:]) if isinstance(got, int))


def _chunkable(spec) -> bool:
    return all(dims == (0,) for dims in spec.dynamic_dims())


def _add_metadata(reduced: onnx.ModelProto, source: onnx.ModelProto, report: QuantizeReport) -> None:
    props = read_metadata(source)
    props["dltk.precision"] = report.precision
    props["dltk.quantization"] = json.dumps(report.to_json())
    del reduced.metadata_props[:]
    for key, value in props.items():
        reduced.metadata_props.add(key=key, value=value)


class _OnnxForward:
    """An ONNX Runtime session behind a torch module's call, so a zoo task's evaluate() scores it."""

    def __init__(self, session: OrtSession, chunked: bool):
        self.session, self.chunked = session, chunked

    def eval(self):
        return self

    def __call__(self, *inputs):
        import torch

        feeds = {s.name: x.numpy() for s, x in zip(self.session.inputs, inputs)}
        count = len(next(iter(feeds.values())))
        step = EVAL_BATCH if self.chunked else count
        parts = [self.session.run({k: v[i : i + step] for k, v in feeds.items()}) for i in range(0, count, step)]
        values = [torch.from_numpy(np.concatenate([p[name] for p in parts])) for name in parts[0]]
        return values[0] if len(values) == 1 else tuple(values)
