"""hydra/sweeper=search (pip install 'xorrelu[search]'): Optuna's study (hydra-optuna-sweeper),
then its best parameters trained again on seeds no trial used. A searched best is optimistic:
among many trials, the one that drew lucky seeds tends to win; the re-run's number is the one
to report.

Every trial is a job of the sweep, whose objective (config.Objective) it returns; a job that
fails returns None, which Optuna records as a failed trial, and the study goes on. After the
study, the best trial's overrides run once more as the sweep's next job with `seed` moved past
every seed the study used, and SWEEP_DIR/search.json and search.md set the searched value next
to the re-run's (with the solved rate's Wilson 95% interval). Optuna's own
optimization_results.yaml is beside them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

from hydra.core.utils import JobStatus
from hydra.plugins.sweeper import Sweeper
from omegaconf import OmegaConf

from xorrelu.config import Objective
from xorrelu.files import write_atomic, write_json
from xorrelu.jobdir import JobDirError, read_summary
from xorrelu.stats import objective_value, wilson_interval

log = logging.getLogger(__name__)


class SearchSweeper(Sweeper):
    def __init__(self, **study) -> None:
        """hydra/sweeper=optuna's keys (sampler, direction, n_trials, params, ...)."""
        import optuna
        from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl

        optuna.logging.set_verbosity(optuna.logging.WARNING)  # Hydra's log says what it would

        self.study = OptunaSweeperImpl(**study)
        self.trials = None

    def setup(self, *, hydra_context, task_function, config) -> None:
        self.study.setup(hydra_context=hydra_context, task_function=task_function, config=config)
        self.trials = _Recorder(self.study.launcher)
        self.study.launcher = self.trials  # the study launches its trials through it

    def sweep(self, arguments: list[str]) -> None:
        try:
            self.study.sweep(arguments)
        except ValueError:  # Optuna has no best trial when none completed: said below
            ran = self.trials.jobs
            if len(ran) < self.study.n_trials or any(_valued(ret) for _, ret in ran):
                raise
        config = self.study.config
        objective = Objective(config.objective)
        done = [(overrides, ret) for overrides, ret in self.trials.jobs if _valued(ret)]
        if not done:
            log.error("search: no trial completed, so there is nothing to re-run")
            return
        pick = max if objective.direction == "maximize" else min
        best_overrides, best = pick(done, key=lambda job: job[1].return_value)  # the first best
        used = [config, *(ret.cfg for _, ret in self.trials.jobs if ret.cfg)]
        fresh = max(cfg.seed + cfg.replicas for cfg in used)  # past every seed a trial used
        rerun = [o for o in best_overrides if not o.startswith("seed=")] + [f"seed={fresh}"]
        log.info("search: re-running the best trial on fresh seeds: %s", " ".join(rerun))
        (ret,) = self.trials.launcher.launch([rerun], initial_job_idx=self.study.job_idx)
        sweep_dir = Path(str(config.hydra.sweep.dir))
        report = {
            "objective": objective.value,
            "direction": objective.direction,
            "trials": len(self.trials.jobs),
            "failed_trials": len(self.trials.jobs) - len(done),
            "best": _job(best_overrides, best, objective, sweep_dir),
            "rerun": _job(rerun, ret, objective, sweep_dir),
        }
        write_json(sweep_dir / "search.json", report)
        write_atomic(sweep_dir / "search.md", markdown(report).encode())
        log.info("search: %s (%s)", _outcome(report), sweep_dir / "search.md")


class _Recorder:
    """The sweeper's launcher, keeping each trial's overrides and JobReturn."""

    def __init__(self, launcher) -> None:
        self.launcher, self.jobs = launcher, []

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int):
        returns = self.launcher.launch(job_overrides, initial_job_idx)
        self.jobs += [(list(o), r) for o, r in zip(job_overrides, returns, strict=True)]
        return returns


def _valued(ret) -> bool:
    """A trial whose job returned a number (a failed one returns None)."""
    value = ret.return_value if ret.status is JobStatus.COMPLETED else None
    return isinstance(value, float) and not math.isnan(value)


def _job(overrides: list[str], ret, objective: Objective, sweep_dir: Path) -> dict:
    """A job as search.json lists it: its dir in the sweep's, overrides, seeds, and what its
    summary says."""
    out_dir = OmegaConf.select(ret.hydra_cfg, "hydra.runtime.output_dir") if ret.hydra_cfg else None
    try:
        summary = read_summary(Path(out_dir)) if out_dir else None
    except JobDirError:
        summary = None
    if out_dir and Path(out_dir).is_relative_to(sweep_dir.absolute()):
        out_dir = str(Path(out_dir).relative_to(sweep_dir.absolute()))
    job = {"job": out_dir, "overrides": overrides, "status": (summary or {}).get("status")}
    if job["status"] != "completed":
        job["error"] = (summary or {}).get("error", "it left no readable summary.json")
        return job
    replicas = summary["replicas"]
    solved = sum(r["solved"] for r in replicas)
    return {
        **job,
        "seeds": [replicas[0]["seed"], replicas[-1]["seed"]],
        "value": objective_value(replicas, objective),
        "solved": solved,
        "replicas": len(replicas),
        "solved_ci95": list(wilson_interval(solved, len(replicas))),
    }


def _outcome(report: dict) -> str:
    """The console's line: the re-run's value next to the searched one."""
    best, rerun = report["best"], report["rerun"]
    if rerun["status"] != "completed":
        return f"the re-run of job {best['job']} on fresh seeds failed: {rerun['error']}"
    low, high = rerun["solved_ci95"]
    return (
        f"{report['objective']} {rerun['value']:.4g} on fresh seeds {rerun['seeds'][0]}.."
        f"{rerun['seeds'][1]} (solved {rerun['solved']}/{rerun['replicas']}, 95% CI "
        f"{low:.0%}-{high:.0%}), searched {best['value']:.4g} in job {best['job']}"
    )


def markdown(report: dict) -> str:
    """search.md: the searched best next to its re-run on fresh seeds."""
    lines = [
        f"# Search: {report['objective']} ({report['direction']}), {report['trials']} trials, "
        f"{report['failed_trials']} failed",
        "",
        f"| | job | overrides | seeds | {report['objective']} | solved (95% CI) |",
        "|---|---|---|---|---|---|",
    ]
    for what, job in (
        ("best trial (searched: optimistic)", report["best"]),
        ("re-run on fresh seeds", report["rerun"]),
    ):
        overrides = " ".join(job["overrides"])
        if job["status"] != "completed":
            lines.append(f"| {what} | {job['job']} | {overrides} | | {job['error']} | |")
            continue
        low, high = job["solved_ci95"]
        lines.append(
            f"| {what} | {job['job']} | {overrides} | {job['seeds'][0]}..{job['seeds'][1]} "
            f"| {job['value']:.4g} | {job['solved']}/{job['replicas']} = "
            f"{job['solved'] / job['replicas']:.0%} [{low:.0%}, {high:.0%}] |"
        )
    return "\n".join(lines) + "\n"
