"""hydra/launcher=local, the default for --multirun: jobs at once in worker processes, one torch
thread each on two cores, the same rows as the basic launcher, and a stop signal that leaves
every running job resumable."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pandas as pd
import pytest
from conftest import run_cli
from omegaconf import OmegaConf

from xorrelu import resume
from xorrelu.__main__ import job_threads

TINY = ["activation=tanh,relu", "depth=2,3", "steps=200", "replicas=2"]
LONG = ["seed=0,1,2,3", "steps=6000", "replicas=4", "log_every=7", "plot=false"]  # ~5 s a job


def summary(job):
    return json.loads((job / "summary.json").read_text())


def test_auto_leaves_the_threads_to_pytorch_only_when_jobs_run_in_this_process(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert job_threads(0, OmegaConf.create({"n_jobs": "auto"})) == 0  # n_jobs=1: in-process
    assert job_threads(0, OmegaConf.create({"n_jobs": 2})) == 1  # what the workers see


@pytest.mark.parametrize("n_jobs", ["0", "-1", "two", "1.5"])
def test_a_bad_n_jobs_is_refused_before_anything_is_written(tmp_path, n_jobs):
    proc = run_cli(*TINY, f"hydra.launcher.n_jobs={n_jobs}", "--multirun", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "hydra.launcher.n_jobs=" in proc.stderr and "auto or a whole number" in proc.stderr
    assert not (tmp_path / "outputs").exists()


@pytest.mark.slow
def test_a_sweep_runs_jobs_at_once_on_one_thread_each_with_the_basic_launchers_rows(tmp_path):
    local = run_cli(*TINY, "hydra.sweep.dir=local", "--multirun", cwd=tmp_path)
    assert local.returncode == 0, local.stderr
    basic = run_cli(
        *TINY, "hydra.sweep.dir=basic", "hydra/launcher=basic", "--multirun", cwd=tmp_path
    )
    assert basic.returncode == 0, basic.stderr
    cores = os.cpu_count() or 1
    at_once = min(cores, 4)
    for num in "0123":
        job = tmp_path / "local" / num
        assert {"metrics.csv", "summary.json", "weights.pt", "checkpoint.pt", "xorrelu.log"} <= {
            p.name for p in job.iterdir()
        }
        assert summary(job)["status"] == "completed"
        assert summary(job)["threads"] == max(1, cores // at_once)  # 1 on two cores
        hydra = OmegaConf.load(job / ".hydra" / "hydra.yaml")
        assert hydra.hydra.launcher.n_jobs == at_once and hydra.hydra.job.num == int(num)
        assert (job / "metrics.csv").read_bytes() == (
            tmp_path / "basic" / num / "metrics.csv"
        ).read_bytes()
    assert (tmp_path / "local" / "plots" / "summary.csv").is_file()  # once, after every job
    assert len(pd.read_csv(tmp_path / "local" / "plots" / "summary.csv")) == 4
    # the console: one line per job (the jobs' own lines are in their xorrelu.log)
    lines = [line for line in local.stdout.splitlines() if line.startswith("[")]
    assert sum("] job " in line and " completed in " in line for line in lines) == 4
    assert any(line.startswith("[4/4] job ") for line in lines)
    assert "step     200 |" not in local.stdout and "step     200 |" in basic.stdout
    assert "step     200 |" in (tmp_path / "local" / "0" / "xorrelu.log").read_text()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """metrics.csv of jobs 0 and 1 of LONG, uninterrupted, by the basic launcher."""
    cwd = tmp_path_factory.mktemp("reference")
    proc = run_cli(
        *LONG[1:],
        "seed=0,1",
        "hydra.sweep.dir=sweep",
        "hydra/launcher=basic",
        "--multirun",
        cwd=cwd,
    )
    assert proc.returncode == 0, proc.stderr
    return {num: (cwd / "sweep" / num / "metrics.csv").read_bytes() for num in "01"}


@pytest.mark.slow
@pytest.mark.parametrize(
    "signum, code, group",
    [(signal.SIGINT, 130, False), (signal.SIGTERM, 143, False), (signal.SIGINT, 130, True)],
    ids=["SIGINT", "SIGTERM", "Ctrl-C"],
)
def test_a_stop_signal_reaches_every_running_job_and_resume_finishes_them(
    tmp_path, reference, signum, code, group
):
    """To the launcher alone (`kill`), or to its whole process group, as a Ctrl-C at the
    terminal sends it: either way each job is stopped once (a second would say "saving...")."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "xorrelu", *LONG, "hydra.sweep.dir=sweep", "--multirun"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # a process group of its own, as a shell's foreground job
    )
    sweep = tmp_path / "sweep"
    deadline = time.monotonic() + 120
    while not all((sweep / num / "summary.json").is_file() for num in "01"):  # both training
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.02)
    time.sleep(1.0)  # past the first step of both
    if group:
        os.killpg(proc.pid, signum)
    else:
        proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert "Traceback" not in err and "died" not in err, err
    assert not (sweep / "2").exists() and not (sweep / "3").exists()  # never started
    for num in "01":
        job = sweep / num
        record = summary(job)  # "running" would be a job killed before it saved
        assert record["status"] == "interrupted" and 0 < record["last_step"] < 6000, record
        assert (job / "checkpoint.pt").is_file()
        assert reference[num].startswith((job / "metrics.csv").read_bytes())
    assert out.count("interrupted in ") == 2 and err.count("saving...") == 0

    assert resume.main([str(sweep)]) == 0
    for num in "01":
        assert summary(sweep / num)["status"] == "completed"
        assert (sweep / num / "metrics.csv").read_bytes() == reference[num]


@pytest.mark.slow
def test_a_sweep_can_be_plotted_while_its_jobs_are_still_training(tmp_path):
    """A researcher looks before the end: xorrelu-plot reads the running jobs' whole rows, says
    they are running, and writes nothing into the sweep."""
    longer = ["seed=0,1", "steps=100000", "replicas=4", "compile=false", "log_every=7"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "xorrelu", *longer, "hydra.sweep.dir=sweep", "--multirun"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    sweep = tmp_path / "sweep"
    try:
        deadline = time.monotonic() + 120

        def rows(num: str) -> int:  # whole rows flushed so far (a job flushes every 5 s)
            path = sweep / num / "metrics.csv"
            return path.read_bytes().count(b"\n") - 1 if path.is_file() else 0

        while not (rows("0") > 0 and rows("1") > 0):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        live = subprocess.run(
            [sys.executable, "-m", "xorrelu.plot", str(sweep), "--out", str(tmp_path / "live")],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert live.returncode == 0 and "Traceback" not in live.stderr, live.stderr
        text = (tmp_path / "live" / "summary.md").read_text()
        assert "Jobs not completed" in text and "running" in text
        assert not (sweep / "plots").exists()  # the sweep's own plots come at its end
        assert proc.poll() is None  # it really was still training
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=120)
    assert proc.returncode == 130


FAIL_AND_DIE = textwrap.dedent(
    """
    import os, signal
    import xorrelu.train as t
    real = t.train
    def train(cfg, out_dir, checkpoint=None):
        if cfg.depth == 2:
            raise RuntimeError("boom at depth 2")
        if cfg.depth == 3:
            os.kill(os.getpid(), signal.SIGKILL)  # as the OOM killer does
        return real(cfg, out_dir, checkpoint)
    t.train = train
    """
)


@pytest.mark.slow
def test_a_failing_job_and_a_dead_worker_leave_the_others_to_complete(tmp_path):
    (tmp_path / "patch").mkdir()  # every process of the sweep imports it, the workers too
    (tmp_path / "patch" / "sitecustomize.py").write_text(FAIL_AND_DIE)
    path = os.pathsep.join([str(tmp_path / "patch"), os.environ.get("PYTHONPATH", "")])
    proc = run_cli(
        "depth=1,2,3,4",
        "steps=30",
        "replicas=2",
        "hydra.sweep.dir=sweep",
        "--multirun",
        cwd=tmp_path,
        env_extra={"PYTHONPATH": path},
    )
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "job 1 (depth=2" in proc.stderr and "boom at depth 2" in proc.stderr
    assert (
        "job 2 (depth=3" in proc.stderr and "worker process died (killed by SIGKILL)" in proc.stderr
    )
    assert "jobs of this sweep did not complete" in proc.stderr
    sweep = tmp_path / "sweep"
    assert [summary(sweep / num)["status"] for num in "013"] == ["completed", "failed", "completed"]
    assert sorted(pd.read_csv(sweep / "plots" / "summary.csv").depth) == [1, 4]


def test_unfinished_jobs_lists_killed_jobs_and_never_counts_a_study_below_zero(tmp_path):
    """The final list without a launcher's own reasons: a job dir Hydra made whose job was
    killed before it wrote summary.json is named; a study's size (its sweeper chooses it) is not
    used to count the jobs that never started."""
    import json

    from xorrelu.preflight import Plan

    for num, status in (("0", "completed"), ("1", "failed"), ("2", None), ("3", "completed")):
        (tmp_path / num / ".hydra").mkdir(parents=True)
        if status:
            (tmp_path / num / "summary.json").write_text(
                json.dumps({"status": status, "config": {}})
            )
    study = Plan([], 1, tmp_path, counted=False)
    assert study.unfinished_jobs() == ["1: failed", "2: killed: it left no summary.json"]
    sweep = Plan([], 6, tmp_path)
    assert sweep.unfinished_jobs()[-1] == "2 job(s) left no dir (never started)"


@pytest.mark.parametrize(
    "error", [EOFError("Ran out of input"), ValueError("no dashes"), "failed-job-without-rules"]
)
def test_a_slurm_result_that_cannot_be_read_is_one_line_not_a_traceback(tmp_path, error):
    """_outcome reads a SLURM job's result file: a damaged one, or a FailedJobError without
    submitit's usual rules around the traceback, is the job's reason, and the wait goes on."""
    submitit = pytest.importorskip("submitit")
    from types import SimpleNamespace

    from hydra_plugins.xorrelu_launcher.slurm_launcher import _outcome

    if isinstance(error, str):
        error = submitit.core.utils.FailedJobError(error)
    result = tmp_path / "result.pkl"
    result.write_bytes(b"")

    def raise_it():
        raise error

    job = SimpleNamespace(
        job_id="7_1",
        paths=SimpleNamespace(result_pickle=result),
        watcher=SimpleNamespace(get_state=lambda job_id, mode: "COMPLETED"),
        result=raise_it,
    )
    reason = _outcome(job)
    assert isinstance(reason, str) and "\n" not in reason
    assert type(error).__name__ in reason or "failed-job-without-rules" in reason


def test_a_requeued_slurm_job_resumes_or_starts_afresh_only_in_a_dir_of_its_own(
    tmp_path, monkeypatch
):
    """xorrelu.__main__._requeued: a requeued SLURM job with a checkpoint resumes; one stopped
    before its first step (no checkpoint) starts afresh only when its interrupted summary.json
    names this same SLURM job; anything else is no requeue (the dir's results are refused)."""
    from xorrelu.__main__ import _requeued

    def write(record: dict) -> None:
        (tmp_path / "summary.json").write_text(json.dumps({"config": {}, **record}))

    mine = {"slurm": {"job_id": "12_3", "node": "n", "restarts": 0}}
    monkeypatch.setenv("SLURM_JOB_ID", "15")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "12")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")
    write({"status": "interrupted", **mine})
    assert _requeued(tmp_path) is None  # not requeued
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    assert _requeued(tmp_path) == "afresh"
    write({"status": "interrupted", "slurm": {"job_id": "11_3"}})  # another job's
    assert _requeued(tmp_path) is None
    write({"status": "interrupted"})  # not a SLURM job's
    assert _requeued(tmp_path) is None
    write({"status": "completed", **mine})
    assert _requeued(tmp_path) is None
    (tmp_path / "summary.json").write_text("{")  # damaged
    assert _requeued(tmp_path) is None
    (tmp_path / "checkpoint.pt").write_bytes(b"")
    assert _requeued(tmp_path) == "resume"


def test_the_slurm_launcher_asks_squeue_about_its_arrays_and_stops_waiting_when_it_keeps_failing(
    tmp_path, monkeypatch
):
    """squeue -j with the sweep's job arrays (any Slurm version; `--me` needs 20.11). When
    squeue keeps failing the jobs end as failed with the reason, instead of a wait forever."""
    pytest.importorskip("submitit")
    from types import SimpleNamespace

    from hydra_plugins.xorrelu_launcher import slurm_launcher as sl

    watcher = sl.QueueWatcher(delay_s=0)
    for job_id in ("7_0", "7_1", "9_0"):
        watcher.register_job(job_id)
    command = watcher._make_command()
    assert command[:3] == ["squeue", "-j", "7,9"] and "--me" not in command

    def refuse(*args, **kwargs):
        raise subprocess.CalledProcessError(1, args[0], b"", b"slurm_load_jobs error: down")

    monkeypatch.setattr(sl.subprocess, "run", refuse)
    monkeypatch.setattr(sl, "QUEUE_GIVE_UP_S", 0)
    monkeypatch.setattr(sl, "QUEUE_GIVE_UP_POLLS", 3)
    watcher.update()
    watcher.update()
    assert not watcher.is_done("7_0", mode="cache")  # still waiting
    watcher.update()
    assert all(watcher.is_done(j, mode="cache") for j in ("7_0", "7_1", "9_0"))
    job = SimpleNamespace(
        job_id="7_0", watcher=watcher, paths=SimpleNamespace(result_pickle=tmp_path / "none.pkl")
    )
    reason = sl._outcome(job)
    assert "squeue failed 3 times" in reason and "slurm_load_jobs error: down" in reason

    def unknown(*args, **kwargs):  # every job of these arrays has left the queue
        raise subprocess.CalledProcessError(1, args[0], b"", b"Invalid job id specified")

    watcher = sl.QueueWatcher(delay_s=0)
    watcher.register_job("7_0")
    monkeypatch.setattr(sl.subprocess, "run", unknown)
    watcher.update()
    assert watcher.get_state("7_0", mode="cache") == "LEFT_QUEUE"
