"""Comparison plots and the summary report, read from outputs/.

    python -m xorrelu.plot [PATH ...] [--out DIR]      # or: xorrelu-plot

PATH is a run dir, a multirun dir or outputs/ (default: the newest run or multirun under
outputs/). Jobs are grouped by the config keys that differ between them (never by seed), and
replicas of jobs that differ only in seed are pooled. Writes PNG + SVG plots, summary.csv and
summary.md into <first PATH>/plots/. Every plot function takes `ax=None` and returns the axes.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from xorrelu.results import ResultsError, column_name, fixed_description, load_jobs, replica_outcomes, varying_keys
from xorrelu.stats import group_summary, markdown_table

log = logging.getLogger(__name__)

OKABE_ITO = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442"]  # colorblind-safe
PLATEAUS = {  # final costs of collapsed nets: the 4 points merged into fewer distinct outputs
    "ln 2 = 0.693: all 4 points merged, h = 1/2": math.log(2),
    "0.477: 3 points merged, h = 2/3": 0.75 * -(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3)),
    "0.347: 2 pairs merged, h = 1/2 on each": math.log(2) / 2,
}
MAX_POINTS = 1000  # steps drawn per line; longer runs are thinned evenly


@dataclass
class Results:
    metrics: pd.DataFrame  # every logged row, with "group" (label) and "job"
    replicas: pd.DataFrame  # one row per replica: outcomes, with "group"
    summary: pd.DataFrame  # one row per group (stats.group_summary)
    keys: list[str]  # the varying config keys, as column names
    groups: list[str]  # group labels in sweep order
    title: str  # what all jobs share

    def color(self, group: str) -> str:
        return OKABE_ITO[self.groups.index(group) % len(OKABE_ITO)]


def collect(paths: list[str | Path]) -> Results:
    jobs = load_jobs(paths)
    keys = varying_keys([j.config for j in jobs])
    columns = [column_name(k) for k in keys]
    metrics, replicas = [], []
    for job in jobs:
        label = ", ".join(f"{column_name(k)}={job.config.get(k)}" for k in keys) or "all"
        values = {column_name(k): job.config.get(k) for k in keys}
        metrics.append(job.metrics.assign(job=str(job.path), group=label))
        replicas.append(replica_outcomes(job.metrics).assign(job=str(job.path), group=label, **values))
    metrics, replicas = pd.concat(metrics, ignore_index=True), pd.concat(replicas, ignore_index=True)
    groups = list(dict.fromkeys(replicas.group))
    summary = group_summary(replicas, columns)
    return Results(metrics, replicas, summary, columns, groups, fixed_description([j.config for j in jobs]))


def _axes(ax):
    if ax is None:
        import matplotlib.pyplot as plt

        ax = plt.gca()
    return ax


def _per_step(results: Results, group: str, column: str) -> pd.DataFrame:
    """[step, replica] table of one column for one group, thinned to at most MAX_POINTS steps."""
    rows = results.metrics[results.metrics.group == group]
    table = rows.set_index(["step", "job", "seed"])[column].unstack(["job", "seed"]).sort_index()
    if len(table) > MAX_POINTS:
        keep = np.unique(np.linspace(0, len(table) - 1, MAX_POINTS).round().astype(int))
        table = table.iloc[keep]
    return table


def plot_cost(results: Results, ax=None):
    """Cost vs step: median over replicas, interquartile band, faint replicas when <= 50."""
    ax = _axes(ax)
    for group in results.groups:
        table, color = _per_step(results, group, "cost"), results.color(group)
        if table.shape[1] <= 50:
            ax.plot(table.index, table.values, color=color, alpha=0.15, linewidth=0.6)
        q25, median, q75 = (table.quantile(q, axis=1) for q in (0.25, 0.5, 0.75))
        ax.fill_between(table.index, q25, q75, color=color, alpha=0.25, linewidth=0)
        ax.plot(table.index, median, color=color, linewidth=2, label=f"{group} (median, IQR)")
    ax.set(yscale="log", xlabel="step", ylabel="cost (binary cross-entropy)", title="Cost")
    ax.legend(fontsize="small")
    return ax


def plot_accuracy(results: Results, ax=None):
    """Fraction of replicas solved vs step (solid) and mean accuracy (dashed)."""
    ax = _axes(ax)
    for group in results.groups:
        cost, acc, color = _per_step(results, group, "cost"), _per_step(results, group, "accuracy"), results.color(group)
        ax.plot(cost.index, ((acc == 1) & (cost < 0.1)).mean(axis=1), color=color, linewidth=2, label=f"{group}: solved")
        ax.plot(acc.index, acc.mean(axis=1), color=color, linewidth=1, linestyle="--", label=f"{group}: mean accuracy")
    ax.set(ylim=(-0.02, 1.02), xlabel="step", ylabel="fraction of replicas / accuracy", title="Solved replicas and accuracy")
    ax.legend(fontsize="small")
    return ax


def _layer_columns(frame: pd.DataFrame, prefix: str) -> list[str]:
    return sorted((c for c in frame.columns if c.startswith(prefix) and frame[c].notna().any()), key=lambda c: int(c.rsplit("_", 1)[1]))


def plot_grad_norms(results: Results, group: str, ax=None):
    """One group: median gradient norm of every layer vs step, colored input (dark) to output (light)."""
    import matplotlib

    ax = _axes(ax)
    columns = _layer_columns(results.metrics[results.metrics.group == group], "grad_norm_")
    cmap = matplotlib.colormaps["viridis"]
    for i, column in enumerate(columns):
        median = _per_step(results, group, column).median(axis=1)
        label = f"layer {i + 1}" + (" (input)" if i == 0 else " (output)" if i == len(columns) - 1 else "")
        ax.plot(median.index, median, color=cmap(i / max(1, len(columns) - 1)), linewidth=1.2,
                label=label if i in (0, len(columns) - 1) else None)
    ax.set(yscale="log", xlabel="step", ylabel="gradient norm (median over replicas)", title=group)
    ax.legend(fontsize="small")
    return ax


def _profile(results: Results, group: str, prefix: str, at: str) -> pd.Series:
    rows = results.metrics[results.metrics.group == group]
    rows = rows[rows.step == (rows.step.min() if at == "first" else rows.groupby("job").step.transform("max"))]
    columns = _layer_columns(rows, prefix)
    values = rows[columns].median() if prefix == "grad_norm_" else rows[columns].mean()
    values.index = [int(c.rsplit("_", 1)[1]) for c in columns]
    return values


def plot_grad_profile(results: Results, ax=None):
    """Median gradient norm vs layer (1 = input) at step 0 (dashed) and at the last step (solid)."""
    ax = _axes(ax)
    for group in results.groups:
        color = results.color(group)
        start, end = _profile(results, group, "grad_norm_", "first"), _profile(results, group, "grad_norm_", "last")
        ax.plot(start.index, start, color=color, linestyle="--", marker="o", markersize=3, label=f"{group}: step 0")
        ax.plot(end.index, end, color=color, marker="o", markersize=3, label=f"{group}: last step")
    ax.set(yscale="log", xlabel="layer (1 = input)", ylabel="gradient norm (median over replicas)", title="Gradient profile")
    ax.legend(fontsize="small")
    return ax


def plot_outcomes(results: Results, ax=None):
    """Final cost of every replica per group, with the collapsed-network plateaus marked."""
    ax = _axes(ax)
    rng = np.random.default_rng(0)
    for i, group in enumerate(results.groups):
        rows = results.replicas[results.replicas.group == group]
        finite = rows.final_cost[~rows.diverged]
        ax.scatter(i + rng.uniform(-0.25, 0.25, len(finite)), finite, s=14, color=results.color(group), alpha=0.7,
                   label=f"{group} ({int(rows.diverged.sum())} diverged)" if rows.diverged.any() else group)
    for (label, value), style in zip(PLATEAUS.items(), [":", "--", "-."]):
        ax.axhline(value, color="gray", linestyle=style, linewidth=1, label=label)
    ax.set_xticks(range(len(results.groups)), results.groups, rotation=30 if len(results.groups) > 4 else 0, ha="right" if len(results.groups) > 4 else "center")
    ax.set(yscale="log", ylabel="final cost", title="Outcome of every replica")
    ax.legend(fontsize="x-small")
    return ax


def plot_stuck_units(results: Results, ax=None):
    """Mean fraction of stuck units per hidden layer, at step 0 (dashed) and at the end (solid)."""
    ax = _axes(ax)
    for group in results.groups:
        color = results.color(group)
        start, end = _profile(results, group, "stuck_frac_", "first"), _profile(results, group, "stuck_frac_", "last")
        ax.plot(start.index, start, color=color, linestyle="--", marker="o", markersize=3, label=f"{group}: step 0")
        ax.plot(end.index, end, color=color, marker="o", markersize=3, label=f"{group}: last step")
    ax.set(ylim=(-0.02, 1.02), xlabel="hidden layer (1 = input side)", ylabel="fraction of units stuck", title="Stuck units")
    ax.legend(fontsize="small")
    return ax


def plot_success_heatmap(results: Results, ax=None):
    """Solved rate per cell when two config keys vary (e.g. depth x activation)."""
    ax = _axes(ax)
    rows, cols = results.keys
    table = results.summary.pivot_table(index=rows, columns=cols, values="solved_rate", sort=False)
    counts = results.summary.pivot_table(index=rows, columns=cols, values="replicas", sort=False)
    image = ax.imshow(table.values, cmap="cividis", vmin=0, vmax=1, aspect="auto")
    for (r, c), rate in np.ndenumerate(table.values):
        if not np.isnan(rate):
            ax.text(c, r, f"{rate:.0%}\nn={int(counts.values[r, c])}", ha="center", va="center", fontsize="x-small",
                    color="black" if rate > 0.5 else "white")
    ax.set_xticks(range(len(table.columns)), table.columns)
    ax.set_yticks(range(len(table.index)), table.index)
    ax.set(xlabel=cols, ylabel=rows, title="Solved rate")
    ax.figure.colorbar(image, ax=ax, label="fraction of replicas solved")
    return ax


def _figure(width: float = 7.5, height: float = 4.8, **subplots) -> tuple[Figure, object]:
    figure = Figure(figsize=(width, height), layout="constrained")
    return figure, figure.subplots(**subplots)


def write_report(paths: list[str | Path], out_dir: str | Path | None = None) -> Path:
    """All plots plus summary.csv and summary.md for the jobs below `paths`; returns the plots dir."""
    results = collect(paths)
    out_dir = Path(out_dir) if out_dir else Path(paths[0]) / "plots"
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = {}
    for name, draw in [("cost", plot_cost), ("accuracy", plot_accuracy), ("grad_profile", plot_grad_profile),
                       ("outcomes", plot_outcomes), ("stuck_units", plot_stuck_units)]:
        figures[name], ax = _figure()
        draw(results, ax=ax)
    n = len(results.groups)
    ncols = min(n, 3)
    figures["grad_norms"], axes = _figure(4.2 * ncols, 3.4 * math.ceil(n / ncols), nrows=math.ceil(n / ncols), ncols=ncols,
                                          squeeze=False, sharey=True)
    for ax, group in zip(axes.flat, results.groups):
        plot_grad_norms(results, group, ax=ax)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    if len(results.keys) == 2:
        figures["success_heatmap"], ax = _figure(6.5, 4.8)
        plot_success_heatmap(results, ax=ax)
    for name, figure in figures.items():
        figure.suptitle(results.title, fontsize="small")
        for suffix in ("png", "svg"):
            figure.savefig(out_dir / f"{name}.{suffix}", dpi=100)
    results.summary.to_csv(out_dir / "summary.csv", index=False)
    (out_dir / "summary.md").write_text(f"{results.title}\n\n" + markdown_table(results.summary, results.keys))
    return out_dir


def newest_run(outputs: Path = Path("outputs")) -> Path:
    """The newest run or multirun dir under outputs/ that holds a summary.json."""
    candidates = [p for p in outputs.glob("*/*/*") if p.is_dir() and p.parent.parent.name in ("runs", "multirun")]
    candidates = [p for p in candidates if any(p.rglob("summary.json"))]
    if not candidates:
        raise ResultsError(f"no run with a summary.json under {outputs}/; pass a PATH or train first: python -m xorrelu")
    return max(candidates, key=lambda p: (p.parent.name, p.name))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="xorrelu-plot", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="*", metavar="PATH", help="run dir, multirun dir or outputs/ (default: the newest run)")
    parser.add_argument("--out", help="where to write (default: <first PATH>/plots)")
    args = parser.parse_args(argv)
    logging.basicConfig(format="%(levelname)s: %(message)s", level=logging.INFO)
    try:
        paths = args.paths or [newest_run()]
        out = write_report(paths, args.out)
    except (ResultsError, OSError) as error:
        print(f"xorrelu-plot: error: {error}", file=sys.stderr)
        return 2
    print(f"wrote plots and summary to {out}")
    print((out / "summary.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
