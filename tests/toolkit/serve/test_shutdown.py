"""`dltk serve` as users run it: a process that answers, and on SIGTERM finishes what it started."""

import re
import signal
import subprocess
import sys
import threading
import time

import httpx
import numpy as np

from tests.toolkit.serve.helpers import v2_request


def start_server(*args):
    process = subprocess.Popen([sys.executable, "-m", "toolkit", "serve", *args, "--port", "0"],
                               stderr=subprocess.PIPE, text=True)
    lines = []
    for line in process.stderr:
        lines.append(line)
        found = re.search(r"serving on (http://127\.0\.0\.1:\d+)", line)
        if found:
            return process, found.group(1)
    process.wait()
    raise AssertionError(f"the server did not start: {''.join(lines)}")


def in_flight(url):
    text = httpx.get(f"{url}/metrics").text
    return float(re.search(r"^dltk_requests_in_flight (\S+)$", text, re.M).group(1))


def test_sigterm_finishes_the_request_in_flight_then_exits(lenet_onnx):
    # A long batching delay keeps the one request waiting inside the server when SIGTERM comes.
    process, url = start_server(str(lenet_onnx), "--max-delay-ms", "1500")
    try:
        answers = []
        body = v2_request(input=np.zeros((1, 1, 8, 8), np.float32))
        client = threading.Thread(target=lambda: answers.append(httpx.post(f"{url}/v2/models/lenet/infer", json=body, timeout=30)))
        client.start()
        deadline = time.monotonic() + 20
        while in_flight(url) < 1:
            assert time.monotonic() < deadline, "the request never reached the server"
            time.sleep(0.02)
        process.send_signal(signal.SIGTERM)
        client.join(30)
        assert answers and answers[0].status_code == 200
        assert answers[0].json()["outputs"][0]["shape"] == [1, 10]
        assert process.wait(30) == 0
        assert "stopped" in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_serve_refuses_a_missing_model_with_exit_2(tmp_path):
    result = subprocess.run([sys.executable, "-m", "toolkit", "serve", str(tmp_path / "nope.onnx")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stderr.startswith("error: no such file")
