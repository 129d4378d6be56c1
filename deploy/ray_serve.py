"""Scale out on Ray Serve: the same runtime and the same v2 routes, with Ray's batching and replicas.

One command starts it (a local Ray instance, or the cluster that RAY_ADDRESS names):

    python -m deploy.ray_serve build/demo/lenet.tvm mlp=build/mlp.onnx --replicas 2 --port 8000

or, with Ray's own CLI and a config file's worth of arguments:

    serve run deploy.ray_serve:app_builder models=build/demo/lenet.tvm replicas=2

Two deployments: one `ModelReplica` per model (a `toolkit.runtime` session; requests
are batched with `@serve.batch`, counted in rows) and `V2Ingress`, which serves the
routes of `toolkit.serve.app` (validation, errors, /metrics) and hands each checked
request to the model's replicas through a deployment handle.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import threading

import numpy as np
from ray import serve

from toolkit.errors import first_line
from toolkit.runtime.batch import shared_batch_dim
from toolkit.runtime.spec import TensorSpec
from toolkit.serve.app import create_app
from toolkit.serve.batching import Feeds, concat, split
from toolkit.serve.models import PLATFORMS, parse_model_arg


def _rows(requests: list[Feeds]) -> int:
    """Batch size in rows, so that max_batch_size means what it means for `dltk serve` and Triton."""
    return sum(int(next(iter(feeds.values())).shape[0]) for feeds in requests)


@serve.deployment(ray_actor_options={"num_cpus": 1})
class ModelReplica:
    """One model on one replica: a runtime session behind Ray's dynamic batching."""

    def __init__(self, path: str, backend: str | None = None, device: str = "cpu", max_batch_size: int = 32,
                 max_delay_ms: float = 2.0):
        from toolkit import runtime

        self.session = runtime.load(path, device=device, backend=backend)
        self.batchable = shared_batch_dim(self.session.inputs, self.session.outputs) is not None
        self.infer.set_max_batch_size(max_batch_size if self.batchable else 1)
        self.infer.set_batch_wait_timeout_s(max_delay_ms / 1e3)
        self.batch_rows: list[int] = []  # what each batch held, for `stats`

    def describe(self) -> dict:
        return {"platform": PLATFORMS.get(self.session.backend, self.session.backend),
                "inputs": [s.to_json() for s in self.session.inputs], "outputs": [s.to_json() for s in self.session.outputs]}

    def stats(self) -> dict:
        return {"batch_rows": list(self.batch_rows)}

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.002, batch_size_fn=_rows)
    async def infer(self, requests: list[Feeds]) -> list[tuple[Feeds | None, str | None]]:
        """(outputs, None) per request, or (None, the error) for a request the model failed on."""
        self.batch_rows.append(_rows(requests))
        groups: dict[tuple, list[int]] = {}  # only requests alike past the batch axis stack
        for i, feeds in enumerate(requests):
            groups.setdefault(tuple((n, v.dtype.str, v.shape[1:]) for n, v in sorted(feeds.items())), []).append(i)
        answers: list = [None] * len(requests)
        for members in groups.values():
            try:
                merged = await asyncio.to_thread(self.session.run, concat([requests[i] for i in members]))
                for i, outputs in zip(members, split(merged, [_rows([requests[i]]) for i in members])):
                    answers[i] = (outputs, None)
            except Exception:  # run each alone, so that only the request at fault gets the error
                for i in members:
                    answers[i] = await self._run_alone(requests[i])
        return answers

    async def _run_alone(self, feeds: Feeds):
        try:
            return await asyncio.to_thread(self.session.run, feeds), None
        except Exception as e:
            return None, first_line(e)


class RemoteModel:
    """A model living in Ray replicas, as `toolkit.serve.app` sees it."""

    def __init__(self, name: str, description: dict, handle):
        self.name, self.platform, self._handle = name, description["platform"], handle
        self.inputs = [TensorSpec.from_json(t) for t in description["inputs"]]
        self.outputs = [TensorSpec.from_json(t) for t in description["outputs"]]

    async def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs, failure = await self._handle.infer.remote(feeds)
        if failure is not None:
            raise RuntimeError(failure)
        return outputs

    async def close(self) -> None:
        pass


@serve.deployment(ray_actor_options={"num_cpus": 0.5})
@serve.ingress()
class V2Ingress:
    """The v2 routes; the application is built on each replica once the model handles are known."""

    async def __init__(self, **models):
        self.models = {}
        for name, handle in models.items():
            self.models[name] = RemoteModel(name, await handle.describe.remote(), handle)

    def __serve_build_asgi_app__(self):
        return create_app(self.models)


def build(model_args: list[str], replicas: int = 1, max_batch_size: int = 32, max_delay_ms: float = 2.0,
          backend: str | None = None, device: str = "cpu", cpus_per_replica: float = 1.0, ingress_replicas: int = 1):
    """The Ray Serve application: a `ModelReplica` deployment per model behind one `V2Ingress`."""
    replicas_of = {}
    for arg in model_args:
        name, path = parse_model_arg(arg)
        if name in replicas_of:
            raise ValueError(f"two models are named '{name}'; rename one with NAME={path}")
        replicas_of[name] = ModelReplica.options(
            name=name, num_replicas=replicas, ray_actor_options={"num_cpus": cpus_per_replica},
        ).bind(str(path.resolve()), backend, device, max_batch_size, max_delay_ms)
    return V2Ingress.options(num_replicas=ingress_replicas).bind(**replicas_of)


def app_builder(args: dict):
    """For `serve run deploy.ray_serve:app_builder models=A.onnx,B.tvm replicas=2 max_batch_size=32`."""
    return build(
        [m for m in str(args["models"]).split(",") if m],
        replicas=int(args.get("replicas", 1)),
        max_batch_size=int(args.get("max_batch_size", 32)),
        max_delay_ms=float(args.get("max_delay_ms", 2.0)),
        backend=args.get("backend"),
        device=args.get("device", "cpu"),
        cpus_per_replica=float(args.get("cpus_per_replica", 1.0)),
    )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m deploy.ray_serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", metavar="[NAME=]MODEL.onnx|ARTIFACT")
    parser.add_argument("--replicas", type=int, default=1, help="replicas per model")
    parser.add_argument("--max-batch-size", type=int, default=32, help="rows per batch")
    parser.add_argument("--max-delay-ms", type=float, default=2.0)
    parser.add_argument("--backend", choices=["ort", "tvm"])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--cpus-per-replica", type=float, default=1.0)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)

    import ray

    ray.init(include_dashboard=False)  # joins the cluster in RAY_ADDRESS when set
    serve.start(http_options={"host": args.host, "port": args.port})
    app = build(args.models, args.replicas, args.max_batch_size, args.max_delay_ms, args.backend, args.device,
                args.cpus_per_replica)
    serve.run(app, name="dltk", route_prefix="/")
    print(f"serving on http://{args.host}:{args.port} (v2 routes under /v2); Ctrl-C stops", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    serve.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    main()
