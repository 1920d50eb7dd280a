"""hydra/launcher=slurm on a real SLURM cluster: a single-node one on this machine
(tests/slurm_cluster.py), the one CI starts or, where none is running, one these tests start and
stop. Skipped, with the reason, where SLURM is not installed or cannot start (not root)."""

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
import slurm_cluster
from conftest import run_cli

pytestmark = pytest.mark.slow

# one core and 1 GB per job: two jobs at once on two cores
SLURM = [
    "hydra/launcher=slurm",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=1",
    "hydra.launcher.timeout_min=10",
]
LONG = ["steps=4000", "replicas=4", "log_every=7", "plot=false"]  # ~5 s of training a job


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """SLURM_CONF of a running single-node cluster: CI's (.ci/run starts it), else one started
    here and stopped at the end."""
    conf = os.environ.get("SLURM_CONF")
    if conf and slurm_cluster.ours(conf) and slurm_cluster.answers(conf):
        yield conf
        return
    reason = slurm_cluster.unavailable()
    if reason:
        pytest.skip(f"no SLURM cluster: {reason}")
    root = tmp_path_factory.mktemp("slurm")
    try:
        conf = str(slurm_cluster.start(root))
    except slurm_cluster.ClusterError as error:
        pytest.skip(f"no SLURM cluster: {error}")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SLURM_CONF", conf)  # for the tests' commands, and the jobs inherit it
        try:
            yield conf
        finally:
            slurm_cluster.stop(root)


def summary(job: Path) -> dict:
    return json.loads((job / "summary.json").read_text())


def quiet(proc) -> None:
    """No traceback, and none of submitit's sacct warnings (this cluster has no accounting)."""
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "sacct" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr


def test_a_sweep_runs_as_slurm_jobs_and_records_where_each_ran(cluster, tmp_path):
    proc = run_cli(
        "depth=1,2,3,4", "steps=200", "replicas=2", *SLURM, "hydra.sweep.dir=sweep", "--multirun",
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    quiet(proc)
    sweep = tmp_path / "sweep"
    ids = set()
    for num in "0123":
        job = sweep / num
        assert {"metrics.csv", "summary.json", "weights.pt", "checkpoint.pt", "data.csv"} <= {
            p.name for p in job.iterdir()
        }
        record = summary(job)
        assert record["status"] == "completed" and record["threads"] == 1
        slurm = record["slurm"]  # the job array's task, as squeue and scancel name it
        assert slurm["job_id"].endswith(f"_{num}") and slurm["restarts"] == 0
        assert slurm["node"] == record["host"].split(".")[0]
        ids.add(slurm["job_id"].split("_")[0])
    assert len(ids) == 1  # one job array
    assert sum(" completed: SLURM job " in line for line in proc.stdout.splitlines()) == 4
    assert sorted(pd.read_csv(sweep / "plots" / "summary.csv").depth) == [1, 2, 3, 4]
    assert (sweep / "plots" / "cost.png").is_file()  # xorrelu-plot's report, over the jobs' dirs


FAIL_AND_EXIT = textwrap.dedent(
    """
    import os
    import xorrelu.train as t
    real = t.train
    def train(cfg, out_dir, checkpoint=None):
        if cfg.depth == 2:
            raise RuntimeError("boom at depth 2")
        if cfg.depth == 3:
            os._exit(1)  # the job's process exits 1, as a crash in a library would
        return real(cfg, out_dir, checkpoint)
    t.train = train
    """
)


def test_a_job_that_fails_or_exits_1_is_reported_and_the_others_complete(cluster, tmp_path):
    (tmp_path / "patch").mkdir()  # every SLURM job imports it: sbatch passes on the environment
    (tmp_path / "patch" / "sitecustomize.py").write_text(FAIL_AND_EXIT)
    path = os.pathsep.join([str(tmp_path / "patch"), os.environ.get("PYTHONPATH", "")])
    proc = run_cli(
        "depth=1,2,3,4", "steps=30", "replicas=2", *SLURM, "hydra.sweep.dir=sweep", "--multirun",
        cwd=tmp_path, env_extra={"PYTHONPATH": path},
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    quiet(proc)
    assert "job 1 (depth=2" in proc.stderr and "boom at depth 2" in proc.stderr
    # the launcher saw it leave the queue without a result, and did not wait for it forever
    assert "job 2 (depth=3" in proc.stderr and "without a result" in proc.stderr
    assert "_2_0_log.err" in proc.stderr  # where to look
    assert "jobs of this sweep did not complete" in proc.stderr
    final = proc.stderr.split("jobs of this sweep did not complete")[1]  # each job's own reason
    assert "  1 (depth=2" in final and "boom at depth 2" in final
    assert "  2 (depth=3" in final and "without a result" in final and "_2_0_log.err" in final
    sweep = tmp_path / "sweep"
    assert [summary(sweep / num)["status"] for num in "013"] == ["completed", "failed", "completed"]
    assert not (sweep / "2" / "summary.json").exists()
    assert sorted(pd.read_csv(sweep / "plots" / "summary.csv").depth) == [1, 4]
    report = (sweep / "plots" / "summary.md").read_text()
    assert "Jobs not completed" in report and "boom at depth 2" in report


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """metrics.csv of LONG seeds 0 and 1, uninterrupted, on this machine, on one thread as
    the SLURM jobs (cpus_per_task=1)."""
    cwd = tmp_path_factory.mktemp("reference")
    proc = run_cli(*LONG, "seed=0,1", "threads=1", "hydra.sweep.dir=sweep", "--multirun", cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    return {num: (cwd / "sweep" / num / "metrics.csv").read_bytes() for num in "01"}


def test_preemption_requeues_a_job_and_resume_finishes_a_cancelled_one(
    cluster, reference, tmp_path
):
    """SIGUSR2 (preemption): job 0 saves, requeues itself and resumes in its own dir. SIGTERM
    (scancel): job 1 saves and stops; xorrelu.resume finishes it. Both end byte-identical to an
    uninterrupted run."""
    sweep = tmp_path / "sweep"
    proc = subprocess.Popen(
        [sys.executable, "-m", "xorrelu", *LONG, "seed=0,1", *SLURM, "hydra.sweep.dir=sweep",
         "--multirun"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while not all((sweep / num / "summary.json").is_file() for num in "01"):  # training
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.1)
        time.sleep(1.5)  # past the first step of both
        for num, sig in (("0", "USR2"), ("1", "TERM")):
            job_id = summary(sweep / num)["slurm"]["job_id"]
            subprocess.run(["scancel", f"--signal={sig}", job_id], check=True, timeout=60)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, err  # job 1 did not complete
    quiet(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))

    requeued = summary(sweep / "0")
    assert requeued["status"] == "completed" and requeued["slurm"]["restarts"] == 1
    assert 0 < requeued["resumed_from_step"] < 4000
    assert (sweep / "0" / "metrics.csv").read_bytes() == reference["0"]

    stopped = summary(sweep / "1")
    assert stopped["status"] == "interrupted" and 0 < stopped["last_step"] < 4000
    final = err.split("jobs of this sweep did not complete")[1]
    assert "  1 (" in final and "interrupted: stopped by SIGTERM" in final
    assert reference["1"].startswith((sweep / "1" / "metrics.csv").read_bytes())
    resumed = subprocess.run(
        [sys.executable, "-m", "xorrelu.resume", str(sweep)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert summary(sweep / "1")["status"] == "completed"
    assert (sweep / "1" / "metrics.csv").read_bytes() == reference["1"]
