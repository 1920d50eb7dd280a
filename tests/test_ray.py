"""hydra/launcher=ray on a Ray cluster of this machine alone (2 CPUs, 127.0.0.1), started once
for the module: every job completes on the CPUs Ray gives it, a failing job and a dead worker
leave the others to complete, and the sweep's results plot and resume as a local sweep's do."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import ROOT, run_cli
from test_launcher import FAIL_AND_DIE

from xorrelu import resume

pytest.importorskip("hydra_plugins.hydra_ray_launcher", reason="needs the [ray] extra")
pytestmark = pytest.mark.slow

# Ray otherwise swaps 127.0.0.1 for the machine's network address, there and in the driver; no
# token authentication on this private head (an ~/.ray/auth_token left by another Ray would
# otherwise turn it on for one side only)
LOCAL_ONLY = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled"}


def summary(job):
    return json.loads((job / "summary.json").read_text())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def cluster():
    """The address of a Ray head on 127.0.0.1 with 2 CPUs; stopped (its processes only) after."""
    temp = Path(tempfile.mkdtemp(prefix="ray"))  # short: Ray's socket paths must fit 107 bytes
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    log = open(temp / "head.log", "w")  # noqa: SIM115 — open as long as the head runs
    head = subprocess.Popen(
        [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block"]
        + ["--num-cpus", "2", "--node-ip-address", "127.0.0.1", "--port", "0"]
        + ["--ray-client-server-port", str(_free_port()), "--include-dashboard", "false"]
        + ["--disable-usage-stats", "--temp-dir", str(temp)],
        env={**os.environ, **LOCAL_ONLY, "PYTHONPATH": path},  # its workers import this xorrelu
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its processes in a group of their own: stopped together
    )
    address_file, deadline = temp / "ray_current_cluster", time.monotonic() + 90
    while not address_file.is_file() and head.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    try:
        if not address_file.is_file():
            pytest.skip(f"the Ray head did not start: {(temp / 'head.log').read_text()[-500:]}")
        yield address_file.read_text().strip()
    finally:
        head.terminate()  # `ray start --block` stops what it started
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            head.kill()
        time.sleep(2)
        try:
            os.killpg(head.pid, signal.SIGKILL)  # anything of it still there
        except ProcessLookupError:
            pass
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


def run_ray(*args, cluster: str, cwd: Path, env_extra: dict | None = None):
    return run_cli(
        *args,
        "hydra/launcher=ray",
        f"hydra.launcher.ray.init.address={cluster}",
        "--multirun",
        cwd=cwd,
        env_extra={**LOCAL_ONLY, **(env_extra or {})},
    )


def test_every_job_completes_on_as_many_threads_as_ray_gives_it_cpus(cluster, tmp_path):
    tiny = ["activation=tanh,relu", "depth=2,3", "steps=200", "replicas=2"]
    proc = run_ray(
        *tiny,
        "hydra.sweep.dir=sweep",
        "hydra.launcher.ray.remote.num_cpus=1",
        # what torch would take by itself; Ray sets it to num_cpus only where it is unset, and a
        # worker it reuses keeps the threads of the task it ran before
        "+hydra.launcher.ray.init.runtime_env={env_vars:{OMP_NUM_THREADS:'2'}}",
        cluster=cluster,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    sweep = tmp_path / "sweep"
    for num in "0123":
        job = sweep / num
        assert {"metrics.csv", "summary.json", "weights.pt", "checkpoint.pt", "xorrelu.log"} <= {
            p.name for p in job.iterdir()
        }
        record = summary(job)
        assert record["status"] == "completed"
        assert record["threads"] == 1  # the CPUs Ray gave the job
        assert record["host"] == socket.gethostname()
        assert len(pd.read_csv(job / "metrics.csv")) > 0
    # one console line per job, naming where it ran; the jobs' own lines in their xorrelu.log
    lines = [line for line in proc.stdout.splitlines() if line.startswith("[")]
    assert sum(f"completed on {socket.gethostname()}" in line for line in lines) == 4
    assert "step     200 |" not in proc.stdout + proc.stderr
    assert "step     200 |" in (sweep / "0" / "xorrelu.log").read_text()
    assert len(pd.read_csv(sweep / "plots" / "summary.csv")) == 4
    # xorrelu-plot reads the Ray jobs' results as any sweep's
    (sweep / "plots" / "summary.csv").unlink()
    plot = subprocess.run(
        [sys.executable, "-m", "xorrelu.plot", str(sweep), "--out", str(tmp_path / "again")],
        capture_output=True,
        text=True,
    )
    assert plot.returncode == 0, plot.stderr
    assert len(pd.read_csv(tmp_path / "again" / "summary.csv")) == 4


def test_a_failing_job_and_a_dead_worker_leave_the_others_to_complete(cluster, tmp_path):
    (tmp_path / "patch").mkdir()
    (tmp_path / "patch" / "sitecustomize.py").write_text(FAIL_AND_DIE)
    path = os.pathsep.join([str(tmp_path / "patch"), str(ROOT), os.environ.get("PYTHONPATH", "")])
    proc = run_ray(
        "depth=1,2,3,4",
        "steps=30",
        "replicas=2",
        "hydra.sweep.dir=sweep",
        # the cluster's workers for these jobs import the patch: it fails depth 2, kills depth 3
        f"+hydra.launcher.ray.init.runtime_env={{env_vars:{{PYTHONPATH:'{path}'}}}}",
        cluster=cluster,
        cwd=tmp_path,
    )
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "job 1 (depth=2" in proc.stderr and "boom at depth 2" in proc.stderr
    assert "job 2 (depth=3" in proc.stderr and "its Ray task failed" in proc.stderr
    assert "jobs of this sweep did not complete" in proc.stderr
    sweep = tmp_path / "sweep"
    assert [summary(sweep / num)["status"] for num in "013"] == ["completed", "failed", "completed"]
    assert sorted(pd.read_csv(sweep / "plots" / "summary.csv").depth) == [1, 4]


@pytest.mark.parametrize(
    "override, message",
    [
        (
            "depth=3",
            "cannot connect to the Ray cluster (hydra.launcher.ray.init.address=127.0.0.1:",
        ),
        (
            "hydra.launcher.ray.remote.num_cpus=0",
            "hydra.launcher.ray.remote.num_cpus=0: a number >= 1",
        ),
        (
            "+hydra.launcher.ray.remote.num_cpu=2",
            "hydra.launcher.ray.remote: Invalid option keyword num_cpu",
        ),
    ],
    ids=["no cluster there", "num_cpus=0", "a misspelt option"],
)
def test_a_wrong_launcher_setting_is_refused_before_anything_is_written(
    tmp_path, override, message
):
    address = f"127.0.0.1:{_free_port()}"  # nothing listens there
    proc = run_ray(
        "depth=1,2", "steps=30", override, "hydra.sweep.dir=sweep", cluster=address, cwd=tmp_path
    )
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[-1].startswith(f"xorrelu: error: {message}"), proc.stderr
    assert "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_stop_signal_cancels_the_sweep_and_resume_finishes_the_jobs_that_ran(cluster, tmp_path):
    """Ctrl-C: queued jobs never start; running ones stop at a step and save; resume goes on."""
    long = ["seed=0,1,2,3", "steps=6000", "replicas=4", "log_every=7", "plot=false"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "xorrelu", *long, "hydra.sweep.dir=sweep", "hydra/launcher=ray"]
        + [f"hydra.launcher.ray.init.address={cluster}", "--multirun"],
        cwd=tmp_path,
        env={**os.environ, **LOCAL_ONLY},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    sweep = tmp_path / "sweep"
    deadline = time.monotonic() + 120
    while len(list(sweep.glob("*/summary.json"))) < 2:  # both CPUs' jobs training
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.02)
    time.sleep(1.0)  # past the first step of both
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err, err
    ran = sorted(job for job in sweep.iterdir() if (job / "summary.json").is_file())
    assert len(ran) == 2  # the two queued jobs never started
    for job in ran:
        record = summary(job)  # "running" would be a job killed before it saved
        assert record["status"] == "interrupted" and 0 < record["last_step"] < 6000, record
        assert (job / "checkpoint.pt").is_file()
    assert resume.main([str(sweep)]) == 0
    for job in ran:
        assert summary(job)["status"] == "completed"
        assert len(pd.read_csv(job / "metrics.csv")) > 0
