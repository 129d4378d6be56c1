"""`dltk generate`: text from the GPT and images from the VAE, GAN and diffusion exports, sampled
through the runtime (ONNX Runtime and the TVM artifact), never through PyTorch."""

import json
import struct
import zlib

import numpy as np
import pytest
from click.testing import CliRunner

import models
from toolkit import runtime
from toolkit.cli import cli
from toolkit.compile import compile_model
from toolkit.export import export_model
from toolkit.generate import Sampler, write_png_grid


@pytest.fixture(scope="module")
def gpt_artifact(tmp_path_factory, tiny_zoo):
    directory = tmp_path_factory.mktemp("gpt")
    export_model("gpt", directory / "gpt.onnx")
    compile_model(directory / "gpt.onnx", directory / "gpt.tvm", choose_engine=False)
    return directory / "gpt.tvm"


def read_png(path):
    """(width, height, color type, pixels) of an 8-bit PNG with unfiltered rows, as write_png writes them."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, offset = {}, 8
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        tag, body = data[offset + 4 : offset + 8], data[offset + 8 : offset + 8 + length]
        assert struct.unpack(">I", data[offset + 8 + length : offset + 12 + length])[0] == zlib.crc32(tag + body)
        chunks[tag] = chunks.get(tag, b"") + body
        offset += 12 + length
    width, height, depth, color, *_ = struct.unpack(">IIBBBBB", chunks[b"IHDR"])
    channels = 1 if color == 0 else 3
    rows = np.frombuffer(zlib.decompress(chunks[b"IDAT"]), np.uint8).reshape(height, 1 + width * channels)
    assert depth == 8 and (rows[:, 0] == 0).all()
    return width, height, color, rows[:, 1:].reshape(height, width, channels)


def test_gpt_text_through_the_artifact_is_seeded_and_matches_onnx_runtime(gpt_artifact):
    vocabulary = models.get("gpt").generation["vocabulary"]
    args = ["generate", str(gpt_artifact), "--prompt", "Shall I", "--length", "12", "--top-k", "5", "-n", "3"]
    first, again = CliRunner().invoke(cli, args), CliRunner().invoke(cli, args)
    assert first.exit_code == 0, first.output
    lines = first.output.splitlines()
    assert len(lines) == 3 and all(line.startswith("Shall I") for line in lines)
    assert all(len(line) == len("Shall I") + 12 for line in lines)
    assert set("".join(lines)) <= set(vocabulary)
    assert again.output == first.output  # same seed, same text

    # Greedy decoding: TVM and ONNX Runtime pick the same characters from the same graph.
    tvm_text = Sampler(gpt_artifact).text("Love", length=20, temperature=0)
    ort_text = Sampler(gpt_artifact, backend="ort").text("Love", length=20, temperature=0)
    assert tvm_text == ort_text


def test_prompt_longer_than_the_context_keeps_the_last_characters(gpt_artifact):
    context = models.get("gpt").generation["block_size"]
    prompt = "When I do count the clock that tells the time, " * 2
    assert len(prompt) > context
    (text,) = Sampler(gpt_artifact).text(prompt, length=5, temperature=0)
    assert text.startswith(prompt) and len(text) == len(prompt) + 5


def test_prompt_with_unknown_characters_is_a_usage_error(gpt_artifact):
    result = CliRunner().invoke(cli, ["generate", str(gpt_artifact), "--prompt", "héllo€"])
    assert result.exit_code == 2
    assert "characters the model never saw" in result.output


@pytest.mark.parametrize("name", ["vae", "gan"])
def test_latent_models_write_a_png_grid(name, tmp_path, tiny_zoo):
    export_model(name, tmp_path / f"{name}.onnx")
    grid = tmp_path / "grid.png"
    result = CliRunner().invoke(cli, ["generate", str(tmp_path / f"{name}.onnx"), "-n", "6", "-o", str(grid)])
    assert result.exit_code == 0, result.output
    width, height, color, pixels = read_png(grid)
    # 6 images -> 3 columns x 2 rows of 8x8 digits scaled 8x, 1-pixel borders.
    assert (width, height, color) == (3 * 65 + 1, 2 * 65 + 1, 0)
    assert pixels[0, 0, 0] == 255 and pixels[1:65, 1:65].std() > 0  # a white border around varied pixels


def test_diffusion_samples_by_calling_the_compiled_denoiser_once_per_step(tmp_path, tiny_zoo, monkeypatch):
    export_model("diffusion", tmp_path / "d.onnx")
    # No engine choice: which engine measures faster depends on the CPU, and this test is about
    # the compiled denoiser, so it asks for TVM by name.
    compile_model(tmp_path / "d.onnx", tmp_path / "d.tvm", choose_engine=False)
    sampler = Sampler(tmp_path / "d.tvm", backend="tvm")
    assert sampler.session.backend == "tvm"
    calls = []
    run = sampler.session.run
    monkeypatch.setattr(sampler.session, "run", lambda feeds: calls.append(feeds["t"]) or run(feeds))
    images = sampler.images(count=4, seed=1)
    steps = models.get("diffusion").generation["steps"]
    assert [int(t[0]) for t in calls] == list(reversed(range(steps)))
    assert all(t.shape == (4,) for t in calls)  # the batch of samples goes through in one call
    assert images.shape == (4, 1, 8, 8) and 0 <= images.min() and images.max() <= 1
    assert np.array_equal(images, Sampler(tmp_path / "d.tvm", backend="tvm").images(count=4, seed=1))


def test_generate_refuses_a_model_that_is_not_generative(lenet_onnx, tmp_path):
    result = CliRunner().invoke(cli, ["generate", str(lenet_onnx), "-o", str(tmp_path / "x.png")])
    assert result.exit_code == 2
    assert "not a generative model export" in result.output
    assert not (tmp_path / "x.png").exists()


def test_text_model_refuses_an_image_output(gpt_artifact, tmp_path):
    result = CliRunner().invoke(cli, ["generate", str(gpt_artifact), "-o", str(tmp_path / "x.png")])
    assert result.exit_code == 2 and "generates text" in result.output


def test_png_grid_of_rgb_images(tmp_path):
    images = np.zeros((2, 3, 2, 2), np.float32)
    images[0, 0] = 1.0  # red
    width, height, color, pixels = read_png(write_png_grid(images, tmp_path / "rgb.png", scale=1))
    assert (width, height, color) == (2 * 3 + 1, 1 * 3 + 1, 2)
    assert tuple(pixels[1, 1]) == (255, 0, 0) and tuple(pixels[1, 4]) == (0, 0, 0)


@pytest.fixture(scope="module")
def gpt_decode_artifact(gpt_artifact):
    """The KV-cache decode step `dltk export` wrote beside gpt.onnx, compiled beside gpt.tvm."""
    directory = gpt_artifact.parent
    assert (directory / "gpt.decode.onnx").is_file()
    compile_model(directory / "gpt.decode.onnx", directory / "gpt.decode.tvm", choose_engine=False)
    return directory / "gpt.decode.tvm"


@pytest.mark.parametrize("backend", ["ort", "tvm"])
def test_cached_generation_matches_uncached_token_for_token(gpt_decode_artifact, backend):
    artifact = gpt_decode_artifact.parent / "gpt.tvm"
    context = models.get("gpt").generation["block_size"]
    cached = Sampler(artifact, backend=backend)
    assert cached.decoder is not None and cached.decoder.session.backend == backend
    uncached = Sampler(artifact, backend=backend, cache=False)
    assert uncached.decoder is None
    # Greedy, through the end of the context (the cache) and past it (the full graph again), 3 at once.
    length = 2 * context
    texts = cached.text("Love", length=length, temperature=0, count=3)
    assert texts == uncached.text("Love", length=length, temperature=0, count=3)
    # Sampled with a seed: the same draws, hence the same text, when the logits agree.
    assert cached.text("Sh", length=context, top_k=5, seed=3) == uncached.text("Sh", length=context, top_k=5, seed=3)


def test_cached_step_counts_one_position_per_token(gpt_decode_artifact, monkeypatch):
    """Each new token is one call of the decode step: the prompt once per character, then one per token."""
    sampler = Sampler(gpt_decode_artifact.parent / "gpt.tvm", backend="tvm")
    calls = {"decode": 0, "full": 0}
    for session, key in ((sampler.decoder.session, "decode"), (sampler.session, "full")):
        run = session.run
        monkeypatch.setattr(session, "run", lambda feeds, run=run, key=key: calls.__setitem__(key, calls[key] + 1) or run(feeds))
    sampler.text("Love", length=6, temperature=0)
    assert calls == {"decode": len("Love") + 6 - 1, "full": 0}


def test_no_cache_flag_and_onnx_file_use_the_decode_step_beside_it(gpt_decode_artifact):
    onnx_path = gpt_decode_artifact.parent / "gpt.onnx"
    assert Sampler(onnx_path).decoder.session.backend == "ort"  # gpt.decode.onnx, found beside gpt.onnx
    args = ["generate", str(onnx_path), "--prompt", "Shall I", "--length", "8", "--temperature", "0"]
    with_cache, without = CliRunner().invoke(cli, args), CliRunner().invoke(cli, [*args, "--no-cache"])
    assert with_cache.exit_code == 0 and without.exit_code == 0, with_cache.output + without.output
    assert with_cache.output == without.output


def test_gpt_artifact_takes_any_sequence_length_up_to_the_context(gpt_artifact):
    """The GPT is exported with a dynamic sequence; its one artifact was verified at several lengths."""
    import onnxruntime as ort

    context = models.get("gpt").generation["block_size"]
    manifest = json.loads((gpt_artifact / "manifest.json").read_text())
    assert manifest["inputs"][0]["shape"] == ["batch", "sequence"]
    assert manifest["verification"]["status"] == "passed" and len(manifest["verification"]["symbolic_sizes"]) >= 3
    compiled = runtime.load(gpt_artifact, backend="tvm")
    reference = ort.InferenceSession(str(gpt_artifact.parent / "gpt.onnx"))
    for length in (1, 7, context):
        tokens = np.random.default_rng(length).integers(0, 20, (2, length)).astype(np.int64)
        got = compiled.run({"tokens": tokens})["logits"]
        assert got.shape == (2, length, len(models.get("gpt").generation["vocabulary"]))
        np.testing.assert_allclose(got, reference.run(None, {"tokens": tokens})[0], atol=1e-4, rtol=1e-3)
