"""The update rules by name (conf/optimizer/<name>.yaml): each builds a torch.optim optimizer
from the parameters and the optimizer's config. The autograd engine uses them as they are; the
fused engine (xorrelu.fused) writes the same four updates out by hand."""

from __future__ import annotations

import torch

OPTIMIZERS = {
    "sgd": lambda params, c: torch.optim.SGD(params, lr=c.lr),
    "momentum": lambda params, c: torch.optim.SGD(
        params, lr=c.lr, momentum=c.momentum, nesterov=c.nesterov
    ),
    "adam": lambda params, c: torch.optim.Adam(
        params, lr=c.lr, betas=(c.beta1, c.beta2), eps=c.eps
    ),
    "rmsprop": lambda params, c: torch.optim.RMSprop(params, lr=c.lr, alpha=c.alpha, eps=c.eps),
}
