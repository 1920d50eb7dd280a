"""hydra/launcher=ray (pip install 'xorrelu[ray]'): every job of a sweep is a Ray task on a
running Ray cluster, started the way hydra-ray-launcher starts them (its ray.init and ray.remote
options, its task wrapper); Ray queues the tasks and runs as many at once as its CPUs allow.

What it adds to hydra-ray-launcher, whose launcher waits for the jobs in order and ends the
whole sweep at the first task that dies:

- each job's end is collected as it comes: a job whose Ray worker died (killed for memory, its
  node lost) fails alone, the sweep goes on to its plots, and `python -m xorrelu` names it at the
  end and exits 1;
- one console line per finished job, with the node it ran on (its summary.json says it too);
- a stop signal (Ctrl-C, SIGTERM) cancels the sweep's tasks: queued jobs never start, running
  ones stop at their next step and save a checkpoint; `python -m xorrelu.resume SWEEP_DIR`
  finishes them.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, setup_globals
from hydra.plugins.launcher import Launcher
from omegaconf import DictConfig, open_dict

from xorrelu import signals

log = logging.getLogger(__name__)
SAVE_S = 120  # how long a stopped sweep waits for its running jobs to save


class RayLauncher(Launcher):
    def __init__(self, ray: DictConfig) -> None:
        self.ray_cfg = ray
        self.config = self.hydra_context = self.task_function = None

    def setup(self, *, hydra_context, task_function, config) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        import ray
        from hydra_plugins.hydra_ray_launcher._launcher_util import launch_job_on_ray, start_ray

        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        start_ray(self.ray_cfg.init)
        log.info(
            f"Launching {len(job_overrides)} jobs on the Ray cluster at "
            f"{ray.get_runtime_context().gcs_address} ({ray.cluster_resources().get('CPU', 0):g} "
            f"CPUs, {self.ray_cfg.remote.get('num_cpus', 1)} a job): {sweep_dir}"
        )
        total, pending = len(job_overrides), {}
        for num, overrides in enumerate(job_overrides, start=initial_job_idx):
            sweep_config = self.hydra_context.config_loader.load_sweep_config(
                self.config, list(overrides)
            )
            with open_dict(sweep_config):
                sweep_config.hydra.job.id = num
                sweep_config.hydra.job.num = num
            task = launch_job_on_ray(
                self.hydra_context,
                self.ray_cfg.remote,
                sweep_config,
                self.task_function,
                Singleton.get_state(),
            )
            job_dir = Path(str(sweep_config.hydra.sweep.dir)) / str(sweep_config.hydra.sweep.subdir)
            pending[task] = (num, overrides, job_dir)
        returns = {}
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                num, overrides, job_dir = pending.pop(done[0])
                returns[num] = _collect(done[0], num, overrides, job_dir, len(returns), total)
        except KeyboardInterrupt:  # a stop signal: no new job, the running ones save and stop
            with signals.mode("hold"):
                for task in pending:
                    ray.cancel(task)
                if pending:
                    _, stuck = ray.wait(list(pending), num_returns=len(pending), timeout=SAVE_S)
                    for task in stuck:  # a job that cannot reach its next step: end its worker
                        ray.cancel(task, force=True)
                    if stuck:
                        print(
                            f"xorrelu: {len(stuck)} job(s) did not stop within {SAVE_S} s and "
                            "were ended; their dirs keep what they last saved",
                            file=sys.stderr,
                        )
            raise
        return [returns[num] for num in sorted(returns)]


def _collect(task, num: int, overrides, job_dir: Path, done: int, total: int) -> JobReturn:
    """The job's JobReturn (its objective); a failed one as a COMPLETED return without a value
    (a FAILED status would make Hydra's sweeper raise once every job is done, and skip the
    plots). Whether a job failed, and why, its summary.json says (task() wrote it on the node)."""
    import ray

    # imported now: Hydra's plugin scan may have run this module with its own copy of that one
    from hydra_plugins.xorrelu_launcher.xorrelu_launcher import job_failed, job_name, job_summary
    from xorrelu.jobdir import job_failure

    name = job_name(num, overrides)
    try:
        ret = ray.get(task)
        if ret.status is JobStatus.FAILED:  # raised past task()'s own report
            failure = f"{type(ret._return_value).__name__}: {ret._return_value}"
        else:
            failure = job_failure(job_dir)
    except ray.exceptions.RayError as error:  # its worker or its node died
        failure = f"its Ray task failed: {type(error).__name__}: {_first_line(error)}"
    if failure:
        job_failed(name, failure)
        ret = JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED)
    summary = job_summary(job_dir) or {}
    status = "failed" if failure else summary.get("status", "failed")
    where = f" on {summary['host']}" if "host" in summary else ""
    print(f"[{done + 1}/{total}] job {name} {status}{where}", flush=True)
    return ret


def _first_line(error: Exception) -> str:
    return next((line.strip() for line in str(error).splitlines() if line.strip()), "")
