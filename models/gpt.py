"""nanoGPT-style decoder-only character model: causal self-attention blocks, next-character loss.

The corpus is a selection of Shakespeare's sonnets and speeches (public domain) kept in
`models/corpus/`. The first 90% trains, the last 10% is held out for perplexity. The export has
a fixed context of `block_size` characters (the batch stays dynamic): `dltk generate` pads a
shorter prompt on the right and reads the logits at the prompt's last position, which causal
attention keeps independent of the padding.
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
    block_size: int = 64  # context length, fixed in the export
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
        tiny=lambda: spec(GPTConfig(block_size=16, n_layer=1, n_head=2, n_embd=16)),
    )


SPEC = spec()
