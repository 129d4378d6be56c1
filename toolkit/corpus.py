"""Models written by others, built here as ONNX files, to measure what `dltk compile` takes.

Nothing is downloaded: each model is built from its package's own code with random weights
(Hugging Face `transformers` from tiny configs, exported with `torch.onnx.export`, legacy or
dynamo, or with Optimum's exporter), or shipped inside a package (the ONNX model zoo graphs and
PyTorch-converted old-opset files that the `onnx` package carries as backend test data). Some are
then changed the way users' files come: converted to an older opset with
`onnx.version_converter`, or saved with their weights in external data files.

Not to be confused with models/corpus/, the GPT's training text. benchmarks/coverage.py compiles
every model here; the tests compile a few.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
from onnx import helper, numpy_helper

from toolkit.errors import DltkError

SEED = 0
OPSET_LEGACY = 17  # what users of torch.onnx.export(dynamo=False) commonly pass
OPSET_DYNAMO = 18  # torch.onnx.export(dynamo=True)'s default
IMAGE = 32  # tiny images keep compiles to seconds
MAX_SEQUENCE = 64

TEXT = "text"  # input_ids, attention_mask: (batch, sequence)
SEQ2SEQ = "seq2seq"  # and decoder_input_ids: (batch, decoder_sequence)
IMAGE_INPUT = "image"  # pixel_values: (batch, 3, IMAGE, IMAGE)
AUDIO = "audio"  # input_values: (batch, samples)

# Tiny configs: hidden 32, 2 layers, 2 heads; small vocabularies. The deep CNNs (MobileNetV2,
# EfficientNet) get a wider weight init than their default 0.02, whose outputs vanish (1e-26, 0)
# with random weights and would make any comparison pass.
_BERT_LIKE = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                  max_position_embeddings=MAX_SEQUENCE)
_DECODER = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                max_position_embeddings=MAX_SEQUENCE, use_cache=False)
_BART_LIKE = dict(vocab_size=100, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
                  decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=MAX_SEQUENCE,
                  use_cache=False)
_VIT_LIKE = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=IMAGE,
                 patch_size=8, num_labels=10)


@dataclass(frozen=True)
class HfModel:
    """A transformers architecture built from a config with random weights."""

    model_type: str  # transformers' name for the config (AutoConfig.for_model)
    auto_class: str  # AutoModel, AutoModelForCausalLM, ...
    inputs: str  # TEXT, SEQ2SEQ, IMAGE_INPUT or AUDIO
    config: dict = field(default_factory=dict)


@dataclass(frozen=True)
class CorpusModel:
    name: str
    kind: str  # encoder, decoder, encoder-decoder, vision transformer, cnn, audio, old opset, external data
    source: str  # where the graph comes from
    exporter: str  # how the ONNX file was made
    build: Callable[[Path], Path]  # writes the model into an empty directory, returns the .onnx path
    dims: dict[str, int] = field(default_factory=dict)  # dims a user passes to `dltk compile --dim`: dynamic in the file, fixed in the model


HF = {
    # encoders
    "bert": HfModel("bert", "AutoModel", TEXT, _BERT_LIKE),
    "distilbert": HfModel("distilbert", "AutoModel", TEXT, dict(vocab_size=100, dim=32, n_layers=2, n_heads=2, hidden_dim=64,
                                                              max_position_embeddings=MAX_SEQUENCE)),
    "roberta": HfModel("roberta", "AutoModel", TEXT, dict(_BERT_LIKE, max_position_embeddings=MAX_SEQUENCE + 2)),
    "albert": HfModel("albert", "AutoModel", TEXT, dict(_BERT_LIKE, embedding_size=16)),
    "electra": HfModel("electra", "AutoModel", TEXT, dict(_BERT_LIKE, embedding_size=16)),
    # decoders
    "gpt2": HfModel("gpt2", "AutoModelForCausalLM", TEXT, dict(vocab_size=100, n_embd=32, n_layer=2, n_head=2,
                                                              n_positions=MAX_SEQUENCE, use_cache=False)),
    "gpt-neo": HfModel("gpt_neo", "AutoModelForCausalLM", TEXT, dict(vocab_size=100, hidden_size=32, num_layers=2, num_heads=2,
                                                                    attention_types=[[["global", "local"], 1]], window_size=8,
                                                                    max_position_embeddings=MAX_SEQUENCE, use_cache=False)),
    "opt": HfModel("opt", "AutoModelForCausalLM", TEXT, dict(vocab_size=100, hidden_size=32, num_hidden_layers=2,
                                                            num_attention_heads=2, ffn_dim=64, word_embed_proj_dim=32,
                                                            max_position_embeddings=MAX_SEQUENCE, use_cache=False)),
    "llama": HfModel("llama", "AutoModelForCausalLM", TEXT, dict(_DECODER, num_key_value_heads=1)),
    "mistral": HfModel("mistral", "AutoModelForCausalLM", TEXT, dict(_DECODER, num_key_value_heads=1, sliding_window=16)),
    "qwen2": HfModel("qwen2", "AutoModelForCausalLM", TEXT, dict(_DECODER, num_key_value_heads=1)),
    # encoder-decoders
    "t5": HfModel("t5", "AutoModelForSeq2SeqLM", SEQ2SEQ, dict(vocab_size=100, d_model=32, d_ff=64, d_kv=16, num_layers=2,
                                                              num_decoder_layers=2, num_heads=2, use_cache=False,
                                                              decoder_start_token_id=0)),
    "bart": HfModel("bart", "AutoModelForSeq2SeqLM", SEQ2SEQ, _BART_LIKE),
    "marian": HfModel("marian", "AutoModelForSeq2SeqLM", SEQ2SEQ, dict(_BART_LIKE, decoder_start_token_id=1, pad_token_id=1)),
    # vision transformers
    "vit": HfModel("vit", "AutoModelForImageClassification", IMAGE_INPUT, _VIT_LIKE),
    "deit": HfModel("deit", "AutoModelForImageClassification", IMAGE_INPUT, dict(_VIT_LIKE, architectures=["DeiTForImageClassification"])),
    "swin": HfModel("swin", "AutoModelForImageClassification", IMAGE_INPUT,
                    dict(image_size=IMAGE, patch_size=2, embed_dim=16, depths=[1, 1], num_heads=[2, 2], window_size=4,
                         num_labels=10)),
    # CNNs
    "resnet": HfModel("resnet", "AutoModelForImageClassification", IMAGE_INPUT,
                      dict(embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1], layer_type="basic", num_labels=10)),
    "convnext": HfModel("convnext", "AutoModelForImageClassification", IMAGE_INPUT,
                        dict(num_stages=2, hidden_sizes=[16, 32], depths=[1, 1], num_labels=10)),
    "mobilenet-v2": HfModel("mobilenet_v2", "AutoModelForImageClassification", IMAGE_INPUT,
                            dict(image_size=IMAGE, depth_multiplier=0.25, num_labels=10, initializer_range=0.25)),
    "efficientnet": HfModel("efficientnet", "AutoModelForImageClassification", IMAGE_INPUT,
                            dict(image_size=IMAGE, width_coefficient=0.25, depth_coefficient=0.25, hidden_dim=320,
                                 num_labels=10, initializer_range=0.6)),
    "regnet": HfModel("regnet", "AutoModelForImageClassification", IMAGE_INPUT,
                      dict(embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1], groups_width=8, num_labels=10)),
    # audio
    "wav2vec2": HfModel("wav2vec2", "AutoModel", AUDIO,
                        dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                             conv_dim=(16, 16), conv_kernel=(10, 3), conv_stride=(5, 2), conv_bias=True,
                             num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=2, do_stable_layer_norm=True,
                             feat_extract_norm="layer", mask_time_prob=0.0)),
}

# The ONNX model zoo's published graphs that the onnx package ships with their weights replaced
# by ConstantOfShape fills ("light" models, opset 9, from Caffe2): given random weights here.
# VGG-19, AlexNet and ZFNet are left out: 250-550 MB of weights each.
ZOO_LIGHT = ("squeezenet", "shufflenet", "inception_v1", "inception_v2", "resnet50", "densenet121")
# PyTorch-converted single-op files at opset 6, shipped as onnx backend test data.
PYTORCH_CONVERTED = ("AvgPool2d", "BatchNorm2d_eval", "Conv2d_groups", "PixelShuffle")


def hf_module(name: str, seed: int = SEED):
    """The transformers model `name` (a key of HF) with random weights, in eval mode, and its example inputs."""
    import torch
    import transformers

    spec = HF[name]
    config = transformers.AutoConfig.for_model(spec.model_type, **spec.config)
    torch.manual_seed(seed)
    model = getattr(transformers, spec.auto_class).from_config(config).eval()
    return model, _example_inputs(spec.inputs)


def _first_output(model, names):
    """`model` behind positional tensor inputs (named `names`) and one tensor output, as export wants."""
    import torch

    class FirstOutput(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, *args):
            return self.model(**dict(zip(names, args)), return_dict=False)[0]

    return FirstOutput().eval()


def _example_inputs(kind: str) -> dict:
    import torch

    generator = torch.Generator().manual_seed(SEED)
    if kind in (TEXT, SEQ2SEQ):
        inputs = {"input_ids": torch.randint(0, 100, (2, 8), generator=generator),
                  "attention_mask": torch.ones(2, 8, dtype=torch.int64)}
        if kind == SEQ2SEQ:
            inputs["decoder_input_ids"] = torch.randint(0, 100, (2, 5), generator=generator)
        return inputs
    if kind == IMAGE_INPUT:
        return {"pixel_values": torch.randn(2, 3, IMAGE, IMAGE, generator=generator)}
    return {"input_values": torch.randn(2, 1600, generator=generator)}


def _dynamic_dims(kind: str) -> dict[str, dict[int, str]]:
    """The axes users export as dynamic: batch always, sequence lengths for text and audio."""
    if kind in (TEXT, SEQ2SEQ):
        dims = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"}}
        if kind == SEQ2SEQ:
            dims["decoder_input_ids"] = {0: "batch", 1: "decoder_sequence"}
        return dims
    if kind == IMAGE_INPUT:
        return {"pixel_values": {0: "batch"}}
    return {"input_values": {0: "batch", 1: "samples"}}


def export_hf(name: str, path: Path, dynamo: bool, opset: int | None = None) -> Path:
    """torch.onnx.export of HF[name], dynamic batch and sequence axes, legacy (TorchScript) or dynamo."""
    import torch

    model, inputs = hf_module(name)
    names = list(inputs)
    wrapped = _first_output(model, names)
    dims = _dynamic_dims(HF[name].inputs)
    args = tuple(inputs.values())
    if dynamo:
        longest = {"samples": 1 << 12, "sequence": MAX_SEQUENCE, "decoder_sequence": MAX_SEQUENCE, "batch": 1 << 16}
        shapes = {label: torch.export.Dim(label, min=1, max=longest[label]) for axes in dims.values() for label in axes.values()}
        dynamic_shapes = (tuple({axis: shapes[label] for axis, label in dims[n].items()} for n in names),)
        program = torch.onnx.export(wrapped, args, input_names=names, output_names=["output"], opset_version=opset or OPSET_DYNAMO,
                                    dynamic_shapes=dynamic_shapes, dynamo=True, verbose=False)
        program.save(str(path))
    else:
        torch.onnx.export(wrapped, args, str(path), input_names=names, output_names=["output"], opset_version=opset or OPSET_LEGACY,
                          dynamic_axes={**dims, "output": {0: "batch"}}, dynamo=False)
    return path


def export_optimum(name: str, directory: Path) -> Path:
    """Optimum's exporter (`optimum-cli export onnx`) on HF[name] saved locally with random weights."""
    from optimum.exporters.onnx import main_export

    model, _ = hf_module(name)
    saved = directory / "pretrained"
    model.save_pretrained(saved)
    task = {"AutoModel": "feature-extraction", "AutoModelForCausalLM": "text-generation",
            "AutoModelForImageClassification": "image-classification"}[HF[name].auto_class]
    out = directory / "optimum"
    main_export(str(saved), out, task=task, no_post_process=True, do_validation=False, library_name="transformers")
    return out / "model.onnx"


def zoo_light(name: str, path: Path, seed: int = SEED) -> Path:
    """The onnx package's light_NAME.onnx with each ConstantOfShape weight made a random initializer
    (He-scaled for Conv and Gemm weights, around 1 for 1-D parameters such as batch-norm variances)."""
    model = onnx.load(str(_onnx_test_data() / "light" / f"light_{name}.onnx"))
    rng = np.random.default_rng(seed)
    shapes = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    kept, replaced = [], []
    for node in model.graph.node:
        if node.op_type == "ConstantOfShape" and node.input[0] in shapes:
            shape = tuple(int(d) for d in shapes[node.input[0]])
            if len(shape) >= 2:
                value = rng.standard_normal(shape) * math.sqrt(2.0 / max(1, math.prod(shape[1:])))
            else:
                value = rng.uniform(0.5, 1.5, shape)
            replaced.append(numpy_helper.from_array(value.astype(np.float32), node.output[0]))
        else:
            kept.append(node)
    used = {name for node in kept for name in node.input}
    initializers = [t for t in model.graph.initializer if t.name in used] + replaced
    del model.graph.node[:]
    model.graph.node.extend(kept)
    del model.graph.initializer[:]
    model.graph.initializer.extend(initializers)
    names = {t.name for t in initializers}
    inputs = [i for i in model.graph.input if i.name in used or i.name not in names and not i.name.endswith("__SHAPE")]
    inputs += [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in replaced]  # IR 3: initializers are inputs
    del model.graph.input[:]
    model.graph.input.extend(i for i in inputs if not i.name.endswith("__SHAPE"))
    onnx.checker.check_model(model)
    onnx.save_model(model, str(path))
    return path


def pytorch_converted(name: str, path: Path) -> Path:
    """A PyTorch-converted opset-6 file shipped as onnx backend test data, as it is."""
    model = onnx.load(str(_onnx_test_data() / "pytorch-converted" / f"test_{name}" / "model.onnx"))
    onnx.save_model(model, str(path))
    return path


def downgraded(build: Callable[[Path], Path], opset: int, directory: Path) -> Path:
    """A model built by `build`, converted down to `opset` with onnx.version_converter."""
    from onnx import version_converter

    source = build(directory / "source.onnx")
    converted = version_converter.convert_version(onnx.load(str(source)), opset)
    onnx.checker.check_model(converted)
    path = directory / "model.onnx"
    onnx.save_model(converted, str(path))
    source.unlink()
    return path


def with_external_data(build: Callable[[Path], Path], directory: Path) -> Path:
    """A model built by `build`, saved with its weights (those of 1 KiB or more, as exporters do) in one
    external file beside it."""
    source = build(directory / "source.onnx")
    model = onnx.load(str(source))
    source.unlink()
    path = directory / "model.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location="model.onnx.data")
    return path


def _onnx_test_data() -> Path:
    return Path(onnx.__file__).parent / "backend" / "test" / "data"


# transformers' attention masks (masking_utils, vmap) break the legacy exporter for these
# ("RuntimeError: unordered_map::at"): exported with dynamo, as their users must.
DYNAMO_ONLY = ("gpt2", "llama", "mistral", "qwen2")


def models() -> list[CorpusModel]:
    """The whole corpus, in a fixed order."""
    corpus = [_hf(name, dynamo=name in DYNAMO_ONLY) for name in HF]
    corpus += [_hf(name, dynamo=True) for name in ("bert", "t5", "vit", "resnet")]
    corpus += [_optimum(name) for name in ("bert", "gpt2", "vit")]
    corpus += [CorpusModel(f"zoo-{n}", "cnn", f"ONNX model zoo {n} (onnx package test data, random weights)",
                           "Caffe2 converter (opset 9, IR 3)", lambda d, n=n: zoo_light(n, d / "model.onnx"))
               for n in ZOO_LIGHT]
    corpus += [CorpusModel(f"pt-{n.lower()}", "old opset", f"PyTorch-converted test_{n} (onnx package test data)",
                           "PyTorch converter (opset 6)", lambda d, n=n: pytorch_converted(n, d / "model.onnx"))
               for n in PYTORCH_CONVERTED]
    corpus += [
        CorpusModel("resnet-opset7", "old opset", _source("resnet"), "torch.onnx legacy at opset 7",
                    lambda d: export_hf("resnet", d / "model.onnx", dynamo=False, opset=7)),
        CorpusModel("resnet-opset9-to-7", "old opset", _source("resnet"), "torch.onnx legacy at opset 9, version_converter to 7",
                    lambda d: downgraded(lambda p: export_hf("resnet", p, dynamo=False, opset=9), 7, d)),
        CorpusModel("bert-external", "external data", _source("bert"), "torch.onnx legacy, external data",
                    lambda d: with_external_data(lambda p: export_hf("bert", p, dynamo=False), d)),
        CorpusModel("qwen2-external", "external data", _source("qwen2"), "torch.onnx dynamo, external data",
                    lambda d: with_external_data(lambda p: export_hf("qwen2", p, dynamo=True), d)),
        CorpusModel("mobilenet-v2-external", "external data", _source("mobilenet-v2"), "torch.onnx legacy, external data",
                    lambda d: with_external_data(lambda p: export_hf("mobilenet-v2", p, dynamo=False), d)),
    ]
    return corpus


def _source(name: str) -> str:
    spec = HF[name]
    return f"transformers {spec.model_type} ({spec.auto_class}, random weights)"


def _kind(name: str) -> str:
    spec = HF[name]
    if spec.inputs == IMAGE_INPUT:
        return "vision transformer" if name in ("vit", "deit", "swin") else "cnn"
    return {SEQ2SEQ: "encoder-decoder", AUDIO: "audio"}.get(spec.inputs) or (
        "decoder" if spec.auto_class == "AutoModelForCausalLM" else "encoder")


def _hf(name: str, dynamo: bool) -> CorpusModel:
    label = f"{name}-dynamo" if dynamo and name not in DYNAMO_ONLY else name
    return CorpusModel(label, _kind(name), _source(name), "torch.onnx dynamo" if dynamo else "torch.onnx legacy",
                       lambda d: export_hf(name, d / "model.onnx", dynamo=dynamo))


def _optimum(name: str) -> CorpusModel:
    # Optimum exports every image dim as dynamic, but a ViT's position table fits one image size and its
    # patch projection 3 channels: its users give those sizes (`dltk compile --dim height=32 ...`)
    dims = {"num_channels": 3, "height": IMAGE, "width": IMAGE} if HF[name].inputs == IMAGE_INPUT else {}
    return CorpusModel(f"{name}-optimum", _kind(name), _source(name), "optimum.exporters.onnx", lambda d: export_optimum(name, d),
                       dims)


def find(name: str) -> CorpusModel:
    for model in models():
        if model.name == name:
            return model
    raise DltkError(f"no corpus model '{name}'", "see toolkit.corpus.models() for the names")


def build(name: str, directory) -> Path:
    """Build corpus model `name` into `directory` (made empty first); the path of its .onnx file."""
    import shutil

    directory = Path(directory)
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    return find(name).build(directory)
