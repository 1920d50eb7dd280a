"""The weight penalties by name (conf/regularization/<name>.yaml), the Playground's: L1 is
rate x sum |w|, L2 rate x 1/2 sum w^2, over every Linear layer's weights (never the biases), one
penalty per replica, added to its data cost before the gradient. Each record holds the penalty
term and its derivative elementwise, so that both engines use one definition in their own
layouts: the autograd engine backpropagates rate x the summed `term`, the fused engine adds
rate x `slope` to its weight gradients."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from xorrelu.registry import Registry


@dataclass(frozen=True)
class Regularizer:
    name: str
    term: Callable[[torch.Tensor], torch.Tensor] | None  # w -> its part of the penalty / rate
    slope: Callable[[torch.Tensor], torch.Tensor] | None  # w -> d term / d w (None: no penalty)


def _half_square(w: torch.Tensor) -> torch.Tensor:
    return 0.5 * w.square()


def _identity(w: torch.Tensor) -> torch.Tensor:
    return w


REGULARIZERS: Registry[Regularizer] = Registry(
    "regularization",
    [
        Regularizer("none", None, None),
        # sign(0) = 0, as autograd's derivative of abs
        Regularizer("l1", torch.abs, torch.sign),
        Regularizer("l2", _half_square, _identity),
    ],
)


def regularizer(cfg) -> tuple[Regularizer, float] | None:
    """(the record, its rate) of cfg.regularization; None for none (no penalty, no column)."""
    group = cfg.get("regularization")
    if group is None or group.name == "none":
        return None
    return REGULARIZERS.get(group.name), float(group.rate)


def regularized(cfg) -> bool:
    """Whether the run adds a penalty (and metrics.csv has a penalty column)."""
    return regularizer(cfg) is not None
