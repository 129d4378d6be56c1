import json

import onnx
from click.testing import CliRunner


def test_backends_agree_on_a_zoo_model(lenet_checkpoint):
    from toolkit.compare import compare_backends

    comparisons = compare_backends(str(lenet_checkpoint), ["torch", "ort", "tvm"], batch=4)
    assert [(c.reference, c.candidate) for c in comparisons] == [("torch", "ort"), ("torch", "tvm")]
    assert all(c.passed and c.outputs[0].size == 40 for c in comparisons)


def _plant(monkeypatch, node_name: str, new_op: str):
    """Make TVM compile a copy of the model in which one node does something else."""
    from toolkit import compile as compiler

    original = compiler.import_onnx

    def import_altered(model, target=None):
        altered = onnx.ModelProto.FromString(model.SerializeToString())
        (node,) = [n for n in altered.graph.node if n.name == node_name]
        node.op_type = new_op
        return original(altered, target)

    monkeypatch.setattr(compiler, "import_onnx", import_altered)


def test_per_layer_names_the_node_planted_to_diverge(lenet_onnx, monkeypatch):
    from toolkit.cli import cli

    model = onnx.load(str(lenet_onnx))
    relus = [n.name for n in model.graph.node if n.op_type == "Relu"]
    planted = relus[1]  # after the second convolution: everything before it must still match
    _plant(monkeypatch, planted, "Abs")
    result = CliRunner().invoke(cli, ["compare", str(lenet_onnx), "--per-layer", "--batch", "2", "--json"])
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert report["first_divergence"] == planted
    layers = report["layers"]
    first = next(i for i, layer in enumerate(layers) if not layer["passed"])
    assert layers[first]["node"] == planted and all(layer["passed"] for layer in layers[:first])
    assert f"first divergence at node {planted} (Relu" in result.stderr


def test_per_layer_finds_no_divergence_in_a_faithful_compile(tmp_path):
    from toolkit.compare import compare_layers

    result = compare_layers("mlp", ["ort", "tvm"], batch=3)
    assert result.passed and result.first_divergence is None
    assert [layer.op_type for layer in result.layers] == ["Gemm", "Relu", "Gemm", "Relu", "Gemm"]


def test_per_layer_compares_ort_and_tvm_only():
    import pytest

    from toolkit.compare import compare_layers
    from toolkit.errors import DltkError

    with pytest.raises(DltkError, match="--per-layer compares ort and tvm"):
        compare_layers("mlp", ["torch", "ort"])


def test_compare_cli_prints_errors_and_histogram_and_exits_1_over_tolerance(lenet_artifact):
    from toolkit.cli import cli

    ok = CliRunner().invoke(cli, ["compare", str(lenet_artifact), "--backend", "ort,tvm"])
    assert ok.exit_code == 0, ok.output
    assert "tvm vs ort: match" in ok.stdout and "logits: max abs" in ok.stdout and "|err|" in ok.stdout
    strict = CliRunner().invoke(cli, ["compare", str(lenet_artifact), "--atol", "0", "--rtol", "0"])
    assert strict.exit_code == 1
    lines = strict.stderr.strip().splitlines()
    assert lines[-1].startswith("error: tvm vs ort: DIFFER") and sum(line.startswith("error") for line in lines) == 1
