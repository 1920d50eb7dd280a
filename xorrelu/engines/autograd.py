"""The autograd engine: the nn.Sequential and torch.optim as they are.

With mini-batches (batch_size) each replica's gradient is of its own batch of training points
(xorrelu.data.Batches), and the step measures cost, accuracy and stuck units on every training
point in a separate forward pass; with the full batch one pass does both."""

from __future__ import annotations

import torch
from torch import nn

from xorrelu.activations import ACTIVATIONS, BatchedPReLU
from xorrelu.data import Batches
from xorrelu.metrics import accuracy, cost, forward, grad_norm, prelu_slopes, stuck_frac
from xorrelu.model import linear_layers
from xorrelu.optimizers import OPTIMIZERS
from xorrelu.regularization import regularizer


class AutogradEngine:
    name, compiled = "autograd", False

    def __init__(
        self,
        model: nn.Sequential,
        data: tuple[torch.Tensor, torch.Tensor],
        cfg,
        *,
        test: tuple[torch.Tensor, torch.Tensor] | None = None,
        first_update: int = 0,
    ):
        self.model, (self.x, self.y), self.test = model, data, test
        replicas, points = model[0].weight.shape[0], len(data[1])
        self.batches = None
        if cfg.get("batch_size") is not None and cfg.batch_size < points:  # else: full batch
            seeds = list(range(cfg.seed, cfg.seed + replicas))
            self.batches = Batches(seeds, points, cfg.batch_size, self.x.device)
        self.update = first_update  # the number of the next update (its batch)
        self.activation, self.activation_cfg = ACTIVATIONS.get(cfg.activation.name), cfg.activation
        self.linear_layers = linear_layers(model)
        self.has_prelu = any(isinstance(m, BatchedPReLU) for m in model)
        self.optimizer = OPTIMIZERS.get(cfg.optimizer.name).build(model.parameters(), cfg.optimizer)
        self.regularizer = regularizer(cfg)  # (record, rate), or None

    def penalty(self) -> torch.Tensor:
        """[replicas]: rate x the penalty term summed over every Linear layer's weights."""
        record, rate = self.regularizer
        terms = [record.term(layer.weight).sum((1, 2)) for layer in self.linear_layers]
        return rate * torch.stack(terms).sum(0)

    def step(self, update: bool = True, log: bool = True) -> dict[str, torch.Tensor]:
        if self.batches is None:  # the full batch: one pass measures and gives the gradient
            logits, pre_activations = forward(self.model, self.x)
            costs = batch_costs = cost(logits, self.y)
        else:
            with torch.no_grad():
                logits, pre_activations = forward(self.model, self.x)
                costs = cost(logits, self.y)
            at = self.batches.indices(self.update)  # [replicas, batch]
            batch_costs = cost(forward(self.model, self.x[at])[0], self.y[at])
        self.optimizer.zero_grad(set_to_none=False)
        loss = batch_costs
        if self.regularizer is not None:  # the gradient is of data cost + penalty
            penalties = self.penalty()
            loss = batch_costs + penalties
        loss.sum().backward()  # a sum keeps replicas independent: each gets its own gradient
        with torch.inference_mode():  # metrics only: no autograd bookkeeping
            metrics = {"cost": costs.detach(), "accuracy": accuracy(logits, self.y)}
            if self.test is not None:
                test_logits = forward(self.model, self.test[0])[0]
                metrics["test_cost"] = cost(test_logits, self.test[1])
                metrics["test_accuracy"] = accuracy(test_logits, self.test[1])
            if self.regularizer is not None:
                metrics["penalty"] = penalties.detach()
            if log:
                prelu = prelu_slopes(self.model) if self.has_prelu else None
                metrics["grad_norm"] = grad_norm(self.linear_layers)
                metrics["stuck_frac"] = stuck_frac(
                    pre_activations, self.activation, self.activation_cfg, prelu
                )
        if update:
            self.optimizer.step()
            self.update += 1
        return metrics

    def write_back(self) -> None:
        pass  # trains the nn.Sequential itself

    def state_dict(self) -> dict:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state)
