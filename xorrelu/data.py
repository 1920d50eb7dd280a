"""Training sets by name: the 4 XOR points, or n-bit parity (parity with 2 bits is XOR)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import torch

from xorrelu.registry import Registry


def parity_points(bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All 2**bits binary inputs in counting order, labelled by their number of ones mod 2."""
    x = torch.tensor(list(itertools.product([0.0, 1.0], repeat=bits)))
    return x, x.sum(1) % 2


@dataclass(frozen=True)
class Dataset:
    name: str
    build: Callable[..., tuple[torch.Tensor, torch.Tensor]]  # (c) -> inputs, labels
    bits: Callable[..., int]  # (c) -> inputs per point (2**bits points)


DATASETS: Registry[Dataset] = Registry(
    "dataset",
    [
        # (0,0)->0, (0,1)->1, (1,0)->1, (1,1)->0
        Dataset("xor", lambda c: parity_points(2), lambda c: 2),
        Dataset("parity", lambda c: parity_points(c.bits), lambda c: c.bits),
    ],
)


def dataset_shape(cfg) -> tuple[int, int]:
    """(points, inputs) of a dataset, without building it."""
    bits = DATASETS.get(cfg.name).bits(cfg)
    return 2**bits, bits


def make_dataset(cfg, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs x [points, bits] and labels y [points], float32 on `device`."""
    x, y = DATASETS.get(cfg.name).build(cfg)
    return x.to(device), y.to(device)
