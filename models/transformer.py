"""Transformer encoder classifier: multi-head self-attention, layer norm, GELU MLP, residuals.

The task is generated: a sequence of 16 tokens from a vocabulary of 10, labelled with the token
that occurs most often. Attention gathers the counts across positions; mean pooling reads them.
The blocks here (pre-norm, as in GPT-2) are shared with `models/gpt.py`, which masks them causally.
"""

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.data import Split
from models.registry import ModelSpec
from models.train import Recipe

DATA_SEED = 2


@dataclass(frozen=True)
class TransformerConfig:
    vocab_size: int = 10
    block_size: int = 16  # sequence length trained on; the export takes any length up to it
    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 64
    dropout: float = 0.1
    n_classes: int = 10


class SelfAttention(nn.Module):
    def __init__(self, n_embd: int, n_head: int, block_size: int, dropout: float, causal: bool):
        super().__init__()
        assert n_embd % n_head == 0
        self.n_head, self.causal = n_head, causal
        self.qkv = nn.Linear(n_embd, 3 * n_embd)
        self.proj = nn.Linear(n_embd, n_embd)
        self.dropout = nn.Dropout(dropout)
        if causal:
            self.register_buffer("mask", torch.tril(torch.ones(block_size, block_size, dtype=torch.bool)), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        # (B, T, C) -> (B, heads, T, C / heads)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        scores = q @ k.transpose(-2, -1) / math.sqrt(k.size(-1))  # (B, heads, T, T)
        if self.causal:
            scores = scores.masked_fill(~self.mask[:T, :T], float("-inf"))
        attention = self.dropout(F.softmax(scores, dim=-1))
        y = (attention @ v).transpose(1, 2).reshape(B, T, C)  # heads side by side again
        return self.dropout(self.proj(y))


class Block(nn.Module):
    def __init__(self, n_embd: int, n_head: int, block_size: int, dropout: float, causal: bool):
        super().__init__()
        self.ln1 = nn.LayerNorm(n_embd)
        self.attn = SelfAttention(n_embd, n_head, block_size, dropout, causal)
        self.ln2 = nn.LayerNorm(n_embd)
        self.mlp = nn.Sequential(
            nn.Linear(n_embd, 4 * n_embd), nn.GELU(), nn.Linear(4 * n_embd, n_embd), nn.Dropout(dropout)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, C) -> (B, T, C)
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class TransformerClassifier(nn.Module):
    def __init__(self, config: TransformerConfig = TransformerConfig()):
        super().__init__()
        c = config
        self.token = nn.Embedding(c.vocab_size, c.n_embd)
        self.position = nn.Embedding(c.block_size, c.n_embd)
        self.dropout = nn.Dropout(c.dropout)
        self.blocks = nn.Sequential(*[Block(c.n_embd, c.n_head, c.block_size, c.dropout, causal=False) for _ in range(c.n_layer)])
        self.ln = nn.LayerNorm(c.n_embd)
        self.head = nn.Linear(c.n_embd, c.n_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:  # (B, T) int64 -> (B, n_classes) logits
        positions = torch.arange(tokens.size(1), device=tokens.device)
        x = self.dropout(self.token(tokens) + self.position(positions))  # (B, T, C)
        x = self.ln(self.blocks(x))
        return self.head(x.mean(dim=1))  # mean over positions: (B, C) -> (B, n_classes)


@functools.lru_cache(maxsize=None)
def most_frequent_token(vocab_size: int, length: int, n: int = 6000) -> Split:
    """Uniform random sequences whose most frequent token is unique; the label is that token."""
    g = torch.Generator().manual_seed(DATA_SEED)
    x = torch.randint(0, vocab_size, (3 * n, length), generator=g)
    counts = F.one_hot(x, vocab_size).sum(dim=1)  # (N, vocab)
    top2 = counts.topk(2, dim=1).values
    keep = top2[:, 0] > top2[:, 1]
    x, y = x[keep][:n], counts[keep][:n].argmax(dim=1)
    cut = int(0.8 * len(x))
    return Split(x[:cut], y[:cut], x[cut:], y[cut:])


def spec(config: TransformerConfig = TransformerConfig()) -> ModelSpec:
    return ModelSpec(
        name="transformer",
        family="Transformer",
        teaches="multi-head self-attention, layer norm, GELU, residual blocks, positional embeddings",
        dataset=f"generated: most frequent token of {config.block_size} tokens (vocabulary {config.vocab_size})",
        build=lambda: TransformerClassifier(config),
        data=lambda: most_frequent_token(config.vocab_size, config.block_size),
        recipe=Recipe(epochs=6, batch_size=64, lr=2e-3, weight_decay=1e-2),
        input_names=("tokens",),
        sequence_dims=((1,),),
        max_sequence=config.block_size,
        tiny=lambda: spec(TransformerConfig(n_layer=1, n_head=2, n_embd=16, block_size=8)),
    )


SPEC = spec()
