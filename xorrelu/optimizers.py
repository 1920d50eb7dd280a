"""The update rules by name (conf/optimizer/<name>.yaml), each in its two forms side by side:
`build` makes the torch.optim optimizer the autograd engine uses, and `update` is the same rule
written out in place, in torch.optim's order of operations, for the fused engine's compiled
step. `c` is the optimizer's config; an update's `state` holds its `slots` buffers per
parameter, and `t` counts the updates so far, this one included."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from xorrelu.registry import Registry


@dataclass(frozen=True)
class Optimizer:
    name: str
    build: Callable[..., torch.optim.Optimizer]  # (params, c) -> torch.optim optimizer
    update: Callable[..., None]  # (c, p, g, state, *, t): p -= the step, in place
    slots: int  # state buffers per parameter


def _sgd(c, p, g, state, *, t) -> None:
    p.sub_(c.lr * g)


def _momentum(c, p, g, state, *, t) -> None:
    (buf,) = state  # torch.optim.SGD starts the buffer at the first gradient
    buf.copy_(torch.where(t == 1, g, buf * c.momentum + g))
    p.sub_(c.lr * (g + c.momentum * buf if c.nesterov else buf))


def _adam(c, p, g, state, *, t) -> None:
    m, v = state
    m.lerp_(g, 1 - c.beta1)
    v.mul_(c.beta2).addcmul_(g, g, value=1 - c.beta2)
    step_size = c.lr / (1 - c.beta1**t)
    denom = v.sqrt() / (1 - c.beta2**t).sqrt() + c.eps
    p.sub_(step_size * m / denom)


def _rmsprop(c, p, g, state, *, t) -> None:
    (v,) = state
    v.mul_(c.alpha).addcmul_(g, g, value=1 - c.alpha)
    p.sub_(c.lr * g / (v.sqrt() + c.eps))


OPTIMIZERS: Registry[Optimizer] = Registry(
    "optimizer",
    [
        Optimizer("sgd", lambda params, c: torch.optim.SGD(params, lr=c.lr), _sgd, 0),
        Optimizer(
            "momentum",
            lambda params, c: torch.optim.SGD(
                params, lr=c.lr, momentum=c.momentum, nesterov=c.nesterov
            ),
            _momentum,
            1,
        ),
        Optimizer(
            "adam",
            lambda params, c: torch.optim.Adam(
                params, lr=c.lr, betas=(c.beta1, c.beta2), eps=c.eps
            ),
            _adam,
            2,
        ),
        Optimizer(
            "rmsprop",
            lambda params, c: torch.optim.RMSprop(params, lr=c.lr, alpha=c.alpha, eps=c.eps),
            _rmsprop,
            1,
        ),
    ],
)
