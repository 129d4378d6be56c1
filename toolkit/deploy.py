"""What takes a model to a serving platform: a Triton model repository, a KServe InferenceService.

    dltk deploy triton lenet.tvm -o model_repository/     # <name>/config.pbtxt, <name>/1/model.onnx
    dltk deploy kserve lenet.tvm --storage-uri s3://bucket/model_repository -o lenet-isvc.yaml

Triton runs the ONNX model (an artifact's model.onnx) on its ONNX Runtime backend with its own
dynamic batching; a TVM library is not something Triton loads. To serve the compiled TVM code on
Kubernetes, `dltk deploy kserve --image` runs the dltk server image (deploy/Dockerfile) instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from toolkit.errors import DltkError
from toolkit.files import copy_atomically, write_atomically
from toolkit.onnx_file import input_specs, load_onnx, output_specs
from toolkit.runtime.artifact import SOURCE_ONNX, is_artifact, open_artifact, refuse_inside_artifact
from toolkit.runtime.batch import shared_batch_dim
from toolkit.runtime.model_source import ARTIFACT, ModelSource
from toolkit.runtime.spec import TensorSpec

# Triton's TYPE_* names for numpy dtypes (model_config.proto, DataType).
TRITON_TYPES = {
    "bool": "TYPE_BOOL",
    "uint8": "TYPE_UINT8",
    "uint16": "TYPE_UINT16",
    "uint32": "TYPE_UINT32",
    "uint64": "TYPE_UINT64",
    "int8": "TYPE_INT8",
    "int16": "TYPE_INT16",
    "int32": "TYPE_INT32",
    "int64": "TYPE_INT64",
    "float16": "TYPE_FP16",
    "float32": "TYPE_FP32",
    "float64": "TYPE_FP64",
}


@dataclass(frozen=True)
class Model:
    """What deployment needs to know of an ONNX file or artifact: its name, ONNX file and tensors."""

    name: str
    onnx_path: Path
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    source: Path


def describe(path, name: str | None = None) -> Model:
    source = ModelSource.of(path)
    path = source.path
    if source.kind == ARTIFACT:
        if not is_artifact(path):
            raise DltkError(f"{path} is neither an ONNX file nor a dltk artifact", "give model.onnx or an artifact directory")
        artifact = open_artifact(path)
        onnx_path, inputs, outputs = artifact.file(SOURCE_ONNX), artifact.inputs, artifact.outputs
    else:
        model = load_onnx(path)
        onnx_path, inputs, outputs = path, input_specs(model), output_specs(model)
    return Model(name or source.name, onnx_path, inputs, outputs, path)


def batch_dim(model: Model) -> str | None:
    return shared_batch_dim(model.inputs, model.outputs)


# --- Triton ----------------------------------------------------------------------------------


def triton_config(model: Model, max_batch_size: int = 32, max_delay_us: int = 2000, instances: int = 1, kind: str = "KIND_CPU") -> str:
    """config.pbtxt text. A model with a symbolic leading dimension gets Triton's dynamic batching
    (dims then leave the batch axis out); a model with a fixed batch gets max_batch_size 0."""
    batching = batch_dim(model) is not None and max_batch_size > 0

    def tensors(specs: list[TensorSpec]) -> str:
        entries = []
        for spec in specs:
            if spec.dtype not in TRITON_TYPES:
                raise DltkError(f"tensor '{spec.name}' has dtype {spec.dtype}, which Triton's config cannot name")
            dims = spec.shape[1:] if batching else spec.shape
            dims_text = ", ".join(str(d) if isinstance(d, int) else "-1" for d in dims)
            entries.append(f'  {{\n    name: "{spec.name}"\n    data_type: {TRITON_TYPES[spec.dtype]}\n    dims: [ {dims_text} ]\n  }}')
        return ",\n".join(entries)

    lines = [
        f'name: "{model.name}"',
        'platform: "onnxruntime_onnx"',
        f"max_batch_size: {max_batch_size if batching else 0}",
        f"input [\n{tensors(model.inputs)}\n]",
        f"output [\n{tensors(model.outputs)}\n]",
        f"instance_group [\n  {{\n    count: {instances}\n    kind: {kind}\n  }}\n]",
    ]
    if batching:
        lines.append(f"dynamic_batching {{\n  max_queue_delay_microseconds: {max_delay_us}\n}}")
    return "\n".join(lines) + "\n"


def write_triton_repository(path, repository, name: str | None = None, max_batch_size: int = 32, max_delay_us: int = 2000,
                            instances: int = 1, device: str = "cpu") -> Path:
    """Write `repository/<name>/config.pbtxt` and `repository/<name>/1/model.onnx`; return the model's directory.

    Only those two files are written, each atomically; anything else in the model directory (other
    versions, a README) stays. A model directory whose config.pbtxt dltk did not write is refused.
    """
    if max_batch_size < 0 or max_delay_us < 0 or instances < 1:
        raise DltkError("--max-batch-size and --max-delay-us must not be negative, --instances at least 1")
    model = describe(path, name)
    kind = {"cpu": "KIND_CPU", "cuda": "KIND_GPU"}[device]
    config = f"{TRITON_MARK}\n" + triton_config(model, max_batch_size, max_delay_us, instances, kind)
    destination = Path(repository) / model.name
    _check_triton_destination(destination)
    copy_atomically(model.onnx_path, destination / "1" / "model.onnx")
    write_atomically(destination / "config.pbtxt", config)
    return destination


TRITON_MARK = "# written by dltk deploy triton; rewritten by each deploy of this model"


def _check_triton_destination(destination: Path) -> None:
    refuse_inside_artifact(destination)
    config = destination / "config.pbtxt"
    if destination.exists() and not destination.is_dir():
        raise DltkError(f"{destination} exists and is not a Triton model directory", "give another --name or -o")
    if config.is_symlink() or (config.exists() and not _written_by_dltk(config)):
        raise DltkError(f"{destination} holds a Triton model that dltk did not write",
                        "give another --name, or move that model away yourself")
    if destination.is_dir() and not config.exists() and any(destination.iterdir()):
        raise DltkError(f"{destination} exists and is not a Triton model directory", "give another --name or -o")


def _written_by_dltk(config: Path) -> bool:
    try:
        with open(config, encoding="utf-8", errors="replace") as f:
            return f.readline().rstrip("\n") == TRITON_MARK
    except OSError:
        return False


# --- KServe ----------------------------------------------------------------------------------


def kserve_manifest(path, name: str | None = None, storage_uri: str | None = None, image: str | None = None,
                    cpu: str = "1", memory: str = "1Gi", port: int = 8080) -> str:
    """An InferenceService (serving.kserve.io/v1beta1) answering the v2 protocol, as YAML.

    Without `image`: KServe's ONNX runtime (Triton) on a model repository made by `dltk deploy triton`
    and uploaded to `storage_uri`. With `image`: the dltk server image, which also runs TVM artifacts;
    KServe downloads `storage_uri` (the artifact or ONNX file) to /mnt/models.
    """
    model = describe(path, name)
    if not storage_uri:
        raise DltkError("an InferenceService needs --storage-uri", "upload the model (s3://, gs://, pvc://...) and pass its URI")
    resources = {"requests": {"cpu": cpu, "memory": memory}, "limits": {"cpu": cpu, "memory": memory}}
    service_name = model.name.lower().replace("_", "-").replace(".", "-")
    if image is None:
        predictor = {"model": {"modelFormat": {"name": "onnx"}, "protocolVersion": "v2", "runtime": "kserve-tritonserver",
                               "storageUri": storage_uri, "resources": resources}}
    else:
        model_path = "/mnt/models" if model.source.is_dir() else f"/mnt/models/{model.source.name}"
        probe = {"httpGet": {"path": "/v2/health/ready", "port": port}}
        predictor = {"containers": [{
            "name": "kserve-container",
            "image": image,
            "args": ["serve", f"{model.name}={model_path}", "--host", "0.0.0.0", "--port", str(port)],
            "env": [{"name": "STORAGE_URI", "value": storage_uri}],
            "ports": [{"containerPort": port, "protocol": "TCP"}],
            "readinessProbe": probe,
            "livenessProbe": {"httpGet": {"path": "/v2/health/live", "port": port}},
            "resources": resources,
        }]}
    manifest = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": service_name, "labels": {"app.kubernetes.io/managed-by": "dltk"}},
        "spec": {"predictor": predictor},
    }
    return to_yaml(manifest)


def to_yaml(value, indent: int = 0) -> str:
    """Block-style YAML for dicts, lists and scalars; strings are quoted as JSON, which YAML reads."""
    import json

    pad = " " * indent
    if isinstance(value, dict):
        lines = []
        for key, item in value.items():
            if isinstance(item, (dict, list)) and item:
                lines.append(f"{pad}{key}:\n{to_yaml(item, indent + 2)}")
            else:
                lines.append(f"{pad}{key}: {to_yaml(item)}")
        return "\n".join(lines) + ("\n" if indent == 0 else "")
    if isinstance(value, list):
        lines = []
        for item in value:
            text = to_yaml(item, indent + 2) if isinstance(item, (dict, list)) else f"{pad}  {to_yaml(item)}"
            lines.append(f"{pad}- {text.lstrip()}")
        return "\n".join(lines)
    if isinstance(value, bool) or value is None or isinstance(value, (int, float)):
        return json.dumps(value)
    text = str(value)
    plain = text and text.replace("-", "").replace("_", "").replace(".", "").replace("/", "").isalnum() and not text[0].isdigit()
    return text if plain and text.lower() not in ("yes", "no", "on", "off", "true", "false", "null") else json.dumps(text)
