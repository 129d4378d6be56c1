"""A compiled artifact run on a remote device through a TVM RPC tracker (`dltk bench --rpc-tracker`).

The artifact's model.so is uploaded to a device the tracker hands out for the key, loaded there
on the Relax VM, and timed on the device with the VM's time evaluator, so the latencies leave
out the network round trip. The artifact must be compiled for the remote device's target
(`dltk compile --target JSON`, with the device's LLVM triple and CPU, or `cuda`).
"""

from __future__ import annotations

import socket
import time

import numpy as np

from toolkit.errors import DltkError
from toolkit.rpc import RpcTarget
from toolkit.runtime.artifact import LIBRARY, Artifact
from toolkit.runtime.batch import batch_input
from toolkit.runtime.spec import validate_feeds
from toolkit.timing import Block, Budget


class RemoteTvmSession:
    backend = "tvm"

    def __init__(self, artifact: Artifact, rpc: RpcTarget, session_timeout_s: int = 600):
        import tvm
        from tvm import relax
        from tvm import rpc as tvm_rpc

        fix = "check that the tracker runs and a server registered with that key"
        where = f"device '{rpc.key}' from the RPC tracker at {rpc.host}:{rpc.port}"
        try:
            # TVM retries a refused connection for a minute and waits forever for an unknown key.
            socket.create_connection((rpc.host, rpc.port), timeout=5).close()
            tracker = tvm_rpc.connect_tracker(rpc.host, rpc.port)
            if rpc.key not in tracker.summary()["queue_info"]:
                raise DltkError(f"cannot get {where}: no server registered with that key", fix)
            self._remote = tracker.request(rpc.key, priority=1, session_timeout=session_timeout_s)
        except DltkError:
            raise
        except Exception as e:  # OSError for refused connections, TVM's own errors for the rest
            raise DltkError(f"cannot get {where}: {str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}",
                            fix) from e
        self._remote.upload(str(artifact.file(LIBRARY)))
        self._dev = self._remote.cpu(0) if artifact.device == "cpu" else self._remote.cuda(0)
        self._vm = relax.VirtualMachine(self._remote.load_module(LIBRARY), self._dev)
        self._tvm = tvm
        self.inputs, self.outputs = artifact.inputs, artifact.outputs
        self.device = artifact.device  # where: the run's env["remote"]
        self._names = [o.name for o in self.outputs]
        self._variants = {int(b): name for b, name in artifact.manifest.get("variants", {}).items()}
        self._batch_input = batch_input(self.inputs)

    def _entry(self, feeds) -> str:
        if self._variants and self._batch_input is not None:
            return self._variants.get(feeds[self._batch_input].shape[0], "main")
        return "main"

    def _args(self, feeds):
        return [self._tvm.runtime.tensor(np.ascontiguousarray(feeds[s.name]), self._dev) for s in self.inputs]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds = validate_feeds(self.inputs, feeds)
        result = self._vm[self._entry(feeds)](*self._args(feeds))
        values = [result] if isinstance(result, self._tvm.runtime.Tensor) else list(result)
        return {name: value.numpy() for name, value in zip(self._names, values)}

    def timed_block(self, feeds: dict[str, np.ndarray], budget: Budget) -> Block:
        """The budget's warm-up and timed calls, each call timed on the remote device itself.

        Calls go in chunks of the budget's minimum count, until the calls' device time reaches
        min_seconds (or the wall clock, round trips included, max_seconds).
        """
        feeds = validate_feeds(self.inputs, feeds)
        args, entry = self._args(feeds), self._entry(feeds)
        if budget.warmup:
            self._vm.time_evaluator(entry, self._dev, number=budget.warmup, repeat=1)(*args)
        timer = self._vm.time_evaluator(entry, self._dev, number=1, repeat=budget.min_iterations)
        latencies: list[float] = []
        start = time.perf_counter()
        while not latencies or (sum(latencies) < budget.min_seconds * 1e3
                                and time.perf_counter() - start < budget.max_seconds):
            latencies += [float(seconds) * 1e3 for seconds in timer(*args).results]
        return Block(latencies, sum(latencies) / 1e3)
