"""Graph-level clean-up before TVM: constant folding, shape simplification, dead nodes (onnxslim).

Only the graph handed to TVM's importer is simplified; the artifact keeps the source model
(provenance, and ONNX Runtime applies its own graph optimizations). Compile verifies the
compiled code against ONNX Runtime on the source model, so a bad rewrite cannot slip through.
"""

from __future__ import annotations

import onnx

from toolkit.onnx_file import input_specs, output_specs


def simplify(model: onnx.ModelProto, log=lambda line: None) -> onnx.ModelProto:
    """The model after onnxslim, or the model itself when onnxslim fails or changes its interface."""
    import onnxslim

    try:
        slimmed = onnxslim.slim(onnx.ModelProto.FromString(model.SerializeToString()))
    except Exception as e:  # onnxslim gives up on some graphs; TVM can still try the original
        log(f"graph simplification skipped: onnxslim failed ({type(e).__name__}: {str(e).strip()[:80]})")
        return model
    if not isinstance(slimmed, onnx.ModelProto):
        return model
    if input_specs(slimmed) != input_specs(model) or output_specs(slimmed) != output_specs(model):
        log("graph simplification skipped: onnxslim changed the model's inputs or outputs")
        return model
    before, after = len(model.graph.node), len(slimmed.graph.node)
    log(f"simplified the graph with onnxslim: {before} -> {after} nodes")
    return slimmed
