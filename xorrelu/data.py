"""Training sets by name: the 4 XOR points, or n-bit parity (parity with 2 bits is XOR)."""

from __future__ import annotations

import itertools

import torch


def parity_points(bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All 2**bits binary inputs in counting order, labelled by their number of ones mod 2."""
    x = torch.tensor(list(itertools.product([0.0, 1.0], repeat=bits)))
    return x, x.sum(1) % 2


DATASETS = {
    "xor": lambda cfg: parity_points(2),  # (0,0)->0, (0,1)->1, (1,0)->1, (1,1)->0
    "parity": lambda cfg: parity_points(cfg.bits),
}


def dataset_shape(cfg) -> tuple[int, int]:
    """(points, inputs) of a dataset, without building it."""
    if cfg.name not in DATASETS:
        raise KeyError(f"unknown dataset {cfg.name!r}; valid names: {', '.join(DATASETS)}")
    bits = 2 if cfg.name == "xor" else cfg.bits
    return 2**bits, bits


def make_dataset(cfg, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs x [points, bits] and labels y [points], float32 on `device`."""
    if cfg.name not in DATASETS:
        raise KeyError(f"unknown dataset {cfg.name!r}; valid names: {', '.join(DATASETS)}")
    x, y = DATASETS[cfg.name](cfg)
    return x.to(device), y.to(device)
