"""Reading what runs wrote for plots and notebooks: the jobs below a path (found and read by
xorrelu.jobdir), their metrics and flattened configs, and which config keys make the experiment
differ between them.

    import xorrelu
    # one row per step per replica
    metrics = xorrelu.load("outputs/multirun/2026-11-28/17-02-07-722908")
    metrics.groupby(["activation", "step"]).cost.median()
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from xorrelu.activations import ACTIVATIONS
from xorrelu.config import ConfigError, check_dataset, upgrade
from xorrelu.data import DATASETS, make_split
from xorrelu.init import INITIALIZERS
from xorrelu.jobdir import (
    MAX_WHOLE,
    JobDirError,
    Problem,
    find_jobs,
    is_int,
    json_type,
    one_line,
    read_config,
    read_summary,
    short,
)
from xorrelu.metrics import curves_steps
from xorrelu.outcomes import LESSON, PLATEAU_COSTS, Outcomes, Rule, judging

log = logging.getLogger(__name__)

REQUIRED_COLUMNS = ["step", "seed", "cost", "accuracy", "grad_norm_1"]
# a job with a test split's, a regularized run's (xorrelu.metrics.columns)
OPTIONAL_COLUMNS = ["test_cost", "test_accuracy", "penalty"]
TEST_COLUMNS = ("test_cost", "test_accuracy")  # a job with a test split's held-out metrics
PER_LAYER = re.compile(
    r"(grad_norm|stuck_frac)_[1-9][0-9]{0,3}"
)  # the only other metrics.csv columns the plotter reads
# Keys that never change what is being measured: jobs differing only in these are pooled.
NOT_EXPERIMENTAL = {
    "seed",
    "replicas",
    "device",
    "print_every",
    "log_every",
    "log_first",
    "plot",
    "engine",
    "compile",
    "threads",
    "tensorboard",
    "objective",  # what a job returns to a search, not what it trains
}
MAX_LISTED = 5  # skip reasons quoted in the one-line error when no job is usable


class ResultsError(Exception):
    """Input the plotter cannot use; the message is meant for the user as is."""


@dataclass(frozen=True)
class Judging:
    """How a job's replicas are judged outside training, as training judged them: its dataset's
    config (checked; None when its config names no dataset: the lesson's xor), its rule for
    solved and its plateau costs (xorrelu.outcomes.judging)."""

    dataset: DictConfig | None = None
    rule: Rule = LESSON
    plateaus: tuple[float, ...] = PLATEAU_COSTS


@dataclass
class Job:
    path: Path
    config: dict  # flat: {"activation.name": "relu", "depth": 10, ...}
    metrics: pd.DataFrame | None  # every row (or curves.csv's, read_job); None once reduced
    status: str = "completed"  # summary.json's status; "unknown" without a summary.json
    error: str | None = None  # summary.json's error, for a failed or interrupted job
    replicas: list | None = None  # summary.json's outcome per replica, for a completed job
    reduced: object = None  # what scan_jobs' `reduce` made of the metrics
    judging: Judging = Judging()  # its dataset, rule for solved and plateaus


@dataclass
class Skipped:
    path: Path  # the job dir
    reason: str  # one line: which file is unusable and why


def read_metrics(path: Path) -> pd.DataFrame:
    """metrics.csv up to its last complete row (an interrupted writer may leave half a line), only
    the columns the plotter uses, every value checked: a job whose file holds anything else is
    unusable, and the message says where."""
    try:
        with open(path, "rb") as file:
            complete = _ends_with_newline(file)
            frame = None
            if not _has_words(file):  # pandas would read true/false into a float as 1/0
                try:  # float32 as it is read: half the memory; step and seed as they are
                    names = pd.read_csv(file, usecols=_wanted, nrows=0).columns
                    file.seek(0)
                    types = {c: np.float32 for c in names if c not in ("step", "seed")}
                    frame = pd.read_csv(file, usecols=_wanted, dtype=types)
                except (ValueError, OverflowError):  # text where a number belongs
                    file.seek(0)
            if frame is None:  # read as it is, so that the checks below can name the cell
                frame = pd.read_csv(file, usecols=_wanted)
    except pd.errors.EmptyDataError:
        raise ResultsError(
            f"{path} is empty: the job wrote no row (killed or failed before its first flush); "
            "run it again"
        ) from None
    except (
        ValueError,
        UnicodeDecodeError,
        OverflowError,
    ) as error:  # pandas' ParserError is a ValueError
        raise ResultsError(f"{path} is not a metrics CSV: {one_line(error)}") from None
    if not complete:
        frame = frame.iloc[
            :-1
        ].copy()  # a copy: its columns are replaced below (pandas 2 would warn)
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise ResultsError(f"{path} lacks the columns {', '.join(missing)}")
    if frame.empty:
        raise ResultsError(
            f"{path} has a header but no complete row: a running job flushes its first rows "
            "within 5 seconds (plot again then); a stopped one stopped before that (run it again)"
        )
    for column in frame.columns:
        frame[column] = _numbers(frame[column], path)
    _check_values(frame, path)
    frame = frame.astype({c: "int64" if c in ("step", "seed") else "float32" for c in frame})
    repeated = frame.duplicated(["step", "seed"])
    if repeated.any():
        step, seed = frame.loc[repeated, ["step", "seed"]].iloc[0]
        raise ResultsError(
            f"{path} holds {int(repeated.sum())} repeated rows (first: step {step}, seed {seed}): "
            "it is not one run's log; keep one copy of each row"
        )
    return frame


def _wanted(column: str) -> bool:
    return (
        column in REQUIRED_COLUMNS
        or column in OPTIONAL_COLUMNS
        or PER_LAYER.fullmatch(column) is not None
    )


def _has_words(file, chunk: int = 2**24) -> bool:
    """Whether the file holds true or false (any case) anywhere, read a chunk at a time."""
    tail = b""
    while block := file.read(chunk):
        text = tail + block.lower()
        if b"true" in text or b"false" in text:
            file.seek(0)
            return True
        tail = text[-4:]
    file.seek(0)
    return False


def _ends_with_newline(file) -> bool:
    file.seek(0, os.SEEK_END)
    if file.tell() == 0:
        return True
    file.seek(-1, os.SEEK_END)
    ends = file.read(1) == b"\n"
    file.seek(0)
    return ends


def _numbers(column: pd.Series, path: Path) -> pd.Series:
    """A metrics column as numbers; text where a number belongs (or true/false)
    makes the job unusable."""
    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        return column
    values = pd.to_numeric(column.astype(object), errors="coerce")
    bad = (values.isna() & column.notna()) | column.map(lambda v: isinstance(v, bool))
    if bad.any():
        i = int(bad.to_numpy().argmax())
        raise ResultsError(
            f"{path} row {i + 1}: {column.name} is {short(column.iloc[i])}, not a number; "
            "the file is damaged: run the job again"
        )
    return values


# (column test, what it must be): NaN marks a diverged replica, inf a cost that overflowed
_RANGES = {
    "step": (lambda v: v.between(0, MAX_WHOLE) & (v == v.round()), "a whole number >= 0"),
    "seed": (lambda v: v.between(0, MAX_WHOLE) & (v == v.round()), "a whole number >= 0"),
    "cost": (lambda v: v.isna() | (v >= 0), "a number >= 0, inf or NaN"),
    "accuracy": (lambda v: v.isna() | v.between(0, 1), "a number from 0 to 1, or NaN"),
    "test_cost": (lambda v: v.isna() | (v >= 0), "a number >= 0, inf or NaN"),
    "test_accuracy": (lambda v: v.isna() | v.between(0, 1), "a number from 0 to 1, or NaN"),
    "penalty": (lambda v: v.isna() | (v >= 0), "a number >= 0, inf or NaN"),
    "grad_norm_": (lambda v: v.isna() | (v >= 0), "a number >= 0, inf or NaN"),
    "stuck_frac_": (lambda v: v.isna() | v.between(0, 1), "a number from 0 to 1, or NaN"),
}


def _check_values(frame: pd.DataFrame, path: Path) -> None:
    for column in frame.columns:
        ok, allowed = _RANGES.get(column) or _RANGES[column.rsplit("_", 1)[0] + "_"]
        bad = ~ok(frame[column])
        if bad.any():
            i = int(bad.to_numpy().argmax())
            raise ResultsError(
                f"{path} row {i + 1}: {column} is {short(frame[column].iloc[i])}, not {allowed}; "
                "the file is damaged: run the job again"
            )


_NOT_SUMMARY = "{path} is not a summary written by xorrelu: %s; restore it or run the job again"
_NOT_HYDRA = "{path} is not a config written by Hydra: %s"
# The plotter's words for what xorrelu.jobdir finds wrong in summary.json and .hydra/config.yaml
# (tests/test_hostile_plot.py holds it to them); the fields are jobdir.Problem.words'.
WORDS = {
    "summary-utf8": _NOT_SUMMARY % "it is not UTF-8 text",
    "summary-nested": _NOT_SUMMARY % "JSON nested too deeply",
    "summary-syntax": _NOT_SUMMARY % "not JSON ({line})",
    "summary-object": _NOT_SUMMARY % "it holds {json}, not an object",
    "config": _NOT_SUMMARY % "its config is {json}, not an object",
    "status": _NOT_SUMMARY % "its status is {value}, not one of {allowed}",
    "error": _NOT_SUMMARY % "its error is {json}, not text",
    "replicas": _NOT_SUMMARY % "its replicas is {json}, not a list",
    "replica": _NOT_SUMMARY % "{where} is {json}, not an object",
    "seed": _NOT_SUMMARY % "{where}.seed is {value}, not a whole number >= 0",
    "cause": _NOT_SUMMARY % "{where}.cause is {value}, not one of {allowed} or null",
    "hydra-aliases": "{path} uses YAML aliases, which Hydra never writes; it is not a job's config",
    "hydra-utf8": _NOT_HYDRA % "{line}",
    "hydra-nested": _NOT_HYDRA % "{line}",
    "hydra-syntax": _NOT_HYDRA % "{line}",
    "hydra-mapping": _NOT_HYDRA % "a YAML {type}, not a mapping",
    "no-config": "{path} has metrics.csv but neither summary.json nor .hydra/config.yaml",
}


def unusable(error: JobDirError) -> ResultsError:
    """The plotter's one line for a file of a job dir that xorrelu.jobdir refused."""
    return ResultsError(error.words(WORDS) if isinstance(error, Problem) else str(error))


def flatten_config(config: dict, source: Path) -> dict:
    """{"activation": {"name": "relu"}} -> {"activation.name": "relu"}; every value must be one
    number, text, true/false or null (they become group labels and table cells), but for
    dataset.features, a list of names, which becomes one text as an override writes it:
    [x1_sq,x2_sq]."""
    flat: dict = {}
    pending = [("", config)]  # a loop, not recursion: the nesting depth is the file's to choose
    while pending:
        prefix, node = pending.pop(0)
        for key, value in node.items():
            name = f"{prefix}{key}"
            if isinstance(value, dict):
                pending.append((f"{name}.", value))
            elif name == "dataset.features" and _names(value):
                flat[name] = "[" + ",".join(value) + "]"
            elif value is None or isinstance(value, (str, int, float, bool)):
                flat[name] = value
            else:
                raise ResultsError(
                    f"{source}: config key {name} holds {json_type(value)}, not a single value"
                )
    for key, registry in (
        ("dataset.name", DATASETS),
        ("activation.name", ACTIVATIONS),
        ("init.name", INITIALIZERS),
    ):
        # the plotter rebuilds nets from these
        if flat.get(key) is not None and flat[key] not in registry:
            raise ResultsError(
                f"{source}: {key} is {short(flat[key])}, not one of {', '.join(registry)}"
            )
    bits = flat.get("dataset.bits")
    if bits is not None and not is_int(bits, 1, 16):
        raise ResultsError(
            f"{source}: dataset.bits is {short(bits)}, not a whole number from 1 to 16"
        )
    return flat


def _names(value) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def job_judging(dataset, source: Path) -> Judging:
    """A job's Judging from its (nested) dataset config: checked as training checks it
    (xorrelu.config.check_dataset), its training labels rebuilt (xorrelu.data.make_split) for
    the plateau at their entropy. ResultsError (one line) for a dataset config training would
    have refused."""
    if not isinstance(dataset, dict) or dataset.get("name") is None:
        return Judging()
    try:
        cfg = OmegaConf.create({"dataset": dataset})
        check_dataset(cfg)
        rule, plateaus = judging(cfg.dataset, make_split(cfg.dataset).y_train)
    except ConfigError as error:
        raise ResultsError(f"{source}: {one_line(error)}") from None
    except (OmegaConfBaseException, TypeError, ValueError, AttributeError, KeyError) as error:
        raise ResultsError(
            f"{source}: the dataset config {short(dataset)} is not one xorrelu trains on "
            f"({one_line(error, 120)})"
        ) from None
    return Judging(cfg.dataset, rule, plateaus)


def read_curves(job_dir: Path, summary: dict) -> pd.DataFrame | None:
    """A completed job's curves.csv, read as read_metrics reads metrics.csv, when it is whole: its
    steps exactly the ones its config makes it keep (xorrelu.metrics.curves_steps), each with a row
    for every replica summary.json lists. None otherwise (no such file, an older job, a damaged
    one): metrics.csv is read instead."""
    config = upgrade(summary.get("config"))
    keys = [config.get(key) for key in ("steps", "log_every", "log_first")]
    replicas = summary.get("replicas")
    if not (all(is_int(k, 0, MAX_WHOLE) for k in keys) and keys[1] > 0 and replicas):
        return None
    steps = curves_steps(*keys)
    if steps is None or not (job_dir / "curves.csv").is_file():
        return None
    try:
        frame = read_metrics(job_dir / "curves.csv")
    except (ResultsError, OSError):
        return None
    seeds = sorted(r["seed"] for r in replicas)
    whole = len(frame) == len(steps) * len(seeds) and np.unique(frame.seed).tolist() == seeds
    return frame if whole and np.array_equal(np.unique(frame.step), steps) else None


def read_job(job_dir: Path, curves: bool = False) -> Job:
    """One job dir, read and checked; ResultsError (one line) when it cannot be plotted. With
    `curves`, a completed job's rows are those of its curves.csv when it is whole (read_curves):
    the rows the plots draw, not every row."""
    try:
        summary = read_summary(job_dir)
    except JobDirError as error:
        raise unusable(error) from None
    status = "unknown" if summary is None else summary.get("status") or "unknown"
    error = None if summary is None else summary.get("error")
    try:
        if not (job_dir / "metrics.csv").is_file():
            raise ResultsError(f"{job_dir} has no metrics.csv")
        metrics = read_curves(job_dir, summary) if curves and status == "completed" else None
        if metrics is None:
            metrics = read_metrics(job_dir / "metrics.csv")
        try:
            nested, source = read_config(job_dir, summary)
        except JobDirError as error:
            raise unusable(error) from None
        config = flatten_config(nested, source)
        judged = job_judging(nested.get("dataset"), source)
    except ResultsError as problem:
        if status in ("running", "interrupted", "failed"):  # say what the job itself reported
            raise ResultsError(
                f"{problem} (summary.json says {status}{': ' + one_line(error) if error else ''})"
            ) from None
        raise
    replicas = summary.get("replicas") if status == "completed" else None
    return Job(job_dir, config, metrics, status, error, replicas, judging=judged)


def scan_jobs(
    paths: list[str | Path], reduce: Callable[[Job], object] | None = None, curves: bool = False
) -> tuple[list[Job], list[Skipped]]:
    """Every job below `paths`: the usable ones, and the ones skipped with the reason. With
    `reduce`, each job's rows are reduced as soon as they are read (job.reduced = reduce(job)) and
    dropped (job.metrics = None) before the next job is read: memory holds one job's rows at a
    time, whatever the number of jobs. `curves`: see read_job."""
    jobs, skipped = [], []
    for job_dir in _find_all(paths):
        try:
            job = read_job(job_dir, curves)
            if reduce is not None:
                job.reduced, job.metrics = reduce(job), None
            jobs.append(job)
        except ResultsError as error:
            skipped.append(Skipped(job_dir, str(error)))
        except OSError as error:  # it vanished or cannot be read: the others may still be fine
            skipped.append(Skipped(job_dir, f"cannot read {job_dir}: {one_line(error)}"))
    return jobs, skipped


def _find_all(paths: list[str | Path]) -> list[Path]:
    """jobdir.find_jobs below each path, each real job dir once over all of them."""
    found: list[Path] = []
    seen: set = set()  # (st_dev, st_ino) of every directory walked, over all paths
    for root in paths:
        try:
            found += find_jobs(Path(root), seen=seen)
        except JobDirError as error:  # a path that is missing, not a dir, or cannot be read
            raise ResultsError(str(error)) from None
    return found


def usable_jobs(
    paths: list[str | Path], reduce: Callable[[Job], object] | None = None, curves: bool = False
) -> tuple[list[Job], list[Skipped]]:
    """scan_jobs, with a warning per skipped job; one bad job never sinks the rest. Raises
    ResultsError (one line) when no job is usable."""
    jobs, skipped = scan_jobs(paths, reduce, curves)
    where = ", ".join(str(p) for p in paths)
    if not jobs and not skipped:
        raise ResultsError(f"no job with a metrics.csv below {where}")
    if not jobs and len(skipped) == 1:
        raise ResultsError(skipped[0].reason)
    if not jobs:
        listed = "; ".join(s.reason for s in skipped[:MAX_LISTED])
        more = f"; and {len(skipped) - MAX_LISTED} more" if len(skipped) > MAX_LISTED else ""
        raise ResultsError(f"no usable job below {where}, {len(skipped)} skipped: {listed}{more}")
    for skip in skipped:
        log.warning("skipping a job, the others are plotted: %s", skip.reason)
    return jobs, skipped


def load_jobs(paths: list[str | Path]) -> list[Job]:
    return usable_jobs(paths)[0]


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
    """What all jobs share, for plot titles: depth, width, init, optimizer, lr, steps, and a
    weight penalty (l1 or l2 and its rate)."""
    parts = []
    for key, label in [
        ("activation.name", ""),
        ("depth", "depth "),
        ("width", "width "),
        ("init.name", "init "),
        ("optimizer.name", ""),
        ("optimizer.lr", "lr "),
        ("dataset.name", ""),
        ("steps", "steps "),
    ]:
        values = {str(c.get(key)) for c in configs}
        if len(values) == 1 and None not in values:
            parts.append(f"{label}{values.pop()}")
    # a penalty all jobs share (none, the lesson's, goes unsaid: titles stay as they were)
    names = {str(c.get("regularization.name", "none")) for c in configs}
    if len(names) == 1 and names != {"none"}:
        rates = {str(c.get("regularization.rate")) for c in configs}
        parts.append(names.pop() + (f" rate {rates.pop()}" if len(rates) == 1 else ""))
    return " · ".join(parts)


def _with_keys(frame: pd.DataFrame, job: Job, keys: list[str]) -> pd.DataFrame:
    frame = frame.copy()
    frame.insert(0, "job", str(job.path))
    for i, key in enumerate(keys):
        frame.insert(1 + i, column_name(key), job.config.get(key))
    return frame


MAX_DATA_BYTES = 256 * 2**20  # data.csv of the largest dataset (10**6 points) is ~50 MiB


def read_points(path: Path, dataset, coordinates: list[str] | None = None) -> pd.DataFrame:
    """A job's data.csv (x1, x2, ..., label, split; only `coordinates` of the x columns when
    given), checked; without a data.csv (a job dir older than it), the points make_split draws
    from the job's dataset config, in the same columns."""
    if not os.path.lexists(path):
        split = make_split(dataset)
        at = np.arange(len(split.y))
        xs = {f"x{i + 1}": split.points[:, i].numpy() for i in range(split.points.shape[1])}
        points = pd.DataFrame(
            {
                **xs,
                "label": split.y.numpy().astype(np.int64),
                "split": np.where(at < split.n_train, "train", "test"),
            }
        )
        return points if coordinates is None else points[[*coordinates, "label", "split"]]
    try:
        if path.stat().st_size > MAX_DATA_BYTES:
            raise ValueError(f"more than the {MAX_DATA_BYTES // 2**20} MiB a job writes")
        wanted = None if coordinates is None else [*coordinates, "label", "split"]
        points = pd.read_csv(path, usecols=wanted, dtype={"split": str})
        xs = [c for c in points.columns if c not in ("label", "split")]
        if not xs or "label" not in points or "split" not in points:
            raise ValueError("not the columns x1, ..., label, split")
        values = points[[*xs, "label"]].to_numpy(dtype=float)
        if points.empty or not np.isfinite(values).all():
            raise ValueError("no points, or a coordinate that is not a finite number")
        if not (points.label.isin([0, 1]).all() and points.split.isin(["train", "test"]).all()):
            raise ValueError("a label not 0 or 1, or a split not train or test")
    except (OSError, ValueError, UnicodeDecodeError) as error:
        raise ResultsError(
            f"{path} is not the points a job wrote ({one_line(error, 160)}); "
            "move it aside to draw the points from the job's config"
        ) from None
    return points


def job_dataset(job_dir: str | Path) -> DictConfig:
    """A job's dataset config, checked as training checks it (job_judging); the lesson's xor
    for a config that names none."""
    try:
        config, source = read_config(Path(job_dir))
    except JobDirError as error:
        raise unusable(error) from None
    dataset = job_judging(config.get("dataset"), source).dataset
    return dataset if dataset is not None else OmegaConf.create({"name": "xor"})


def load_points(job_dir: str | Path) -> pd.DataFrame:
    """One job's points, as it trained and tested on them: its data.csv (x1, x2, ..., label,
    split), or, for a job dir older than data.csv, the same drawn again from its config."""
    return read_points(Path(job_dir) / "data.csv", job_dataset(job_dir))


def load(*paths: str | Path) -> pd.DataFrame:
    """The metrics of every job below `paths`, with the experimental keys that vary as columns:
    every logged row of every job, all in memory at once (about 50 bytes per row at depth 10; the
    plotter never holds them all, it reduces each job as it reads it)."""
    jobs = load_jobs(list(paths) or ["outputs"])
    keys = varying_keys([j.config for j in jobs])
    return pd.concat([_with_keys(j.metrics, j, keys) for j in jobs], ignore_index=True)


def replica_outcomes(
    metrics: pd.DataFrame,
    run_steps: int | None = None,
    rule: Rule = LESSON,
    plateaus: tuple[float, ...] = PLATEAU_COSTS,
) -> pd.DataFrame:
    """One row per replica of one job's metrics: last_step, final_cost, final_accuracy (and
    final_test_cost, final_test_accuracy with a test split), diverged, solved,
    first_step_solved (NaN when unsolved) and cause (None when solved), by the same outcome
    tracker the training job uses (xorrelu.outcomes), with the job's `rule` and `plateaus`
    (Judging); solved is judged on the test columns when there are some, as training judges
    it. `run_steps`: the steps the run was set to (for the cause "slow"; default: its last
    logged step). A last step that lacks some replica's row (a cut-off file) is left out; any
    other missing row counts as NaN."""
    counts = metrics.groupby("step").size()
    seeds = np.sort(metrics.seed.unique())
    if counts.iloc[-1] < len(seeds) and len(counts) > 1:
        metrics = metrics[metrics.step < counts.index[-1]]
    wide = metrics.pivot(index="step", columns="seed").reindex(columns=seeds, level=1)
    steps = [int(step) for step in wide.index]
    outcomes = Outcomes(
        len(seeds),
        run_steps if run_steps is not None else steps[-1],
        rule=rule,
        plateaus=plateaus,
    )
    rows = _named_metrics(wide)  # as metrics.csv keeps them: blank from where they diverged
    held_out = (rows["test_cost"], rows["test_accuracy"]) if "test_cost" in rows else None
    outcomes.update(steps, rows["cost"], rows["accuracy"], held_out)
    outcomes.see_rows(steps, rows)
    causes = outcomes.causes()
    first = outcomes.first_step_solved.numpy()
    return pd.DataFrame(
        {
            "seed": seeds,
            "last_step": steps[-1],
            "final_cost": rows["cost"][-1].numpy(),
            "final_accuracy": rows["accuracy"][-1].numpy(),
            **{f"final_{name}": rows[name][-1].numpy() for name in TEST_COLUMNS if name in rows},
            "diverged": outcomes.diverged.numpy(),
            "solved": first >= 0,
            "first_step_solved": np.where(first >= 0, first, np.nan),
            "cause": causes,
        }
    )


def _named_metrics(wide: pd.DataFrame) -> dict[str, torch.Tensor]:
    """A [step x (column, seed)] frame as the engines name metrics (xorrelu.metrics): cost and
    accuracy (and test_cost, test_accuracy when logged) [steps, replicas], grad_norm and
    stuck_frac [steps, layers, replicas]."""

    def values(column: str) -> torch.Tensor:
        return torch.from_numpy(np.array(wide[column], dtype=np.float32))  # a writable copy

    def layers(prefix: str) -> torch.Tensor:  # [steps, layers, replicas]; layer 1 first
        names = sorted(
            (c for c in wide.columns.get_level_values(0).unique() if c.startswith(prefix)),
            key=lambda name: int(name[len(prefix) :]),
        )
        shape = (len(wide), 0, wide["cost"].shape[1])
        return torch.stack([values(n) for n in names], dim=1) if names else torch.empty(shape)

    grad_norm = layers("grad_norm_")
    if grad_norm.shape[1] == 0:  # not logged: the gradient ratio at step 0 is unknown
        grad_norm = torch.full_like(values("cost")[:, None], float("nan"))
    logged = wide.columns.get_level_values(0)
    return {
        "cost": values("cost"),
        "accuracy": values("accuracy"),
        **{name: values(name) for name in TEST_COLUMNS if name in logged},
        "grad_norm": grad_norm,
        "stuck_frac": layers("stuck_frac_"),
    }


def load_summary(*paths: str | Path) -> pd.DataFrame:
    """One row per replica of every job below `paths`: experimental keys, seed, final cost and
    accuracy, solved, first step solved, diverged, cause."""
    jobs = usable_jobs(list(paths) or ["outputs"], reduce=job_outcomes, curves=True)[0]
    keys = varying_keys([j.config for j in jobs])
    return pd.concat([_with_keys(j.reduced, j, keys) for j in jobs], ignore_index=True)


def job_outcomes(job: Job) -> pd.DataFrame:
    """One row per replica, as replica_outcomes: a completed job's from its summary.json (its
    tracker saw every step, logged or not), any other job's from its metrics.csv (read_curves
    reads curves.csv only when summary.json lists its replicas)."""
    seeds = np.sort(job.metrics.seed.unique())
    if job.replicas and sorted(r["seed"] for r in job.replicas) == seeds.tolist():
        table = pd.DataFrame(job.replicas).sort_values("seed", ignore_index=True)
        numbers = ["final_cost", "final_accuracy", "first_step_solved"]
        numbers += [f"final_{name}" for name in TEST_COLUMNS if f"final_{name}" in table]
        table = table.drop(columns="hypothesis", errors="ignore").astype(
            dict.fromkeys(numbers, float)
        )
        return table.assign(last_step=int(job.metrics.step.max()))
    steps = job.config.get("steps")
    return replica_outcomes(
        job.metrics,
        steps if is_int(steps, 1, MAX_WHOLE) else None,
        job.judging.rule,
        job.judging.plateaus,
    )
