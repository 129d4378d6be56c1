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

from toolkit.errors import DltkError, first_line
from toolkit.rpc import RpcTarget
from toolkit.runtime.artifact import LIBRARY, Artifact
from toolkit.runtime.spec import validate_feeds
from toolkit.runtime.tvm import TvmSession
from toolkit.timing import Block, Budget


class RemoteTvmSession(TvmSession):
    """A TvmSession whose device is across the network, and whose calls are timed on that device."""

    def __init__(self, artifact: Artifact, rpc: RpcTarget, session_timeout_s: int = 600):
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
            raise DltkError(f"cannot get {where}: {first_line(e)}", fix) from e
        self._remote.upload(str(artifact.file(LIBRARY)))
        dev = self._remote.cpu(0) if artifact.device == "cpu" else self._remote.cuda(0)
        variants = artifact.manifest.get("variants", {})
        self.artifact_path = artifact.path
        # device: where the code runs (the run's env["remote"] says which machine); its memory is not ours
        self._attach(self._remote.load_module(LIBRARY), dev, artifact.inputs, artifact.outputs, artifact.device,
                     variants, host_memory=False, variant_dims=artifact.manifest.get("variant_dims"))

    # The remote device is reached through TVM's RPC client (full TVM), not the local runtime library.
    def virtual_machine(self):
        from tvm import relax

        return relax.VirtualMachine(self._library, self._dev)

    def _device_tensor(self, name: str, array: np.ndarray):
        import tvm

        return tvm.runtime.tensor(np.ascontiguousarray(array), self._dev)

    @staticmethod
    def _device_numpy(value) -> np.ndarray:
        return value.numpy()

    def timed_block(self, feeds, budget: Budget) -> Block:
        """The budget's warm-up and timed calls, each call timed on the remote device itself.

        Calls go in chunks of the budget's minimum count, until the calls' device time reaches
        min_seconds (or the wall clock, round trips included, max_seconds).
        """
        feeds = validate_feeds(self.inputs, feeds)
        args = [self._device_tensor(s.name, feeds[s.name]) for s in self.inputs]
        vm, entry = self.virtual_machine(), self.entry_for(feeds)
        if budget.warmup:
            vm.time_evaluator(entry, self._dev, number=budget.warmup, repeat=1)(*args)
        timer = vm.time_evaluator(entry, self._dev, number=1, repeat=budget.min_iterations)
        latencies: list[float] = []
        start = time.perf_counter()
        while not latencies or (sum(latencies) < budget.min_seconds * 1e3
                                and time.perf_counter() - start < budget.max_seconds):
            latencies += [float(seconds) * 1e3 for seconds in timer(*args).results]
        return Block(latencies, sum(latencies) / 1e3)
