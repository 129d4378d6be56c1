"""Key/value-cache generation: the text model's one-token decode step, exported beside the model.

`dltk export gpt -o gpt.onnx` also writes `gpt.decode.onnx`, the step of `models.gpt.DecodeStep`
(inputs token, position, keys, values; outputs logits, keys, values; the batch dynamic).
`dltk compile gpt.decode.onnx -o gpt.decode.tvm` compiles it like any model. `dltk generate`
looks for the decode step next to what it is given (gpt.onnx -> gpt.decode.onnx, gpt.tvm ->
gpt.decode.tvm) and, when it is there, runs one step per token while the text fits the context.

The cache holds the context's positions, each at its absolute position embedding. Once the
text outgrows the context, the window slides and every position would change: from then on
each token needs the full graph over the whole window, as without a cache.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from toolkit import runtime
from toolkit.errors import CheckFailed, DltkError
from toolkit.parity import compare_outputs

SUFFIX = ".decode"
INPUTS = ("token", "position", "keys", "values")
OUTPUTS = ("logits", "next_keys", "next_values")
KEYS_BATCH_AXIS = 1  # keys and values: (layers, batch, heads, context, head_dim)


def decode_path(path) -> Path:
    """The decode step's file beside a model: gpt.onnx -> gpt.decode.onnx, gpt.tvm -> gpt.decode.tvm."""
    path = Path(path)
    return path.with_name(f"{path.stem}{SUFFIX}{path.suffix}")


def export_decode_step(loaded, output, opset: int, atol: float, rtol: float, write) -> Path | None:
    """Export the decode step of `loaded` (a toolkit.train.LoadedModel) beside `output`, checked
    step by step against PyTorch on ONNX Runtime; None when the model has no decode step.

    write(path, model_bytes) writes the file (the export's atomic writer).
    """
    import torch

    from toolkit.runtime.ort import OrtSession  # onnxruntime, loaded when a step is exported

    if loaded.spec.decode_step is None:
        return None
    step = loaded.spec.decode_step(loaded.module).eval()
    batch = 2
    sample = _sample(step, batch)
    batch_dim = torch.export.Dim("batch", min=1, max=1 << 16)
    dynamic_shapes = ({0: batch_dim}, None, {KEYS_BATCH_AXIS: batch_dim}, {KEYS_BATCH_AXIS: batch_dim})
    try:
        program = torch.onnx.export(step, sample, input_names=list(INPUTS), output_names=list(OUTPUTS),
                                    opset_version=opset, dynamic_shapes=dynamic_shapes, dynamo=True, verbose=False)
    except Exception as e:
        raise DltkError(f"torch.onnx.export failed for the decode step: {str(e).strip().splitlines()[0]}",
                        "rerun with -v for the exporter's log") from e
    proto = program.model_proto
    proto.metadata_props.add(key="dltk.model", value=f"{loaded.spec.name}{SUFFIX}")
    model_bytes = proto.SerializeToString()
    session = OrtSession(model_bytes)
    with torch.no_grad():  # a few steps, each fed the cache the previous one returned
        keys, values = sample[2], sample[3]
        for position in range(3):
            args = (sample[0], torch.tensor([position]), keys, values)
            expected = {n: t.numpy() for n, t in zip(OUTPUTS, step(*args))}
            parity = compare_outputs(expected, session.run({n: a.numpy() for n, a in zip(INPUTS, args)}),
                                     "torch", "onnxruntime", atol, rtol)
            if not parity.passed:
                raise CheckFailed(f"decode step: {parity.summary()}; not written")
            keys, values = torch.from_numpy(expected["next_keys"]), torch.from_numpy(expected["next_values"])
    return write(decode_path(output), model_bytes)


def _sample(step, batch: int):
    import torch

    generator = torch.Generator().manual_seed(0)
    shape = step.cache_shape(batch)
    token = torch.randint(0, step.gpt.token.num_embeddings, (batch, 1), generator=generator)
    return token, torch.tensor([0]), torch.randn(shape, generator=generator), torch.randn(shape, generator=generator)


class CachedDecoder:
    """Steps the decode graph over a growing text, keeping the cache between calls."""

    def __init__(self, session, context: int):
        self.session, self.context = session, context
        keys = next(s for s in session.inputs if s.name == "keys")
        self._cache_dims = keys.shape  # (layers, "batch", heads, context, head_dim)
        self.reset()

    def reset(self) -> None:
        self._done = 0  # positions in the cache
        self._keys = self._values = None

    def next_logits(self, tokens: np.ndarray) -> np.ndarray:
        """Logits (count, vocab) for the token after `tokens` (count, length <= context)."""
        count, length = tokens.shape
        if length > self.context:
            raise DltkError(f"the decode step holds {self.context} positions, not {length}")
        if self._keys is None:
            shape = tuple(count if i == KEYS_BATCH_AXIS else d for i, d in enumerate(self._cache_dims))
            self._keys = np.zeros(shape, np.float32)
            self._values = np.zeros(shape, np.float32)
        logits = None
        while self._done < length:  # the prompt takes one step per token; each new token one step
            out = self.session.run({"token": tokens[:, self._done : self._done + 1], "position": np.array([self._done]),
                                    "keys": self._keys, "values": self._values})
            logits, self._keys, self._values = out["logits"], out["next_keys"], out["next_values"]
            self._done += 1
        if logits is None:
            raise DltkError("the decode step was asked for a position it has already passed")
        return logits


def open_decoder(path, backend: str | None, device: str, context: int) -> CachedDecoder | None:
    """The decode step beside `path` on the same kind of runtime, or None when there is none."""

    companion = decode_path(path)
    if not companion.exists():
        return None
    return CachedDecoder(runtime.load(companion, device=device, backend=backend), context)
