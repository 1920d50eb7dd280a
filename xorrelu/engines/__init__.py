"""The engines that run a training step: both measure the named metrics of xorrelu.metrics at
the current parameters, then apply one update.

- autograd (xorrelu.engines.autograd): the nn.Sequential and torch.optim as they are; the
  reference every fast path is held to.
- fused (xorrelu.engines.fused): forward, backward, metrics and update written out by hand in
  one function that torch.compile turns into a few vectorized loops.

`make_engine` chooses: compile=auto compiles when compiling would take less than half the
time the whole run would take uncompiled (`compile_estimate`), and engine=auto takes the fused
engine exactly then (uncompiled, autograd is faster). The choice depends on the config alone,
never on a timing, so the same config always gives the same numbers. A resumed run keeps the
engine of its checkpoint, so its numbers go on exactly.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

from xorrelu.activations import ACTIVATIONS
from xorrelu.config import EngineName
from xorrelu.data import dataset_shape, test_points

# The cost model of compile=auto, fitted to runs on a 2-core AMD EPYC with torch 2.13 at 4
# points and at hundreds (benchmarks/eager_cost.py and .md, within 0.74-1.09x of each run
# there). An eager autograd step takes ~0.1 ms, plus ~0.08 ms per Linear layer, plus ~33 ns
# per replica x unit x layer (work that does not grow with the points: the update, per-unit
# ops), plus ~2.8 ns per replica x point x unit x layer (the points' arithmetic, in batched
# matrix products). At the lesson's 4 points the units dominate (depth 10, width 5: 1.2 ms at
# 100 replicas, 25 ms at 10,000); at hundreds of points the points do (depth 4, width 8,
# 1,000 replicas: 58 ms at 500 training points, 39 ms at 250 + 250 held out). The model it
# replaces (0.5 ms + 0.08 ms per layer + 20 ns per replica x point x unit x layer, fitted at 4
# points) gave 1.4-1.9x these times at 4 points and 7x at 500. Compiling the fused step takes
# ~10 s plus ~1.1 s per layer (22 s at the lesson's depth 10, 16 s at depth 4), whatever the
# number of points. A faster machine is faster at both, so their ratio, which decides, holds
# roughly.
EAGER_STEP_S, EAGER_LAYER_S, EAGER_UNIT_S, EAGER_ELEMENT_S = 0.1e-3, 0.08e-3, 33e-9, 2.8e-9
COMPILE_S, COMPILE_LAYER_S = 10.0, 1.1


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
    not maxout; `Activation.fused`), with every optimizer (each writes out its update), on the
    full batch or mini-batches."""
    return ACTIVATIONS.get(cfg.activation.name).fused


def make_engine(
    cfg,
    model: nn.Sequential,
    data: tuple[torch.Tensor, torch.Tensor],
    checkpoint: dict | None,
    test: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> Engine:
    """The engine cfg asks for, or the one `checkpoint` was written by; `test`: the held-out
    points it measures at every step."""
    from xorrelu.engines.autograd import AutogradEngine
    from xorrelu.engines.fused import FusedEngine

    if checkpoint:
        engine, compile_ = EngineName(checkpoint["engine"]), checkpoint["compiled"]
    else:
        engine, compile_ = EngineName(cfg.engine), compile_wanted(cfg)
    if engine is EngineName.auto:
        engine = EngineName.fused if compile_ and fused_runs(cfg) else EngineName.autograd
    if engine is EngineName.autograd:
        first = checkpoint.get("step", 0) if checkpoint else 0
        return AutogradEngine(model, data, cfg, test=test, first_update=first)
    return FusedEngine(model, data, cfg, compile=compile_, test=test)


def compile_wanted(cfg) -> bool:
    """compile=auto: compile when the compile is expected to take less than half the time the
    run would take uncompiled, so that no job waits longer for a compile than it would have
    trained (the estimates are rough: the margin keeps a close call uncompiled)."""
    if cfg.compile == "auto":
        compile_s, eager_s = compile_estimate(cfg)
        return compile_s < eager_s / 2
    return bool(cfg.compile)


def compile_estimate(cfg) -> tuple[float, float]:
    """(seconds to compile the fused step, seconds to train the whole run uncompiled), from
    the cost model above and the config alone. A point that only goes forward (a held-out
    point; every training point of a mini-batch step, which measures the cost on all of them)
    counts a third of one that also goes backward."""
    n_train, _ = dataset_shape(cfg.dataset)
    batch = cfg.get("batch_size")
    points = n_train if batch is None or batch >= n_train else n_train / 3 + batch
    points += test_points(cfg.dataset) / 3
    layers = cfg.depth + 1
    units = cfg.replicas * cfg.width * layers
    eager_step = (
        EAGER_STEP_S
        + EAGER_LAYER_S * layers
        + EAGER_UNIT_S * units
        + EAGER_ELEMENT_S * units * points
    )
    return COMPILE_S + COMPILE_LAYER_S * layers, cfg.steps * eager_step
