"""The network: an nn.Sequential of batched Linear layers with the activation between them.

One model holds `replicas` independent nets. A BatchedLinear keeps weight [replicas, in, out]
and bias [replicas, 1, out] and multiplies with torch.baddbmm, so replica r only ever sees its
own slice. The model returns logits [replicas, points, 1]; the hypothesis is their sigmoid.
It takes the first layer's inputs (the dataset's features, xorrelu.data.featurize); a replica
exported with its features (export_replica) takes the points as drawn.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from omegaconf import OmegaConf
from torch import nn

from xorrelu.activations import ACTIVATIONS, BatchedPReLU
from xorrelu.data import dataset_shape, featurize
from xorrelu.init import init_weights


class BatchedLinear(nn.Module):
    """`replicas` independent Linear layers: out[r] = x[r] @ weight[r] + bias[r]."""

    def __init__(self, replicas: int, in_features: int, out_features: int):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(replicas, in_features, out_features))
        self.bias = nn.Parameter(torch.zeros(replicas, 1, out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [R, N, in] -> [R, N, out]
        return torch.baddbmm(self.bias, x, self.weight)

    def extra_repr(self) -> str:
        return (
            f"replicas={self.weight.shape[0]}, in_features={self.in_features}, "
            f"out_features={self.out_features}"
        )


def build_model(cfg, in_features: int) -> nn.Sequential:
    """depth hidden layers of `width` units, then one output logit; initialized per replica."""
    activation = ACTIVATIONS.get(cfg.activation.name)
    pieces = activation.pieces(cfg.activation)
    sizes = [in_features] + [cfg.width] * cfg.depth + [1]
    layers: list[nn.Module] = []
    for i in range(cfg.depth + 1):
        hidden = i < cfg.depth
        layers.append(
            BatchedLinear(cfg.replicas, sizes[i], sizes[i + 1] * (pieces if hidden else 1))
        )
        if hidden:
            layers.append(activation.build(cfg.activation, cfg.replicas, cfg.width))
    model = nn.Sequential(*layers)
    initialize(model, cfg.init, seeds=range(cfg.seed, cfg.seed + cfg.replicas))
    return model


def linear_layers(model: nn.Sequential) -> list[BatchedLinear]:
    return [m for m in model if isinstance(m, BatchedLinear)]


@torch.no_grad()
def initialize(model: nn.Sequential, init_cfg, seeds) -> None:
    """Replica r draws all its weights from one generator seeded seeds[r] (see xorrelu.init)."""
    layers = linear_layers(model)
    weights = init_weights(
        init_cfg, [(layer.in_features, layer.out_features) for layer in layers], seeds
    )
    for layer, weight in zip(layers, weights, strict=True):
        layer.weight.copy_(weight)
        layer.bias.fill_(init_cfg.bias)


class Features(nn.Module):
    """The first layer's inputs [n, len(names)] from 2-D points [n, 2] (xorrelu.data.featurize):
    the head of an exported replica of a job with dataset.features."""

    def __init__(self, names):
        super().__init__()
        self.names = list(names)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        return featurize(points, self.names)

    def extra_repr(self) -> str:
        return ", ".join(self.names)


@torch.no_grad()
def export_replica(model: nn.Sequential, r: int, features=None) -> nn.Sequential:
    """Replica r as a plain nn.Sequential of nn.Linear (and nn.PReLU), on the CPU,
    in the same dtype. With `features` (a job's dataset.features; by default the `features`
    load_model gives the model) a Features module goes first, so that it takes the points as
    drawn, [n, 2]."""
    features = features if features is not None else getattr(model, "features", None)
    layers: list[nn.Module] = [] if features is None else [Features(features)]
    for m in model:
        if isinstance(m, BatchedLinear):
            plain = nn.Linear(m.in_features, m.out_features, dtype=m.weight.dtype)
            plain.weight.copy_(m.weight[r].T)
            plain.bias.copy_(m.bias[r, 0])
        elif isinstance(m, BatchedPReLU):
            plain = nn.PReLU(m.weight.shape[2], dtype=m.weight.dtype)
            plain.weight.copy_(m.weight[r, 0])
        else:
            plain = copy.deepcopy(m)
        layers.append(plain.cpu())
    return nn.Sequential(*layers)


def load_model(job_dir: str | Path, which: str = "final") -> nn.Sequential:
    """The batched model of a finished job, from its config (summary.json's, else
    .hydra/config.yaml's) and weights.pt, all read within bounds (xorrelu.jobdir): a damaged or
    hostile file raises JobDirError. It takes the features of the points (its `features`: the
    job's dataset.features, None for the raw points), and export_replica carries them."""
    from xorrelu.jobdir import load_weights, read_config

    job_dir = Path(job_dir)
    cfg = OmegaConf.create(read_config(job_dir)[0])
    state = load_weights(job_dir)
    model = build_model(cfg, dataset_shape(cfg.dataset)[1])
    model.load_state_dict(state[which])
    features = cfg.dataset.get("features")
    model.features = list(features) if features is not None else None
    return model
