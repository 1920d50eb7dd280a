"""What is measured at every logged step, and the writer of metrics.csv.

The engines measure a step as named metrics, one value per replica:
  cost, accuracy  [replicas]                 on every training point (not just a mini-batch)
  test_cost, test_accuracy [replicas]        only with a test split: on the held-out points
  penalty         [replicas]                 only with regularization: rate x the weights' term
  grad_norm       [layers, replicas]         Linear layers 1..depth+1, 1 = nearest the input
  stuck_frac      [hidden layers, replicas]  hidden layers 1..depth
A row describes the parameters after `step` updates: its cost, accuracy and stuck fractions
are measured there, and its gradient norms are of the gradient that update step+1 applies.
Only the Recorder lays them out as columns (`columns`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import torch
import torch.nn.functional as F
from torch import nn

from xorrelu.activations import Activation, BatchedPReLU
from xorrelu.model import BatchedLinear
from xorrelu.outcomes import STUCK_SLOPE, Outcomes, blank

# in the order of the columns; test_* only with a test split (dataset.test_fraction), penalty
# only with regularization (xorrelu.regularization)
METRICS = ("cost", "accuracy", "test_cost", "test_accuracy", "penalty", "grad_norm", "stuck_frac")
OPTIONAL = {"test_cost": "test", "test_accuracy": "test", "penalty": "penalty"}
MAX_POINTS = 1000  # logged steps a plot draws per line (and curves.csv keeps); more are thinned
CURVES_ABOVE = 2 * MAX_POINTS  # curves.csv is written when a job logs more steps than this
MAX_CHUNK_STEPS, MAX_CHUNK_ROWS = 65536, 16384  # the Recorder flushes when it holds this many


def columns(depth: int, penalty: bool = False, test: bool = False) -> list[str]:
    """metrics.csv's header; test_cost and test_accuracy after accuracy with `test` (a test
    split), then a penalty column with `penalty` (a regularized run): without them the file is as
    it was before they existed."""
    layers = depth + 1  # Linear layers, 1 = nearest the input
    return (
        ["step", "seed", "cost", "accuracy"]
        + ["test_cost", "test_accuracy"] * test
        + ["penalty"] * penalty
        + [f"grad_norm_{i}" for i in range(1, layers + 1)]
        + [f"stuck_frac_{i}" for i in range(1, depth + 1)]
    )


def logged(cfg, step: int) -> bool:
    """Whether metrics.csv gets a row at `step`: every log_every steps, every step up to
    log_first, and the last step."""
    return step % cfg.log_every == 0 or step <= cfg.log_first or step == cfg.steps


def last_logged_before(cfg, step: int) -> int:
    """The last step before `step` (> 0) that has a row (a resumed file must end with it)."""
    return max(cfg.log_every * ((step - 1) // cfg.log_every), min(step - 1, cfg.log_first))


def logged_steps(steps: int, log_every: int, log_first: int) -> tuple[int, Callable]:
    """(n, at): how many steps `logged` picks out of 0..steps, and a function from positions
    (a numpy array, 0 = step 0) to those steps, without listing all n."""
    first = min(log_first, steps)  # 0..first: every step
    every = steps // log_every - first // log_every  # the multiples of log_every after it
    n = first + 1 + every + (steps > first and steps % log_every != 0)

    def at(positions: np.ndarray) -> np.ndarray:
        later = log_every * (first // log_every + 1 + positions - (first + 1))
        return np.where(
            positions <= first, positions, np.where(positions < first + 1 + every, later, steps)
        )

    return n, at


def thin(n: int) -> np.ndarray:
    """Positions of the steps drawn out of n: all of them, or MAX_POINTS evenly spaced (always
    the first and the last)."""
    if n <= MAX_POINTS:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, MAX_POINTS).round().astype(int))


def curves_steps(steps: int, log_every: int, log_first: int) -> np.ndarray | None:
    """The logged steps curves.csv keeps (those a plot draws, `thin`), in order; None when the job
    logs at most CURVES_ABOVE steps and writes no curves.csv (its metrics.csv is about as thin)."""
    n, at = logged_steps(steps, log_every, log_first)
    return at(thin(n)) if n > CURVES_ABOVE else None


def write_curves(metrics: Path, curves: Path, steps: np.ndarray, end: int | None = None) -> int:
    """curves.csv made again from metrics.csv (its first `end` bytes): the header and the rows at
    `steps`, byte for byte as they are there; returns its size."""
    keep = {int(step) for step in steps}
    read = size = 0
    with open(metrics, "rb") as source, open(curves, "wb") as target:
        for line in source:
            read += len(line)
            if not line.endswith(b"\n") or end is not None and read > end:
                break  # a row cut off by a kill, or past `end`
            if size == 0 or int(line[: line.index(b",")]) in keep:
                size += target.write(line)
    return size


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
    return (torch.floor(torch.sigmoid(logits) + 0.5) == y).to(logits.dtype).mean(1)


def grad_norm(layers: list[BatchedLinear]) -> torch.Tensor:
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


def stuck_frac(
    pre_activations: list[torch.Tensor],
    activation: Activation,
    activation_cfg,
    prelu: torch.Tensor | None = None,
) -> torch.Tensor:
    """[hidden layers, replicas]: fraction of units whose |slope| < 1% of the peak
    at every point."""
    z = torch.stack(pre_activations)  # [depth, replicas, points, units * pieces]
    slopes = activation.slope(activation_cfg, z, prelu).abs()
    stuck = (slopes < STUCK_SLOPE * activation.peak_slope(activation_cfg)).all(
        dim=2
    )  # [depth, replicas, units]
    return stuck.to(z.dtype).mean(2)


class Recorder:
    """Takes every step's metrics, and appends the logged ones to metrics.csv in whole chunks:
    every `flush_rows` rows or `flush_seconds` seconds. Each chunk first goes through the
    run's outcome tracker (xorrelu.outcomes): every step's cost and accuracy, then the logged
    rows, blanked from where a replica diverged. A chunk's work is vectorized over its steps,
    so logging every step stays cheap. With `curves` (curves_steps), the rows at those steps
    also go to curves.csv beside it, at the same moments. With `resume_at` (a byte offset in
    metrics.csv) it drops any rows written after it and appends from there; curves.csv likewise
    from `curves_at`, or, without one that ends on a whole row, made again from metrics.csv.
    With `penalty` (a regularized run) the rows have a penalty column after accuracy.
    """

    def __init__(
        self,
        path: Path,
        depth: int,
        seeds: list[int],
        outcomes: Outcomes,
        *,
        penalty: bool = False,
        test: bool = False,
        curves: np.ndarray | None = None,
        resume_at: int | None = None,
        curves_at: int | None = None,
        flush_rows: int = 200_000,
        flush_seconds: float = 5.0,
    ):
        self.seeds = np.asarray(seeds, dtype=np.int64)
        self.outcomes = outcomes
        self.flush_rows, self.flush_seconds = flush_rows, flush_seconds
        fields = [pa.field("step", pa.int64()), pa.field("seed", pa.int64())]
        fields += [pa.field(name, pa.float32()) for name in columns(depth, penalty, test)[2:]]
        wanted = {"penalty": penalty, "test": test}
        self.metrics = [name for name in METRICS if wanted.get(OPTIONAL.get(name), True)]
        # what the outcome tracker takes at every step: cost and accuracy, and the test split's
        self.tracked = ("cost", "accuracy") + (("test_cost", "test_accuracy") if test else ())
        self.schema = pa.schema(fields)
        header = self._csv(self.schema.empty_table(), header=True)
        self.file = Rows(path, header, resume_at)
        self.curves, self.curves_file = curves, None
        if curves is not None:
            curves_path = path.with_name("curves.csv")
            if resume_at is None:
                curves_at = None
            elif not Rows.ends_at(curves_path, curves_at):
                curves_at = write_curves(path, curves_path, curves, resume_at)
            self.curves_file = Rows(curves_path, header, curves_at)
        self.steps: list[int] = []  # every step taken since the last flush
        replicas = len(self.seeds)
        # their cost and accuracy (and on the test split, where solved is judged)
        self.every_step = Chunk(min(MAX_CHUNK_STEPS, max(1, 10 * flush_rows // replicas)))
        self.logged: list[int] = []  # which of them are logged (indexes into self.steps)
        self.rows = Chunk(min(MAX_CHUNK_ROWS, max(1, flush_rows // replicas)))  # every metric
        self.last_flush = time.monotonic()

    def add(self, step: int, metrics: dict[str, torch.Tensor], logged: bool) -> None:
        """The metrics of every replica at `step`: cost and accuracy at every step, all of them
        (see the top) at a logged step."""
        self.steps.append(step)
        self.every_step.add({name: metrics[name] for name in self.tracked})
        if logged:
            self.logged.append(len(self.steps) - 1)
            self.rows.add({name: metrics[name] for name in self.metrics})
        if (
            self.rows.full
            or self.every_step.full
            or time.monotonic() - self.last_flush > self.flush_seconds
        ):
            self.flush()

    def flush(self) -> None:
        # taken out first: a failed write is not tried twice
        steps, logged = self.steps, self.logged
        every_step, chunk = self.every_step.take(), self.rows.take()
        self.steps, self.logged = [], []
        self.last_flush = time.monotonic()
        if not steps:
            return
        cost, accuracy = every_step["cost"], every_step["accuracy"]  # [steps, replicas]
        held_out = None
        if "test_cost" in every_step:
            held_out = every_step["test_cost"], every_step["test_accuracy"]
        diverged = self.outcomes.update(steps, cost, accuracy, held_out)
        if chunk is not None:
            at = torch.tensor(logged, device=diverged.device)
            kept = {name: blank(values, diverged[at]) for name, values in chunk.items()}
            logged_steps = [steps[i] for i in logged]
            self.outcomes.see_rows(logged_steps, kept)
            self._write(logged_steps, kept)

    def _write(self, steps: list[int], chunk: dict[str, torch.Tensor]) -> None:
        """The rows of `chunk` in the column order of `columns`, one per step and seed; those at
        the steps of `curves` also to curves.csv."""
        values = torch.cat(
            [
                chunk[name][..., None] if chunk[name].dim() == 2 else chunk[name].transpose(1, 2)
                for name in self.metrics
            ],
            dim=2,
        )  # [steps, replicas, columns after step and seed]
        flat = values.reshape(-1, values.shape[-1]).float().cpu().numpy()
        step_column = np.repeat(np.asarray(steps, dtype=np.int64), len(self.seeds))
        seed_column = np.tile(self.seeds, len(steps))
        arrays = [pa.array(step_column), pa.array(seed_column)] + [
            pa.array(flat[:, j]) for j in range(flat.shape[1])
        ]
        table = pa.Table.from_arrays(arrays, schema=self.schema)
        self.file.append(self._csv(table))
        if self.curves_file is not None:
            kept = np.isin(step_column, self.curves)
            if kept.any():
                self.curves_file.append(self._csv(table.filter(pa.array(kept))))

    @staticmethod
    def _csv(table: pa.Table, header: bool = False) -> bytes:
        sink = pa.BufferOutputStream()
        options = pacsv.WriteOptions(
            include_header=header, quoting_style="none", quoting_header="none"
        )
        pacsv.write_csv(table, sink, write_options=options)
        return sink.getvalue().to_pybytes()

    def position(self) -> int:
        """Flush, and return the end of metrics.csv's last whole row: where a resumed run
        appends."""
        self.flush()
        return self.file.size

    def curves_position(self) -> int | None:
        """The same for curves.csv (None without one); after `position`."""
        return None if self.curves_file is None else self.curves_file.size

    def close(self) -> None:
        try:
            if not self.file.closed:
                self.flush()
        finally:
            self.file.close()
            if self.curves_file is not None:
                self.curves_file.close()


class Chunk:
    """The values of up to `capacity` steps, copied into tensors made at the first step and
    reused. Keeping each step's own small tensors until a flush instead fragments the heap
    around a compiled step's large buffers: at 512 points x 100 replicas the process grew by
    ~0.7 MB a step (1.4 GB in 2,000 steps) and kept it after the flush."""

    def __init__(self, capacity: int):
        self.capacity, self.n = capacity, 0
        self.buffers: dict[str, torch.Tensor] | None = None

    def add(self, values: dict[str, torch.Tensor]) -> None:
        if self.buffers is None:
            self.buffers = {k: v.new_empty((self.capacity, *v.shape)) for k, v in values.items()}
        for name, value in values.items():
            self.buffers[name][self.n].copy_(value)
        self.n += 1

    @property
    def full(self) -> bool:
        return self.n == self.capacity

    def take(self) -> dict[str, torch.Tensor] | None:
        """The values added since the last take, [steps, ...] each (copies); None if none."""
        n, self.n = self.n, 0
        if n == 0:
            return None
        return {name: values[:n].clone() for name, values in self.buffers.items()}


class Rows:
    """A CSV file that grows by whole rows: new with its header, or, from `resume_at` (bytes),
    cut back to there and appended to."""

    def __init__(self, path: Path, header: bytes, resume_at: int | None = None):
        if resume_at is not None:
            self.file = open(path, "r+b", buffering=0)
            self.file.truncate(resume_at)
            self.file.seek(resume_at)
            self.size = resume_at
        else:
            self.file = open(path, "wb", buffering=0)
            self.size = 0
            self.append(header)

    @staticmethod
    def ends_at(path: Path, at: int | None) -> bool:
        """Whether `path` holds a whole row (or the header) that ends at byte `at`."""
        if type(at) is not int or at < 1:
            return False
        try:
            with open(path, "rb") as file:
                file.seek(at - 1)
                return file.read(1) == b"\n"
        except OSError:
            return False

    @property
    def closed(self) -> bool:
        return self.file.closed

    def append(self, data: bytes) -> None:
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

    def close(self) -> None:
        self.file.close()
