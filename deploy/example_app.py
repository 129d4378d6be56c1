"""Embedding the runtime in an application: load once, call from anywhere, no server needed.

    python deploy/example_app.py build/demo/lenet.tvm      # or an ONNX file

The same few lines work for an ONNX file (ONNX Runtime) and a compiled artifact (TVM).
"""

import sys

import numpy as np

from toolkit import runtime


def main(path: str) -> None:
    session = runtime.load(path)  # checks the artifact's sha256s; an artifact runs the engine its compile measured fastest, .onnx ONNX Runtime
    (spec,) = session.inputs  # TensorSpec(name="input", shape=("batch", 1, 8, 8), dtype="float32")
    images = np.random.default_rng(0).random((4, *spec.shape[1:]), dtype=np.float32)
    logits = session.run({spec.name: images})[session.outputs[0].name]
    print(f"{session.backend} on {session.device}: classes {logits.argmax(axis=1).tolist()}")
    try:
        session.run({spec.name: images.astype(np.float64)})  # wrong dtype: a ValueError naming the input
    except ValueError as e:
        print(f"refused as expected: {e}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "build/demo/lenet.tvm")
