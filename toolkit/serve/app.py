"""The v2 routes (Open Inference Protocol, REST) as a Starlette application.

The application only sees models through `ServedModel`: the local server hands it
`LocalModel`s (a runtime session behind a dynamic batcher), the Ray Serve deployment
in deploy/ hands it models that live in Ray replicas. Routes, validation, errors and
metrics are the same for both.
"""

from __future__ import annotations

import contextlib
import time
from typing import Protocol

import numpy as np
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

import toolkit
from toolkit.errors import InputError, first_line
from toolkit.runtime.spec import TensorSpec, validate_feeds
from toolkit.serve import protocol
from toolkit.serve.metrics import CONTENT_TYPE, Metrics

DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024


class ServedModel(Protocol):
    name: str
    platform: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]

    async def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    async def close(self) -> None: ...


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def create_app(models: dict[str, ServedModel], metrics: Metrics | None = None, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> Starlette:
    metrics = metrics or Metrics()

    def find(request: Request) -> ServedModel:
        name = request.path_params["name"]
        version = request.path_params.get("version", protocol.MODEL_VERSION)
        if name not in models:
            raise ApiError(404, f"unknown model '{name}' (this server has {sorted(models)})")
        if version != protocol.MODEL_VERSION:
            raise ApiError(404, f"model '{name}' has no version '{version}' (it has version {protocol.MODEL_VERSION})")
        return models[name]

    async def server_metadata(request):
        return JSONResponse({"name": "dltk", "version": toolkit.__version__, "extensions": ["model_repository"]})

    async def live(request):
        return JSONResponse({"live": True})

    async def ready(request):
        return JSONResponse({"ready": True})  # models are loaded before the server listens

    async def repository_index(request):
        return JSONResponse([{"name": n, "version": protocol.MODEL_VERSION, "state": "READY"} for n in models])

    async def model_metadata(request):
        try:
            model = find(request)
        except ApiError as e:
            return error(e.status, str(e))
        return JSONResponse(protocol.model_metadata(model.name, model.platform, model.inputs, model.outputs))

    async def model_ready(request):
        try:
            model = find(request)
        except ApiError as e:
            return error(e.status, str(e))
        return JSONResponse({"name": model.name, "ready": True})

    async def infer(request):
        start = time.perf_counter()
        label = request.path_params["name"] if request.path_params["name"] in models else ""
        with metrics.in_flight.track_inprogress():
            try:
                answer = await answer_infer(request)
            except Exception as e:  # a bug: still a counted, typed answer, and no traceback for the client
                answer = error(500, f"internal error: {type(e).__name__}")
        metrics.answered(label, answer.status_code, time.perf_counter() - start)
        return answer

    async def answer_infer(request) -> Response:
        try:
            model = find(request)
            payload = protocol.parse_json(await read_body(request, max_body_bytes))
            feeds, wanted = protocol.decode_request(payload, model.inputs, model.outputs)
            feeds = validate_feeds(model.inputs, feeds)
        except ApiError as e:
            return error(e.status, str(e))
        except (protocol.ProtocolError, InputError) as e:
            return error(400, str(e))
        try:
            outputs = await model.infer(feeds)
        except Exception as e:  # the model failed on inputs that passed every check: the server's fault, 500
            return error(500, f"model '{model.name}' failed: {first_line(e)}")
        try:
            return JSONResponse(protocol.encode_response(model.name, outputs, wanted, payload.get("id")))
        except ValueError:  # JSON has no NaN or infinity, and v2 JSON has no other way to carry them
            return error(500, f"model '{model.name}' produced NaN or infinity, which JSON cannot carry")

    async def prometheus(request):
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    async def http_error(request, exc: HTTPException):
        return error(exc.status_code, f"{exc.detail}: {request.method} {request.url.path}")

    async def server_error(request, exc: Exception):  # a bug: still one JSON line for the client
        return error(500, f"internal error: {type(exc).__name__}: {exc}")

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        for model in models.values():  # uvicorn has answered the requests in flight by now
            await model.close()

    routes = [
        Route("/v2", server_metadata),
        Route("/v2/health/live", live),
        Route("/v2/health/ready", ready),
        Route("/v2/repository/index", repository_index, methods=["POST"]),
        Route("/v2/models/{name}", model_metadata),
        Route("/v2/models/{name}/versions/{version}", model_metadata),
        Route("/v2/models/{name}/ready", model_ready),
        Route("/v2/models/{name}/versions/{version}/ready", model_ready),
        Route("/v2/models/{name}/infer", infer, methods=["POST"]),
        Route("/v2/models/{name}/versions/{version}/infer", infer, methods=["POST"]),
        Route("/metrics", prometheus),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error, Exception: server_error}, lifespan=lifespan)
    app.state.models, app.state.metrics = models, metrics
    return app


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to be over `limit` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"the request body has {int(declared)} bytes, over this server's limit of {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"the request body is over this server's limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
