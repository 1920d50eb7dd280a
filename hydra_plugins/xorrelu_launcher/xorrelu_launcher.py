"""hydra/launcher=local, the default for --multirun: `n_jobs` jobs at once, each in a worker
process of its own, with the stop-signal guarantees of a single run.

A sweep's jobs are small and bound by PyTorch's per-op overhead, not by its threads: two jobs on
one thread each finish about twice as fast as the same two jobs one after another on two.

- n_jobs: auto = min(cores, jobs). With threads=0 each job takes cores // n_jobs torch threads
  (xorrelu.__main__.job_threads reads the n_jobs written into the job's config). n_jobs=1 runs
  the jobs one after another in this process, as hydra/launcher=basic does.
- Workers are spawned into a session of their own, so a Ctrl-C at the terminal reaches only this
  process. It passes SIGINT, SIGTERM, SIGHUP or SIGUSR2 on, once, to each running job, starts no
  further job, waits for the jobs to save (checkpoint.pt, whole rows, summary "interrupted") and
  stops with the signal's exit code; `python -m xorrelu.resume SWEEP_DIR` finishes them.
  Workers are never killed.
- A job's JobReturn comes back with its return value (its objective, for a searching sweeper);
  whether it failed, and why, this reads from its summary.json (xorrelu.__main__.task writes one
  for a job that failed before training) into `failures`. A worker that dies (OOM-killed) fails
  its job; the sweep goes on in a new worker.
- The console shows one line per finished job with the sweep's ETA. A job's own lines go to its
  log file (xorrelu.log in its dir); its warnings and errors still reach the console.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import multiprocessing
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Sequence
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_launcher import BasicLauncher
from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import (
    JobReturn,
    JobStatus,
    configure_log,
    filter_overrides,
    run_job,
    setup_globals,
)
from hydra.plugins.launcher import Launcher
from omegaconf import OmegaConf, open_dict

from xorrelu import signals

log = logging.getLogger(__name__)

failures: list[str] = []  # jobs that failed in a worker, one line each: `python -m xorrelu` exits 1


def job_failed(name: str, reason: str, *, say: bool = True) -> None:
    """Record a job of this sweep that failed outside this process (a worker, a Ray task, a SLURM
    job): its line for the sweep's final list and, with `say`, the error line now. Every launcher
    records its failures here, so that the final list gives each job's own reason."""
    if say:
        print(f"xorrelu: error: job {name}: {reason}", file=sys.stderr, flush=True)
    failures.append(f"{name}: {reason}")


def check_n_jobs(n_jobs) -> None:
    """ValueError unless n_jobs is auto or a whole number >= 1 (xorrelu.preflight asks first)."""
    if n_jobs != "auto" and not (isinstance(n_jobs, int) and n_jobs >= 1):
        raise ValueError(f"hydra.launcher.n_jobs={n_jobs!r}: auto or a whole number >= 1")


class LocalLauncher(Launcher):
    def __init__(self, n_jobs: int | str = "auto") -> None:
        check_n_jobs(n_jobs)
        self.n_jobs = n_jobs
        self.config = self.hydra_context = self.task_function = None

    def setup(self, *, hydra_context, task_function, config) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        jobs = len(job_overrides)
        n_jobs = min((os.cpu_count() or 1) if self.n_jobs == "auto" else self.n_jobs, jobs)
        if n_jobs <= 1:
            basic = BasicLauncher()
            basic.setup(
                hydra_context=self.hydra_context,
                task_function=self.task_function,
                config=self.config,
            )
            return basic.launch(job_overrides, initial_job_idx)
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        log.info(f"Launching {jobs} jobs locally, {n_jobs} at once: {sweep_dir}")
        state = Singleton.get_state()
        del state["omegaconf_resolvers"]  # closures, which do not pickle: each worker has its own
        setup = (self.hydra_context, self.config, _importable(self.task_function), state, n_jobs)
        with signals.mode("defer"):  # a stop signal is passed on to the jobs, never raised here
            returns = _run(setup, n_jobs, list(enumerate(job_overrides, start=initial_job_idx)))
        stop = signals.take_pending()
        if stop is not None:
            raise signals.Interrupted(stop)
        return returns


def _importable(function) -> tuple[str, str]:
    """The task function's module and name, for the worker to import: `python -m xorrelu` runs
    xorrelu/__main__.py as __main__, which a spawned process does not import again."""
    spec = getattr(sys.modules.get(function.__module__), "__spec__", None)
    return (spec.name if spec else function.__module__), function.__qualname__


class _Worker:
    """A worker process, its end of the pipe, and the job it runs: (num, overrides, start)."""

    def __init__(self, context, setup: tuple) -> None:
        self.conn, theirs = context.Pipe()
        self.process = context.Process(target=_work, args=(theirs, setup), name="xorrelu-job")
        # it starts with the stop signals blocked, until it is in a session of its own (_work)
        before = signal.pthread_sigmask(signal.SIG_BLOCK, signals.STOP_SIGNALS)
        try:
            self.process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, before)
        theirs.close()
        self.ready, self.job, self.ever_ready = False, None, False

    def messages(self):
        """What the worker has sent; stops at the end of the pipe (the worker exited)."""
        try:
            while self.conn.poll():
                yield self.conn.recv()
        except (EOFError, OSError):
            return

    def quit(self) -> None:
        try:
            self.conn.send(None)
        except OSError:
            pass  # it has exited already
        self.process.join()
        self.conn.close()


def _run(setup: tuple, n_jobs: int, queue: list) -> list[JobReturn]:
    """Run the (num, overrides) jobs on n_jobs workers; their JobReturns in order."""
    context = multiprocessing.get_context("spawn")
    queue, total, returns = deque(queue), len(queue), {}
    workers = [_Worker(context, setup) for _ in range(n_jobs)]
    progress = _Progress(total)
    stopped = False
    try:
        while True:
            if signals.pending() is not None and not stopped:
                stopped = True
                queue.clear()
                for worker in workers:  # each running job stops at a step boundary and saves
                    if worker.job is not None:
                        with contextlib.suppress(ProcessLookupError):  # it has just died
                            os.kill(worker.process.pid, signals.pending())
            for worker in workers:
                if worker.ready and worker.job is None and queue:
                    num, overrides = queue.popleft()
                    worker.conn.send((num, overrides))
                    worker.job = (num, overrides, time.monotonic())
            if not queue and all(worker.job is None for worker in workers):
                break
            wait([w.conn for w in workers] + [w.process.sentinel for w in workers], timeout=0.2)
            for worker in list(workers):
                alive = worker.process.is_alive()  # before reading: a dead one has said all
                for kind, ret, out_dir in worker.messages():
                    if kind == "ready":
                        worker.ready = worker.ever_ready = True
                        continue
                    num, overrides, began = worker.job
                    worker.job = None
                    if ret is not None:
                        returns[num] = ret
                    progress.job_ended(num, overrides, began, kind, ret, out_dir)
                if alive:
                    continue
                worker.process.join()
                workers.remove(worker)
                if not worker.ever_ready:
                    raise RuntimeError(
                        f"a worker process of the local launcher exited while starting "
                        f"(exit code {worker.process.exitcode}); try hydra/launcher=basic"
                    )
                if worker.job is not None:  # it died in the job: killed, out of memory
                    num, overrides, began = worker.job
                    returns[num] = _died(num, overrides, worker.process.exitcode)
                    progress.job_ended(num, overrides, began, "died", returns[num], None)
                if queue:
                    workers.append(_Worker(context, setup))
    finally:
        for worker in workers:
            worker.quit()
    return [returns[num] for num in sorted(returns)]


def _died(num: int, overrides: Sequence[str], exitcode: int | None) -> JobReturn:
    """The JobReturn of a job whose worker died: no value (a failed trial to Optuna), and the
    sweep goes on (a FAILED status would make Hydra's sweeper raise once every job is done, and
    skip the plots)."""
    how = (
        f"killed by {signal.Signals(-exitcode).name}"
        if exitcode is not None and exitcode < 0
        else f"exit code {exitcode}"
    )
    ret = JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED)
    ret.return_value = None
    ret.died = f"its worker process died ({how})"
    print(
        f"xorrelu: error: job {job_name(num, overrides)}: {ret.died}", file=sys.stderr, flush=True
    )
    return ret


def job_name(num: int, overrides: Sequence[str]) -> str:
    """A job as every launcher names it on the console: its number and its own overrides."""
    return f"{num} ({','.join(filter_overrides(overrides))})"


class _Progress:
    """One console line per finished job, with an ETA for the whole sweep."""

    def __init__(self, total: int) -> None:
        self.total, self.done, self.start = total, 0, time.monotonic()

    def job_ended(self, num, overrides, began, kind, ret, out_dir) -> None:
        """kind: done (its summary says how), died (its worker), interrupted."""
        from xorrelu.jobdir import job_failure

        now = time.monotonic()
        self.done += 1
        summary = job_summary(out_dir)
        failure = None
        if kind == "died":
            failure = ret.died
        elif kind == "done" and ret.status is not JobStatus.COMPLETED:  # raised past task()
            failure = str(ret._return_value)
        elif kind == "done":
            failure = job_failure(Path(out_dir))
        elif kind == "interrupted" and not signals.pending():  # a signal to its worker alone
            failure = "interrupted"  # the sweep goes on
        if failure is not None:
            job_failed(job_name(num, overrides), failure, say=False)  # its line says it below
        if kind != "interrupted":
            kind = "failed" if failure else "completed"
        detail = _detail(kind, summary)
        left = self.total - self.done
        eta = ""
        if left and kind != "interrupted" and not signals.pending():
            eta = f" · sweep ETA {_duration((now - self.start) / self.done * left)}"
        print(
            f"[{self.done}/{self.total}] job {job_name(num, overrides)} "
            f"{kind} in {_duration(now - began)}{detail}{eta}",
            flush=True,
        )


def job_summary(out_dir: str | Path | None) -> dict | None:
    """The job's summary.json; None when it has none or it cannot be read (every launcher's
    reading of it)."""
    from xorrelu.jobdir import JobDirError, read_summary

    try:
        return read_summary(Path(out_dir)) if out_dir else None
    except JobDirError:
        return None


def _detail(kind: str, summary: dict | None) -> str:
    """': solved 87/100' for a completed job, ' at step 1234' for an interrupted one."""
    if not summary:
        return ""
    if kind == "completed" and "replicas" in summary:
        replicas = summary["replicas"]
        return f": solved {sum(r.get('solved') is True for r in replicas)}/{len(replicas)}"
    if kind == "interrupted":
        return f" at step {summary.get('last_step')}"
    return ""


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


# --- in the worker process --------------------------------------------------------------------


def _work(conn, setup: tuple) -> None:
    """A worker: run the jobs the launcher sends, one at a time, until it sends None or a stop
    signal ends a job. Sends ("ready", None, None), then (kind, JobReturn or None, job dir)
    per job, kind "done" or "interrupted"."""
    os.setsid()  # a session of its own: a Ctrl-C at the terminal reaches the launcher only
    for signum in signals.STOP_SIGNALS:  # drops any that reached us while starting (blocked)
        signal.signal(signum, signal.SIG_IGN)
    signals.install()
    signal.pthread_sigmask(signal.SIG_UNBLOCK, signals.STOP_SIGNALS)
    try:
        hydra_context, config, (module, name), singleton_state, n_jobs = setup
        task_function = _quiet(getattr(importlib.import_module(module), name))
        setup_globals()  # Hydra's state as the launcher had it; kept from job to job, as in basic
        Singleton.set_state({**Singleton.get_state(), **singleton_state})
        conn.send(("ready", None, None))
        while (job := conn.recv()) is not None:
            kind, ret, out_dir = _run_job(hydra_context, config, task_function, n_jobs, *job)
            conn.send((kind, ret, out_dir))
            if kind == "interrupted":
                break
    except (KeyboardInterrupt, EOFError, BrokenPipeError):
        pass  # a stop between jobs, or the launcher is gone: nothing is running
    finally:
        signals.ignore_from_now_on()


def _run_job(
    hydra_context, config, task_function, n_jobs: int, num: int, overrides: Sequence[str]
) -> tuple[str, Any, str | None]:
    """One job, as Hydra's launchers run it: its sweep config, job number and dir."""
    sweep_config = None
    try:
        sweep_config = hydra_context.config_loader.load_sweep_config(config, list(overrides))
        with open_dict(sweep_config):
            sweep_config.hydra.job.id = num
            sweep_config.hydra.job.num = num
            sweep_config.hydra.launcher.n_jobs = n_jobs  # what threads=0 shares the cores among
        HydraConfig.instance().set_config(sweep_config)
        ret = run_job(
            hydra_context=hydra_context,
            task_function=task_function,
            config=sweep_config,
            job_dir_key="hydra.sweep.dir",
            job_subdir_key="hydra.sweep.subdir",
        )
    except KeyboardInterrupt:  # a stop signal: the job saved what it had
        out_dir = None if sweep_config is None else sweep_config.hydra.runtime.get("output_dir")
        return "interrupted", None, out_dir
    return "done", _picklable(ret), sweep_config.hydra.runtime.output_dir


def _picklable(ret: JobReturn) -> JobReturn:
    """The JobReturn with plain configs (Hydra's plugin scan in this process made new copies of
    the classes of its structured configs, which pickle refuses) and an exception that task()
    let through as text."""
    value = ret._return_value
    if ret.status is JobStatus.FAILED:
        value = RuntimeError(f"{type(value).__name__}: {value}")
    plain = JobReturn(
        overrides=ret.overrides,
        cfg=OmegaConf.create(OmegaConf.to_container(ret.cfg)),
        hydra_cfg=OmegaConf.create(OmegaConf.to_container(ret.hydra_cfg)),
        working_dir=ret.working_dir,
        task_name=ret.task_name,
        status=ret.status,
    )
    plain.return_value = value
    return plain


def _quiet(task_function):
    """The job's INFO lines go to its log file only; its warnings and errors reach the console
    too, and its progress bar is off (the launcher prints a line per job)."""

    def task(cfg):
        from xorrelu import train

        train.progress_bar = False
        for handler in logging.getLogger().handlers:
            if type(handler) is logging.StreamHandler:  # the console, not the log file
                handler.setLevel(logging.WARNING)
        return task_function(cfg)

    return task
