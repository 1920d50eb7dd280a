"""What is measured at every logged step, and the writer of metrics.csv.

A row describes the parameters after `step` updates: its cost, accuracy and stuck fractions
are measured there, and its gradient norms are of the gradient that update step+1 applies.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import torch
import torch.nn.functional as F
from torch import nn

from xorrelu.activations import Activation, BatchedPReLU
from xorrelu.diagnosis import LN2_BAND, SLOW_AT, diagnose
from xorrelu.model import BatchedLinear

LN2 = math.log(2)
SOLVED_COST = 0.1  # solved = accuracy 1.0 and cost below this (on the plateau h = 0.5 +- 1e-6)


def solved(cost, accuracy):
    """The one rule for *solved*: accuracy 1 and cost below SOLVED_COST
    (tensors or pandas columns)."""
    return (accuracy == 1) & (cost < SOLVED_COST)


STUCK_SLOPE = 0.01  # a unit is stuck when |f'(z)| < STUCK_SLOPE * peak slope at every point


def columns(depth: int) -> list[str]:
    layers = depth + 1  # Linear layers, 1 = nearest the input
    return (
        ["step", "seed", "cost", "accuracy"]
        + [f"grad_norm_{i}" for i in range(1, layers + 1)]
        + [f"stuck_frac_{i}" for i in range(1, depth + 1)]
    )


def forward(model: nn.Sequential, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Logits [replicas, points] and each hidden layer's pre-activations z."""
    h = x.expand(model[0].weight.shape[0], -1, -1)
    pre_activations = []
    for layer in model:
        if not isinstance(layer, BatchedLinear):
            pre_activations.append(h)
        h = layer(h)
    return h.squeeze(-1), pre_activations


def cost(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The lesson's -mean(y log h + (1-y) log(1-h)) per replica, from logits so it stays finite."""
    return F.binary_cross_entropy_with_logits(logits, y.expand_as(logits), reduction="none").mean(1)


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The lesson's mean(floor(h + 0.5) == y) per replica."""
    return (torch.floor(torch.sigmoid(logits) + 0.5) == y).float().mean(1)


def grad_norms(layers: list[BatchedLinear]) -> torch.Tensor:
    """[layers, replicas]: L2 norm of each Linear layer's weight-and-bias gradient, per replica,
    as hypot(|grad W|, |grad b|); the hidden-to-hidden layers share a shape and go as one stack."""

    def norms(weights: torch.Tensor, biases: torch.Tensor) -> torch.Tensor:
        return torch.hypot(
            torch.linalg.vector_norm(weights, dim=(-2, -1)),
            torch.linalg.vector_norm(biases, dim=(-2, -1)),
        )

    first, last = layers[0], layers[-1]
    parts = [norms(first.weight.grad, first.bias.grad)[None]]
    if len(layers) > 2:
        parts.append(
            norms(
                torch.stack([layer.weight.grad for layer in layers[1:-1]]),
                torch.stack([layer.bias.grad for layer in layers[1:-1]]),
            )
        )
    parts.append(norms(last.weight.grad, last.bias.grad)[None])
    return torch.cat(parts)


def prelu_slopes(model: nn.Sequential) -> torch.Tensor | None:
    """The learned PReLU slopes of all hidden layers, [depth, replicas, 1, width];
    None for other activations."""
    slopes = [m.weight for m in model if isinstance(m, BatchedPReLU)]
    return torch.stack(slopes) if slopes else None


def stuck_fractions(
    pre_activations: list[torch.Tensor], act: Activation, act_cfg, prelu: torch.Tensor | None = None
) -> torch.Tensor:
    """[hidden layers, replicas]: fraction of units whose |slope| < 1% of the peak
    at every point."""
    z = torch.stack(pre_activations)  # [depth, replicas, points, units * pieces]
    slopes = act.slope(act_cfg, z, prelu).abs()
    stuck = (slopes < STUCK_SLOPE * act.peak_slope(act_cfg)).all(dim=2)  # [depth, replicas, units]
    return stuck.float().mean(2)


class Recorder:
    """Buffers logged rows as tensors and appends them to metrics.csv in whole chunks.

    Per-replica bookkeeping happens here too, once per chunk and vectorized over its steps, so
    logging every step stays cheap: a replica whose cost turned NaN/inf is *diverged* and its
    rows from then on are NaN; `since` is the first logged step of its current solved streak
    (-1 while unsolved). Flushes every `flush_rows` rows or `flush_seconds` seconds.
    """

    def __init__(
        self,
        path: Path,
        columns: list[str],
        seeds: list[int],
        device,
        steps: int,
        flush_rows: int = 200_000,
        flush_seconds: float = 5.0,
        resume: dict | None = None,
    ):
        self.seeds = np.asarray(seeds, dtype=np.int64)
        self.flush_rows, self.flush_seconds = flush_rows, flush_seconds
        fields = [pa.field("step", pa.int64()), pa.field("seed", pa.int64())]
        fields += [pa.field(name, pa.float32()) for name in columns[2:]]
        self.schema = pa.schema(fields)
        # what the failure diagnosis needs (xorrelu.diagnosis), kept as the rows go by
        self.layers = sum(name.startswith("grad_norm_") for name in columns)
        self.slow_mark = SLOW_AT * steps
        self.state = {
            "diverged": torch.zeros(len(seeds), dtype=torch.bool, device=device),
            "since": torch.full((len(seeds),), -1, dtype=torch.long, device=device),
            "first_ratio": torch.full((len(seeds),), float("nan"), device=device),
            "below_ln2": torch.zeros(len(seeds), dtype=torch.bool, device=device),
            "cost_at_90": torch.full((len(seeds),), float("nan"), device=device),
        }
        if resume:  # go on from a snapshot: drop any rows written after it, keep appending
            self.file = open(path, "r+b", buffering=0)
            self.file.truncate(resume["csv_bytes"])
            self.file.seek(resume["csv_bytes"])
            self.size = resume["csv_bytes"]
            for key, value in self.state.items():
                value.copy_(resume[key])
        else:
            self.file = open(path, "wb", buffering=0)
            self.size = 0
            self._append(self._csv(self.schema.empty_table(), header=True))
        self.last_row: torch.Tensor | None = None
        self.steps: list[int] = []
        self.rows: list[torch.Tensor] = []
        self.last_flush = time.monotonic()

    def add(self, step: int, row: torch.Tensor) -> None:
        """row: [replicas, columns - 2] (everything after step and seed) at `step`."""
        self.steps.append(step)
        self.rows.append(row)
        if (
            len(self.steps) * len(self.seeds) >= self.flush_rows
            or time.monotonic() - self.last_flush > self.flush_seconds
        ):
            self.flush()

    def flush(self) -> None:
        rows, steps = self.rows, self.steps  # taken out first: a failed write is not tried twice
        self.rows, self.steps = [], []
        self.last_flush = time.monotonic()
        if steps:
            self._flush(steps, rows)

    def _flush(self, step_list: list[int], rows: list[torch.Tensor]) -> None:
        values = torch.stack(rows)  # [steps, replicas, columns]
        steps = torch.tensor(step_list, device=values.device)
        cost, accuracy = values[..., 0], values[..., 1]
        state = self.state
        diverged = state["diverged"] | (~torch.isfinite(cost)).cummax(0).values
        values = values.masked_fill(diverged[..., None], float("nan"))
        solved_now = solved(cost, accuracy) & ~diverged
        # meaningful where any is unsolved
        last_unsolved = len(steps) - 1 - (~solved_now).flip(0).int().argmax(0)
        streak_start = torch.where(
            (~solved_now).any(0),
            steps[(last_unsolved + 1).clamp(max=len(steps) - 1)],
            torch.where(state["since"] >= 0, state["since"], steps[0]),
        )
        state["since"] = torch.where(solved_now[-1], streak_start, -1)
        state["diverged"], self.last_row = diverged[-1], values[-1]
        if step_list[0] == 0:  # step 0: how much gradient reaches the input layer
            state["first_ratio"] = values[0, :, 2] / values[0, :, 1 + self.layers]
        state["below_ln2"] |= (cost < LN2 - LN2_BAND).any(0)
        before_mark = steps <= self.slow_mark
        if before_mark.any():
            state["cost_at_90"] = values[int(before_mark.nonzero().max()), :, 0]
        flat = values.reshape(-1, values.shape[-1]).float().cpu().numpy()
        step_column = np.repeat(np.asarray(step_list, dtype=np.int64), len(self.seeds))
        seed_column = np.tile(self.seeds, len(step_list))
        arrays = [pa.array(step_column), pa.array(seed_column)] + [
            pa.array(flat[:, j]) for j in range(flat.shape[1])
        ]
        self._append(self._csv(pa.Table.from_arrays(arrays, schema=self.schema)))

    @staticmethod
    def _csv(table: pa.Table, header: bool = False) -> bytes:
        sink = pa.BufferOutputStream()
        options = pacsv.WriteOptions(
            include_header=header, quoting_style="none", quoting_header="none"
        )
        pacsv.write_csv(table, sink, write_options=options)
        return sink.getvalue().to_pybytes()

    def _append(self, data: bytes) -> None:
        """Whole rows or none: a write that fails part-way (a full disk) is cut back to the
        last whole row before the error goes on."""
        view = memoryview(data)
        try:
            while view:
                view = view[self.file.write(view) :]
        except OSError:
            self.file.truncate(self.size)
            self.file.seek(self.size)
            raise
        self.size += len(data)

    @property
    def diverged(self) -> torch.Tensor:
        return self.state["diverged"]

    @property
    def since(self) -> torch.Tensor:
        """First logged step of each replica's current solved streak; -1 while unsolved."""
        return self.state["since"]

    def causes(self) -> list[str | None]:
        """Why each replica is not solved (xorrelu.diagnosis), None for the solved ones."""
        last, depth = self.last_row, self.last_row.shape[1] - 2 - self.layers
        s = self.state
        return diagnose(
            s["since"] >= 0,
            s["diverged"],
            last[:, 0],
            last[:, 2 + self.layers :].reshape(-1, depth),
            s["first_ratio"],
            s["below_ln2"],
            s["cost_at_90"],
        )

    def snapshot(self) -> dict:
        """Flush, and return what a resumed run needs to go on from exactly here."""
        self.flush()
        return {"csv_bytes": self.size, **{k: v.cpu().clone() for k, v in self.state.items()}}

    def close(self) -> None:
        if not self.file.closed:
            try:
                self.flush()
            finally:
                self.file.close()
