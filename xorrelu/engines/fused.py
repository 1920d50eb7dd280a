"""The fused engine: one training step written out by hand, for speed.

The autograd engine (engine=autograd) runs the nn.Sequential and torch.optim as they are. At
this size the cost is per-op overhead, not arithmetic, so this engine lays the replicas along
the last, contiguous axis ([points, units, replicas]), writes the backward pass explicitly, and
computes forward, backward, every metric and the update in one function that torch.compile
(compile=true) turns into a few vectorized loops. On hundreds of points those loops' buffers
outgrow the caches, so the compiled step runs on blocks of replicas, a few thousand replicas x
points each (replica_blocks), one call a block. Parameters are converted from and to the
nn.Sequential's layout at the boundaries (start, end), so weights.pt and export_replica do not
change. Tests hold it to the autograd engine: one step to 1e-6, twenty steps to 1e-4.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from xorrelu.activations import ACTIVATIONS
from xorrelu.data import Batches
from xorrelu.model import linear_layers
from xorrelu.optimizers import OPTIMIZERS
from xorrelu.outcomes import STUCK_SLOPE
from xorrelu.regularization import regularizer

# The replicas are computed in a padded batch (extra all-zero nets, never reported), so that
# each one runs through the same vector code whatever the batch size (bit-exact batch
# independence; tests/test_engines.py holds it for 1, 3, 4, 16, 17 and 40 replicas):
# - compiled, at least one full vector of replicas (16 float lanes with AVX-512, the widest
#   vectors on CPU). With one replica the replica axis drops out of inductor's loops and a sum
#   over points is vectorized along the points instead; with fewer than a vector's width,
#   inductor may share a sum over points among threads (see _sum_points). Above 16, a last,
#   partial vector runs the same vector code under a mask.
# - eager, a multiple of 64. ATen's elementwise loops take two vectors at a time (32 floats
#   with AVX-512) and leave the rest of a row to scalar code, whose exp and log round otherwise.
COMPILED_MIN_REPLICAS = 16
EAGER_REPLICA_MULTIPLE = 64

# Compiled, the replicas are computed in blocks of up to this many replicas x points, one call
# of the compiled step a block (replica_blocks). The step's buffers, some twenty of [points,
# units, replicas], then stay in the caches: at 500 points, depth 4, width 8 (2 cores, AMD
# EPYC), a replica's step took 60 us in one block of 1,000 replicas, 20 us in blocks of 32,
# 23 us of 64 and 16, 34 us of 128, 44 us of 256.
BLOCK_ELEMENTS = 2**14

# the longest sum over points that the compiled step runs as one loop (see _sum_points)
MAX_POINTS_PER_SUM = 256


class FusedEngine:
    name = "fused"

    def __init__(
        self,
        model: nn.Sequential,
        data: tuple[torch.Tensor, torch.Tensor],
        cfg,
        compile: bool,
        *,
        test: tuple[torch.Tensor, torch.Tensor] | None = None,
    ):
        x, y = data
        self.model, self.linear_layers = model, linear_layers(model)
        self.activation = ACTIVATIONS.get(cfg.activation.name)
        # plain Python values: compiled code must not read OmegaConf nodes
        self.activation_cfg = SimpleNamespace(**OmegaConf.to_container(cfg.activation))
        self.module = self.activation.build(self.activation_cfg, 0, 0)  # elementwise: any layout
        self.optimizer = OPTIMIZERS.get(cfg.optimizer.name)
        self.optimizer_cfg = SimpleNamespace(**OmegaConf.to_container(cfg.optimizer))
        self.regularizer = regularizer(cfg)  # (record, rate: a plain float), or None
        self.x = x.unsqueeze(-1)  # [points, inputs, 1]: the same points for every replica
        self.y = y.unsqueeze(-1)  # [points, 1]
        # the held-out points, measured (forward only) at every step
        self.test = None if test is None else (test[0].unsqueeze(-1), test[1].unsqueeze(-1))
        self.replicas = replicas = self.linear_layers[0].weight.shape[0]
        points = len(y) + (0 if test is None else len(test[1]))
        self.padded, self.block = replica_blocks(replicas, points, compile)
        # mini-batches: each replica's own points, [batch, inputs, padded] (xorrelu.data.Batches)
        self.batches = None
        if cfg.get("batch_size") is not None and cfg.batch_size < len(y):
            seeds = list(range(cfg.seed, cfg.seed + replicas))
            self.batches = Batches(seeds, len(y), cfg.batch_size, x.device)
        self.points = (x, y)
        # [replicas, in, out] -> [blocks, in, out, block]; bias [replicas, 1, out] -> [blocks,
        # out, block] (replica_blocks): each block contiguous. Copies, never views of the
        # parameters: plain tensors, as the clones of the final measurement are, so that one
        # compiled graph fits both.
        with torch.no_grad():
            self.weights = [self._blocked(w.weight.permute(1, 2, 0)) for w in self.linear_layers]
            self.biases = [self._blocked(b.bias[:, 0, :].T) for b in self.linear_layers]
        params = self.weights + self.biases
        # slot s of parameter k at s * len(params) + k (the layout of checkpoints)
        self.state = [torch.zeros_like(p) for _ in range(self.optimizer.slots) for p in params]
        # each block's (weights, biases, state): views, made once (at 4 points and 100 replicas
        # a step takes ~0.2 ms, and making its views anew every step cost a fifth more)
        self.blocks = _blocks(self.weights, self.biases, self.state)
        # updates so far (Adam's bias correction)
        self.t = torch.zeros((), dtype=x.dtype, device=x.device)
        self.peak = self.activation.peak_slope(self.activation_cfg)
        self.compiled = compile
        self._update_step = torch.compile(self._step, dynamic=False) if compile else self._step

    def step(self, update: bool = True, log: bool = True) -> dict[str, torch.Tensor]:
        """All the metrics, logged or not (in one compiled step they cost little); then one
        update if `update`."""
        with torch.no_grad():
            metrics = self._measure(update)
        if self.padded == self.replicas:
            return metrics
        return {k: v[..., : self.replicas] for k, v in metrics.items()}

    def _batch(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The points of the next update (number t), per replica: x [batch, inputs, padded],
        y [batch, padded]; the padding replicas take the first points. None: the full batch."""
        if self.batches is None:
            return None
        at = self.batches.indices(int(self.t.item()))  # [replicas, batch]
        at = torch.cat([at, at.new_zeros(self.padded - self.replicas, at.shape[1])])
        x, y = self.points
        return x[at].permute(1, 2, 0).contiguous(), y[at].T.contiguous()

    def _measure(self, update: bool) -> dict[str, torch.Tensor]:
        batch = self._batch()
        if update:
            # outside the compiled step: compiled code may drop in-place writes to a 0-d input
            self.t += 1
            return self._in_blocks(self.blocks, self.t, True, batch)
        if not self.compiled:
            return self._in_blocks(self.blocks, self.t, False, batch)
        # The final measurement (no update) of a compiled run: the compiled step on copies,
        # its update thrown away. The last row then has the arithmetic of all the others
        # (eager kernels round exp and log differently, and lay out their vector lanes by
        # the batch size), and no second graph is compiled for update=False.
        weights, biases = ([p.clone() for p in ps] for ps in (self.weights, self.biases))
        state = [s.clone() for s in self.state]
        return self._in_blocks(_blocks(weights, biases, state), self.t + 1, True, batch)

    def _in_blocks(self, blocks, t, update: bool, batch):
        """The step (compiled or not) once for each block of replicas (replica_blocks), on
        `blocks` (_blocks) and a contiguous copy of the block's part of `batch`: the same
        shapes and strides each time, so one compiled graph serves every block. The metrics
        joined along the replicas."""
        step = self._update_step if update else self._step
        metrics = []
        for b, (weights, biases, state) in enumerate(blocks):
            part = slice(b * self.block, (b + 1) * self.block)
            batch_ = None if batch is None else tuple(v[..., part].contiguous() for v in batch)
            metrics.append(step(weights, biases, state, t, update, batch_))
        if len(metrics) == 1:
            return metrics[0]
        return {k: torch.cat([m[k] for m in metrics], -1) for k in metrics[0]}

    def state_dict(self) -> dict:
        """The optimizer state of the real replicas (the checkpoint's layout has no padding)."""
        state = [self._unblocked(s).contiguous().cpu() for s in self.state]
        return {"state": state, "t": self.t.cpu()}

    def load_state_dict(self, saved: dict) -> None:
        with torch.no_grad():
            for mine, theirs in zip(self.state, saved["state"], strict=False):
                mine.copy_(self._blocked(theirs.to(mine.device)))
            self.t.copy_(saved["t"])

    def write_back(self) -> None:
        """Copy the parameters back into the nn.Sequential (its layout) for saving and export."""
        with torch.no_grad():
            for layer, w, b in zip(self.linear_layers, self.weights, self.biases, strict=True):
                layer.weight.copy_(self._unblocked(w).permute(2, 0, 1))
                layer.bias.copy_(self._unblocked(b).T.unsqueeze(1))

    def _blocked(self, parameter: torch.Tensor) -> torch.Tensor:
        """A copy of `parameter` [..., replicas] in blocks, [blocks, ..., block], with zeros for
        the padding replicas."""
        padded = parameter.new_zeros(*parameter.shape[:-1], self.padded)
        padded[..., : self.replicas] = parameter
        blocked = padded.unflatten(-1, (self.padded // self.block, self.block))
        return blocked.movedim(-2, 0).contiguous()

    def _unblocked(self, blocked: torch.Tensor) -> torch.Tensor:
        """The real replicas of `blocked` [blocks, ..., block]: [..., replicas]."""
        return blocked.movedim(0, -2).flatten(-2)[..., : self.replicas]

    def _step(self, weights, biases, state, t, update: bool, batch=None) -> dict[str, torch.Tensor]:
        """Forward, backward, metrics and (if `update`) the update, for all replicas at once.
        With `batch` (mini-batches: each replica's points), cost, accuracy and stuck units are
        measured on every training point and the gradient is of the batch's points.

        Sums over units (width and inputs are small) are written out term by term over slices
        [points, ..., replicas]: elementwise adds, the same for every replica in any batch.
        Sums over points are reductions (_sum_points), so the compiled graph does not grow with
        the number of points; they too add a replica's terms in an order that depends on the
        number of points alone. The compiler turns the step into a few loops vectorized along
        the replica axis.
        """
        logits, inputs, pre_activations = self._forward(self.x, weights, biases)
        cost, accuracy, hypothesis = _cost_accuracy(logits, self.y)
        slopes = [
            self.activation.slope(self.activation_cfg, z, None).expand_as(z)
            for z in pre_activations
        ]
        # [units, replicas]: 1 where stuck at every point (a min over points, exact in any
        # order; compiled, cheaper than all(), which inductor runs as ~any(~x))
        stuck = []
        for slope in slopes:
            flat = (slope.abs() < STUCK_SLOPE * self.peak).to(logits.dtype).amin(0)
            stuck.append(_sum(flat) / flat.shape[0])
        y = self.y
        if batch is not None:  # the gradient is of the batch's points
            x, y = batch
            logits, inputs, pre_activations = self._forward(x, weights, biases)
            hypothesis = torch.sigmoid(logits)
            slopes = [
                self.activation.slope(self.activation_cfg, z, None).expand_as(z)
                for z in pre_activations
            ]

        # backward: d cost / d logits = (h - y) / points, then layer by layer to the input
        dz = ((hypothesis - y) / inputs[0].shape[0]).unsqueeze(1)  # [points, 1, replicas]
        grads_w, grads_b, norms = (
            [None] * len(weights),
            [None] * len(weights),
            [None] * len(weights),
        )
        for i in reversed(range(len(weights))):
            a = inputs[i]
            # [points, in, 1, replicas] * [points, 1, out, replicas] -> [in, out, replicas]
            grads_w[i] = _sum_points(a.unsqueeze(2) * dz.unsqueeze(1))
            if self.regularizer is not None:  # d penalty / d W, added as autograd adds it
                record, rate = self.regularizer
                grads_w[i] = grads_w[i] + rate * record.slope(weights[i])
            grads_b[i] = _sum_points(dz)  # [out, replicas]
            squares = _sum(_sum(grads_w[i].square())) + _sum(grads_b[i].square())
            norms[i] = squares.sqrt()
            if i > 0:
                w = weights[i]
                dz = (
                    _sum(dz[:, k : k + 1] * w[:, k] for k in range(w.shape[1])) * slopes[i - 1]
                )  # [points, in, replicas]

        metrics = {"cost": cost, "accuracy": accuracy}
        if self.test is not None:  # at the parameters before the update
            test_logits = self._forward(self.test[0], weights, biases)[0]
            metrics["test_cost"], metrics["test_accuracy"], _ = _cost_accuracy(
                test_logits, self.test[1]
            )
        if self.regularizer is not None:  # at the parameters before the update
            record, rate = self.regularizer
            # [replicas]: each layer's terms summed unit by unit, as the sums above
            metrics["penalty"] = rate * _sum(_sum(_sum(record.term(w))) for w in weights)
        if update:
            self._update(weights + biases, grads_w + grads_b, state, t)
        metrics["grad_norm"] = torch.stack(norms)
        metrics["stuck_frac"] = torch.stack(stuck)
        return metrics

    def _forward(self, x, weights, biases):
        """Logits [points, replicas], each layer's input and each hidden layer's
        pre-activations: z[n, j] = sum_i h[n, i] * W[i, j] + b[j], every term a [replicas]
        vector."""
        h, inputs, pre_activations = x, [x], []
        for i, (w, b) in enumerate(zip(weights, biases, strict=False)):
            z = (
                _sum(h[:, k : k + 1] * w[k] for k in range(w.shape[0])) + b
            )  # [points, out, replicas]
            if i < len(weights) - 1:
                pre_activations.append(z)
                h = self.module(z)
                inputs.append(h)
        return z[:, 0, :], inputs, pre_activations

    def _update(self, params, grads, state, t) -> None:
        """The optimizer's update rule, written out in place (xorrelu.optimizers)."""
        n, slots = len(params), self.optimizer.slots
        for k, (p, g) in enumerate(zip(params, grads, strict=True)):
            buffers = [state[s * n + k] for s in range(slots)]
            self.optimizer.update(self.optimizer_cfg, p, g, buffers, t=t)


def _blocks(weights, biases, state) -> list[tuple[list, list, list]]:
    """Each block's (weights, biases, state) of parameters and state [blocks, ..., block]:
    contiguous views, which the step updates in place."""
    return [
        tuple([p[b] for p in ps] for ps in (weights, biases, state)) for b in range(len(weights[0]))
    ]


def replica_blocks(replicas: int, points: int, compile: bool) -> tuple[int, int]:
    """(padded replicas, replicas a block): how the step lays out `replicas` nets on `points`
    points (training and held-out). Eager: one block, a multiple of EAGER_REPLICA_MULTIPLE.
    Compiled: one block of at least COMPILED_MIN_REPLICAS while replicas x points stays within
    BLOCK_ELEMENTS, else as few blocks as that allows, of whole vectors of replicas (the last
    one filled up with padding replicas), all of one size: the same compiled code for each."""
    if not compile:
        padded = -(-replicas // EAGER_REPLICA_MULTIPLE) * EAGER_REPLICA_MULTIPLE
        return padded, padded
    vector = COMPILED_MIN_REPLICAS
    most = max(vector, BLOCK_ELEMENTS // points // vector * vector)
    if replicas <= most:
        block = max(replicas, vector)
        return block, block
    blocks = -(-replicas // most)
    block = -(-replicas // blocks)  # the replicas shared out evenly, then whole vectors
    block = -(-block // vector) * vector
    return blocks * block, block


def _cost_accuracy(logits: torch.Tensor, y: torch.Tensor):
    """The lesson's cost and accuracy per replica of logits [points, replicas], and h."""
    n_points = logits.shape[0]
    losses = F.binary_cross_entropy_with_logits(logits, y.expand_as(logits), reduction="none")
    hypothesis = torch.sigmoid(logits)
    hits = (torch.floor(hypothesis + 0.5) == y).to(logits.dtype)
    return _sum_points(losses) / n_points, _sum_points(hits) / n_points, hypothesis


def _sum(terms):
    """t[0] + t[1] + ... in this order (over the first axis of a tensor, or an iterable)."""
    terms = iter(terms)
    total = next(terms)
    for term in terms:
        total = total + term
    return total


def _sum_points(terms: torch.Tensor) -> torch.Tensor:
    """`terms` summed over its first axis, the points, in an order set by the number of points
    alone: not by the replicas beside a replica, nor by the number of threads.

    Compiled: one reduction over up to MAX_POINTS_PER_SUM points, or over blocks of up to as
    many consecutive points and then over the blocks. Inductor runs a reduction as a loop over
    the points, in order, inside loops vectorized along the replicas (an accumulator per
    lane). The graph does not grow with the points (past MAX_POINTS_PER_SUM it has a few nodes
    more, once). Why blocks: inductor shares a reduction loop among threads (partial sums,
    added in another order) when it is over 300 times longer than the loops around it
    (torch/_inductor/codegen/cpp.py, LoopNest.max_parallel_depth), which depends on the batch
    size: with 4096 points in one loop, 17 and 40 replicas gave different numbers on two
    threads. 256 stays under 300 with one vector of replicas (COMPILED_MIN_REPLICAS) and under
    4096, past which inductor sums floats in cascades; 256 blocks of 256 cover 2**16 points.

    Eager: the last row of a cumulative sum, which walks each column in order (float32 terms
    add up in float64 there). ATen's sum kernels vectorize along whichever axis is contiguous,
    the points when there is one replica, and so add up in another order.
    """
    if not torch.compiler.is_compiling():
        return terms.cumsum(0)[-1]
    points = terms.shape[0]
    blocks = math.ceil(points / MAX_POINTS_PER_SUM)
    if blocks == 1:
        return terms.sum(0)
    block = math.ceil(points / blocks)
    # zeros for the points that fill up the last block (x + 0 is x)
    terms = F.pad(terms, (0, 0) * (terms.dim() - 1) + (0, blocks * block - points))
    return terms.reshape(blocks, block, *terms.shape[1:]).sum(1).sum(0)
