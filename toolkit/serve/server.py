"""Running the v2 application: `serve()` until a signal, or `BackgroundServer` in a thread."""

from __future__ import annotations

import signal
import socket
import threading

from toolkit.errors import DltkError

try:
    import prometheus_client  # noqa: F401
    import starlette  # noqa: F401
    import uvicorn
except ImportError as e:  # the server's libraries are an extra, not part of the runtime
    raise DltkError(f"the server needs {e.name}, which is not installed", "pip install 'dltk[serve]'") from None

from toolkit.serve.app import DEFAULT_MAX_BODY_BYTES, create_app
from toolkit.serve.batching import BatchPolicy
from toolkit.serve.metrics import Metrics
from toolkit.serve.models import load_models


def build_app(model_args: list[str], policy: BatchPolicy = BatchPolicy(), max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
              device: str = "cpu", backend: str | None = None, threads: int = 0):
    """Load `PATH` / `NAME=PATH` models and return the v2 application serving them."""
    metrics = Metrics()
    models = load_models(model_args, policy, metrics, device=device, backend=backend, threads=threads)
    return create_app(models, metrics, max_body_bytes)


def listen(host: str, port: int) -> socket.socket:
    """A listening socket; port 0 takes a free one."""
    try:
        sock = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET, backlog=2048)
    except OSError as e:
        raise DltkError(f"cannot listen on {host}:{port}: {e.strerror}", "choose another --port or --host") from None
    return sock


HEADER_TIMEOUT_S = 10.0  # a connection gets this long to send a request's headers, then it is closed
IDLE_TIMEOUT_S = 5  # a kept-alive connection with no new request is closed after this long
MAX_CONNECTIONS = 1000  # beyond this many open connections (or requests in flight) a request gets 503
MAX_HEADER_BYTES = 64 * 1024  # a request whose headers are larger gets 400


def _uvicorn(app, header_timeout: float = HEADER_TIMEOUT_S, max_connections: int = MAX_CONNECTIONS) -> uvicorn.Server:
    # Uvicorn stops taking connections on SIGINT/SIGTERM and finishes the requests in flight
    # (up to 30 s) before the application's shutdown closes the batchers.
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=30, lifespan="on",
                            http=_with_header_timeout(header_timeout), timeout_keep_alive=IDLE_TIMEOUT_S,
                            limit_concurrency=max_connections, h11_max_incomplete_event_size=MAX_HEADER_BYTES)
    return uvicorn.Server(config)


def _with_header_timeout(seconds: float):
    """Uvicorn's h11 protocol with a deadline for each request's headers, which uvicorn lacks: without
    it a client that connects and never finishes its headers holds the connection for ever."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderDeadline(H11Protocol):
        _deadline = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm()  # the next request's headers get the same time

        def connection_lost(self, exc) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
            super().connection_lost(exc)

        def _arm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
            self._deadline = self.loop.call_later(seconds, self._overdue)

        def _overdue(self) -> None:
            waiting = self.cycle is None or self.cycle.response_complete  # no request read since the deadline was set
            if waiting and not self.transport.is_closing():
                self.transport.close()

    return HeaderDeadline


def serve(model_args: list[str], host: str = "127.0.0.1", port: int = 8000, policy: BatchPolicy = BatchPolicy(),
          max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, device: str = "cpu", backend: str | None = None,
          threads: int = 0, log=print) -> None:
    """Serve until SIGINT or SIGTERM, then finish the requests in flight and return."""
    app = build_app(model_args, policy, max_body_bytes, device, backend, threads)
    sock = listen(host, port)
    bound_host, bound_port = sock.getsockname()[:2]
    for model in app.state.models.values():
        how = f"batches of up to {policy.max_batch_size} rows, {policy.max_delay_ms:g} ms delay" if model.batching else "unbatched"
        log(f"model {model.name}: {model.session.backend} on {model.session.device}, {how}")
    log(f"serving on http://{bound_host}:{bound_port} (v2 routes under /v2, metrics at /metrics)")
    # Uvicorn handles SIGINT/SIGTERM itself, then restores the handlers it found and raises the
    # signal again. Handlers that ignore it let a graceful stop end as a normal return (exit 0).
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: None)
    _uvicorn(app).run(sockets=[sock])


class BackgroundServer:
    """Run an application on a loopback port in a thread: for tests, benchmarks and embedding.

        with BackgroundServer(app) as server:
            httpx.get(server.url + "/v2/health/ready")
    """

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0, header_timeout: float = HEADER_TIMEOUT_S,
                 max_connections: int = MAX_CONNECTIONS):
        self.app, self.host, self.port = app, host, port
        self.limits = {"header_timeout": header_timeout, "max_connections": max_connections}
        self.url = ""

    def __enter__(self) -> BackgroundServer:
        sock = listen(self.host, self.port)
        self.port = sock.getsockname()[1]
        self.url = f"http://{self.host}:{self.port}"
        self._server = _uvicorn(self.app, **self.limits)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the server stopped while starting")
            self._thread.join(0.01)
        return self

    def __exit__(self, *exc) -> None:
        self._server.should_exit = True
        self._thread.join()
