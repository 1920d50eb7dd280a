"""Weight initializers by name.

Each fills one layer's weight matrix from one replica's generator. The matrix is drawn in
PyTorch's own [out, in] layout, so torch.nn.init's fan-in / fan-out rules apply unchanged, and
returned transposed as [in, out], the lesson's tf.Variable layout that the model stores.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

# (weight [out, in], generator, init cfg) -> None, filling weight in place
INITIALIZERS: dict[str, Callable[[torch.Tensor, torch.Generator, object], object]] = {
    "lab_uniform": lambda w, g, c: nn.init.uniform_(w, -c.bound, c.bound, generator=g),
    "normal": lambda w, g, c: nn.init.normal_(w, 0.0, c.std, generator=g),
    "xavier_uniform": lambda w, g, c: nn.init.xavier_uniform_(w, generator=g),
    "xavier_normal": lambda w, g, c: nn.init.xavier_normal_(w, generator=g),
    "kaiming_uniform": lambda w, g, c: nn.init.kaiming_uniform_(w, nonlinearity="relu", generator=g),
    "kaiming_normal": lambda w, g, c: nn.init.kaiming_normal_(w, nonlinearity="relu", generator=g),
    "lecun_normal": lambda w, g, c: nn.init.kaiming_normal_(w, nonlinearity="linear", generator=g),
    "orthogonal": lambda w, g, c: nn.init.orthogonal_(w, generator=g),
    "zeros": lambda w, g, c: nn.init.zeros_(w),
}


def init_weight(cfg, fan_in: int, fan_out: int, generator: torch.Generator) -> torch.Tensor:
    """One layer's weight matrix, [fan_in, fan_out], drawn with `cfg.name`'s rule."""
    if cfg.name not in INITIALIZERS:
        raise KeyError(f"unknown init {cfg.name!r}; valid names: {', '.join(INITIALIZERS)}")
    weight = torch.empty(fan_out, fan_in)
    with torch.no_grad():
        INITIALIZERS[cfg.name](weight, generator, cfg)
    return weight.T
