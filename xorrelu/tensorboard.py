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

from xorrelu.model import linear_layers


class TensorBoardLog:
    def __init__(self, out_dir: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(out_dir / "tensorboard"))

    def scalars(self, step: int, metrics: dict[str, torch.Tensor]) -> None:
        """metrics: as the engines return them (xorrelu.metrics), each [..., replicas]."""
        names = ("cost", "accuracy", "test_cost", "test_accuracy", "penalty")
        named = {name: metrics[name] for name in names if name in metrics}
        for i, norms in enumerate(metrics["grad_norm"], start=1):  # layer 1 = nearest the input
            named[f"grad_norm_{i}"] = norms
        for name, values in named.items():
            values = values.float().cpu()
            self.writer.add_scalar(f"{name}/median", values.nanmedian().item(), step)
            self.writer.add_scalar(f"{name}/replica_0", values[0].item(), step)

    def histograms(self, step: int, model: nn.Sequential) -> None:
        for i, layer in enumerate(linear_layers(model), start=1):
            self.writer.add_histogram(f"layer_{i}/weight", layer.weight.detach().cpu(), step)
            self.writer.add_histogram(f"layer_{i}/bias", layer.bias.detach().cpu(), step)

    def close(self) -> None:
        self.writer.close()
