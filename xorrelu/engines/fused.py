"""The fused engine: one training step written out by hand, for speed.

The autograd engine (engine=autograd) runs the nn.Sequential and torch.optim as they are. At
this size the cost is per-op overhead, not arithmetic, so this engine lays the replicas along
the last, contiguous axis ([points, units, replicas]), writes the backward pass explicitly, and
computes forward, backward, every metric and the update in one function that torch.compile
(compile=true) turns into a few vectorized loops. Parameters are converted from and to the
nn.Sequential's layout at the boundaries (start, end), so weights.pt and export_replica do not
change. Tests hold it to the autograd engine: one step to 1e-6, twenty steps to 1e-4.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from xorrelu.activations import ACTIVATIONS
from xorrelu.model import linear_layers
from xorrelu.optimizers import OPTIMIZERS
from xorrelu.outcomes import STUCK_SLOPE


class FusedEngine:
    name = "fused"

    def __init__(
        self, model: nn.Sequential, data: tuple[torch.Tensor, torch.Tensor], cfg, compile: bool
    ):
        x, y = data
        self.model, self.linear_layers = model, linear_layers(model)
        self.activation = ACTIVATIONS.get(cfg.activation.name)
        # plain Python values: compiled code must not read OmegaConf nodes
        self.activation_cfg = SimpleNamespace(**OmegaConf.to_container(cfg.activation))
        self.module = self.activation.build(self.activation_cfg, 0, 0)  # elementwise: any layout
        self.optimizer = OPTIMIZERS.get(cfg.optimizer.name)
        self.optimizer_cfg = SimpleNamespace(**OmegaConf.to_container(cfg.optimizer))
        self.x = x.unsqueeze(-1)  # [points, inputs, 1]: the same points for every replica
        self.y = y.unsqueeze(-1)  # [points, 1]
        # [replicas, in, out] -> [in, out, replicas]; bias [replicas, 1, out] -> [out, replicas]
        with torch.no_grad():
            self.weights = [w.weight.permute(1, 2, 0).contiguous() for w in self.linear_layers]
            self.biases = [b.bias[:, 0, :].T.contiguous() for b in self.linear_layers]
        params = self.weights + self.biases
        # slot s of parameter k at s * len(params) + k (the layout of checkpoints)
        self.state = [torch.zeros_like(p) for _ in range(self.optimizer.slots) for p in params]
        # updates so far (Adam's bias correction)
        self.t = torch.zeros((), dtype=x.dtype, device=x.device)
        self.peak = self.activation.peak_slope(self.activation_cfg)
        self.compiled = compile
        self._update_step = torch.compile(self._step, dynamic=False) if compile else self._step

    def step(self, update: bool = True, log: bool = True) -> dict[str, torch.Tensor]:
        """All the metrics, logged or not (in one compiled step they cost little); then one
        update if `update`. The final measurement (no update) runs once, uncompiled."""
        fn = self._update_step if update else self._step
        with torch.no_grad():
            if update:
                # outside the compiled step: compiled code may drop in-place writes to a 0-d input
                self.t += 1
            return fn(self.weights, self.biases, self.state, self.t, update)

    def state_dict(self) -> dict:
        return {"state": [s.cpu() for s in self.state], "t": self.t.cpu()}

    def load_state_dict(self, saved: dict) -> None:
        with torch.no_grad():
            for mine, theirs in zip(self.state, saved["state"], strict=False):
                mine.copy_(theirs)
            self.t.copy_(saved["t"])

    def write_back(self) -> None:
        """Copy the parameters back into the nn.Sequential (its layout) for saving and export."""
        with torch.no_grad():
            for layer, w, b in zip(self.linear_layers, self.weights, self.biases, strict=True):
                layer.weight.copy_(w.permute(2, 0, 1))
                layer.bias.copy_(b.T.unsqueeze(1))

    def _step(self, weights, biases, state, t, update: bool) -> dict[str, torch.Tensor]:
        """Forward, backward, metrics and (if `update`) the update, for all replicas at once.

        Every sum over points or units is written out term by term over slices [..., replicas]:
        each replica then gets the same arithmetic in the same order whatever the batch size,
        and the compiler turns the step into a few loops vectorized along the replica axis.
        """
        n_points = self.x.shape[0]
        # forward: z[n, j] = sum_i h[n, i] * W[i, j] + b[j], every term a [replicas] vector
        h, inputs, pre_activations = self.x, [self.x], []
        for i, (w, b) in enumerate(zip(weights, biases, strict=False)):
            z = (
                _sum(h[:, k : k + 1] * w[k] for k in range(w.shape[0])) + b
            )  # [points, out, replicas]
            if i < len(weights) - 1:
                pre_activations.append(z)
                h = self.module(z)
                inputs.append(h)
        logits = z[:, 0, :]  # [points, replicas]
        cost = (
            _sum(
                F.binary_cross_entropy_with_logits(
                    logits, self.y.expand_as(logits), reduction="none"
                )
            )
            / n_points
        )
        hypothesis = torch.sigmoid(logits)
        accuracy = _sum((torch.floor(hypothesis + 0.5) == self.y).to(logits.dtype)) / n_points

        # backward: d cost / d logits = (h - y) / points, then layer by layer to the input
        dz = ((hypothesis - self.y) / n_points).unsqueeze(1)  # [points, 1, replicas]
        grads_w, grads_b, norms, stuck = (
            [None] * len(weights),
            [None] * len(weights),
            [None] * len(weights),
            [],
        )
        for i in reversed(range(len(weights))):
            a = inputs[i]
            grads_w[i] = _sum(
                a[n].unsqueeze(1) * dz[n].unsqueeze(0) for n in range(n_points)
            )  # [in, out, replicas]
            grads_b[i] = _sum(dz)  # [out, replicas]
            squares = _sum(_sum(grads_w[i].square())) + _sum(grads_b[i].square())
            norms[i] = squares.sqrt()
            if i > 0:
                slope = self.activation.slope(
                    self.activation_cfg, pre_activations[i - 1], None
                ).expand_as(pre_activations[i - 1])
                flat = _all(
                    slope.abs() < STUCK_SLOPE * self.peak
                )  # [units, replicas]: stuck at every point
                stuck.append(_sum(flat.to(logits.dtype)) / flat.shape[0])
                w = weights[i]
                dz = (
                    _sum(dz[:, k : k + 1] * w[:, k] for k in range(w.shape[1])) * slope
                )  # [points, in, replicas]

        if update:
            self._update(weights + biases, grads_w + grads_b, state, t)
        return {
            "cost": cost,
            "accuracy": accuracy,
            "grad_norm": torch.stack(norms),
            "stuck_frac": torch.stack(stuck[::-1]),
        }

    def _update(self, params, grads, state, t) -> None:
        """The optimizer's update rule, written out in place (xorrelu.optimizers)."""
        n, slots = len(params), self.optimizer.slots
        for k, (p, g) in enumerate(zip(params, grads, strict=True)):
            buffers = [state[s * n + k] for s in range(slots)]
            self.optimizer.update(self.optimizer_cfg, p, g, buffers, t=t)


def _sum(terms):
    """t[0] + t[1] + ... in this order (over the first axis of a tensor, or an iterable)."""
    terms = iter(terms)
    total = next(terms)
    for term in terms:
        total = total + term
    return total


def _all(flags: torch.Tensor) -> torch.Tensor:
    """flags[0] & flags[1] & ... over the first axis."""
    result = flags[0]
    for flag in flags[1:]:
        result = result & flag
    return result
