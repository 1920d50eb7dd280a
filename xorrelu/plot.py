"""Comparison plots and the summary report, read from outputs/.

    python -m xorrelu.plot [PATH ...] [--out DIR]      # or: xorrelu-plot

PATH is a run dir, a multirun dir or outputs/ (default: the newest run or multirun under
outputs/). Jobs are grouped by the config keys that differ between them (never by seed), and
replicas of jobs that differ only in seed are pooled. Writes PNG + SVG plots, summary.csv and
summary.md into <first PATH>/plots/. Every plot function takes `ax=None` and returns the axes.
"""

from __future__ import annotations

import os
import signal
import sys

INTERRUPTED = "xorrelu-plot: interrupted; plots written so far are whole"


def _interrupted_while_starting(signum, frame) -> None:
    """Ctrl-C while the imports below load (seconds: torch, matplotlib): one line, not a
    traceback. Nothing has been written yet, so there is nothing to clean up."""
    print(INTERRUPTED, file=sys.stderr, flush=True)
    os._exit(130)


# only as a program: a library import must not touch the caller's signals
if __name__ == "__main__":
    signal.signal(signal.SIGINT, _interrupted_while_starting)

import argparse  # noqa: E402
import base64  # noqa: E402
import hashlib  # noqa: E402
import html  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import re  # noqa: E402
import warnings  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from omegaconf.errors import OmegaConfBaseException  # noqa: E402

from xorrelu.data import DATASETS, dataset_shape, featurize  # noqa: E402
from xorrelu.files import write_atomic  # noqa: E402
from xorrelu.jobdir import (  # noqa: E402
    JobDirError,
    find_jobs,
    load_weights,
    one_line,
    present,
    read_config,
)
from xorrelu.metrics import thin  # noqa: E402
from xorrelu.model import build_model  # noqa: E402
from xorrelu.outcomes import CAUSES, PLATEAU_COSTS, SOLVED_COST, STUCK_SLOPE, solved  # noqa: E402
from xorrelu.results import (  # noqa: E402
    PER_LAYER,
    TEST_COLUMNS,
    Job,
    ResultsError,
    column_name,
    fixed_description,
    job_dataset,
    job_outcomes,
    read_points,
    unusable,
    usable_jobs,
    varying_keys,
)
from xorrelu.stats import group_summary, markdown_table, table_rows  # noqa: E402

log = logging.getLogger(__name__)

OKABE_ITO = [
    "#0072B2",
    "#D55E00",
    "#009E73",
    "#CC79A7",
    "#E69F00",
    "#56B4E9",
    "#000000",
    "#F0E442",
]  # colorblind-safe
PLATEAUS = dict(
    zip(  # final costs of collapsed nets: the 4 XOR points merged into fewer distinct outputs
        [
            f"ln 2 = {PLATEAU_COSTS[0]:.3f}: all 4 points merged, h = 1/2",
            f"{PLATEAU_COSTS[1]:.3f}: 3 points merged, h = 2/3",
            f"{PLATEAU_COSTS[2]:.3f}: 2 pairs merged, h = 1/2 on each",
        ],
        PLATEAU_COSTS,
        strict=True,
    )
)
MAX_FAINT = 50  # a group with at most this many replicas draws each one's cost
CAUSE_COLORS = {
    "solved": "#009E73",
    "diverged": "#000000",
    "dead": "#D55E00",
    "vanished": "#0072B2",
    "plateau": "#E69F00",
    "slow": "#56B4E9",
    "other": "#CC79A7",
    "unknown": "#999999",
}
MAX_BOUNDARIES = 16  # replicas per group drawn in decision_boundary
MAX_BOUNDARY_GROUPS = 12  # groups that get a decision_boundary figure (a job dir plots its own)
# what this plotter wrote into an out dir: the only files it may replace there
MANIFEST = ".xorrelu-plot-files"
MAX_NAME = 100  # characters of a group label in a file name


@dataclass
class JobCurves:
    """What the plots need of one job's rows (reduce_job: of its metrics.csv, or of curves.csv,
    the same rows at the same steps); its rows are not kept."""

    steps: np.ndarray  # up to MAX_POINTS of its logged steps, evenly spaced as `thin` picks them
    seeds: np.ndarray  # its replicas, in order
    # cost, accuracy (test_cost, test_accuracy with a test split), grad_norm_i -> [steps, replicas]
    # float32, NaN where not logged; solved: 1 where solved by the job's rule, else 0
    series: dict
    layers: list  # per-layer columns that hold a value at some logged step (not only those kept)
    first_step: int
    first: pd.DataFrame  # per-layer columns of the rows at its first logged step
    last: pd.DataFrame  # per-layer columns of the rows at its last logged step
    outcomes: pd.DataFrame  # results.job_outcomes: one row per replica


@dataclass
class Curves:
    """One group's estimates, as the plots draw them: per step (at most MAX_POINTS steps) over
    every replica of the group's jobs, and per layer at the first and the last step."""

    steps: np.ndarray
    cost_quartiles: np.ndarray  # [3, steps]: 25%, 50%, 75% quantiles over replicas
    cost_replicas: np.ndarray | None  # [steps, replicas] when there are <= MAX_FAINT replicas
    drawable: bool  # some cost is positive and finite (a log axis has something to show)
    solved: np.ndarray  # fraction of replicas solved
    accuracy: np.ndarray  # mean accuracy over replicas
    test_accuracy: np.ndarray | None  # mean test accuracy over replicas; None without a test split
    grad_norms: dict  # grad_norm_i -> median over replicas per step, layer 1 first
    start: dict  # "grad_norm_" / "stuck_frac_" -> Series by layer: median / mean at the first step
    end: dict  # the same at each job's last step


@dataclass
class Results:
    curves: dict  # group label -> Curves
    jobs: list[str]  # every plotted job dir
    replicas: pd.DataFrame  # one row per replica: outcomes, with "group" and "job"
    summary: pd.DataFrame  # one row per group (stats.group_summary)
    keys: list[str]  # the varying config keys, as column names
    configs: list[dict]  # each job's flat config
    groups: list[str]  # group labels in sweep order
    title: str  # what all jobs share
    judging: dict  # job dir -> results.Judging: its dataset, rule for solved and plateaus
    not_completed: list = field(
        default_factory=list
    )  # (job dir, why): failed, interrupted, running or skipped jobs

    def color(self, group: str) -> str:
        return OKABE_ITO[self.groups.index(group) % len(OKABE_ITO)]


def collect(paths: list[str | Path]) -> Results:
    """Every job below `paths`, each reduced to its JobCurves as it is read (its rows dropped
    before the next job is read), then pooled per group into Curves. A completed job with a whole
    curves.csv is read from it (results.read_curves): the same rows at the steps drawn, in a
    thousandth of the bytes or less."""
    jobs, skipped = usable_jobs(paths, reduce=reduce_job, curves=True)
    keys = varying_keys([j.config for j in jobs])
    columns = [column_name(k) for k in keys]
    replicas, members = [], {}
    for job in jobs:
        values = {column_name(k): _shown(job.config.get(k)) for k in keys}
        label = ", ".join(f"{column}={value}" for column, value in values.items()) or "all"
        replicas.append(job.reduced.outcomes.assign(job=str(job.path), group=label, **values))
        members.setdefault(label, []).append(job.reduced)
    replicas = pd.concat(replicas, ignore_index=True)
    groups = list(dict.fromkeys(replicas.group))
    curves = {}
    for group in groups:
        curves[group] = group_curves(members.pop(group))  # each job's series freed with it
    summary = group_summary(replicas, columns)
    configs = [j.config for j in jobs]
    not_completed = [(str(j.path), _why_not_completed(j)) for j in jobs if j.status != "completed"]
    not_completed += [
        (str(s.path), "skipped, not plotted: " + s.reason.replace(f"{s.path}/", ""))
        for s in skipped
    ]  # path once
    return Results(
        curves=curves,
        jobs=[str(j.path) for j in jobs],
        replicas=replicas,
        summary=summary,
        keys=columns,
        configs=configs,
        groups=groups,
        title=fixed_description(configs),
        judging={str(j.path): j.judging for j in jobs},
        not_completed=not_completed,
    )


def _layer_names(columns, prefix: str) -> list[str]:
    return sorted((c for c in columns if c.startswith(prefix)), key=lambda c: int(c[len(prefix) :]))


def reduce_job(job: Job) -> JobCurves:
    """One job's rows reduced to what the plots draw: its outcomes, its per-replica values at up
    to MAX_POINTS steps, and its per-layer rows at its first and last step. From a curves.csv,
    which holds just those steps (xorrelu.metrics.curves_steps), it comes out the same. Solved is
    the job's own rule (results.Judging), on its test columns when it has some, as training
    judges it."""
    metrics = job.metrics
    outcomes = job_outcomes(job)
    step, seed = metrics.step.to_numpy(), metrics.seed.to_numpy()
    steps, seeds = np.unique(step), np.unique(seed)
    kept = thin(len(steps))
    position = np.full(len(steps), -1)
    position[kept] = np.arange(len(kept))
    row = position[np.searchsorted(steps, step)]
    chosen = row >= 0
    row, column = row[chosen], np.searchsorted(seeds, seed[chosen])
    layers = [c for c in metrics.columns if PER_LAYER.fullmatch(c)]
    series = {}
    tests = [name for name in TEST_COLUMNS if name in metrics]
    for name in ["cost", "accuracy", *tests, *_layer_names(layers, "grad_norm_")]:
        table = np.full((len(kept), len(seeds)), np.nan, dtype=np.float32)
        table[row, column] = metrics[name].to_numpy()[chosen]
        series[name] = table
    judged = tests or ["cost", "accuracy"]
    series["solved"] = solved(*(series[name] for name in judged), job.judging.rule)
    series["solved"] = series["solved"].astype(np.float32)
    return JobCurves(
        steps=steps[kept],
        seeds=seeds,
        series=series,
        layers=[c for c in layers if metrics[c].notna().any()],
        first_step=int(steps[0]),
        first=metrics.loc[step == steps[0], layers].reset_index(drop=True),
        last=metrics.loc[step == steps[-1], layers].reset_index(drop=True),
        outcomes=outcomes,
    )


def group_curves(parts: list[JobCurves]) -> Curves:
    """Pool the replicas of a group's jobs: at the union of their kept steps (thinned again to
    MAX_POINTS when they differ), quantiles, medians and means over every replica, as they were
    over every row. Frees each job's series once used."""
    steps = np.unique(np.concatenate([p.steps for p in parts]))
    steps = steps[thin(len(steps))]

    def table(name: str) -> np.ndarray:  # [steps, every replica of the group], float64
        blocks = []
        for part in parts:
            block = np.full((len(steps), len(part.seeds)), np.nan)
            if name in part.series:
                at = np.searchsorted(steps, part.steps).clip(max=len(steps) - 1)
                hit = steps[at] == part.steps
                block[at[hit]] = part.series[name][hit]
            blocks.append(block)
        return np.concatenate(blocks, axis=1)

    layers = {c for part in parts for c in part.layers}
    with warnings.catch_warnings():  # a step where every replica is NaN gives NaN, as it should
        warnings.simplefilter("ignore", RuntimeWarning)
        cost, accuracy = table("cost"), table("accuracy")
        tested = any("test_accuracy" in part.series for part in parts)
        curves = Curves(
            steps=steps,
            cost_quartiles=np.nanquantile(cost, [0.25, 0.5, 0.75], axis=1),
            cost_replicas=cost if cost.shape[1] <= MAX_FAINT else None,
            drawable=bool(((cost > 0) & np.isfinite(cost)).any()),
            solved=np.nan_to_num(table("solved")).mean(axis=1),  # a step not logged: unsolved
            accuracy=np.nanmean(accuracy, axis=1),
            test_accuracy=np.nanmean(table("test_accuracy"), axis=1) if tested else None,
            grad_norms={
                name: np.nanmedian(table(name), axis=1)
                for name in _layer_names(layers, "grad_norm_")
            },
            start={},
            end={},
        )
    first_step = min(part.first_step for part in parts)
    first = pd.concat([p.first for p in parts if p.first_step == first_step], ignore_index=True)
    last = pd.concat([p.last for p in parts], ignore_index=True)
    for prefix in ("grad_norm_", "stuck_frac_"):
        curves.start[prefix], curves.end[prefix] = _profile(first, prefix), _profile(last, prefix)
    for part in parts:
        part.series = {}
    return curves


def _why_not_completed(job) -> str:
    """A job that is plotted but did not finish, as the report lists it."""
    error = f" ({one_line(job.error)})" if job.error and job.error.strip() else ""
    return {
        "running": "status running: killed (SIGKILL, power loss) or still running; "
        "plotted up to its last flushed row",
        "interrupted": f"interrupted{error}; go on with: xorrelu-resume {job.path}",
        "failed": f"failed{error}; plotted up to its last complete row",
    }.get(job.status, "no status: summary.json is missing or does not say whether it completed")


def _axes(ax):
    if ax is None:
        import matplotlib.pyplot as plt

        ax = plt.gca()
    return ax


def plot_cost(results: Results, ax=None):
    """Cost vs step: median over replicas, interquartile band, faint replicas when <= 50."""
    ax = _axes(ax)
    # any positive, finite cost: when every replica diverged, a log axis has nothing to show
    drawable = False
    for group in results.groups:
        curves, color = results.curves[group], results.color(group)
        drawable |= curves.drawable
        if curves.cost_replicas is not None:
            ax.plot(curves.steps, curves.cost_replicas, color=color, alpha=0.15, linewidth=0.6)
        q25, median, q75 = curves.cost_quartiles
        ax.fill_between(curves.steps, q25, q75, color=color, alpha=0.25, linewidth=0)
        ax.plot(curves.steps, median, color=color, linewidth=2, label=f"{group} (median, IQR)")
    ax.set(
        yscale="log" if drawable else "linear",
        xlabel="step",
        ylabel="cost (binary cross-entropy)",
        title="Cost",
    )
    _legend(ax)
    return ax


def plot_accuracy(results: Results, ax=None):
    """Fraction of replicas solved vs step (solid) and mean accuracy (dashed)."""
    return _solid_and_dashed(
        results,
        ("solved", "solved"),
        ("accuracy", "mean accuracy"),
        ylabel="fraction of replicas / accuracy",
        title="Solved replicas and accuracy",
        ax=ax,
    )


def plot_test_accuracy(results: Results, ax=None):
    """Mean accuracy on the held-out points vs step (solid) and on the training points
    (dashed), for the groups with a test split."""
    return _solid_and_dashed(
        results,
        ("test_accuracy", "test"),
        ("accuracy", "train"),
        ylabel="mean accuracy over replicas",
        title="Test and train accuracy",
        ax=ax,
    )


def _solid_and_dashed(results: Results, solid, dashed, *, ylabel: str, title: str, ax=None):
    """Two curves per group against the step, in its color: `solid` (a Curves field, a label)
    thick, `dashed` thin; groups without the solid one are left out."""
    ax = _axes(ax)
    for group in results.groups:
        curves, color = results.curves[group], results.color(group)
        if getattr(curves, solid[0]) is None:
            continue
        for (name, label), style in (
            (solid, {"linewidth": 2}),
            (dashed, {"linewidth": 1, "linestyle": "--"}),
        ):
            ax.plot(
                curves.steps,
                getattr(curves, name),
                color=color,
                label=f"{group}: {label}",
                **style,
            )
    ax.set(ylim=(-0.02, 1.02), xlabel="step", ylabel=ylabel, title=title)
    _legend(ax)
    return ax


def _layer_columns(frame: pd.DataFrame, prefix: str) -> list[str]:
    return _layer_names((c for c in frame.columns if frame[c].notna().any()), prefix)


def plot_grad_norms(results: Results, group: str, ax=None):
    """One group: median gradient norm of every layer vs step,
    colored input (dark) to output (light)."""
    import matplotlib

    ax = _axes(ax)
    curves = results.curves[group]
    columns = list(curves.grad_norms)
    cmap = matplotlib.colormaps["viridis"]
    for i, column in enumerate(columns):
        label = f"layer {i + 1}" + (
            " (input)" if i == 0 else " (output)" if i == len(columns) - 1 else ""
        )
        ax.plot(
            curves.steps,
            curves.grad_norms[column],
            color=cmap(i / max(1, len(columns) - 1)),
            linewidth=1.2,
            label=label if i in (0, len(columns) - 1) else None,
        )
    ax.set(yscale="log", xlabel="step", ylabel="gradient norm (median over replicas)", title=group)
    if columns:  # none when every replica diverged at step 0
        _legend(ax)
    return ax


def _profile(rows: pd.DataFrame, prefix: str) -> pd.Series:
    """Per layer over `rows` (the rows of one step): the median gradient norm or the mean
    stuck fraction, of the layers with a value there."""
    columns = _layer_columns(rows, prefix)
    values = rows[columns].median() if prefix == "grad_norm_" else rows[columns].mean()
    values.index = [int(c.rsplit("_", 1)[1]) for c in columns]
    return values


def _plot_start_and_end(results: Results, prefix: str, ax) -> None:
    """Per layer, a quantity at step 0 (dashed) and at the last step (solid),
    one color per group."""
    for group in results.groups:
        color = results.color(group)
        start, end = results.curves[group].start[prefix], results.curves[group].end[prefix]
        ax.plot(
            start.index,
            start,
            color=color,
            linestyle="--",
            marker="o",
            markersize=3,
            label=f"{group}: step 0",
        )
        ax.plot(end.index, end, color=color, marker="o", markersize=3, label=f"{group}: last step")
    _legend(ax)


def plot_grad_profile(results: Results, ax=None):
    """Median gradient norm vs layer (1 = input) at step 0 (dashed) and at the last step (solid)."""
    ax = _axes(ax)
    _plot_start_and_end(results, "grad_norm_", ax)
    ax.set(
        yscale="log",
        xlabel="layer (1 = input)",
        ylabel="gradient norm (median over replicas)",
        title="Gradient profile",
    )
    return ax


def plot_outcomes(results: Results, ax=None):
    """Final cost of every replica per group, colored by why it is unsolved, with the
    collapsed-network plateaus marked (plateau_lines)."""
    ax = _axes(ax)
    rng = np.random.default_rng(0)
    rows = results.replicas.assign(
        x=results.replicas.group.map(results.groups.index)
        + rng.uniform(-0.25, 0.25, len(results.replicas)),
        outcome=results.replicas.cause.fillna("solved"),
    )
    for outcome, color in CAUSE_COLORS.items():
        chosen = rows[(rows.outcome == outcome) & ~rows.diverged]
        diverged = int(((rows.outcome == outcome) & rows.diverged).sum())
        if len(chosen) or diverged:
            ax.scatter(
                chosen.x,
                chosen.final_cost,
                s=14,
                color=color,
                alpha=0.75,
                label=f"{outcome} ({len(chosen) + diverged}"
                f"{', not drawn: NaN cost' if diverged else ''})",
            )
    styles = [":", "--", "-.", (0, (1, 4)), (0, (5, 5))]
    for i, (value, label) in enumerate(plateau_lines(results).items()):
        ax.axhline(value, color="gray", linestyle=styles[i % len(styles)], linewidth=1, label=label)
    tilt = len(results.groups) > 4
    ax.set_xticks(
        range(len(results.groups)),
        results.groups,
        rotation=30 if tilt else 0,
        ha="right" if tilt else "center",
    )
    ax.set(yscale="log", ylabel="final cost", title="Outcome of every replica, by cause")
    ax.legend(fontsize="x-small")
    return ax


def plateau_lines(results: Results) -> dict[float, str]:
    """cost -> label: the collapsed-network costs the outcome plot marks. For xor jobs the
    lesson's three (PLATEAUS); for any other dataset the best constant output's, the entropy of
    its training labels, once per value."""
    lines, names = {}, {}
    for judged in results.judging.values():
        if judged.plateaus == PLATEAU_COSTS:  # the lesson's 4 XOR points (outcomes.judging)
            lines.update({cost: label for label, cost in PLATEAUS.items()})
        else:
            cost = judged.plateaus[0]
            names.setdefault(round(cost, 3), (cost, []))[1].append(judged.dataset.name)
    for cost, datasets in names.values():
        if not any(abs(cost - drawn) < 1e-3 for drawn in lines):  # ln 2 is XOR's first already
            named = ", ".join(dict.fromkeys(datasets))
            lines[cost] = f"{cost:.3f}: constant output, the labels' entropy ({named})"
    return lines


def plot_decision_boundary(
    results: Results, job: str, seed: int, *, which: str = "final", ax=None, grids=None
):
    """The net's output h(x1, x2) for one replica over the plane of the job's points
    (job_plane: the lesson's XOR over [-0.5, 1.5]^2), the points on top: training points as
    dots, held-out ones as crosses (`grids`: outputs_on_grid's, when a caller computed several
    replicas at once)."""
    ax = _axes(ax)
    plane = job_plane(job)
    h = (grids or outputs_on_grid(job, which, [seed]))[seed]
    ax.imshow(h, origin="lower", extent=plane.extent, cmap="cividis", vmin=0, vmax=1)
    size = 40 if plane.lesson else 10
    for where, marker in (("train", "o"), ("test", "X")):
        points = plane.points[plane.points.split == where]
        ax.scatter(
            points.x1,
            points.x2,
            c=["white" if label else "black" for label in points.label],
            marker=marker,
            edgecolors="gray",
            linewidths=0.5 if plane.lesson else 0.3,
            s=size if marker == "o" else 1.4 * size,
        )
    row = results.replicas[(results.replicas.job == job) & (results.replicas.seed == seed)].iloc[0]
    outcome = "solved" if pd.isna(row.cause) else row.cause
    tested = which == "final" and pd.notna(row.get("final_test_accuracy", np.nan))
    ax.set_title(
        f"seed {seed}: {which}"
        + (f", cost {row.final_cost:.3g}, {outcome}" if which == "final" else "")
        + (f"\ntest accuracy {row.final_test_accuracy:.3g}" if tested else ""),
        fontsize="small",
    )
    if plane.lesson:
        ax.set_xticks([0, 1])
        ax.set_yticks([0, 1])
    return ax


_MODELS: dict = {}
_PLANES: dict = {}
GRID_SIDE = np.linspace(-0.5, 1.5, 81)  # the lesson's XOR plane, each axis
GRID_POINTS = len(GRID_SIDE)  # grid points per axis on any plane
MARGIN = 0.1  # of the points' span, on each side of the plane


@dataclass
class Plane:
    """Where a job's decision boundary is drawn: the points' range with a margin (the lesson's
    XOR: [-0.5, 1.5]^2, as it always was), its points and the features its net reads."""

    x1: np.ndarray  # the grid's coordinates along each axis, GRID_POINTS each
    x2: np.ndarray
    points: pd.DataFrame  # x1, x2, label, split (train or test)
    features: list | None  # dataset.features: the net's inputs from (x1, x2); None = x1, x2
    lesson: bool  # the lesson's 4 XOR points

    @property
    def extent(self) -> tuple[float, float, float, float]:
        return (self.x1[0], self.x1[-1], self.x2[0], self.x2[-1])


def job_plane(job: str) -> Plane:
    """The Plane of a job: its points from its data.csv (only the columns drawn), or, for an
    older job dir without one, rebuilt from its config (xorrelu.data.make_split)."""
    if job not in _PLANES:
        if len(_PLANES) > 8:
            _PLANES.clear()
        dataset = job_dataset(job)
        points = read_points(Path(job) / "data.csv", dataset, ["x1", "x2"])
        lesson = dataset.name == "xor"
        if lesson:
            x1 = x2 = GRID_SIDE
        else:
            xy = points[["x1", "x2"]].to_numpy()
            low, high = xy.min(axis=0), xy.max(axis=0)
            margin = MARGIN * np.where(high > low, high - low, 1.0)
            x1, x2 = np.linspace(low - margin, high + margin, GRID_POINTS).T
        features = dataset.get("features")
        _PLANES[job] = Plane(x1, x2, points, list(features) if features else None, lesson)
    return _PLANES[job]


def outputs_on_grid(job: str, which: str, seeds: list[int]) -> dict[int, np.ndarray]:
    """seed -> the net's output h over the job's plane [GRID_POINTS]^2 (job_plane; the grid's
    points through the job's features), for these replicas of the job in one forward pass (the
    batched parameters sliced to them: memory grows with the replicas drawn, not with the
    job's)."""
    model, all_seeds = _load_model(job, which)
    plane = job_plane(job)
    at = torch.tensor([all_seeds.index(seed) for seed in seeds])
    grid = torch.tensor(np.stack(np.meshgrid(plane.x1, plane.x2), axis=-1).reshape(-1, 2))
    inputs = featurize(grid, plane.features).float()
    params = {name: p[at] for name, p in model.named_parameters()}
    with torch.no_grad():
        logits = torch.func.functional_call(model, params, (inputs.expand(len(seeds), -1, -1),))
    h = torch.sigmoid(logits[..., 0]).numpy()
    return {seed: h[r].reshape(len(plane.x2), len(plane.x1)) for r, seed in enumerate(seeds)}


def _load_model(job: str, which: str):
    """(batched model, seeds) of a job's weights.pt;
    ResultsError (one line) for a file that is not one."""
    key = (job, which)
    if key not in _MODELS:
        if len(_MODELS) > 8:
            _MODELS.clear()
        path = Path(job) / "weights.pt"
        try:
            state = load_weights(Path(job))  # bounded: a zip bomb is refused unread
            seeds = state["seeds"]
            cfg = OmegaConf.create(read_config(Path(job))[0])
            _check_fits(cfg, state[which], len(seeds))
            model = build_model(cfg, dataset_shape(cfg.dataset)[1])
            model.load_state_dict(state[which])
        except JobDirError as error:
            raise unusable(error) from None
        except (
            RuntimeError,
            KeyError,
            IndexError,
            TypeError,
            ValueError,
            AttributeError,
            OmegaConfBaseException,
        ) as error:
            raise ResultsError(
                f"{path} is not a weights file written by xorrelu ({one_line(error, 160)})"
            ) from None
        _MODELS[key] = (model, seeds)
    return _MODELS[key]


def _check_fits(cfg, tensors: dict, replicas: int) -> None:
    """The net the job's config describes must fit in the tensors weights.pt holds, so that
    building it allocates no more than the (bounded) file: a hostile config cannot ask for
    a billion replicas."""
    depth, width = cfg.depth, cfg.width
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in (depth, width)):
        raise ValueError(
            f"the job's config has depth {depth!r} and width {width!r}, not whole numbers >= 1"
        )
    if cfg.replicas != replicas:
        raise ValueError(f"it holds {replicas} replicas, the job's config says {cfg.replicas!r}")
    pieces = cfg.activation.get("pieces", 1) if cfg.activation.get("name") == "maxout" else 1
    if not isinstance(pieces, int) or isinstance(pieces, bool) or pieces < 1:
        raise ValueError(
            f"the job's config has activation.pieces {pieces!r}, not a whole number >= 1"
        )
    inputs = dataset_shape(cfg.dataset)[1]
    units = width * pieces
    needed = replicas * ((inputs + 1) * units + (depth - 1) * (width + 1) * units + width + 1)
    stored = sum(tensor.numel() for tensor in tensors.values())
    if needed > stored:
        raise ValueError(
            f"its {stored:,} numbers are fewer than the {needed:,} the job's config needs"
        )


def _decision_boundary_figures(results: Results, initial: bool) -> dict:
    """One figure per group, up to MAX_BOUNDARIES replicas (and their initial nets beside them on
    request)."""
    figures = {}
    if len(results.groups) > MAX_BOUNDARY_GROUPS:
        log.info(
            "decision_boundary: drawn for up to %d groups, here %d; plot one job's with: "
            "xorrelu-plot JOB_DIR",
            MAX_BOUNDARY_GROUPS,
            len(results.groups),
        )
        return figures
    for group in results.groups:
        rows = results.replicas[results.replicas.group == group]
        rows = rows[
            [
                (Path(job) / "weights.pt").is_file() and seed in _load_model(job, "final")[1]
                for job, seed in zip(rows.job, rows.seed, strict=True)
            ]
        ]
        rows = rows.head(MAX_BOUNDARIES)
        if rows.empty:
            log.info("decision_boundary: %s has no weights.pt (unfinished jobs), skipped", group)
            continue
        panels = [
            (job, seed, which)
            for job, seed in zip(rows.job, rows.seed, strict=True)
            for which in (("initial", "final") if initial else ("final",))
        ]
        ncols = 4
        figure, axes = _figure(
            2.6 * ncols,
            2.5 * math.ceil(len(panels) / ncols),
            nrows=math.ceil(len(panels) / ncols),
            ncols=ncols,
            squeeze=False,
        )
        grids = {}  # (job, which) -> seed -> h: one forward pass per job for all its panels
        for job, seed, which in panels:
            grids.setdefault((job, which), []).append(int(seed))
        grids = {key: outputs_on_grid(*key, seeds) for key, seeds in grids.items()}
        for ax, (job, seed, which) in zip(axes.flat, panels, strict=False):
            plot_decision_boundary(
                results, job, int(seed), which=which, ax=ax, grids=grids[job, which]
            )
        for ax in list(axes.flat)[len(panels) :]:
            ax.set_visible(False)
        name = "decision_boundary" if len(results.groups) == 1 else _figure_name(group, figures)
        plane = job_plane(panels[0][0])
        inputs = ", ".join(plane.features or ["x1", "x2"])
        figure.suptitle(
            f"{group}: h(x1, x2) from blue (0) to yellow (1); points: white y = 1, black y = 0"
            + ("" if plane.lesson else f"; dots train, crosses test\nnet inputs: {inputs}"),
            fontsize="small",
        )
        figures[name] = figure
    return figures


def _figure_name(group: str, taken) -> str:
    """decision_boundary_<group> as a file name; a long label is cut, and a label that comes out
    like another's (a=b c, a=b_c) gets a hash, so no figure overwrites another."""
    name = "decision_boundary_" + re.sub(r"[^A-Za-z0-9.]+", "_", group).strip("_")
    if len(name) > MAX_NAME or name in taken:
        name = f"{name[:MAX_NAME]}_{hashlib.sha1(group.encode()).hexdigest()[:8]}"
    return name


def plot_stuck_units(results: Results, ax=None):
    """Mean fraction of stuck units per hidden layer, at step 0 (dashed) and at the end (solid)."""
    ax = _axes(ax)
    _plot_start_and_end(results, "stuck_frac_", ax)
    ax.set(
        ylim=(-0.02, 1.02),
        xlabel="hidden layer (1 = input side)",
        ylabel="fraction of units stuck",
        title="Stuck units",
    )
    return ax


def plot_success_heatmap(results: Results, ax=None):
    """Solved rate per cell when two config keys vary (e.g. depth x activation)."""
    ax = _axes(ax)
    rows, cols = results.keys
    table = results.summary.pivot_table(index=rows, columns=cols, values="solved_rate", sort=False)
    counts = results.summary.pivot_table(index=rows, columns=cols, values="replicas", sort=False)
    image = ax.imshow(table.values, cmap="cividis", vmin=0, vmax=1, aspect="auto")
    same = counts.stack().nunique() == 1  # every cell has the same count: say it once
    for (r, c), rate in np.ndenumerate(table.values):
        if not np.isnan(rate):
            ax.text(
                c,
                r,
                f"{rate:.0%}" if same else f"{rate:.0%}\nn={int(counts.values[r, c])}",
                ha="center",
                va="center",
                fontsize="x-small",
                color="black" if rate > 0.5 else "white",
            )
    ax.set_xticks(range(len(table.columns)), table.columns)
    ax.set_yticks(range(len(table.index)), table.index)
    title = f"Solved rate ({int(counts.values.flat[0])} replicas each)" if same else "Solved rate"
    ax.set(xlabel=cols, ylabel=rows, title=title)
    ax.figure.colorbar(image, ax=ax, label="fraction of replicas solved")
    return ax


def _shown(value):
    """A config value as a group label and table cell: null as Hydra writes it (a column of
    numbers and nulls would otherwise turn into floats and NaN)."""
    return "null" if value is None else value


def numeric_key(results: Results) -> str | None:
    """The varying key whose values are all numbers (depth, width, lr ...), if there is one."""
    for key in results.keys:
        values = results.summary[key]
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            return key
    return None


def plot_solved_rate(results: Results, ax=None):
    """Solved rate against a numeric key (e.g. depth or width), with its 95% interval; one line
    per value of the other varying key, if there is one."""
    ax = _axes(ax)
    x = numeric_key(results)
    others = [k for k in results.keys if k != x]
    lines = results.summary.groupby(others[0], sort=False) if others else [("all", results.summary)]
    for i, (name, rows) in enumerate(lines):
        rows = rows.sort_values(x)
        color = OKABE_ITO[i % len(OKABE_ITO)]
        label = f"{others[0]}={name}" if others else None
        ax.plot(rows[x], rows.solved_rate, "o-", color=color, markersize=3, label=label)
        ax.fill_between(rows[x], rows.solved_ci_low, rows.solved_ci_high, color=color, alpha=0.2)
    ax.set(
        ylim=(-0.02, 1.02),
        xlabel=x,
        ylabel="fraction of replicas solved",
        title="Solved rate (bands: 95% Wilson intervals)",
    )
    if others:
        _legend(ax)
    return ax


MAX_LEGEND_ROWS = 20


def _legend(ax) -> None:
    """The legend inside the axes; past MAX_LEGEND_ROWS entries (a 60-group sweep), beside them
    in columns of small type, the figure widened to make room, so the axes keep their size."""
    entries = len(ax.get_legend_handles_labels()[0])
    if entries <= 12:
        ax.legend(fontsize="small")
        return
    columns = math.ceil(entries / MAX_LEGEND_ROWS)
    ax.legend(fontsize="xx-small", ncols=columns, loc="upper left", bbox_to_anchor=(1.01, 1))
    width, height = ax.figure.get_size_inches()
    ax.figure.set_size_inches(width + 1.6 * columns, height)


def _figure(width: float = 7.5, height: float = 4.8, **subplots) -> tuple[Figure, object]:
    figure = Figure(figsize=(width, height), layout="constrained")
    return figure, figure.subplots(**subplots)


def write_report(
    paths: list[str | Path], out_dir: str | Path | None = None, initial: bool = False
) -> Path:
    """All plots plus summary.csv, summary.md and report.html for the jobs below `paths`;
    returns the plots dir. Everything that can refuse the input runs before the first write, and
    each file is written whole or not at all."""
    results = collect(paths)
    default_dir = Path(paths[0]) / "plots"
    out_dir = Path(out_dir) if out_dir else default_dir
    figures = draw_figures(results, initial)
    names = [f"{name}.{suffix}" for name in figures for suffix in ("png", "svg")] + [
        "summary.csv",
        "summary.md",
        "report.html",
    ]
    _claim(out_dir, names, ours_by_default=out_dir.resolve() == default_dir.resolve())
    for name, figure in figures.items():
        for suffix in ("png", "svg"):
            write_atomic(
                out_dir / f"{name}.{suffix}",
                lambda file, f=figure, s=suffix: f.savefig(file, format=s, dpi=100),
            )
    write_atomic(out_dir / "summary.csv", results.summary.to_csv(index=False).encode())
    write_atomic(out_dir / "summary.md", summary_markdown(results).encode())
    write_html(results, out_dir, list(figures))
    return out_dir


def draw_figures(results: Results, initial: bool = False) -> dict:
    """name -> Figure, every plot of the report (nothing is written)."""
    figures = {}
    tested = any(curves.test_accuracy is not None for curves in results.curves.values())
    for name, draw in [
        ("cost", plot_cost),
        ("accuracy", plot_accuracy),
        *[("test_accuracy", plot_test_accuracy)] * tested,
        ("grad_profile", plot_grad_profile),
        ("outcomes", plot_outcomes),
        ("stuck_units", plot_stuck_units),
    ]:
        figures[name], ax = _figure()
        draw(results, ax=ax)
    n = len(results.groups)
    ncols = min(n, 3)
    figures["grad_norms"], axes = _figure(
        4.2 * ncols,
        3.4 * math.ceil(n / ncols),
        nrows=math.ceil(n / ncols),
        ncols=ncols,
        squeeze=False,
        sharey=True,
    )
    for ax, group in zip(axes.flat, results.groups, strict=False):
        plot_grad_norms(results, group, ax=ax)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    if len(results.keys) == 2:
        rows, cols = (results.summary[key].nunique() for key in results.keys)
        figures["success_heatmap"], ax = _figure(
            max(6.5, 0.45 * cols + 2.5), max(4.8, 0.3 * rows + 1.5)
        )
        plot_success_heatmap(results, ax=ax)
    if len(results.keys) in (1, 2) and numeric_key(results):
        figures["solved_rate"], ax = _figure()
        plot_solved_rate(results, ax=ax)
    for figure in figures.values():
        figure.suptitle(results.title, fontsize="small")
    if {_dims(c) for c in results.configs} == {2}:
        figures.update(_decision_boundary_figures(results, initial))
    else:
        log.info("decision_boundary: drawn only for 2-D datasets; skipped")
    return figures


def _dims(config: dict) -> int | None:
    """Coordinates of a job's points (before features); None when its config does not name a
    dataset (results checked the name)."""
    if config.get("dataset.name") is None:
        return None
    dataset = DATASETS.get(config["dataset.name"])
    return dataset.dims(OmegaConf.create({"bits": config.get("dataset.bits")}))


def summary_markdown(results: Results) -> str:
    """summary.md: the title, the group table, and the jobs that did not complete."""
    text = f"{results.title}\n\n" + markdown_table(results.summary, results.keys)
    if results.not_completed:
        text += "\n## Jobs not completed\n\n" + "".join(
            f"- {_flat(job)}: {_flat(why)}\n" for job, why in results.not_completed
        )
    return text


def _flat(text: str) -> str:
    """One line: a path may hold a newline, and summary.md and the log are read line by line."""
    return " ".join(str(text).splitlines())


def _claim(out_dir: Path, names: list[str], ours_by_default: bool) -> None:
    """Make sure every file about to be written is this plotter's to replace, then record them.

    In <PATH>/plots every report file is the plotter's own. In a dir named by --out, only files
    listed in its MANIFEST are: any other file of the same name is the user's, and the whole
    report is refused before anything is written, so nothing of theirs is overwritten."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ResultsError(
            f"cannot write the plots into {out_dir}: it is a file, not a directory; "
            "choose another --out"
        )
    listed = _manifest(out_dir)
    foreign = [
        name
        for name in names
        if os.path.lexists(out_dir / name) and name not in listed and not ours_by_default
    ]
    if foreign:
        more = f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else ""
        raise ResultsError(
            f"{out_dir / foreign[0]}{more} exists and was not written by xorrelu-plot; "
            "it is left as it is: choose another --out or move it away"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(
        out_dir / MANIFEST, "".join(f"{name}\n" for name in sorted(listed | set(names))).encode()
    )


def _manifest(out_dir: Path) -> set[str]:
    try:
        with open(out_dir / MANIFEST, "rb") as file:
            return set(file.read(2**20).decode("utf-8").splitlines())
    except (OSError, UnicodeDecodeError):
        return set()


CAPTIONS = {
    "cost": (
        "Cost vs step, log scale: thick line the median over replicas, band the interquartile "
        "range, faint lines single replicas. "
        "A band that splits means some replicas solve XOR and others stay on a plateau."
    ),
    "accuracy": (
        "Solid: the fraction of replicas solved at each step, by the dataset's rule "
        f"(xor, parity: accuracy 1 and cost < {SOLVED_COST:g}; the Playground's sets: test "
        "accuracy at least dataset.solved_accuracy); dashed: mean accuracy on the training "
        "points. A solved fraction that stops rising means the rest are stuck, not slow."
    ),
    "test_accuracy": (
        "Mean accuracy over replicas on the held-out points (solid) and on the training points "
        "(dashed), for jobs with a test split. A gap that opens is overfitting."
    ),
    "grad_norms": (
        "Median gradient norm of each Linear layer vs step, "
        "dark = input layer, light = output layer, log scale. "
        "Layers far below the output layer are where the gradient vanished."
    ),
    "grad_profile": (
        "Median gradient norm vs layer (1 = input) at step 0 (dashed) and at the end (solid). "
        "A line falling to the left is a gradient vanishing on its way to the input."
    ),
    "outcomes": (
        "Final cost of every replica, colored by why it is unsolved "
        f"({', '.join(CAUSES)}). "
        "Gray lines: the costs of collapsed nets: for XOR's 4 points "
        f"ln 2, {PLATEAU_COSTS[1]:.3f} and {PLATEAU_COSTS[2]:.3f}; for other datasets the best "
        "constant output's, the entropy of the training labels."
    ),
    "stuck_units": (
        "Mean fraction of stuck units per hidden layer "
        f"(slope below {STUCK_SLOPE:.0%} of its peak at every point), at step 0 and at the end. "
        "A layer at 1 is dead: nothing passes it."
    ),
    "success_heatmap": (
        "Solved rate per combination of the two swept keys, with the number of replicas. "
        "Read across a row to see where a setting starts or stops training."
    ),
    "solved_rate": (
        "Solved rate against the swept number, one line per value of the other swept key, "
        "with 95% Wilson intervals as bands."
    ),
    "decision_boundary": (
        f"The net's output h over the plane for up to {MAX_BOUNDARIES} replicas "
        "(blue 0 to yellow 1), "
        "the data's points on top (white y = 1, black y = 0; dots train, crosses test), "
        "over the range of the points (XOR: [-0.5, 1.5]^2). "
        "A solved net separates the white points from the black; "
        "a dead or vanished one is one flat color."
    ),
}


def write_html(results: Results, out_dir: Path, names: list[str]) -> Path:
    """plots/report.html: one self-contained page (images embedded, no network needed)."""
    header, rows = table_rows(results.summary, results.keys)
    table = (
        "<table><thead><tr>"
        + "".join(f"<th>{html.escape(h)}</th>" for h in header)
        + "</tr></thead><tbody>"
    )
    table += (
        "".join(
            "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows
        )
        + "</tbody></table>"
    )
    sections = []
    for name in names:
        image = base64.b64encode((out_dir / f"{name}.png").read_bytes()).decode()
        caption = CAPTIONS["decision_boundary" if name.startswith("decision_boundary") else name]
        sections.append(
            f'<figure><h2>{html.escape(name)}</h2><img alt="{html.escape(name)}" '
            f'src="data:image/png;base64,{image}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>xorrelu report</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}} \
table{{border-collapse:collapse;font-size:0.9em}}
td,th{{border:1px solid #bbb;padding:4px 8px;text-align:left}} img{{max-width:100%}} \
figcaption{{color:#555;max-width:900px}}</style>
</head><body>
<h1>xorrelu report</h1>
<p>{html.escape(results.title)}. {len(results.replicas)} replicas in {len(results.groups)} \
group(s) from {len(results.jobs)} job(s).</p>
<h2>Summary</h2>
{table}
<p>Solved, at the last step, by the dataset's rule: xor and parity accuracy 1 and cost \
&lt; {SOLVED_COST:g}; the Playground's sets test accuracy at least dataset.solved_accuracy \
(0.9 by default); interval: Wilson 95%. Accuracies: median [IQR], mean. \
Causes (README, Failure diagnosis): {", ".join(CAUSES)}.</p>
{_not_completed_html(results)}{"".join(sections)}
</body></html>
"""
    path = out_dir / "report.html"
    write_atomic(path, page.encode())
    return path


def _not_completed_html(results: Results) -> str:
    if not results.not_completed:
        return ""
    items = "".join(
        f"<li><code>{html.escape(job)}</code>: {html.escape(why)}</li>"
        for job, why in results.not_completed
    )
    return f"<h2>Jobs not completed</h2>\n<ul>{items}</ul>\n"


def newest_run(outputs: Path = Path("outputs")) -> Path:
    """The newest run or multirun dir under outputs/ that holds a job with a summary.json."""
    candidates = [
        p
        for p in outputs.glob("*/*/*")
        if p.is_dir() and p.parent.parent.name in ("runs", "multirun") and _has_summary(p)
    ]
    if not candidates:
        raise ResultsError(
            f"no run with a summary.json under {outputs}/; pass a PATH or train first: "
            "python -m xorrelu"
        )
    return max(candidates, key=lambda p: (p.parent.name, p.name))


def _has_summary(run_dir: Path) -> bool:
    try:
        return any(present(job / "summary.json") for job in find_jobs(run_dir))
    except JobDirError:  # it cannot be listed: not the run to plot
        return False


def main(argv: list[str] | None = None) -> int:
    """Exit codes: 0 written, 2 unusable input or output dir, 130 Ctrl-C, 1 a bug."""
    if signal.getsignal(signal.SIGINT) is _interrupted_while_starting:
        signal.signal(
            signal.SIGINT, signal.default_int_handler
        )  # from here on, Ctrl-C unwinds and cleans up
    parser = argparse.ArgumentParser(prog="xorrelu-plot", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "paths",
        nargs="*",
        metavar="PATH",
        help="run dir, multirun dir or outputs/ (default: the newest run)",
    )
    parser.add_argument("--out", help="where to write (default: <first PATH>/plots)")
    parser.add_argument(
        "--initial",
        action="store_true",
        help="draw each net's initial decision boundary beside its final one",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(format="%(levelname)s: %(message)s", level=logging.INFO)
    try:
        paths = args.paths or [newest_run()]
        out = write_report(paths, args.out, initial=args.initial)
        print(f"wrote plots and summary to {out}")
        print((out / "summary.md").read_text())
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)
        return 130
    except (ResultsError, OSError) as error:
        print(f"xorrelu-plot: error: {_flat(error)}", file=sys.stderr)
        return 2
    except Exception as error:  # noqa: BLE001 — a bug, but still one line and never a half-written file
        print(
            f"xorrelu-plot: error: unexpected {type(error).__name__}: "
            f"{_flat(error)[:300]} (a bug in xorrelu-plot; please report it)",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
