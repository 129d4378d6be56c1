"""What deploy/Dockerfile and deploy/example_app.py rely on."""

import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_server_and_cli_load_an_onnx_model_without_torch(lenet_onnx):
    """The image leaves torch out: serving an ONNX model must not import it."""
    code = (
        "import sys\n"
        "from toolkit.serve import build_app\n"
        "import toolkit.cli\n"
        f"app = build_app([{str(lenet_onnx)!r}])\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "print(sorted(app.state.models))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['lenet']"


def test_the_image_installs_the_runtime_with_the_serve_extra_and_runs_as_a_user():
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    install = re.search(r"pip install [^\n]*-c constraints.txt '\.\[(.*)\]'", dockerfile)
    assert install and install.group(1) == "serve", "the image installs dltk's base package with the serve extra"
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert "full" in extras and not any(r.startswith("torch") for r in extras["serve"])
    assert re.search(r"^USER dltk$", dockerfile, re.M) and "HEALTHCHECK" in dockerfile
    assert "/v2/health/ready" in dockerfile
    assert re.search(r"&& rm \S+/site-packages/tvm/lib/libtvm_compiler.so", dockerfile)  # the lean test leaves it out too


def test_example_app_runs_and_shows_the_validation(lenet_onnx):
    result = subprocess.run([sys.executable, str(ROOT / "deploy" / "example_app.py"), str(lenet_onnx)],
                            capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ort on cpu: classes [") and "refused as expected: input 'input'" in result.stdout
