"""Optional TensorBoard logging (tensorboard=true; pip install 'xorrelu[tensorboard]').

Scalars at every logged step: cost, accuracy and each layer's gradient norm, as the median over
replicas and for replica 0. Histograms of every layer's weights and biases (all replicas) at
every printed step, as the lesson logged them. Files go to <job dir>/tensorboard/:
`tensorboard --logdir outputs/` shows every run.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from xorrelu.metrics import columns
from xorrelu.model import linear_layers


class TensorBoardLog:
    def __init__(self, out_dir: Path, depth: int):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(out_dir / "tensorboard"))
        self.names = [name for name in columns(depth)[2:] if not name.startswith("stuck_frac")]

    def scalars(self, step: int, row: torch.Tensor) -> None:
        """row: [replicas, columns] as the engines return it."""
        values = row[:, : len(self.names)].float().cpu()
        median = values.nanmedian(0).values
        for j, name in enumerate(self.names):
            self.writer.add_scalar(f"{name}/median", median[j].item(), step)
            self.writer.add_scalar(f"{name}/replica_0", values[0, j].item(), step)

    def histograms(self, step: int, model: nn.Sequential) -> None:
        for i, layer in enumerate(linear_layers(model), start=1):
            self.writer.add_histogram(f"layer_{i}/weight", layer.weight.detach().cpu(), step)
            self.writer.add_histogram(f"layer_{i}/bias", layer.bias.detach().cpu(), step)

    def close(self) -> None:
        self.writer.close()
