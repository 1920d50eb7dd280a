"""Weight initializers by name.

Replica r draws every weight of its net from one generator seeded `seed + r`: one call fills the
replica's whole parameter vector with U(0, 1) or N(0, 1) numbers, and each layer's slice is then
scaled by the rule's bound or standard deviation for that layer's fan-in and fan-out. A replica's
draw therefore does not depend on how many replicas are trained beside it, and 100,000 replicas
initialize in about a second. (orthogonal needs a QR per matrix and goes layer by layer.)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from xorrelu.registry import Registry


@dataclass(frozen=True)
class Initializer:
    """weights = scale(c, fan_in, fan_out) * a draw from `distribution`
    ("uniform" on (-1, 1), "normal" N(0, 1), "orthogonal", "zeros"); `c` is conf/init/."""

    name: str
    distribution: str
    scale: Callable[..., float]


INITIALIZERS: Registry[Initializer] = Registry(
    "init",
    [
        Initializer("lab_uniform", "uniform", lambda c, fan_in, fan_out: c.bound),  # U(-1, 1)
        Initializer("normal", "normal", lambda c, fan_in, fan_out: c.std),
        Initializer(
            "xavier_uniform",
            "uniform",
            lambda c, fan_in, fan_out: math.sqrt(6 / (fan_in + fan_out)),
        ),
        Initializer(
            "xavier_normal", "normal", lambda c, fan_in, fan_out: math.sqrt(2 / (fan_in + fan_out))
        ),
        # gain sqrt(2), fan-in
        Initializer("kaiming_uniform", "uniform", lambda c, fan_in, fan_out: math.sqrt(6 / fan_in)),
        Initializer("kaiming_normal", "normal", lambda c, fan_in, fan_out: math.sqrt(2 / fan_in)),
        Initializer("lecun_normal", "normal", lambda c, fan_in, fan_out: math.sqrt(1 / fan_in)),
        Initializer("orthogonal", "orthogonal", lambda c, fan_in, fan_out: 1.0),  # gain 1
        Initializer("zeros", "zeros", lambda c, fan_in, fan_out: 0.0),
    ],
)


def init_weights(cfg, shapes: list[tuple[int, int]], seeds) -> list[torch.Tensor]:
    """Weight matrices [replicas, fan_in, fan_out] for layers of the given shapes, replica r
    drawn from its own generator seeded seeds[r]."""
    rule = INITIALIZERS.get(cfg.name)
    distribution, scale = rule.distribution, rule.scale
    seeds = list(seeds)
    if distribution == "orthogonal":
        return [
            torch.stack([_orthogonal(fan_in, fan_out, seed, i) for seed in seeds])
            for i, (fan_in, fan_out) in enumerate(shapes)
        ]
    sizes = [fan_in * fan_out for fan_in, fan_out in shapes]
    raw = torch.zeros(len(seeds), sum(sizes))
    if distribution != "zeros":
        for r, seed in enumerate(seeds):
            generator = torch.Generator().manual_seed(seed)
            if distribution == "uniform":
                raw[r].uniform_(-1.0, 1.0, generator=generator)
            else:
                raw[r].normal_(0.0, 1.0, generator=generator)
    return [
        block.reshape(len(seeds), fan_in, fan_out) * scale(cfg, fan_in, fan_out)
        for block, (fan_in, fan_out) in zip(raw.split(sizes, dim=1), shapes, strict=True)
    ]


def _orthogonal(fan_in: int, fan_out: int, seed: int, layer: int) -> torch.Tensor:
    """A (semi-)orthogonal [fan_in, fan_out] matrix from the replica's generator,
    offset per layer."""
    weight = torch.empty(fan_out, fan_in)
    nn.init.orthogonal_(weight, generator=torch.Generator().manual_seed(seed * 1_000_003 + layer))
    return weight.T
