"""Reading what runs wrote: find the jobs below a path, load their metrics and configs, and work
out which config keys make the experiment differ between them.

    import xorrelu
    metrics = xorrelu.load("outputs/multirun/2026-11-28/17-02-07-722908")   # one row per step per replica
    metrics.groupby(["activation", "step"]).cost.median()
"""

from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from xorrelu.metrics import solved as is_solved

log = logging.getLogger(__name__)

REQUIRED_COLUMNS = ["step", "seed", "cost", "accuracy", "grad_norm_1"]
# Keys that never change what is being measured: jobs differing only in these are pooled.
NOT_EXPERIMENTAL = {"seed", "replicas", "device", "print_every", "log_every", "plot", "engine", "compile", "threads", "tensorboard"}


class ResultsError(Exception):
    """Input the plotter cannot use; the message is meant for the user as is."""


@dataclass
class Job:
    path: Path
    config: dict  # flat: {"activation.name": "relu", "depth": 10, ...}
    metrics: pd.DataFrame
    causes: dict  # seed -> why it is unsolved (xorrelu.diagnosis); empty until the job completes


def find_jobs(paths: list[Path]) -> list[Path]:
    """Every job dir at or below `paths` (a dir with summary.json, metrics.csv or .hydra/)."""
    jobs: list[Path] = []
    for root in paths:
        if not root.exists():
            raise ResultsError(f"no such file or directory: {root}")
        if not root.is_dir():
            raise ResultsError(f"not a directory: {root}")
        below = [p for p in root.rglob("*") if p.is_dir() and not {".hydra", "plots"} & set(p.relative_to(root).parts)]
        candidates = [root, *sorted(below, key=_natural)]
        jobs += [p for p in candidates if (p / "summary.json").is_file() or (p / "metrics.csv").is_file()]
    return list(dict.fromkeys(jobs))


def read_metrics(path: Path) -> pd.DataFrame:
    """metrics.csv up to its last complete row (an interrupted writer may leave half a line)."""
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        data = data[: data.rfind(b"\n") + 1]
    try:
        frame = pd.read_csv(io.BytesIO(data))
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise ResultsError(f"{path} is not a metrics CSV: {error}") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise ResultsError(f"{path} lacks the columns {', '.join(missing)}")
    return frame


def read_config(job_dir: Path) -> dict:
    """The job's resolved config, flattened to dotted keys (summary.json, else .hydra/config.yaml)."""
    summary = job_dir / "summary.json"
    if summary.is_file():
        try:
            config = json.loads(summary.read_text())["config"]
        except (ValueError, KeyError, TypeError):
            raise ResultsError(f"{summary} is not a summary written by xorrelu") from None
    elif (job_dir / ".hydra" / "config.yaml").is_file():
        config = OmegaConf.to_container(OmegaConf.load(job_dir / ".hydra" / "config.yaml"), resolve=True)
    else:
        raise ResultsError(f"{job_dir} has metrics.csv but neither summary.json nor .hydra/config.yaml")
    return pd.json_normalize(config).iloc[0].to_dict()


def read_causes(job_dir: Path) -> dict:
    """seed -> cause, as the training job diagnosed it (the plotter never rewrites a job's files)."""
    try:
        replicas = json.loads((job_dir / "summary.json").read_text()).get("replicas") or []
        return {int(r["seed"]): r.get("cause") for r in replicas}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def load_jobs(paths: list[str | Path]) -> list[Job]:
    jobs = []
    for job_dir in find_jobs([Path(p) for p in paths]):
        if not (job_dir / "metrics.csv").is_file():
            log.warning("skipping %s: it has no metrics.csv", job_dir)
            continue
        jobs.append(Job(job_dir, read_config(job_dir), read_metrics(job_dir / "metrics.csv"), read_causes(job_dir)))
    if not jobs:
        raise ResultsError(f"no job with a metrics.csv below {', '.join(str(p) for p in paths)}")
    return jobs


def varying_keys(configs: list[dict]) -> list[str]:
    """Config keys whose values differ between jobs, short names for groups (activation, not
    activation.name), leaving out switches that do not change the experiment and the options of a
    group that only differ because the group's choice does (activation.slope beside activation)."""
    keys = sorted({k for c in configs for k in c} - NOT_EXPERIMENTAL)
    frame = pd.DataFrame(configs, columns=keys).astype(str)
    varying = [k for k in keys if frame[k].nunique() > 1]
    chosen = []
    for key in varying:
        group, _, option = key.rpartition(".")
        if option != "name" and f"{group}.name" in varying:
            if frame.groupby(f"{group}.name")[key].nunique().max() <= 1:
                continue
        chosen.append(key)
    return chosen


def column_name(key: str) -> str:
    return key.removesuffix(".name")


def fixed_description(configs: list[dict]) -> str:
    """What all jobs share, for plot titles: depth, width, init, optimizer, lr, steps."""
    parts = []
    for key, label in [("activation.name", ""), ("depth", "depth "), ("width", "width "), ("init.name", "init "),
                       ("optimizer.name", ""), ("optimizer.lr", "lr "), ("dataset.name", ""), ("steps", "steps ")]:
        values = {str(c.get(key)) for c in configs}
        if len(values) == 1 and None not in values:
            parts.append(f"{label}{values.pop()}")
    return " · ".join(parts)


def _with_keys(frame: pd.DataFrame, job: Job, keys: list[str]) -> pd.DataFrame:
    frame = frame.copy()
    frame.insert(0, "job", str(job.path))
    for i, key in enumerate(keys):
        frame.insert(1 + i, column_name(key), job.config.get(key))
    return frame


def load(*paths: str | Path) -> pd.DataFrame:
    """The metrics of every job below `paths`, with the experimental keys that vary as columns."""
    jobs = load_jobs(list(paths) or ["outputs"])
    keys = varying_keys([j.config for j in jobs])
    return pd.concat([_with_keys(j.metrics, j, keys) for j in jobs], ignore_index=True)


def replica_outcomes(metrics: pd.DataFrame) -> pd.DataFrame:
    """One row per replica of one job's metrics: its final numbers and when it was solved.

    solved: accuracy 1.0 and cost < 0.1 at the last logged step; first_step_solved: the first
    logged step from which it stays solved (NaN when it is not solved at the end).
    """
    frame = metrics.sort_values(["seed", "step"])
    solved = is_solved(frame.cost, frame.accuracy)
    last_unsolved = frame.step.where(~solved).groupby(frame.seed).max()
    last = frame.groupby("seed").tail(1).set_index("seed")
    out = pd.DataFrame(
        {
            "last_step": last.step,
            "final_cost": last.cost,
            "final_accuracy": last.accuracy,
            "diverged": last.cost.isna() | ~last.cost.abs().lt(float("inf")),
            "solved": solved.groupby(frame.seed).last(),
        }
    )
    first = frame.step.where(frame.step > frame.seed.map(last_unsolved).fillna(-1)).groupby(frame.seed).min()
    out["first_step_solved"] = first.where(out.solved)
    return out.reset_index()


def load_summary(*paths: str | Path) -> pd.DataFrame:
    """One row per replica of every job below `paths`: experimental keys, seed, final cost and
    accuracy, solved, first step solved, diverged, cause."""
    jobs = load_jobs(list(paths) or ["outputs"])
    keys = varying_keys([j.config for j in jobs])
    return pd.concat([_with_keys(job_outcomes(j), j, keys) for j in jobs], ignore_index=True)


def job_outcomes(job: Job) -> pd.DataFrame:
    """replica_outcomes of one job, with each replica's diagnosed cause ("unknown" for a job that
    did not complete, None for the solved)."""
    out = replica_outcomes(job.metrics)
    out["cause"] = [None if solved else job.causes.get(int(seed), "unknown") for seed, solved in zip(out.seed, out.solved)]
    return out


def _natural(path: Path) -> list:
    """Sort job dirs as a person counts them: 2 before 10."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in path.parts]
