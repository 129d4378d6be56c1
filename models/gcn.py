"""Graph convolutional network (Kipf & Welling 2017) on Zachary's karate club.

A layer is H' = relu(Â H W) with Â = D^-1/2 (A + I) D^-1/2: each node averages its neighbours'
features (and its own) and mixes them with shared weights. The task is the club split: which of
the two factions each of the 34 members joined; a third of the members are labelled.

The exported graph takes `features` (N, 34) and the normalized `adjacency` Â (N, N); its dynamic
"batch" is the node count N, so one compiled artifact serves a graph of any size (the features
are one-hot member ids, so their width stays 34).
"""

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.data import SPLIT_SEED, Split
from models.registry import ModelSpec
from models.train import Recipe

N_MEMBERS = 34


@dataclass(frozen=True)
class GCNConfig:
    n_in: int = N_MEMBERS
    hidden: int = 16
    n_classes: int = 2
    dropout: float = 0.5


class GraphConvolution(nn.Module):
    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.linear = nn.Linear(n_in, n_out)

    def forward(self, h: torch.Tensor, adjacency: torch.Tensor) -> torch.Tensor:  # (N, F), (N, N) -> (N, n_out)
        return adjacency @ self.linear(h)


class GCN(nn.Module):
    def __init__(self, config: GCNConfig = GCNConfig()):
        super().__init__()
        self.conv1 = GraphConvolution(config.n_in, config.hidden)
        self.conv2 = GraphConvolution(config.hidden, config.n_classes)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, features: torch.Tensor, adjacency: torch.Tensor) -> torch.Tensor:  # -> (N, 2) logits
        h = torch.relu(self.conv1(self.dropout(features), adjacency))  # (N, hidden)
        return self.conv2(self.dropout(h), adjacency)


def normalize(adjacency: torch.Tensor) -> torch.Tensor:
    """Â = D^-1/2 (A + I) D^-1/2."""
    a = adjacency + torch.eye(len(adjacency))
    d = a.sum(dim=1).rsqrt()
    return d[:, None] * a * d[None, :]


@functools.lru_cache(maxsize=None)
def karate_club() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One-hot features (34, 34), adjacency A (34, 34), faction labels (34,) (0: Mr. Hi, 1: Officer)."""
    import networkx as nx

    graph = nx.karate_club_graph()
    adjacency = torch.tensor(nx.to_numpy_array(graph, nodelist=range(N_MEMBERS), weight=None), dtype=torch.float32)
    labels = torch.tensor([graph.nodes[i]["club"] != "Mr. Hi" for i in range(N_MEMBERS)], dtype=torch.long)
    return torch.eye(N_MEMBERS), adjacency, labels


class NodeClassification:
    """Cross-entropy on the labelled nodes of one whole graph; the split's x are node indices."""

    metric = "accuracy"

    def loss(self, model: nn.Module, nodes: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        features, adjacency, _ = karate_club()
        return F.cross_entropy(model(features, normalize(adjacency))[nodes], y)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, nodes: torch.Tensor, y: torch.Tensor) -> float:
        model.eval()
        features, adjacency, _ = karate_club()
        return (model(features, normalize(adjacency))[nodes].argmax(1) == y).float().mean().item()


@functools.lru_cache(maxsize=None)
def labelled_members() -> Split:
    """A third of the members labelled (stratified), the rest held out."""
    from sklearn.model_selection import train_test_split

    _, _, labels = karate_club()
    train, test = train_test_split(range(N_MEMBERS), train_size=12, random_state=SPLIT_SEED, stratify=labels.numpy())
    train, test = torch.tensor(train), torch.tensor(test)
    return Split(train, labels[train], test, labels[test])


def graph_inputs(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A graph of n nodes: the club's first n members, or copies of the club side by side when n > 34."""
    features, adjacency, _ = karate_club()
    copies = -(-n // N_MEMBERS)
    union = torch.block_diag(*[adjacency] * copies)[:n, :n]
    return features.repeat(copies, 1)[:n], normalize(union)


SPEC = ModelSpec(
    name="gcn",
    family="graph neural network",
    teaches="graph convolution: message passing with a normalized adjacency, semi-supervised node labels",
    dataset="Zachary's karate club (networkx), 12 of 34 members labelled",
    build=GCN,
    data=labelled_members,
    recipe=Recipe(epochs=100, batch_size=64, lr=1e-2, weight_decay=5e-4, warmup_epochs=5),
    task=NodeClassification(),
    input_names=("features", "adjacency"),
    inputs=graph_inputs,
    batch_dims=((0,), (0, 1)),  # the node count
)
