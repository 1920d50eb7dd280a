"""The autograd engine: the nn.Sequential and torch.optim as they are."""

from __future__ import annotations

import torch
from torch import nn

from xorrelu.activations import ACTIVATIONS, BatchedPReLU
from xorrelu.metrics import accuracy, cost, forward, grad_norm, prelu_slopes, stuck_frac
from xorrelu.model import linear_layers
from xorrelu.optimizers import OPTIMIZERS
from xorrelu.regularization import regularizer


class AutogradEngine:
    name, compiled = "autograd", False

    def __init__(self, model: nn.Sequential, data: tuple[torch.Tensor, torch.Tensor], cfg):
        self.model, (self.x, self.y) = model, data
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
        logits, pre_activations = forward(self.model, self.x)
        costs = cost(logits, self.y)
        self.optimizer.zero_grad(set_to_none=False)
        loss = costs
        if self.regularizer is not None:  # the gradient is of data cost + penalty
            penalties = self.penalty()
            loss = costs + penalties
        loss.sum().backward()  # a sum keeps replicas independent: each gets its own gradient
        with torch.inference_mode():  # metrics only: no autograd bookkeeping
            metrics = {"cost": costs.detach(), "accuracy": accuracy(logits, self.y)}
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
        return metrics

    def write_back(self) -> None:
        pass  # trains the nn.Sequential itself

    def state_dict(self) -> dict:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state)
