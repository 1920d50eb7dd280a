"""The engines that run a training step: both measure the named metrics of xorrelu.metrics at
the current parameters, then apply one update.

- autograd (xorrelu.engines.autograd): the nn.Sequential and torch.optim as they are; the
  reference every fast path is held to.
- fused (xorrelu.engines.fused): forward, backward, metrics and update written out by hand in
  one function that torch.compile turns into a few vectorized loops.

`make_engine` chooses: compile=auto compiles when the run is long enough for ~15 s of
compilation to pay off, and engine=auto takes the fused engine exactly then (uncompiled,
autograd is as fast). A resumed run keeps the engine of its checkpoint, so its numbers go on
exactly.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

from xorrelu.activations import ACTIVATIONS
from xorrelu.config import EngineName

# compile=auto compiles from here: ~15 s of compiling pays off (benchmarks/results.md)
COMPILE_AUTO_MODEL_STEPS = 2_000_000


class Engine(Protocol):
    name: str  # "autograd" or "fused", as summary.json and checkpoint.pt name it
    compiled: bool

    def step(self, update: bool = True, log: bool = True) -> dict[str, torch.Tensor]:
        """The metrics at the current parameters (cost and accuracy only unless `log`), then
        one update if `update`."""

    def write_back(self) -> None:
        """Make the nn.Sequential hold the current parameters (for saving and export)."""

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


def fused_runs(cfg) -> bool:
    """The fused engine runs elementwise activations without learned parameters (not prelu,
    not maxout; `Activation.fused`), with every optimizer (each writes out its update)."""
    return ACTIVATIONS.get(cfg.activation.name).fused


def make_engine(
    cfg, model: nn.Sequential, data: tuple[torch.Tensor, torch.Tensor], checkpoint: dict | None
) -> Engine:
    """The engine cfg asks for, or the one `checkpoint` was written by."""
    from xorrelu.engines.autograd import AutogradEngine
    from xorrelu.engines.fused import FusedEngine

    if checkpoint:
        engine, compile_ = EngineName(checkpoint["engine"]), checkpoint["compiled"]
    else:
        engine, compile_ = EngineName(cfg.engine), compile_wanted(cfg)
    if engine is EngineName.auto:
        engine = EngineName.fused if compile_ and fused_runs(cfg) else EngineName.autograd
    if engine is EngineName.autograd:
        return AutogradEngine(model, data, cfg)
    return FusedEngine(model, data, cfg, compile=compile_)


def compile_wanted(cfg) -> bool:
    if cfg.compile == "auto":
        return cfg.steps * cfg.replicas >= COMPILE_AUTO_MODEL_STEPS
    return bool(cfg.compile)
