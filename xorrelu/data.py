"""Datasets by name, input features, and the train/test split.

- xor: the lesson's 4 points; parity: all 2**bits binary inputs labelled by their number of
  ones mod 2 (parity with 2 bits is XOR).
- circle, xor_cloud, gauss, spiral: the TensorFlow Playground's four classification sets
  (tensorflow/playground, src/dataset.ts), with its geometry and its noise scale
  (`noise` 0..50, the Playground's slider; the generators take noise / 100):
    circle     half the points at radius U(0, 2.5), half at U(3.5, 5), at a uniform angle;
               label 1 when the point moved by noise U(-5, 5) x noise per axis lies within
               radius 2.5 (the point itself is drawn where it was)
    xor_cloud  x, y ~ U(-5, 5), pushed 0.3 away from each axis; label 1 when
               (x + noise)(y + noise) >= 0, noise U(-5, 5) x noise per axis
    gauss      two Gaussians at (2, 2) (label 1) and (-2, -2) (label 0), variance
               0.5 + 7 x noise (0.5 at noise 0, 4 at noise 50) per axis
    spiral     two arms of 1.75 turns, radius 0 to 5 (label 1 from angle 0, label 0 from pi),
               each coordinate moved by U(-1, 1) x noise
  Playground labels are +1/-1; here they are 1/0 (the sigmoid output's targets).
  Points are drawn from a generator seeded with `dataset.seed`, shuffled, and the last
  round(test_fraction x points) are held out (the Playground shuffles and splits the same way).
  Every replica sees the same points; replicas differ by their init (and batch order).

Features (`dataset.features`, 2-D datasets): the first layer's inputs computed from each point
(x1, x2): x1, x2, x1_sq, x2_sq, x1x2, sin_x1, sin_x2, the Playground's seven. `null` keeps the
raw inputs (parity keeps all its bits).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from xorrelu.registry import Registry


def parity_points(bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All 2**bits binary inputs in counting order, labelled by their number of ones mod 2."""
    x = torch.tensor(list(itertools.product([0.0, 1.0], repeat=bits)))
    return x, x.sum(1) % 2


# --- the Playground's generators: (points, noise in 0..0.5, generator) -> x [points, 2], y ----
def _uniform(n: int, low: float, high: float, g: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=g, dtype=torch.float64) * (high - low) + low


def circle(points: int, noise: float, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    radius, half = 5.0, points // 2
    r = torch.cat(
        [_uniform(half, 0, radius * 0.5, g), _uniform(points - half, radius * 0.7, radius, g)]
    )
    angle = _uniform(points, 0, 2 * math.pi, g)
    x = torch.stack([r * torch.sin(angle), r * torch.cos(angle)], 1)
    moved = x + _uniform(2 * points, -radius, radius, g).reshape(points, 2) * noise
    return x, (moved.norm(dim=1) < radius * 0.5).double()


def xor_cloud(points: int, noise: float, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    x = _uniform(2 * points, -5, 5, g).reshape(points, 2)
    x = x + torch.where(x > 0, 0.3, -0.3)
    moved = x + _uniform(2 * points, -5, 5, g).reshape(points, 2) * noise
    return x, (moved[:, 0] * moved[:, 1] >= 0).double()


def gauss(points: int, noise: float, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    variance = 0.5 + noise / 0.5 * 3.5  # the Playground's scale: noise 0..0.5 -> 0.5..4
    half = points // 2
    centre = torch.cat([torch.full((half, 2), 2.0), torch.full((points - half, 2), -2.0)])
    x = centre.double() + math.sqrt(variance) * torch.randn(
        points, 2, generator=g, dtype=torch.float64
    )
    return x, torch.cat([torch.ones(half), torch.zeros(points - half)]).double()


def spiral(points: int, noise: float, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    half = points // 2
    arms = []
    for n, delta in ((half, 0.0), (points - half, math.pi)):
        i = torch.arange(n, dtype=torch.float64)
        r = i / n * 5
        t = 1.75 * i / n * 2 * math.pi + delta
        jitter = _uniform(2 * n, -1, 1, g).reshape(n, 2) * noise
        arms.append(torch.stack([r * torch.sin(t), r * torch.cos(t)], 1) + jitter)
    return torch.cat(arms), torch.cat([torch.ones(half), torch.zeros(points - half)]).double()


# --- the registry -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Dataset:
    name: str
    build: Callable[..., tuple[torch.Tensor, torch.Tensor]]  # (c) -> points [n, d], labels [n]
    dims: Callable[..., int]  # (c) -> coordinates per point (features apply when it is 2)
    size: Callable[..., int]  # (c) -> points, before the split
    plateaus_of_xor: bool = False  # the lesson's collapsed-network costs apply (xor only)


def _playground(generate) -> Callable:
    def build(c) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(c.seed)
        x, y = generate(c.points, c.noise / 100, g)
        order = torch.randperm(c.points, generator=g)  # shuffled, as the Playground does
        return x[order], y[order]

    return build


DATASETS: Registry[Dataset] = Registry(
    "dataset",
    [
        # (0,0)->0, (0,1)->1, (1,0)->1, (1,1)->0
        Dataset("xor", lambda c: parity_points(2), lambda c: 2, lambda c: 4, True),
        Dataset("parity", lambda c: parity_points(c.bits), lambda c: c.bits, lambda c: 2**c.bits),
        *(
            Dataset(name, _playground(generate), lambda c: 2, lambda c: c.points)
            for name, generate in (
                ("circle", circle),
                ("xor_cloud", xor_cloud),
                ("gauss", gauss),
                ("spiral", spiral),
            )
        ),
    ],
)


@dataclass(frozen=True)
class Feature:
    name: str
    of: Callable[[torch.Tensor], torch.Tensor]  # points [n, 2] -> [n]


FEATURES: Registry[Feature] = Registry(
    "feature",
    [
        Feature("x1", lambda p: p[:, 0]),
        Feature("x2", lambda p: p[:, 1]),
        Feature("x1_sq", lambda p: p[:, 0] ** 2),
        Feature("x2_sq", lambda p: p[:, 1] ** 2),
        Feature("x1x2", lambda p: p[:, 0] * p[:, 1]),
        Feature("sin_x1", lambda p: torch.sin(p[:, 0])),
        Feature("sin_x2", lambda p: torch.sin(p[:, 1])),
    ],
)


def featurize(points: torch.Tensor, features) -> torch.Tensor:
    """The first layer's inputs [n, len(features)] from 2-D points [n, 2]; `features` None
    keeps the points as they are."""
    if features is None:
        return points
    return torch.stack([FEATURES.get(name).of(points) for name in features], 1)


@dataclass
class Split:
    """A dataset's points as drawn (`points`, for data.csv and the plots) and the first layer's
    inputs (`x`, features applied), train and test; test tensors are empty without a split."""

    points: torch.Tensor  # [n, dims] train then test, float64
    y: torch.Tensor  # [n]
    n_train: int
    x_train: torch.Tensor  # [n_train, inputs] float32
    y_train: torch.Tensor
    x_test: torch.Tensor  # [n - n_train, inputs]
    y_test: torch.Tensor

    @property
    def has_test(self) -> bool:
        return len(self.y_test) > 0


def test_points(cfg) -> int:
    """How many of the dataset's points are held out."""
    return round(cfg.get("test_fraction", 0.0) * DATASETS.get(cfg.name).size(cfg))


def dataset_shape(cfg) -> tuple[int, int]:
    """(training points, inputs of the first layer) of a dataset, without building it."""
    dataset = DATASETS.get(cfg.name)
    features = cfg.get("features")
    inputs = len(features) if features is not None else dataset.dims(cfg)
    return dataset.size(cfg) - test_points(cfg), inputs


def make_split(cfg, device: torch.device | str = "cpu") -> Split:
    points, y = DATASETS.get(cfg.name).build(cfg)
    points, y = points.double(), y.double()
    n_train = len(y) - test_points(cfg)
    x = featurize(points, cfg.get("features")).float().to(device)
    y32 = y.float().to(device)
    return Split(points, y, n_train, x[:n_train], y32[:n_train], x[n_train:], y32[n_train:])


def make_dataset(cfg, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """The training inputs x [points, inputs] and labels y [points], float32 on `device`."""
    split = make_split(cfg, device)
    return split.x_train, split.y_train


def label_entropy(y: torch.Tensor) -> float:
    """The cost of the best constant output: the entropy of the labels (ln 2 when balanced)."""
    p = float(y.float().mean())
    return 0.0 if p in (0.0, 1.0) else -(p * math.log(p) + (1 - p) * math.log(1 - p))


# the batch order's stream: replica r draws it from (seed + r, epoch, BATCH_STREAM), apart from
# the generator seeded seed + r that draws its init
BATCH_STREAM = 0x62617463  # "batc"


class Batches:
    """Mini-batches of `batch_size` of `n` training points, per replica: each epoch a fresh
    order of the points from the replica's own stream, cut into consecutive batches (the last
    one shorter when batch_size does not divide n). `indices(update)` depends on the update's
    number alone, so a resumed run draws the same batches."""

    def __init__(self, seeds: list[int], n: int, batch_size: int, device="cpu"):
        self.seeds, self.n, self.size, self.device = seeds, n, batch_size, device
        self.per_epoch = -(-n // batch_size)
        self.epoch, self.orders = None, None

    def indices(self, update: int) -> torch.Tensor:
        """[replicas, points in the batch]: the points update number `update` (0 = the first)
        trains on."""
        epoch, k = divmod(update, self.per_epoch)
        if epoch != self.epoch:
            orders = [
                np.random.default_rng([seed, epoch, BATCH_STREAM]).permutation(self.n)
                for seed in self.seeds
            ]
            self.epoch, self.orders = epoch, torch.as_tensor(np.stack(orders), device=self.device)
        return self.orders[:, k * self.size : (k + 1) * self.size]


def points_csv(split: Split) -> bytes:
    """data.csv: one row per point as drawn (x1, x2, ... before features), its label and its
    split (train or test), train first, in the order trained on; floats in full precision."""
    header = [f"x{i + 1}" for i in range(split.points.shape[1])] + ["label", "split"]
    lines = [",".join(header)]
    for i, (point, label) in enumerate(zip(split.points.tolist(), split.y.tolist(), strict=True)):
        where = "train" if i < split.n_train else "test"
        lines.append(",".join([*map(repr, point), str(int(label)), where]))
    return ("\n".join(lines) + "\n").encode()
