"""Hidden-layer activations by name, and the derivative rule behind `stuck_frac`.

Every module works on a batch of replicas, shape [replicas, points, units]. A unit counts as
*stuck* at a step when |f'(z)| < 1% of the activation's peak slope at every data point: a dead
ReLU (z <= 0 everywhere), a saturated sigmoid or tanh. Two rules need a word:
- prelu: f'(z) is 1 for z > 0 and the unit's learned slope a otherwise, so a PReLU unit is stuck
  only when z <= 0 at every point and |a| < 0.01;
- maxout: a unit's slope is 1 along its winning piece at every point, so a maxout unit is never
  stuck by this rule (its stuck_frac is always 0);
- linear (the identity, a control): its slope is 1 everywhere, so it is never stuck either.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from xorrelu.registry import Registry


class BatchedPReLU(nn.Module):
    """PReLU with its own learned slope per replica and unit: weight [replicas, 1, width]."""

    def __init__(self, replicas: int, width: int, slope: float):
        super().__init__()
        self.weight = nn.Parameter(torch.full((replicas, 1, width), float(slope)))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.where(z > 0, z, self.weight * z)  # as nn.PReLU, derivative at 0 included

    def extra_repr(self) -> str:
        return f"replicas={self.weight.shape[0]}, width={self.weight.shape[2]}"


class Maxout(nn.Module):
    """Each unit outputs the largest of `pieces` consecutive inputs:
    [..., width*pieces] -> [..., width]."""

    def __init__(self, pieces: int):
        super().__init__()
        self.pieces = pieces

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z.unflatten(-1, (-1, self.pieces)).amax(-1)

    def extra_repr(self) -> str:
        return f"pieces={self.pieces}"


@dataclass(frozen=True)
class Activation:
    """One activation: its module, its derivative f'(z) written out beside it, and the scale
    that *stuck* is measured against. `c` is the activation's config (conf/activation/)."""

    name: str
    build: Callable[..., nn.Module]  # (c, replicas, width) -> the module between two layers
    slope: Callable[..., torch.Tensor]  # (c, z, prelu slopes or None) -> f'(z) per unit
    peak_slope: Callable[..., float]  # (c) -> max |f'(z)| over z
    pieces: Callable[..., int] = lambda c: 1  # inputs per unit (maxout: c.pieces)
    fused: bool = True  # elementwise with no learned parameter: the fused engine runs it


_SELU_SCALE, _SELU_ALPHA = 1.0507009873554805, 1.6732632423543772
_SQRT_2PI = math.sqrt(2 * math.pi)


def _sigmoid_slope(z):
    s = torch.sigmoid(z)
    return s * (1 - s)


def _silu_slope(z):
    s = torch.sigmoid(z)
    return s * (1 + z * (1 - s))


def _gelu_slope(z):
    return 0.5 * (1 + torch.erf(z / math.sqrt(2))) + z * torch.exp(-0.5 * z * z) / _SQRT_2PI


def _maxout_slope(z, pieces):
    """Along its winning piece a maxout unit has slope 1:
    [..., width*pieces] -> ones [..., width]."""
    return torch.ones_like(z.unflatten(-1, (-1, pieces))[..., 0])


# f'(z) is written out by hand (tests check it against autograd): metrics evaluate it on all
# layers at once every logged step, which autograd through the modules would make 3x slower.
ACTIVATIONS: Registry[Activation] = Registry(
    "activation",
    [
        Activation(
            "sigmoid",
            lambda c, r, w: nn.Sigmoid(),
            lambda c, z, a: _sigmoid_slope(z),
            lambda c: 0.25,
        ),
        Activation(
            "tanh", lambda c, r, w: nn.Tanh(), lambda c, z, a: 1 - torch.tanh(z) ** 2, lambda c: 1.0
        ),
        Activation(
            "relu", lambda c, r, w: nn.ReLU(), lambda c, z, a: (z > 0).to(z.dtype), lambda c: 1.0
        ),
        Activation(
            "leaky_relu",
            lambda c, r, w: nn.LeakyReLU(c.slope),
            lambda c, z, a: torch.where(z > 0, 1.0, c.slope).to(z.dtype),
            lambda c: 1.0,
        ),
        Activation(
            "elu",
            lambda c, r, w: nn.ELU(c.alpha),
            lambda c, z, a: torch.where(z > 0, 1.0, c.alpha * torch.exp(z)),
            lambda c: max(1.0, c.alpha),
        ),
        Activation(
            "selu",
            lambda c, r, w: nn.SELU(),
            lambda c, z, a: _SELU_SCALE * torch.where(z > 0, 1.0, _SELU_ALPHA * torch.exp(z)),
            lambda c: _SELU_SCALE * _SELU_ALPHA,
        ),
        # GELU's slope peaks at z = sqrt(2): Phi(sqrt 2) + sqrt(2) phi(sqrt 2)
        Activation(
            "gelu",
            lambda c, r, w: nn.GELU(),
            lambda c, z, a: _gelu_slope(z),
            lambda c: 0.5 * (1 + math.erf(1.0)) + math.sqrt(2) * math.exp(-1.0) / _SQRT_2PI,
        ),
        # SiLU's slope peaks at z ~ 2.3994 with value ~1.0998 (no closed form; see tests)
        Activation(
            "silu",
            lambda c, r, w: nn.SiLU(),
            lambda c, z, a: _silu_slope(z),
            lambda c: 1.0998393194,
        ),
        Activation(
            "softplus",
            lambda c, r, w: nn.Softplus(c.beta),
            lambda c, z, a: torch.sigmoid(c.beta * z),
            lambda c: 1.0,
        ),
        Activation(
            "prelu",
            lambda c, r, w: BatchedPReLU(r, w, c.init),  # activation.init: the starting slope
            lambda c, z, a: torch.where(z > 0, torch.ones_like(a), a),
            lambda c: 1.0,
            fused=False,  # a learned slope per replica and unit
        ),
        Activation(
            "maxout",
            lambda c, r, w: Maxout(c.pieces),
            lambda c, z, a: _maxout_slope(z, c.pieces),
            lambda c: 1.0,
            lambda c: c.pieces,
            fused=False,  # each unit reads `pieces` inputs
        ),
        # the control: no non-linearity, so the net is affine in its inputs at any depth and
        # cannot compute XOR; its slope is 1 everywhere, so no unit is ever stuck
        Activation(
            "linear",
            lambda c, r, w: nn.Identity(),
            lambda c, z, a: torch.ones_like(z),
            lambda c: 1.0,
        ),
    ],
)
