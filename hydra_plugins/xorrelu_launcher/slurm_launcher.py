"""hydra/launcher=slurm: each job of a sweep is a SLURM job (one job array, `array_parallelism`
at once), through Hydra's submitit launcher, made to see a sweep through to its end on any
SLURM cluster.

In the launching process:
- Job states come from squeue and from each job's result file, never from sacct. Clusters without
  the accounting database (slurmdbd) refuse sacct, and submitit then warned on every poll
  ("Bypassing sacct error") and could not tell a job that died from one still running.
- A job that leaves the queue without a result (exit 1, killed, out of memory, cancelled, stopped
  by a signal) fails on its own line and the others go on: the launcher never waits forever.
- The console shows one line per finished job, with its SLURM job id; each job that did not
  complete is recorded with its reason (xorrelu_launcher.job_failed) for the list at the end
  (xorrelu.__main__.run).
- Stopping the launching process (Ctrl-C) leaves the submitted jobs running; it says how to
  cancel them, and `xorrelu-plot` works on the sweep dir any time; `xorrelu.resume` once the
  jobs are cancelled and gone (else a requeued job and the resume would write the same dir).

In the SLURM job:
- SIGUSR2 (SLURM's warning before preemption or the time limit; submitit asks for it with
  `--signal=USR2@signal_delay_s`) stops training at a step boundary with a checkpoint, as
  everywhere (xorrelu.signals). xorrelu's handler replaces submitit's during training, so it does
  what submitit's would have done: it requeues the job (`scontrol requeue`), and the requeued job
  resumes in its own dir from the checkpoint, or starts afresh there when it was stopped before
  its first step (xorrelu.__main__.task). SIGTERM (`scancel`) stops a job the same way, without
  a requeue: `python -m xorrelu.resume SWEEP_DIR` finishes it.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf

from xorrelu import signals

try:  # the [slurm] extra. Hydra's plugin scan imports this module with or without it: without
    # it, the classes below are plain objects, which the scan passes over
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import (
        SlurmLauncher as SubmititSlurmLauncher,
    )
    from submitit.slurm.slurm import SlurmInfoWatcher, SlurmJob
except ImportError:
    SubmititSlurmLauncher = SlurmInfoWatcher = object

log = logging.getLogger(__name__)

POLL_S = 2  # how often the launcher looks for the jobs' result files (less often past 100 jobs)
QUEUE_POLL_S = 10  # how often at most it asks squeue, once for all jobs (sooner at the start)
QUEUE_GIVE_UP_S = 300  # squeue failing this long (and QUEUE_GIVE_UP_POLLS times) in a row: the
QUEUE_GIVE_UP_POLLS = 30  # launcher stops waiting, each job left failed on its own line
GAVE_UP = "SQUEUE_FAILED"  # the state of a job whose wait the launcher gave up
# the states in which a job has ended (squeue's, and LEFT_QUEUE: no longer listed). Any other
# (PENDING, CONFIGURING, RUNNING, COMPLETING, REQUEUED, PREEMPTED before its requeue,
# SUSPENDED, ...) may still lead to a result.
ENDED = {
    "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL",
    "DEADLINE", "LEFT_QUEUE", GAVE_UP,
}  # fmt: skip


class SlurmLauncher(SubmititSlurmLauncher):
    def __call__(self, *args, **kwargs) -> JobReturn:
        """One job, in its SLURM job (submitit unpickles this launcher there and calls it)."""
        self.task_function = _requeue_on_preemption(self.task_function)
        return super().__call__(*args, **kwargs)

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        import submitit

        SlurmJob.watcher = QueueWatcher(delay_s=QUEUE_POLL_S)  # every SLURM job of this process
        params = dict(self.params)
        init = {"folder": params.pop("submitit_folder")}
        if "max_num_timeout" in params:
            init["slurm_max_num_timeout"] = params.pop("max_num_timeout")
        executor = submitit.AutoExecutor(cluster="slurm", **init)
        generic = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(
            **{key if key in generic else f"slurm_{key}": value for key, value in params.items()}
        )
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        nums = list(range(initial_job_idx, initial_job_idx + len(job_overrides)))
        state = Singleton.get_state()
        jobs = executor.map_array(
            self,
            [list(overrides) for overrides in job_overrides],
            ["hydra.sweep.dir"] * len(nums),
            nums,
            [f"job_id_for_{num}" for num in nums],
            [state] * len(nums),
        )
        array = jobs[0].job_id.split("_")[0]
        log.info(
            f"Submitted {len(jobs)} jobs to SLURM as job array {array} "
            f"(at most {params.get('array_parallelism')} at once): {sweep_dir}"
        )
        try:
            return _wait(jobs, job_overrides, nums, self._job_dir(sweep_dir))
        except KeyboardInterrupt:
            log.warning(
                f"the sweep's SLURM jobs go on without this process; plot it any time with: "
                f"xorrelu-plot {sweep_dir}. To finish it here instead, first cancel them: "
                f"scancel {array} (a requeued job starting later would write the same dirs as "
                f"the resume), then, once squeue -j {array} lists none: "
                f"python -m xorrelu.resume {sweep_dir}"
            )
            raise

    def _job_dir(self, sweep_dir: Path):
        """num -> the job's dir, where Hydra's subdir is the default (the job's number)."""
        subdir = OmegaConf.to_container(self.config.hydra.sweep, resolve=False).get("subdir")
        if subdir == "${hydra.job.num}":
            return lambda num: sweep_dir / str(num)
        return lambda num: None


class QueueWatcher(SlurmInfoWatcher):
    """submitit's job states from squeue instead of sacct. A job squeue no longer lists has left
    the queue (SLURM forgets a finished job after MinJobAge, 300 s by default): it has ended.
    squeue is asked about this sweep's job arrays alone (`squeue -j`, which every Slurm version
    takes; `--me` needs 20.11). When squeue has failed for QUEUE_GIVE_UP_S and
    QUEUE_GIVE_UP_POLLS polls in a row, the jobs still waited for end as GAVE_UP (`gave_up`
    says why): the launcher reports them instead of waiting forever."""

    failed_since: float | None = None  # when squeue began to fail, None while it answers
    failed_polls = 0
    gave_up = ""  # why the launcher stopped waiting (squeue's last error)

    def _make_command(self) -> list[str] | None:
        arrays = sorted({job_id.split("_")[0] for job_id in self._registered - self._finished})
        if not arrays:
            return None
        return ["squeue", "-j", ",".join(arrays), "--noheader", "--states=all", "--format=%i|%T"]

    def read_info(self, string: bytes | str) -> dict[str, dict[str, str]]:
        text = string.decode() if isinstance(string, bytes) else string
        listed = super().read_info("JobID|State\n" + text)
        gone = {job_id: {"JobID": job_id, "State": "LEFT_QUEUE"} for job_id in self._registered}
        return {**gone, **listed}

    def is_done(self, job_id: str, mode: str = "standard") -> bool:
        return self.get_state(job_id, mode=mode).upper() in ENDED

    def update(self) -> None:
        """submitit's update, with squeue's failure said as such (states stay as they were)."""
        command = self._make_command()
        if command is None:
            return
        self._num_calls += 1
        try:
            output = subprocess.run(command, capture_output=True, timeout=60, check=True).stdout
        except subprocess.CalledProcessError as error:
            detail = " ".join(error.stderr.decode(errors="replace").split())
            if "Invalid job id" in detail:  # none of them is known any more: all left the queue
                self._answered(b"")
            else:
                self._failed(f"{error}: {detail}" if detail else str(error))
        except (OSError, subprocess.SubprocessError) as error:
            self._failed(str(error))
        else:
            self._answered(output)
        self._last_status_check = time.time()
        for job_id in self._registered - self._finished:
            if self.is_done(job_id, mode="cache"):
                self._finished.add(job_id)

    def _answered(self, output: bytes) -> None:
        self.failed_since, self.failed_polls = None, 0
        self._info_dict.update(self.read_info(output))

    def _failed(self, error: str) -> None:
        now = time.monotonic()
        self.failed_since = now if self.failed_since is None else self.failed_since
        self.failed_polls += 1
        if self.failed_polls < QUEUE_GIVE_UP_POLLS or now - self.failed_since < QUEUE_GIVE_UP_S:
            log.warning(f"squeue failed ({error}); will ask again")
            return
        self.gave_up = (
            f"squeue failed {self.failed_polls} times in {now - self.failed_since:.0f} s "
            f"(last: {error}), so the launcher stopped waiting for it; it may still run "
            f"(squeue -j JOBID, or its dir's summary.json)"
        )
        log.error(f"squeue failed {self.failed_polls} times in a row; not waiting any longer")
        for job_id in self._registered - self._finished:
            self._info_dict[job_id] = {"JobID": job_id, "State": GAVE_UP}


def _wait(
    jobs: list, job_overrides: Sequence[Sequence[str]], nums: list[int], job_dir=lambda num: None
) -> list[JobReturn]:
    """Each job's JobReturn once every job has ended; a line per job as it ends. A job has
    ended when its result file is there or squeue says so (one squeue for all the jobs, at most
    every QUEUE_POLL_S); the result files are looked at every POLL_S, at most 50 a second."""
    from hydra_plugins.xorrelu_launcher.xorrelu_launcher import job_name

    start, returns = time.monotonic(), {}
    pending = dict(zip(nums, zip(jobs, job_overrides, strict=True), strict=True))
    while pending:
        for num, (job, overrides) in list(pending.items()):
            if not (job.paths.result_pickle.exists() or job.watcher.is_done(job.job_id)):
                continue
            del pending[num]
            ret, failed = _job_return(num, job, overrides, job_dir(num))
            returns[num] = ret
            kind = "failed" if failed else "completed"
            print(
                f"[{len(returns)}/{len(nums)}] job {job_name(num, overrides)} "
                f"{kind}: SLURM job {job.job_id}, {time.monotonic() - start:.0f} s into the sweep",
                flush=True,
            )
        if pending:
            time.sleep(max(POLL_S, len(pending) / 50))
    return [returns[num] for num in nums]


def _job_return(
    num: int, job, overrides: Sequence[str], job_dir: Path | None = None
) -> tuple[JobReturn, bool]:
    """The job's JobReturn and whether it failed: its own (returning its objective; whether it
    failed, and why, its summary.json says), or, for a job that failed outside xorrelu's task,
    one without a value (a FAILED status would make Hydra's sweeper raise once every job is
    done, and skip the plots)."""
    # imported now: Hydra's plugin scan may have run that module with its own copy of it
    from hydra_plugins.xorrelu_launcher.xorrelu_launcher import job_failed, job_name
    from xorrelu.jobdir import job_failure

    outcome = _outcome(job)
    name = job_name(num, overrides)
    if isinstance(outcome, JobReturn):
        failure = job_failure(Path(outcome.hydra_cfg.hydra.runtime.output_dir))
        if failure:  # task() printed it into the job's log
            job_failed(name, failure)
        return outcome, failure is not None
    said = _said(job_dir)  # e.g. stopped by SIGTERM (scancel), which train() recorded
    job_failed(
        name, f"{said + ' (' + outcome + ')' if said else outcome}; its log: {job.paths.stderr}"
    )
    return JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED), True


def _said(job_dir: Path | None) -> str | None:
    """What the job's summary.json says of a job that was interrupted or failed (a job killed
    while it ran still says "running": nothing then)."""
    from hydra_plugins.xorrelu_launcher.xorrelu_launcher import job_summary

    summary = job_summary(job_dir)
    if not summary or summary.get("status") not in ("interrupted", "failed"):
        return None
    error = summary.get("error")
    return f"{summary['status']}: {error}" if error else summary["status"]


def _outcome(job) -> JobReturn | str:
    """The JobReturn xorrelu's task gave back, or why there is none."""
    import submitit

    state = job.watcher.get_state(job.job_id, mode="cache")
    if state == GAVE_UP and not job.paths.result_pickle.exists():
        return f"SLURM job {job.job_id}: {job.watcher.gave_up}"
    how = "left the queue" if state == "LEFT_QUEUE" else f"ended {state}"
    without = f"SLURM job {job.job_id} {how} without a result"
    if not job.paths.result_pickle.exists() and state not in ("COMPLETED", "LEFT_QUEUE"):
        return without  # it died (exit 1, a signal, out of memory, cancelled, timed out)
    try:
        ret = job.result()  # waits up to 15 s for a result file a shared file system shows late
    except submitit.core.utils.FailedJobError as error:  # raised outside xorrelu's task
        return _raised(error)  # (before its base class, UncompletedJobError)
    except submitit.core.utils.UncompletedJobError:
        return without
    except Exception as error:  # noqa: BLE001 — a damaged result (EOFError, UnpicklingError, ...)
        return f"its result could not be read: {_one_line(error)}"
    if ret.status is not JobStatus.COMPLETED:
        return f"{type(ret._return_value).__name__}: {ret._return_value}"
    return ret


def _raised(error: Exception) -> str:
    """The last line of the traceback submitit's FailedJobError carries (between two rules of
    dashes), else its first line."""
    parts = str(error).split("-" * 22)
    trace = parts[1].splitlines() if len(parts) > 1 else []
    lines = [line for line in trace if line.strip() and not line[0].isspace()]
    return lines[-1] if lines else f"it failed: {_one_line(error)}"


def _one_line(error: Exception) -> str:
    text = next((line.strip() for line in str(error).splitlines() if line.strip()), "")
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _requeue_on_preemption(task_function):
    """The task, which after a stop signal (train() has saved the job: checkpoint, summary)
    requeues the job after SIGUSR2, as submitit's handler would (with a checkpoint it resumes;
    stopped before its first step, it starts afresh: xorrelu.__main__._requeued), then exits
    with the signal's code. Hydra's run_job lets the SystemExit through; later signals are
    ignored."""

    def task(cfg):
        from hydra.core.hydra_config import HydraConfig

        try:
            return task_function(cfg)
        except signals.Interrupted as stop:
            signals.ignore_from_now_on()
            out_dir = Path(HydraConfig.get().runtime.output_dir)
            print(f"xorrelu: {stop}", file=sys.stderr, flush=True)
            if stop.signum != signal.SIGUSR2:
                _say(f"finish it with: python -m xorrelu.resume {out_dir}")
            else:  # as submitit's handler would; the requeued job goes on in its own dir
                _requeue(out_dir)
            raise SystemExit(stop.exit_code) from None

    return task


def _say(line: str) -> None:
    print(f"xorrelu: {line}", file=sys.stderr, flush=True)


def _requeue(out_dir: Path) -> None:
    """`scontrol requeue` this job, as submitit's handler does; SLURM ends this run of it and
    starts it again, and it resumes from its checkpoint."""
    import submitit

    job_id = submitit.JobEnvironment().job_id
    try:
        subprocess.run(
            ["scontrol", "requeue", job_id], capture_output=True, text=True, timeout=60, check=True
        )
    except (OSError, subprocess.SubprocessError) as error:
        detail = getattr(error, "stderr", None) or error
        _say(
            f"could not requeue SLURM job {job_id} ({' '.join(str(detail).split())}); "
            f"finish it with: python -m xorrelu.resume {out_dir}"
        )
        return
    how = (
        "it resumes from its checkpoint"
        if (out_dir / "checkpoint.pt").is_file()
        else "stopped before its first step, it starts afresh in its dir"
    )
    _say(f"requeued SLURM job {job_id}; {how}")
