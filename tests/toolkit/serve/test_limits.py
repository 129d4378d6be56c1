"""Connections that never finish their headers, and too many connections: the server stays responsive."""

import socket
import time

import httpx

from toolkit.serve import BackgroundServer, build_app

PARTIAL_HEADERS = b"POST /v2/models/fixed/infer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: appl"


def _open_stalled(url_port: int, count: int) -> list[socket.socket]:
    sockets = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", url_port), timeout=5)
        s.sendall(PARTIAL_HEADERS)
        sockets.append(s)
    return sockets


def _closed_by_server(s: socket.socket, within: float) -> bool:
    s.settimeout(within)
    try:
        return s.recv(1024) == b""
    except (TimeoutError, socket.timeout):
        return False
    except ConnectionResetError:
        return True


def test_connections_that_never_finish_their_headers_are_closed(fixed_onnx):
    with BackgroundServer(build_app([str(fixed_onnx)]), header_timeout=1.0) as srv:
        stalled = _open_stalled(srv.port, 30)
        try:
            assert httpx.get(f"{srv.url}/v2/health/ready", timeout=5).status_code == 200  # still answering
            start = time.monotonic()
            assert all(_closed_by_server(s, within=5) for s in stalled)
            assert time.monotonic() - start < 10  # bounded: not waiting for the client
        finally:
            for s in stalled:
                s.close()


def test_connections_over_the_limit_get_503_and_the_server_recovers(fixed_onnx):
    with BackgroundServer(build_app([str(fixed_onnx)]), max_connections=4, header_timeout=30) as srv:
        stalled = _open_stalled(srv.port, 4)
        try:
            response = httpx.get(f"{srv.url}/v2/health/ready", timeout=5)
            assert response.status_code == 503
        finally:
            for s in stalled:
                s.close()
        for _ in range(50):  # the server notices the closed sockets at once; poll briefly
            if httpx.get(f"{srv.url}/v2/health/ready", timeout=5).status_code == 200:
                break
            time.sleep(0.05)
        else:
            raise AssertionError("the server did not recover after the connections closed")
