"""nanoGPT-style decoder-only character model: causal self-attention blocks, next-character loss.

The corpus is a selection of Shakespeare's sonnets and speeches (public domain) kept in
`models/corpus/`. The first 90% trains, the last 10% is held out for perplexity. The export takes
any batch and any sequence of up to `block_size` characters; `dltk generate` pads a shorter prompt
to the context (the length compiled artifacts are tuned for) and reads the logits at the prompt's
last position, which causal attention keeps independent of the padding. `DecodeStep` is the
one-token step over a key/value cache that generation uses while the text fits the context.
"""

import functools
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from models.data import Split
from models.registry import ModelSpec
from models.train import Recipe
from models.transformer import Block

CORPUS = Path(__file__).parent / "corpus" / "shakespeare.txt"
HELD_OUT = 0.1


@functools.lru_cache(maxsize=None)
def corpus() -> str:
    return CORPUS.read_text(encoding="utf-8")


@functools.lru_cache(maxsize=None)
def vocabulary() -> str:
    return "".join(sorted(set(corpus())))


def encode(text: str) -> torch.Tensor:
    index = {c: i for i, c in enumerate(vocabulary())}
    return torch.tensor([index[c] for c in text], dtype=torch.long)


@dataclass(frozen=True)
class GPTConfig:
    block_size: int = 64  # context length: the longest sequence the export takes
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.2


class GPT(nn.Module):
    def __init__(self, config: GPTConfig = GPTConfig()):
        super().__init__()
        c, vocab = config, len(vocabulary())
        self.token = nn.Embedding(vocab, c.n_embd)
        self.position = nn.Embedding(c.block_size, c.n_embd)
        self.dropout = nn.Dropout(c.dropout)
        self.blocks = nn.Sequential(*[Block(c.n_embd, c.n_head, c.block_size, c.dropout, causal=True) for _ in range(c.n_layer)])
        self.ln = nn.LayerNorm(c.n_embd)
        self.head = nn.Linear(c.n_embd, vocab, bias=False)
        self.head.weight = self.token.weight  # weight tying, as in GPT-2
        # GPT-2's init: every weight N(0, 0.02), biases 0; the two projections that add into the
        # residual stream in each block (attention's output, the MLP's second layer) get
        # 0.02 / sqrt(2 * n_layer), so the stream's variance does not grow with depth.
        self.apply(_gpt2_init)
        for block in self.blocks:
            for projection in (block.attn.proj, block.mlp[2]):
                nn.init.normal_(projection.weight, std=0.02 / math.sqrt(2 * c.n_layer))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:  # (B, T) int64 -> (B, T, vocab) logits
        positions = torch.arange(tokens.size(1), device=tokens.device)
        x = self.dropout(self.token(tokens) + self.position(positions))  # (B, T, C)
        return self.head(self.ln(self.blocks(x)))


class DecodeStep(nn.Module):
    """One GPT step over a key/value cache: the next token's logits from one new token.

    The cache has a fixed size, the context (`block_size`) positions, so every shape but the
    batch is static: the step writes the new key and value at `position` and attends to
    positions 0..position only. Each new token costs one position of the projections and MLPs
    (attention reads the cache), against a whole context for the full graph.
        token (B, 1) int64, position (1,) int64, keys and values (layers, B, heads, block_size, head_dim)
        -> logits (B, vocab), keys and values with `position` written
    It shares the GPT's weights; at temperature 0 it picks what the full graph picks.
    """

    def __init__(self, gpt: GPT):
        super().__init__()
        self.gpt = gpt
        self.block_size = gpt.position.num_embeddings

    def cache_shape(self, batch: int) -> tuple[int, ...]:
        attention = self.gpt.blocks[0].attn
        heads = attention.n_head
        return (len(self.gpt.blocks), batch, heads, self.block_size, attention.proj.in_features // heads)

    def forward(self, token, position, keys, values):
        gpt = self.gpt
        x = gpt.token(token) + gpt.position(position)  # (B, 1, C)
        slots = torch.arange(self.block_size, device=token.device)
        write = (slots == position)[:, None]  # (T, 1): where the new key and value go
        visible = slots <= position  # (T,): causal attention over the cache
        new_keys, new_values = [], []
        for layer, block in enumerate(gpt.blocks):
            attention = block.attn
            B, _, C = x.shape
            q, k, v = attention.qkv(block.ln1(x)).split(C, dim=2)
            q, k, v = (t.view(B, 1, attention.n_head, C // attention.n_head).transpose(1, 2) for t in (q, k, v))  # (B, H, 1, D)
            layer_keys = torch.where(write, k, keys[layer])  # (B, H, T, D)
            layer_values = torch.where(write, v, values[layer])
            scores = (q @ layer_keys.transpose(-2, -1)) / math.sqrt(k.size(-1))  # (B, H, 1, T)
            scores = scores.masked_fill(~visible, float("-inf"))
            y = (F.softmax(scores, dim=-1) @ layer_values).transpose(1, 2).reshape(B, 1, C)
            x = x + attention.proj(y)
            x = x + block.mlp(block.ln2(x))
            new_keys.append(layer_keys)
            new_values.append(layer_values)
        return gpt.head(gpt.ln(x))[:, 0], torch.stack(new_keys), torch.stack(new_values)


def _gpt2_init(module: nn.Module) -> None:
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


class LanguageModel:
    """Next-token cross-entropy; held-out perplexity, exp(mean cross-entropy per character)."""

    metric = "perplexity"

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = model(x)
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))

    @torch.no_grad()
    def evaluate(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
        model.eval()
        return math.exp(self.loss(model, x, y).item())


@functools.lru_cache(maxsize=None)
def windows(block_size: int) -> Split:
    """(x, y) pairs of block_size characters, y shifted by one; training windows overlap by half."""
    tokens = encode(corpus())
    cut = int(len(tokens) * (1 - HELD_OUT))

    def cut_windows(part: torch.Tensor, stride: int):
        starts = torch.arange(0, len(part) - block_size - 1, stride)
        x = torch.stack([part[s : s + block_size] for s in starts.tolist()])
        y = torch.stack([part[s + 1 : s + block_size + 1] for s in starts.tolist()])
        return x, y

    train_x, train_y = cut_windows(tokens[:cut], max(1, block_size // 2))
    test_x, test_y = cut_windows(tokens[cut:], block_size)
    return Split(train_x, train_y, test_x, test_y)


def spec(config: GPTConfig = GPTConfig()) -> ModelSpec:
    return ModelSpec(
        name="gpt",
        family="Transformer (decoder-only)",
        teaches="causal self-attention, autoregressive language modelling, sampling with temperature and top-k",
        dataset=f"Shakespeare's sonnets and speeches, {len(corpus()) // 1000} KB of characters (in the repo)",
        build=lambda: GPT(config),
        data=lambda: windows(config.block_size),
        recipe=Recipe(epochs=12, batch_size=32, lr=3e-3, weight_decay=0.1),
        task=LanguageModel(),
        input_names=("tokens",),
        generation={"kind": "text", "vocabulary": vocabulary(), "block_size": config.block_size},
        sequence_dims=((1,),),
        max_sequence=config.block_size,
        tiny=lambda: spec(GPTConfig(block_size=16, n_layer=1, n_head=2, n_embd=16)),
        decode_step=DecodeStep,
    )


SPEC = spec()
