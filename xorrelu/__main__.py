"""`python -m xorrelu [key=value ...] [--multirun]`: the Hydra shell around xorrelu.train.train.

Before Hydra starts, `main` composes and checks every job of the run or the sweep and resolves
the output dir (xorrelu.preflight). A refused command exits 2 with one line and changes nothing
on disk; a dir that already holds results is never written into (resume it instead).
Exit codes: 0 done, 1 a job failed (the others still ran), 2 refused, 129 / 130 / 143 stopped by
SIGHUP / SIGINT / SIGTERM or SIGUSR2.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from xorrelu import signals
from xorrelu.config import CONFIG_PATH

_failures: list[str] = []  # jobs of this process that failed, one line each
_started = False  # Hydra handed a job to `task`


def task(cfg) -> float | None:
    """One job, as Hydra calls it: check, train, and report a failure without stopping a sweep.
    Returns the job's objective (config.Objective) for a searching sweeper, None when the job
    failed: Optuna records that trial as failed and the study goes on (a NaN would end it: the
    Optuna sweeper 1.3.0 tells optuna 2.10 a FAILED trial with the NaN attached, which raises).
    A failure is told by the job's summary.json (status, error), which xorrelu's launcher reads
    for its workers' jobs."""
    from hydra.core.hydra_config import HydraConfig

    from xorrelu.config import ConfigError, validate
    from xorrelu.files import JobDirBusy
    from xorrelu.jobdir import JobDirError, read_summary
    from xorrelu.process import use_threads
    from xorrelu.train import train

    global _started
    _started = True
    hydra_cfg = HydraConfig.get()
    out_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode is not None and hydra_cfg.mode.name == "MULTIRUN"
    name = f"{hydra_cfg.job.num} ({hydra_cfg.job.override_dirname})" if multirun else str(out_dir)
    summary = None
    try:
        validate(cfg)  # again, on the node that runs it: free memory and devices are its own
        requeued = _requeued(out_dir)  # a scheduler's requeue of this very job (SLURM)
        if requeued == "afresh":  # stopped before its first step: nothing to go on from
            _clear_run_outputs(out_dir)
            use_threads(job_threads(cfg.threads, hydra_cfg.launcher))
            summary = train(cfg, out_dir)
        elif requeued == "resume":
            from xorrelu.resume import prepare

            prepared = prepare(out_dir)
            if prepared:
                cfg, checkpoint = prepared
                use_threads(checkpoint["threads"])
                summary = train(cfg, out_dir, checkpoint=checkpoint)
            else:  # it had completed before the requeue
                summary = read_summary(out_dir)
        elif _holds_results(out_dir):  # nothing else ever runs into a dir with results
            raise JobDirBusy(
                f"{out_dir} already holds results; resume it with: "
                f"python -m xorrelu.resume {out_dir}"
            )
        else:
            use_threads(job_threads(cfg.threads, hydra_cfg.launcher))
            summary = train(cfg, out_dir)
    except signals.Interrupted as stop:
        if not (out_dir / "summary.json").exists():  # stopped before training began
            _write_summary(cfg, out_dir, {"status": "interrupted", "error": str(stop)})
        raise  # stops the whole sweep; train() saved the running job
    except Exception as error:  # noqa: BLE001 — a failed job is reported; the sweep goes on
        reason = (
            str(error)
            if isinstance(error, (ConfigError, JobDirBusy, JobDirError))
            else f"{type(error).__name__}: {error}"
        )
        print(f"xorrelu: error: job {name} failed: {reason}", file=sys.stderr, flush=True)
        _failures.append(f"{name}: {reason}")
        if not (out_dir / "summary.json").exists():  # failed before train() wrote its summary
            _write_summary(cfg, out_dir, {"status": "failed", "error": reason})
    if signals.pending():  # a stop signal arrived while the job was saving its results
        raise signals.Interrupted(signals.take_pending())
    return _objective(cfg, summary)


def _objective(cfg, summary: dict | None) -> float | None:
    """The completed job's config.objective over its replicas; None for a job that failed."""
    from xorrelu.stats import objective_value

    if not summary or summary.get("status") != "completed":
        return None
    return objective_value(summary["replicas"], cfg.objective)


def _write_summary(cfg, out_dir: Path, record: dict) -> None:
    """A job that never trained still says what happened to it, and which SLURM job it was
    (with signals held)."""
    from omegaconf import OmegaConf

    from xorrelu.files import write_json
    from xorrelu.train import slurm_job

    with signals.mode("hold"):
        try:
            write_json(
                out_dir / "summary.json",
                {
                    **record,
                    **slurm_job(),
                    "config": OmegaConf.to_container(cfg, resolve=True, enum_to_str=True),
                },
            )
        except OSError:
            pass


def job_threads(threads: int, launcher) -> int:
    """threads=0 shares the cores among the jobs a launcher runs at once (xorrelu's and joblib's
    n_jobs, submitit's cpus_per_task, the CPUs Ray gave the job), so that jobs x threads never
    exceeds the cores; 0 = leave it. xorrelu's launcher writes the number it runs at once into
    n_jobs ("auto" only when it runs the jobs one after another in this process)."""
    if threads > 0:
        return threads
    cores = os.cpu_count() or 1
    if launcher.get("cpus_per_task"):
        return int(launcher.cpus_per_task)
    if launcher.get("ray") is not None:
        return _ray_cpus()
    n_jobs = launcher.get("n_jobs")
    if n_jobs and n_jobs != "auto":
        parallel = cores if n_jobs < 0 else min(n_jobs, cores)
        return max(1, cores // parallel)
    return 0


def _ray_cpus() -> int:
    """The CPUs Ray assigned to this task (its ray.remote num_cpus; 1 unless asked otherwise),
    at least one thread."""
    import ray

    if not ray.is_initialized():  # not in a Ray task (the config alone, outside a sweep)
        return 0
    return max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1)))


def _holds_results(job_dir: Path) -> bool:
    """Hydra has just made the dir and its .hydra/: only what train() writes counts here."""
    from xorrelu.preflight import RUN_OUTPUTS

    return any((job_dir / name).exists() for name in RUN_OUTPUTS)


def _requeued(out_dir: Path) -> str | None:
    """How a job SLURM requeued (SLURM_RESTART_COUNT > 0) goes on in its own dir: "resume" from
    its checkpoint; "afresh" when it was stopped before its first step (no checkpoint.pt) and its
    summary.json, interrupted, was written by this same SLURM job (its files, and only they, are
    replaced); None when it is no requeue of this job (a dir with results then is refused)."""
    from xorrelu.jobdir import JobDirError, read_summary
    from xorrelu.train import slurm_job

    if os.environ.get("SLURM_RESTART_COUNT", "0") in ("", "0"):
        return None
    if (out_dir / "checkpoint.pt").is_file():
        return "resume"
    this = slurm_job().get("slurm", {}).get("job_id")
    try:
        summary = read_summary(out_dir) or {}
    except JobDirError:
        return None
    ran = summary.get("slurm")
    if (
        this
        and summary.get("status") == "interrupted"
        and isinstance(ran, dict)
        and ran.get("job_id") == this
    ):
        return "afresh"
    return None


def _clear_run_outputs(out_dir: Path) -> None:
    """The files a run of this job wrote before it was stopped, so that it starts afresh."""
    from xorrelu.preflight import RUN_OUTPUTS

    for name in RUN_OUTPUTS:
        path = out_dir / name
        if path.is_file() or path.is_symlink():
            path.unlink()


def _run_hydra(argv: list[str]) -> None:
    import hydra

    from xorrelu.config import register_configs

    register_configs()
    _register_plugins()
    sys.argv = [sys.argv[0], *argv]
    hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="config")(task)()


def _register_plugins() -> None:
    """hydra/launcher=local, =slurm and =ray, hydra/sweeper=search: Hydra finds plugins by listing
    the hydra_plugins namespace, which an editable install (setuptools >= 64) hides from it (hydra
    issue #2359): name them here (slurm's only with the [slurm] extra, without which it is no
    launcher)."""
    from hydra.core.plugins import Plugins
    from hydra.plugins.launcher import Launcher

    from hydra_plugins.xorrelu_launcher.ray_launcher import RayLauncher
    from hydra_plugins.xorrelu_launcher.slurm_launcher import SlurmLauncher
    from hydra_plugins.xorrelu_launcher.xorrelu_launcher import LocalLauncher
    from hydra_plugins.xorrelu_search.xorrelu_search import SearchSweeper

    Plugins.instance().register(LocalLauncher)
    Plugins.instance().register(RayLauncher)
    if issubclass(SlurmLauncher, Launcher):
        Plugins.instance().register(SlurmLauncher)
    Plugins.instance().register(SearchSweeper)


def run(argv: list[str]) -> int:
    """Check, then hand over to Hydra; the exit code."""
    from xorrelu.preflight import Refused, check

    try:
        plan = check(argv, CONFIG_PATH)
    except Refused as error:
        print(f"xorrelu: error: {error}", file=sys.stderr)
        return 2
    try:
        _run_hydra(plan.argv)
    except SystemExit as exit_:  # Hydra has printed why
        if exit_.code not in (0, None):
            return 1 if _started else 2
    except BrokenPipeError:
        raise
    except Exception as error:  # noqa: BLE001 — Hydra's own refusals (e.g. --multirun with --cfg)
        print(f"xorrelu: error: {' '.join(str(error).split())}", file=sys.stderr)
        return 1 if _started else 2
    from hydra_plugins.xorrelu_launcher.xorrelu_launcher import failures as in_workers

    if plan.sweep_dir is None:
        return 1 if _failures else 0
    # the reasons of this process's jobs and of xorrelu's launcher's workers, else the jobs'
    # summaries (other launchers' processes)
    lines = _failures + in_workers or plan.unfinished_jobs()
    if lines:
        print(
            "xorrelu: jobs of this sweep did not complete (the others did; the plots cover them):",
            file=sys.stderr,
        )
        for line in lines:
            print(f"  {line}", file=sys.stderr)
    return 1 if lines else 0


def main() -> None:
    """Entry point of `python -m xorrelu` and the `xorrelu` script."""
    signals.install()  # from here on a stop signal never prints a traceback
    try:
        code = run(sys.argv[1:])
    except BrokenPipeError:  # `xorrelu --help | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 1
    except BaseException:
        if signals.requested() is None:
            raise  # a bug: its traceback is the report
        code = None
    stop = signals.requested()
    if stop is not None:  # whatever the Interrupted ran into on its way out
        signals.ignore_from_now_on()
        interrupted = signals.Interrupted(stop)
        print(f"xorrelu: {interrupted}", file=sys.stderr)
        code = interrupted.exit_code
    sys.exit(code)


def _script(prog: str, module: str) -> None:
    """The `xorrelu-plot` and `xorrelu-resume` scripts: pip's wrapper would import the heavy
    module before anything can catch a Ctrl-C; this imports it under a quiet handler."""
    import importlib

    try:
        entry = importlib.import_module(module).main
    except KeyboardInterrupt:
        print(f"{prog}: interrupted while starting; nothing was written", file=sys.stderr)
        sys.exit(130)
    sys.exit(entry())


def plot_main() -> None:
    _script("xorrelu-plot", "xorrelu.plot")


def resume_main() -> None:
    _script("xorrelu-resume", "xorrelu.resume")


if __name__ == "__main__":
    main()
