"""Sampling from exported generative models through the runtime (ONNX Runtime or a TVM artifact).

The export of a generative zoo model carries, in its ONNX metadata (`dltk.generation`), what
sampling needs: the GPT's vocabulary and context length, the VAE's or GAN's latent size, the
diffusion model's noise schedule. Everything here runs on numpy and `toolkit.runtime`; PyTorch is
not involved.

- text (gpt): with the KV-cache decode step beside the model (toolkit.kv_cache), one step per
  character while the text fits the context; otherwise, and past the context, the fixed-context
  graph runs once per new character for a batch of `count` continuations; a prompt shorter than
  the context is padded on the right, and the logits are read at its last position, which
  causal attention keeps independent of the padding.
- latent (vae, gan): z ~ N(0, I) through the decoder or generator.
- diffusion: DDPM ancestral sampling, one call of the compiled denoiser per step.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np

from toolkit import kv_cache, runtime
from toolkit.errors import DltkError
from toolkit.files import write_atomically
from toolkit.runtime.model_source import ARTIFACT, ONNX, ModelSource

METADATA_KEY = "dltk.generation"


def read_generation(path) -> dict:
    """The sampling recipe kept in an ONNX file's (or an artifact's model.onnx) metadata."""
    source = ModelSource.of(path).require(ONNX, ARTIFACT, fix="give an exported model or an artifact")
    props = source.metadata()
    if METADATA_KEY not in props:
        raise DltkError(
            f"{path} is not a generative model export (no {METADATA_KEY} metadata)",
            "export gpt, vae, gan or diffusion with 'dltk export'",
        )
    return json.loads(props[METADATA_KEY])


class Sampler:
    """Samples text or images from an exported generative model, on ORT or TVM."""

    def __init__(self, path, backend: str | None = None, device: str = "cpu", cache: bool = True):
        """cache: step the KV-cache decode graph beside `path` when there is one (toolkit.kv_cache)."""
        self.recipe = read_generation(path)
        self.kind = "text" if self.recipe["kind"] == "text" else "image"
        self.session = runtime.load(path, device=device, backend=backend)
        self._output = self.session.outputs[0].name
        self.decoder = None
        if cache and self.kind == "text":
            self.decoder = kv_cache.open_decoder(path, backend, device, self.recipe["block_size"])

    def text(self, prompt: str = "", length: int = 200, temperature: float = 0.8,
             top_k: int | None = None, count: int = 1, seed: int = 0) -> list[str]:
        """`count` continuations of `prompt`, `length` characters each (the prompt included in the result)."""
        self._expect("text")
        if temperature < 0:
            raise DltkError(f"--temperature must be 0 (greedy) or more, got {temperature}")
        if top_k is not None and top_k < 1:
            raise DltkError(f"--top-k must be at least 1, got {top_k}")
        vocabulary, context = self.recipe["vocabulary"], self.recipe["block_size"]
        index = {c: i for i, c in enumerate(vocabulary)}
        unknown = sorted(set(prompt) - set(index))
        if unknown:
            raise DltkError(f"the prompt has characters the model never saw: {''.join(unknown)!r}", "use the corpus's characters")
        rng = np.random.default_rng(seed)
        start = [index[c] for c in prompt] or [index.get("\n", 0)]
        tokens = np.tile(np.array(start, dtype=np.int64), (count, 1))  # (count, length so far)
        name = self.session.inputs[0].name
        if self.decoder is not None:
            self.decoder.reset()
        for _ in range(length):
            if self.decoder is not None and tokens.shape[1] <= context:  # one position per token
                logits = self.decoder.next_logits(tokens)
            else:
                window = tokens[:, -context:]
                feed = np.zeros((count, context), dtype=np.int64)
                feed[:, : window.shape[1]] = window
                logits = self.session.run({name: feed})[self._output][:, window.shape[1] - 1]  # (count, vocab)
            following = np.array([_sample(row, temperature, top_k, rng) for row in logits], dtype=np.int64)
            tokens = np.concatenate([tokens, following[:, None]], axis=1)
        first = len(start) if prompt else 1
        return [prompt + "".join(vocabulary[t] for t in row[first:]) for row in tokens]

    def images(self, count: int = 16, seed: int = 0) -> np.ndarray:
        """`count` images, (count, channels, height, width), pixel values in [0, 1]."""
        self._expect("image")
        rng = np.random.default_rng(seed)
        if self.recipe["kind"] == "latent":
            z = rng.standard_normal((count, self.recipe["latent"])).astype(np.float32)
            images = self.session.run({self.session.inputs[0].name: z})[self._output]
        else:
            images = self._diffusion(count, rng)
        return np.clip(images, 0.0, 1.0)

    def _diffusion(self, count: int, rng: np.random.Generator) -> np.ndarray:
        r = self.recipe
        betas = np.linspace(r["beta_start"], r["beta_end"], r["steps"], dtype=np.float64)
        alphas = 1.0 - betas
        alpha_bars = np.cumprod(alphas)
        x_name, t_name = (s.name for s in self.session.inputs)
        x = rng.standard_normal((count, *r["shape"]))
        for t in reversed(range(r["steps"])):
            feeds = {x_name: x.astype(np.float32), t_name: np.full(count, t, dtype=np.int64)}
            noise = self.session.run(feeds)[self._output].astype(np.float64)
            x = (x - betas[t] / np.sqrt(1.0 - alpha_bars[t]) * noise) / np.sqrt(alphas[t])
            if t > 0:
                x += np.sqrt(betas[t]) * rng.standard_normal(x.shape)
        low, high = r["scale"]
        return ((x - low) / (high - low)).astype(np.float32)

    def _expect(self, kind: str) -> None:
        if self.kind != kind:
            raise DltkError(f"this model generates {self.kind}, not {kind}",
                            "give -o GRID.png for images" if self.kind == "image" else "drop -o; text is printed")


def _sample(logits: np.ndarray, temperature: float, top_k: int | None, rng: np.random.Generator) -> int:
    logits = logits.astype(np.float64)
    if temperature == 0:
        return int(logits.argmax())
    logits = logits / temperature
    if top_k is not None and top_k < len(logits):
        logits[logits < np.sort(logits)[-top_k]] = -np.inf
    p = np.exp(logits - logits.max())
    return int(rng.choice(len(p), p=p / p.sum()))


def write_png_grid(images: np.ndarray, path, scale: int = 8, pad: int = 1) -> Path:
    """Images (N, C, H, W) in [0, 1] tiled into a near-square grayscale (C=1) or RGB (C=3) PNG."""
    n, channels, h, w = images.shape
    if channels not in (1, 3):
        raise DltkError(f"cannot write images with {channels} channels as PNG", "use 1 or 3 channels")
    columns = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / columns))
    cell_h, cell_w = h * scale + pad, w * scale + pad
    grid = np.ones((rows * cell_h + pad, columns * cell_w + pad, channels), dtype=np.float32)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        big = image.transpose(1, 2, 0).repeat(scale, axis=0).repeat(scale, axis=1)  # nearest-neighbour upscale
        grid[pad + r * cell_h : pad + r * cell_h + h * scale, pad + c * cell_w : pad + c * cell_w + w * scale] = big
    pixels = (grid * 255).round().astype(np.uint8)
    return write_png(path, pixels)


def write_png(path, pixels: np.ndarray) -> Path:
    """An 8-bit PNG of (H, W, 1) or (H, W, 3) pixels, written atomically (zlib, no imaging library)."""
    height, width, channels = pixels.shape
    color_type = 0 if channels == 1 else 2
    raw = b"".join(b"\x00" + row.tobytes() for row in pixels)  # filter type 0 on every row

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
    return write_atomically(path, png)
