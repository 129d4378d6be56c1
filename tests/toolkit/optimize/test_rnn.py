"""LSTM, GRU and RNN nodes lowered to primitive ops: ONNX Runtime on the original graph is the reference.

The cheap checks run the lowered graph in ONNX Runtime over the whole spec matrix; a chosen set
is compiled with TVM and run at batch 1, 3, 6 and 8 (one sequence, pairs, groups of four with a partial
one, whole groups); PyTorch exports go through `dltk compile`.
"""

import itertools
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from toolkit import runtime
from toolkit.cli import cli
from toolkit.compile import build, compile_model, import_onnx
from toolkit.errors import DltkError
from toolkit.optimize import lower_recurrent
from toolkit.target import resolve_target

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
STEPS, FEATURES, HIDDEN = 4, 3, 5
BATCHES = (1, 3, 6, 8)


def recurrent_model(
    op,
    direction="forward",
    layout=0,
    initial_states=False,
    sequence_lens=False,
    peepholes=False,
    outputs=("Y", "Y_h", "Y_c"),
    steps=STEPS,
    seed=0,
    hidden=HIDDEN,
    **attributes,
):
    """One LSTM/GRU/RNN node named 'cell' with random weights, a symbolic batch and the given options."""
    rng = np.random.default_rng(seed)
    gates, directions = GATES[op], 2 if direction == "bidirectional" else 1

    def weight(name, *shape, scale=0.5):
        return helper.make_tensor(name, TensorProto.FLOAT, shape, (scale * rng.standard_normal(shape)).ravel())

    initializers = [
        weight("W", directions, gates * hidden, FEATURES),
        weight("R", directions, gates * hidden, hidden),
        weight("B", directions, 2 * gates * hidden),
    ]
    x_shape = [steps, "batch", FEATURES] if layout == 0 else ["batch", steps, FEATURES]
    state_shape = [directions, "batch", hidden] if layout == 0 else ["batch", directions, hidden]
    graph_inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, x_shape)]
    node_inputs = ["X", "W", "R", "B", "", "", "", ""]
    if sequence_lens:
        graph_inputs.append(helper.make_tensor_value_info("lengths", TensorProto.INT32, ["batch"]))
        node_inputs[4] = "lengths"
    if initial_states:
        graph_inputs.append(helper.make_tensor_value_info("h0", TensorProto.FLOAT, state_shape))
        node_inputs[5] = "h0"
        if op == "LSTM":
            graph_inputs.append(helper.make_tensor_value_info("c0", TensorProto.FLOAT, state_shape))
            node_inputs[6] = "c0"
    if peepholes:
        initializers.append(weight("P", directions, 3 * hidden))
        node_inputs[7] = "P"
    while node_inputs[-1] == "":
        node_inputs.pop()
    node_outputs = list(outputs[: 3 if op == "LSTM" else 2])
    if layout:
        attributes["layout"] = layout
    node = helper.make_node(op, node_inputs, node_outputs, name="cell", direction=direction, hidden_size=hidden, **attributes)
    y_shape = [steps, directions, "batch", hidden] if layout == 0 else ["batch", steps, directions, hidden]
    shapes = {"Y": y_shape, "Y_h": state_shape, "Y_c": state_shape}
    graph = helper.make_graph(
        [node], "recurrent", graph_inputs,
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, shapes[name]) for name in node_outputs if name],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.checker.check_model(model)
    return model


def random_inputs(model, batch, seed=1, steps=STEPS):
    rng = np.random.default_rng(seed)
    feeds = {}
    for value in model.graph.input:
        shape = [batch if d.dim_param else d.dim_value for d in value.type.tensor_type.shape.dim]
        if value.name == "lengths":
            feeds["lengths"] = rng.integers(1, steps + 1, size=shape).astype(np.int32)
        else:
            feeds[value.name] = rng.standard_normal(shape).astype(np.float32)
    return feeds


def onnxruntime_outputs(options, feeds):
    """ONNX Runtime's answer for recurrent_model(**options).

    ONNX Runtime refuses layout=1, so that case runs the same weights with layout 0 on transposed tensors.
    """
    layout = options.get("layout", 0)
    model = recurrent_model(**{**options, "layout": 0})
    names = [o.name for o in model.graph.output]
    if layout:
        feeds = {k: v if k == "lengths" else v.swapaxes(0, 1) for k, v in feeds.items()}
    results = dict(zip(names, ort.InferenceSession(model.SerializeToString()).run(names, feeds)))
    if layout:  # Y: (T, D, B, H) -> (B, T, D, H); Y_h, Y_c: (D, B, H) -> (B, D, H)
        results = {k: v.transpose(2, 0, 1, 3) if v.ndim == 4 else v.swapaxes(0, 1) for k, v in results.items()}
    return results


def assert_outputs_match(expected, actual, atol=1e-5):
    assert expected.keys() == actual.keys()
    for name in expected:
        assert actual[name].shape == expected[name].shape, name
        np.testing.assert_allclose(actual[name], expected[name], atol=atol, rtol=1e-4, err_msg=name)


def lowered_outputs(model, feeds):
    lowered = lower_recurrent(model)
    assert {n.op_type for n in lowered.graph.node}.isdisjoint(GATES)
    names = [o.name for o in model.graph.output]
    return dict(zip(names, ort.InferenceSession(lowered.SerializeToString()).run(names, feeds)))


# The spec matrix, checked cheaply: the lowered graph in ONNX Runtime against the original node.
MATRIX = [
    pytest.param(op, direction, layout, initial, lengths, id=f"{op}-{direction}-layout{layout}{'-h0' if initial else ''}{'-lens' if lengths else ''}")
    for op, direction, layout, initial, lengths in itertools.product(
        GATES, ("forward", "reverse", "bidirectional"), (0, 1), (False, True), (False, True)
    )
]


@pytest.mark.parametrize("op, direction, layout, initial_states, sequence_lens", MATRIX)
def test_lowered_graph_computes_what_the_node_does(op, direction, layout, initial_states, sequence_lens):
    options = dict(op=op, direction=direction, layout=layout, initial_states=initial_states, sequence_lens=sequence_lens)
    model = recurrent_model(**options)
    feeds = random_inputs(model, batch=3)
    assert_outputs_match(onnxruntime_outputs(options, feeds), lowered_outputs(model, feeds))


OPTIONS = {
    "lstm-peepholes": dict(op="LSTM", direction="bidirectional", initial_states=True, peepholes=True),
    "lstm-input-forget": dict(op="LSTM", direction="reverse", input_forget=1),
    "lstm-clip": dict(op="LSTM", direction="bidirectional", sequence_lens=True, clip=0.4),
    "lstm-only-cell-state": dict(op="LSTM", outputs=("", "", "Y_c"), initial_states=True),
    "lstm-only-sequence": dict(op="LSTM", outputs=("Y",), sequence_lens=True),
    "gru-linear-before-reset": dict(op="GRU", direction="bidirectional", initial_states=True, sequence_lens=True, linear_before_reset=1),
    "gru-linear-before-reset-from-zero": dict(op="GRU", linear_before_reset=1),
    "rnn-relu": dict(op="RNN", activations=["Relu"]),
    "rnn-leakyrelu-elu-one-alpha": dict(op="RNN", direction="bidirectional", activations=["LeakyRelu", "Elu"], activation_alpha=[0.3]),
    "rnn-affine": dict(op="RNN", activations=["Affine"], activation_alpha=[0.7], activation_beta=[0.2]),
    "rnn-scaledtanh": dict(op="RNN", activations=["ScaledTanh"], activation_alpha=[0.7], activation_beta=[1.3]),
    "rnn-thresholdedrelu": dict(op="RNN", activations=["ThresholdedRelu"], activation_alpha=[0.1]),
    "gru-hardsigmoid-softsign": dict(op="GRU", activations=["HardSigmoid", "Softsign"], activation_alpha=[0.3], activation_beta=[0.4]),
    "gru-lowercase-softplus": dict(op="GRU", activations=["sigmoid", "softplus"]),
    "lstm-mixed-activations": dict(
        op="LSTM", direction="bidirectional",
        activations=["Sigmoid", "Tanh", "Tanh", "HardSigmoid", "LeakyRelu", "Affine"],
        activation_alpha=[0.1, 0.2, 0.9], activation_beta=[0.3, 0.4],
    ),
}


@pytest.mark.parametrize("options", OPTIONS.values(), ids=OPTIONS.keys())
def test_lowered_graph_honours_every_attribute(options):
    model = recurrent_model(**options)
    feeds = random_inputs(model, batch=3)
    assert_outputs_match(onnxruntime_outputs(options, feeds), lowered_outputs(model, feeds))


@pytest.mark.parametrize("op", GATES)
def test_empty_sequences_end_in_zero_states_as_in_onnxruntime(op):
    options = dict(op=op, direction="bidirectional", initial_states=True, sequence_lens=True)
    model = recurrent_model(**options)
    feeds = random_inputs(model, batch=3)
    feeds["lengths"] = np.array([0, 2, STEPS], np.int32)
    assert_outputs_match(onnxruntime_outputs(options, feeds), lowered_outputs(model, feeds))


def test_graph_without_recurrent_nodes_is_returned_as_is():
    node = helper.make_node("Relu", ["x"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    model = helper.make_model(graph)
    assert lower_recurrent(model) is model


# Compiled with TVM: a chosen set covering each op, direction, layout and optional input.
COMPILED = {
    "lstm-bidirectional-h0-lens-peepholes": dict(op="LSTM", direction="bidirectional", initial_states=True, sequence_lens=True, peepholes=True),
    "lstm-reverse-layout1-clip-input-forget": dict(op="LSTM", direction="reverse", layout=1, initial_states=True, clip=0.5,
                                                   input_forget=1, outputs=("", "Y_h", "Y_c")),
    "gru-bidirectional-layout1-lens-linear-before-reset": dict(op="GRU", direction="bidirectional", layout=1, sequence_lens=True,
                                                               linear_before_reset=1),
    "gru-forward-h0": dict(op="GRU", initial_states=True),
    "rnn-reverse-h0-lens-relu": dict(op="RNN", direction="reverse", initial_states=True, sequence_lens=True, activations=["Relu"]),
}


@pytest.fixture(scope="module")
def cpu_target():
    return resolve_target("cpu")


@pytest.mark.parametrize("options", COMPILED.values(), ids=COMPILED.keys())
def test_tvm_matches_onnxruntime_at_any_batch(options, cpu_target):
    import tvm
    from tvm import relax

    model = recurrent_model(**options)
    machine = relax.VirtualMachine(build(import_onnx(model), cpu_target), tvm.cpu())
    input_names = [v.name for v in model.graph.input]
    for batch in BATCHES:
        feeds = random_inputs(model, batch, seed=batch)
        result = machine["main"](*(tvm.runtime.tensor(feeds[name]) for name in input_names))
        values = [result] if isinstance(result, tvm.runtime.Tensor) else list(result)
        got = {o.name: v.numpy() for o, v in zip(model.graph.output, values)}
        assert_outputs_match(onnxruntime_outputs(options, feeds), got)


# The whole-sequence kernel on CPUs: every activation, hidden sizes that fill whole 8-lane vectors
# and sizes that do not (5, 13), a GRU whose reset gate comes before its candidate's product, and
# activations that differ between directions. One graph holds them all, so TVM compiles once.
KERNEL = {
    name: OPTIONS[name] for name in ("gru-hardsigmoid-softsign", "gru-lowercase-softplus", "lstm-mixed-activations")
} | {
    "rnn-affine-scaledtanh": dict(op="RNN", direction="bidirectional", activations=["Affine", "ScaledTanh"],
                                  activation_alpha=[0.7, 0.5], activation_beta=[0.2, 1.3]),
    "rnn-thresholdedrelu-elu-hidden13": dict(op="RNN", direction="bidirectional", activations=["ThresholdedRelu", "Elu"],
                                             activation_alpha=[0.1, 0.8], hidden=13, seed=1),
    "gru-reset-first-bidirectional-lens-hidden16": dict(op="GRU", direction="bidirectional", sequence_lens=True, hidden=16, seed=2),
    "gru-reset-first-h0-layout1-hidden13": dict(op="GRU", initial_states=True, layout=1, hidden=13, seed=3),
    "lstm-hidden24-h0-only-sequence": dict(op="LSTM", initial_states=True, hidden=24, outputs=("Y",), seed=4),
    "lstm-clip-lens-hidden48": dict(op="LSTM", direction="reverse", sequence_lens=True, clip=0.3, hidden=48, seed=5),
}


def side_by_side(models: dict[str, onnx.ModelProto]) -> onnx.ModelProto:
    """One graph running each model on its own inputs, every name prefixed with the model's key."""
    prefixed = {key: onnx.compose.add_prefix(model, f"{key}/") for key, model in models.items()}
    graph = helper.make_graph(
        [n for m in prefixed.values() for n in m.graph.node], "side_by_side",
        [v for m in prefixed.values() for v in m.graph.input], [v for m in prefixed.values() for v in m.graph.output],
        [t for m in prefixed.values() for t in m.graph.initializer],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_whole_sequence_kernels_match_onnxruntime(cpu_target):
    model = side_by_side({key: recurrent_model(**options) for key, options in KERNEL.items()})
    lowered = lower_recurrent(model, kernels=True)
    assert [n.op_type for n in lowered.graph.node].count("RecurrentSequence") == len(KERNEL)
    assert "MatMul" not in {n.op_type for n in lowered.graph.node}  # nothing unrolled: the kernels do every product
    assert_kernels_match_onnxruntime(model, KERNEL, cpu_target)


def test_whole_sequence_kernels_on_every_core_match_onnxruntime(cpu_target, monkeypatch):
    """Past PARALLEL_WORK the kernel spreads (direction, sequence pair)s over the cores: the zoo's
    models stay under it, so it is lowered to zero here."""
    from toolkit.optimize import rnn_kernel

    monkeypatch.setattr(rnn_kernel, "PARALLEL_WORK", 0)
    cases = {key: KERNEL[key] for key in ("gru-reset-first-bidirectional-lens-hidden16", "lstm-clip-lens-hidden48")}
    assert_kernels_match_onnxruntime(side_by_side({key: recurrent_model(**options) for key, options in cases.items()}),
                                     cases, cpu_target)


def assert_kernels_match_onnxruntime(model, cases, cpu_target):
    import tvm
    from tvm import relax

    machine = relax.VirtualMachine(build(import_onnx(model), cpu_target), tvm.cpu())
    for batch in BATCHES:
        feeds = {}
        for key, options in cases.items():
            single = recurrent_model(**options)
            feeds |= {f"{key}/{name}": value for name, value in random_inputs(single, batch, seed=batch).items()}
        results = machine["main"](*(tvm.runtime.tensor(feeds[v.name]) for v in model.graph.input))
        got = {o.name: v.numpy() for o, v in zip(model.graph.output, results)}
        for key, options in cases.items():
            single_feeds = {name.removeprefix(f"{key}/"): value for name, value in feeds.items() if name.startswith(f"{key}/")}
            expected = onnxruntime_outputs(options, single_feeds)
            assert_outputs_match(expected, {name: got[f"{key}/{name}"] for name in expected}, atol=2e-5)


@pytest.mark.parametrize("op", ["LSTM", "GRU"])
def test_whole_sequence_kernel_ends_empty_sequences_in_zero_states(op, cpu_target):
    import tvm
    from tvm import relax

    options = dict(op=op, direction="bidirectional", initial_states=True, sequence_lens=True)
    model = recurrent_model(**options)
    machine = relax.VirtualMachine(build(import_onnx(model), cpu_target), tvm.cpu())
    feeds = random_inputs(model, batch=3)
    feeds["lengths"] = np.array([0, 2, STEPS], np.int32)
    results = machine["main"](*(tvm.runtime.tensor(feeds[v.name]) for v in model.graph.input))
    got = {o.name: v.numpy() for o, v in zip(model.graph.output, results)}
    assert_outputs_match(onnxruntime_outputs(options, feeds), got)


def test_gpu_targets_import_the_unrolled_graph(cpu_target):
    """The kernel is written for CPUs; a GPU target gets the standard ops, which dlight schedules."""
    import tvm

    model = recurrent_model("LSTM", direction="bidirectional")

    def kernels(target):
        module = import_onnx(model, target)
        return [gv.name_hint for gv, f in module.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]

    assert kernels(cpu_target) == ["recurrent_lstm"]
    assert kernels({"kind": "cuda", "arch": "sm_90"}) == []
    assert "MatMul" in {n.op_type for n in lower_recurrent(model).graph.node}


def test_dltk_compile_verifies_a_model_whose_lengths_are_an_input(tmp_path):
    """Random verification inputs keep sequence_lens within the sequence: ONNX Runtime rejects longer ones."""
    options = dict(op="LSTM", direction="bidirectional", initial_states=True, sequence_lens=True)
    model = recurrent_model(**options)
    onnx.save(model, tmp_path / "lstm.onnx")
    report = compile_model(tmp_path / "lstm.onnx", tmp_path / "lstm.tvm", choose_engine=False)
    assert [c.passed for c in report.verification] == [True, True, True]  # each symbolic dim at 1, 3 and 8
    session = runtime.load(tmp_path / "lstm.tvm")
    feeds = random_inputs(model, batch=8)
    assert_outputs_match(onnxruntime_outputs(options, feeds), session.run(feeds))


# Errors a user can fix name the node and say what to do.

def test_unknown_activation_names_the_node():
    model = recurrent_model("LSTM", activations=["Sigmoid", "Gelu", "Tanh"])
    with pytest.raises(DltkError, match="LSTM node 'cell' uses activation 'Gelu'.*use one of"):
        lower_recurrent(model)


def test_wrong_number_of_activations_names_the_node():
    model = recurrent_model("GRU", direction="bidirectional", activations=["Sigmoid", "Tanh"])
    with pytest.raises(DltkError, match="GRU node 'cell' has 2 activations, expected 4"):
        lower_recurrent(model)


def test_symbolic_sequence_length_asks_for_a_fixed_one(tmp_path):
    model = recurrent_model("RNN", steps="time")
    with pytest.raises(DltkError, match="RNN node 'cell': its sequence length is not a fixed number.*export the model with a fixed sequence length"):
        lower_recurrent(model)


def test_cli_compile_rejects_an_unsupported_activation_with_one_line(tmp_path):
    from click.testing import CliRunner

    onnx.save(recurrent_model("RNN", activations=["Swish"]), tmp_path / "rnn.onnx")
    result = CliRunner().invoke(cli, ["compile", str(tmp_path / "rnn.onnx"), "-o", str(tmp_path / "rnn.tvm")])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len([line for line in lines if line.startswith("error")]) == 1 and "Traceback" not in result.output
    assert lines[-1].startswith("error: RNN node 'cell' uses activation 'Swish'")
    assert not (tmp_path / "rnn.tvm").exists()


# PyTorch exports: nn.LSTM / nn.GRU / nn.RNN, two layers, bidirectional, batch_first.

class Recurrent(torch.nn.Module):
    def __init__(self, cell):
        super().__init__()
        self.cell = cell(FEATURES, HIDDEN, num_layers=2, bidirectional=True, batch_first=True)

    def forward(self, x):  # (B, T, F) -> the sequence (B, T, 2H) and the final hidden states (4, B, H)
        sequence, final = self.cell(x)
        return sequence, final[0] if isinstance(final, tuple) else final


def export_legacy(module, x, path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, (x,), str(path), input_names=["x"], output_names=["sequence", "final"],
            dynamic_axes={"x": {0: "batch"}}, dynamo=False,
        )


# The legacy exporter turns each layer into one ONNX LSTM / GRU / RNN node. The dynamo exporter
# (what `dltk export` uses) emits LSTM and GRU nodes too but unrolls nn.RNN into MatMul/Add/Tanh
# per step; tests/models/test_rnn.py takes the zoo's LSTM, GRU and RNN through that path.
@pytest.mark.parametrize("cell", [torch.nn.LSTM, torch.nn.GRU, torch.nn.RNN], ids=["lstm", "gru", "rnn"])
def test_pytorch_export_compiles_and_matches_pytorch(cell, tmp_path):
    torch.manual_seed(0)
    module = Recurrent(cell).eval()
    export_legacy(module, torch.randn(2, STEPS, FEATURES), tmp_path / "m.onnx")
    ops = [n.op_type for n in onnx.load(tmp_path / "m.onnx").graph.node]
    assert ops.count(cell.__name__.upper()) == 2  # one bidirectional node per layer

    compile_model(tmp_path / "m.onnx", tmp_path / "m.tvm", choose_engine=False)  # verified against ONNX Runtime at batch 1 and 3
    compiled = runtime.load(tmp_path / "m.tvm")
    for batch in BATCHES:
        x = torch.randn(batch, STEPS, FEATURES)
        with torch.no_grad():
            expected = dict(zip(("sequence", "final"), (t.numpy() for t in module(x))))
        assert_outputs_match(expected, compiled.run({"x": x.numpy()}))
