"""Hostile input to `python -m xorrelu`: every refusal is one line, exit 2, and leaves every file
that existed before byte-identical; nothing the command did not make is ever deleted."""

import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import run_cli, snapshot

from xorrelu.results import read_metrics

TINY = ["steps=20", "replicas=2", "plot=false"]


def refused(proc, *words):
    """One line on stderr, exit 2, no traceback, and each of `words` in it."""
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("xorrelu: error:"), proc.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def project(tmp_path):
    """A user's project dir with a file in it, as the cwd of the command."""
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "code.py").write_text("important\n")
    (tmp_path / "notes.txt").write_text("my notes\n")
    return tmp_path


# --- configs that are refused before anything is written ------------------------------------
BAD = [
    (["depth=0"], "depth=0"),
    (["depth=abc"], "depth=abc"),
    (["width=-1"], "width=-1"),
    (["steps=0"], "steps=0"),
    (["replicas=0"], "replicas=0"),
    (["seed=-1"], "seed=-1"),
    (["seed=9223372036854775808"], "seed=9223372036854775808"),
    (["seed=18446744073709551616"], "seed=18446744073709551616"),
    (["seed=9223372036854775800", "replicas=16"], "2**63 - replicas"),
    (["optimizer.lr=inf"], "optimizer.lr=inf"),
    (["optimizer.lr=nan"], "optimizer.lr=nan"),
    (["optimizer.lr=0"], "optimizer.lr=0"),
    (["init.bound=inf"], "init.bound=inf"),
    (["init.bias=nan"], "init.bias=nan"),
    (["init=normal", "init.std=-inf"], "init.std=-inf"),
    (["activation=prelu", "activation.init=inf"], "activation.init=inf"),
    (["activation=bogus"], "activation/bogus"),
    (["+sed=3"], "sed=3"),
    (["sed=3"], "sed"),
    (["log_every=0"], "log_every=0"),
    (["compile=maybe"], "compile"),
    (["engine=fused", "activation=maxout"], "engine"),
    (["replicas=100000000"], "GiB"),
    (["hydra.run.dir=${oops}"], "hydra.run.dir"),
    (["hydra.run.dir="], "hydra.run.dir"),
    (["hydra.run.dir=" + "x" * 300], "255"),
    (["depth=2,0,3", "--multirun"], "job 1 (depth=0)"),
    (["activation=relu,bogus", "--multirun"], "job 1"),
    (["experiment=depth", "steps=0", "--multirun"], "steps=0"),
    (["optimizer=momentum", "optimizer.momentum=0.5,1.5", "--multirun"], "optimizer.momentum=1.5"),
    (["hydra.sweep.dir=${oops}", "depth=1,2", "--multirun"], "hydra.sweep.dir"),
]


@pytest.mark.parametrize("args, word", BAD, ids=[" ".join(a)[:60] for a, _ in BAD])
def test_a_bad_value_is_refused_in_one_line_and_writes_nothing(project, args, word):
    before = snapshot(project)
    refused(run_cli(*TINY, *args, cwd=project), word)
    assert snapshot(project) == before  # no outputs/, no multirun.yaml, nothing changed


MORE_BAD = [
    (["hydra.output_subdir=../../victim"], "leaves the run's dir"),
    (["hydra.sweep.subdir=/tmp/elsewhere", "depth=1,2", "--multirun"], "leaves the run's dir"),
    (["hydra.run.dir=" + "/".join(["d" * 250] * 20)], "File name too long"),
]


@pytest.mark.parametrize(
    "args, word", MORE_BAD, ids=["output_subdir", "sweep_subdir", "path_over_4096"]
)
def test_a_dir_that_leaves_the_checked_one_or_cannot_exist_is_refused(project, args, word):
    before = snapshot(project)
    refused(run_cli(*TINY, *args, cwd=project), word)
    assert snapshot(project) == before


def test_hydra_resolvers_in_the_dir_and_in_values_still_work(tmp_path):
    run = run_cli(*TINY, "hydra.run.dir=out/${hydra:job.name}", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "out" / "xorrelu" / "metrics.csv").is_file()
    sweep = run_cli(
        *TINY,
        "seed=${hydra:job.num}",
        "depth=1,2",
        "hydra.sweep.dir=sweep",
        "--multirun",
        cwd=tmp_path,
    )
    assert sweep.returncode == 0, sweep.stderr
    seeds = [
        json.loads((tmp_path / "sweep" / job / "summary.json").read_text())["config"]["seed"]
        for job in "01"
    ]
    assert seeds == [0, 1]


def test_a_dir_with_a_users_files_of_the_names_a_run_writes_is_refused(project):
    (project / "mine").mkdir()
    (project / "mine" / "weights.pt").write_text("my own weights\n")
    (project / "mine" / "plots").mkdir()
    (project / "mine" / "plots" / "cost.png").write_text("my own figure\n")
    before = snapshot(project)
    refused(run_cli(*TINY, "hydra.run.dir=mine", cwd=project), "already holds", "weights.pt")
    assert snapshot(project) == before


def test_a_config_from_elsewhere_still_never_writes_into_a_finished_run(finished_run, tmp_path):
    (tmp_path / "empty_conf").mkdir()
    before = snapshot(finished_run)
    refused(
        run_cli(
            "--config-dir",
            str(tmp_path / "empty_conf"),
            "hydra.run.dir=job",
            "seed=9",
            cwd=finished_run,
        ),
        "already holds",
    )
    assert snapshot(finished_run) == before


def test_a_refused_config_in_the_users_own_dir_deletes_nothing(project):
    """`hydra.run.dir=.` with a bad value used to rmtree the project and its parents."""
    before = snapshot(project.parent)
    refused(run_cli("depth=0", "hydra.run.dir=.", cwd=project), "depth=0")
    assert snapshot(project.parent) == before


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("finished")
    assert run_cli(*TINY, "hydra.run.dir=job", cwd=cwd).returncode == 0
    (cwd / "job" / "my_notes.txt").write_text("notes beside the results\n")
    return cwd


@pytest.mark.parametrize(
    "args, words",
    [
        ([], ["already holds", "xorrelu.resume", "hydra.run.dir"]),
        (["depth=0"], ["depth=0"]),
        (["activation=tanh"], ["already holds", "xorrelu.resume"]),
    ],
)
def test_an_existing_run_dir_is_never_written_into(finished_run, args, words):
    before = snapshot(finished_run)
    refused(run_cli(*TINY, *args, "hydra.run.dir=job", cwd=finished_run), *words)
    assert snapshot(finished_run) == before


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, words",
    [
        (["depth=1,2"], ["already holds a sweep", "xorrelu.resume", "hydra.sweep.dir"]),
        (["depth=1,0"], ["job 1 (depth=0)"]),
    ],
)
def test_an_existing_sweep_dir_is_never_written_into(tmp_path, args, words):
    assert (
        run_cli(*TINY, "depth=1", "hydra.sweep.dir=sweep", "--multirun", cwd=tmp_path).returncode
        == 0
    )
    before = snapshot(tmp_path)
    refused(run_cli(*TINY, *args, "hydra.sweep.dir=sweep", "--multirun", cwd=tmp_path), *words)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("kind", ["file", "broken_link", "file_above"])
def test_something_in_the_way_of_the_output_dir(tmp_path, kind):
    if kind == "file":
        (tmp_path / "outputs").write_text("")
    elif kind == "broken_link":
        (tmp_path / "outputs").symlink_to(tmp_path / "nowhere")
    else:
        (tmp_path / "outputs").mkdir()
        (tmp_path / "outputs" / "runs").write_text("a file where a dir must go")
    before = snapshot(tmp_path)
    refused(run_cli(*TINY, cwd=tmp_path), "cannot write results")
    assert snapshot(tmp_path) == before


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a read-only file system needs root")
def test_a_read_only_file_system_is_refused_in_one_line(tmp_path):
    target = tmp_path / "ro"
    target.mkdir()
    if subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(target)], capture_output=True
    ).returncode:
        pytest.skip("this machine cannot mount a tmpfs")
    try:
        refused(run_cli(*TINY, f"hydra.run.dir={target}/job", cwd=tmp_path), "read-only")
    finally:
        subprocess.run(["umount", str(target)], check=True)


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_an_unwritable_dir_is_refused_in_one_line(tmp_path):
    (tmp_path / "locked").mkdir(mode=0o500)
    refused(run_cli(*TINY, f"hydra.run.dir={tmp_path}/locked/job", cwd=tmp_path), "not writable")


def test_quotes_and_spaces_in_the_run_dir_are_kept_exactly(tmp_path):
    name = "my run's dir, a \\ and = signs"
    proc = run_cli(*TINY, "hydra.run.dir='my run\\'s dir, a \\ and = signs'", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / name / "metrics.csv").is_file()
    before = snapshot(tmp_path)
    refused(run_cli(*TINY, "hydra.run.dir='a \\${x} dir'", cwd=tmp_path), "cannot contain")
    assert snapshot(tmp_path) == before


# --- a job that fails does not stop the sweep -----------------------------------------------
FAIL_DEPTH_2 = textwrap.dedent(
    """
    import sys
    import xorrelu.train as t
    real = t.train
    def train(cfg, out_dir, checkpoint=None):
        if cfg.depth == 2:
            raise RuntimeError("boom at depth 2")
        return real(cfg, out_dir, checkpoint)
    t.train = train
    sys.argv = ["xorrelu", *sys.argv[1:]]
    from xorrelu.__main__ import main
    main()
    """
)


@pytest.mark.slow
def test_a_failing_job_does_not_stop_the_sweep(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            FAIL_DEPTH_2,
            "depth=1,2,3",
            "steps=30",
            "replicas=2",
            "hydra.sweep.dir=sweep",
            "hydra/launcher=basic",  # in this process, where train() is patched
            "--multirun",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert (
        "job 1 (depth=2" in proc.stderr
        and "boom at depth 2" in proc.stderr
        and "jobs of this sweep did not complete" in proc.stderr
    )
    statuses = {
        job: json.loads((tmp_path / "sweep" / job / "summary.json").read_text())["status"]
        for job in "012"
    }
    assert statuses == {
        "0": "completed",
        "1": "failed",
        "2": "completed",
    }  # the job after the failure ran too
    summary = pd.read_csv(tmp_path / "sweep" / "plots" / "summary.csv")
    assert sorted(summary.depth) == [1, 3]  # the sweep's plots cover the finished jobs


# --- stop signals -----------------------------------------------------------------------------
LONG = [
    "steps=6000",
    "replicas=4",
    "log_every=1",
    "print_every=100000",
    "plot=false",
    "hydra.run.dir=job",
]
SLOW_SAVE = textwrap.dedent(
    """
    import sys, time
    import xorrelu.files as f, xorrelu.train as t
    real = f.save_torch
    def save_torch(path, obj):
        time.sleep(0.6)  # a slow disk: the signals below arrive while the checkpoint is written
        real(path, obj)
    t.save_torch = save_torch
    sys.argv = ["xorrelu", *sys.argv[1:]]
    from xorrelu.__main__ import main
    main()
    """
)


def storm(
    cwd: Path, argv: list[str], signals_: list[int], gap: float, when: str
) -> subprocess.CompletedProcess:
    """Start xorrelu, wait for `when` ("start": at once; "training": the first step is
    logged), then send `signals_` `gap` seconds apart."""
    proc = subprocess.Popen(
        argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    log, deadline = cwd / "job" / "xorrelu.log", time.monotonic() + 120
    if when == "start":
        time.sleep(0.3)
    else:
        while (
            not (log.is_file() and "step       0 |" in log.read_text())
            and time.monotonic() < deadline
        ):
            time.sleep(0.02)
        time.sleep(0.3)
    for signum in signals_:
        proc.send_signal(signum)
        time.sleep(gap)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def assert_whole(job: Path, replicas: int = 4) -> dict:
    """Every file of an interrupted job is whole and they agree with each other."""
    summary = json.loads((job / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    data = (job / "metrics.csv").read_bytes()
    assert data.endswith(b"\n")
    rows = pd.read_csv(job / "metrics.csv")
    assert len(rows) % replicas == 0 and rows.notna().all().all()
    if (job / "checkpoint.pt").exists():
        checkpoint = torch.load(job / "checkpoint.pt", weights_only=True)
        assert checkpoint["step"] == summary["last_step"] and checkpoint["recorder"][
            "csv_bytes"
        ] == len(data)
    assert not [p for p in job.iterdir() if ".tmp" in p.name or p.name == ".xorrelu-reserve"]
    return summary


INT, TERM, HUP, USR2 = signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR2


@pytest.mark.slow
@pytest.mark.parametrize(
    "signals_, gap, code",
    [
        ([INT, INT], 0.05, 130),
        ([TERM, TERM], 0.05, 143),
        ([INT, TERM, HUP, USR2, INT], 0.02, 130),
        ([HUP, INT], 0.1, 129),
        ([USR2, TERM, INT, HUP, TERM], 0.1, 143),
    ],
)
def test_a_signal_storm_during_training_and_saving_loses_nothing(tmp_path, signals_, gap, code):
    proc = storm(tmp_path, [sys.executable, "-c", SLOW_SAVE, *LONG], signals_, gap, "training")
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr and "saving..." in proc.stderr
    summary = assert_whole(tmp_path / "job")
    assert (tmp_path / "job" / "checkpoint.pt").exists() and 0 < summary["last_step"] < 6000


@pytest.mark.slow
@pytest.mark.parametrize(
    "signals_, code", [([INT, INT], 130), ([TERM, INT, HUP, USR2, TERM], 143), ([HUP], 129)]
)
def test_a_stop_at_start_up_exits_at_once_without_a_traceback(tmp_path, signals_, code):
    started = time.monotonic()
    proc = storm(tmp_path, [sys.executable, "-m", "xorrelu", *LONG], signals_, 0.05, "start")
    assert proc.returncode == code and "Traceback" not in proc.stderr, proc.stderr
    assert time.monotonic() - started < 0.3 + 0.05 * len(signals_) + 2.5
    assert not (tmp_path / "job" / "metrics.csv").exists() or assert_whole(tmp_path / "job")


@pytest.mark.slow
def test_a_stop_during_compile_acts_within_two_seconds(tmp_path):
    env = {
        **os.environ,
        "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor"),
    }  # cold: a long compile
    argv = [
        sys.executable,
        "-m",
        "xorrelu",
        "steps=200",
        "replicas=4",
        "engine=fused",
        "compile=true",
        "plot=false",
        "hydra.run.dir=job",
    ]
    proc = subprocess.Popen(
        argv, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    summary = tmp_path / "job" / "summary.json"
    while not summary.is_file():
        time.sleep(0.02)
    time.sleep(1.5)  # compiling now (it takes 15 s or more cold)
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert time.monotonic() - sent < 2.0 + 1.0  # the interpreter's own exit included
    assert proc.returncode == 130 and "Traceback" not in err, err
    record = json.loads(summary.read_text())
    assert record["status"] == "interrupted" and record["last_step"] == 0
    assert not (
        tmp_path / "job" / "checkpoint.pt"
    ).exists()  # nothing was trained: nothing to resume
    assert "run it again" in out


# --- a full disk ------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.skipif(
    os.geteuid() != 0, reason="mounting a small tmpfs needs root (test_reliability covers the rest)"
)
def test_a_full_disk_keeps_whole_rows_and_the_summary_says_failed(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(disk)], capture_output=True
    ).returncode:
        pytest.skip("this machine cannot mount a tmpfs")
    try:
        proc = run_cli(
            "steps=40000",
            "replicas=16",
            "compile=false",  # eager, as written: a 5 s flush lands before the disk is full
            "print_every=100000",
            "plot=false",
            f"hydra.run.dir={disk}/job",
            cwd=tmp_path,
        )
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert "No space left on device" in proc.stderr
        job = disk / "job"
        summary = json.loads((job / "summary.json").read_text())
        assert summary["status"] == "failed" and "No space left" in summary["error"]
        data = (job / "metrics.csv").read_bytes()
        assert data.endswith(b"\n")  # no half row
        rows = pd.read_csv(job / "metrics.csv")
        assert (
            len(rows) >= 16 * 1000 and len(rows) % 16 == 0 and rows.notna().all().all()
        )  # the chunks before the failure
        assert not (job / ".xorrelu-reserve").exists()
    finally:
        subprocess.run(["umount", str(disk)], check=True)


# --- one process per job dir, and a scheduler's requeue -----------------------------------------
def test_a_second_process_cannot_write_into_a_locked_job_dir(tmp_path):
    from conftest import make_cfg

    from xorrelu.files import JobDirBusy, locked
    from xorrelu.train import train

    (tmp_path / "job").mkdir()
    before = snapshot(tmp_path)
    with locked(tmp_path / "job"):
        with pytest.raises(JobDirBusy, match="another xorrelu process"):
            train(make_cfg(*TINY), tmp_path / "job")
    assert snapshot(tmp_path) == before
    train(make_cfg(*TINY), tmp_path / "job")  # the lock is gone with its holder
    assert (tmp_path / "job" / "metrics.csv").is_file()


# what submitit runs: no preflight
REQUEUE = "import sys; from xorrelu.__main__ import _run_hydra; _run_hydra(sys.argv[1:])"


@pytest.mark.slow
def test_a_requeued_scheduler_job_resumes_in_its_own_dir(tmp_path):
    args = ["steps=3000", "replicas=2", "log_every=3", "print_every=100000", "plot=false"]
    assert run_cli(*args, "hydra.run.dir=whole", cwd=tmp_path).returncode == 0
    proc = storm(
        tmp_path,
        [sys.executable, "-m", "xorrelu", *args, "hydra.run.dir=job"],
        [signal.SIGUSR2],
        0,
        "training",
    )
    assert proc.returncode == 143, proc.stderr
    stopped = (tmp_path / "job" / "metrics.csv").read_bytes()

    plain = subprocess.run(
        [sys.executable, "-c", REQUEUE, *args, "hydra.run.dir=job"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert (
        "already holds results" in plain.stderr
        and (tmp_path / "job" / "metrics.csv").read_bytes() == stopped
    )

    env = {**os.environ, "SLURM_RESTART_COUNT": "1"}
    requeued = subprocess.run(
        [sys.executable, "-c", REQUEUE, *args, "hydra.run.dir=job"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
    )
    assert requeued.returncode == 0, requeued.stderr
    assert (tmp_path / "job" / "metrics.csv").read_bytes() == (
        tmp_path / "whole" / "metrics.csv"
    ).read_bytes()


# --- Hydra's own flags ------------------------------------------------------------------------
def test_a_bad_flag_or_a_flag_clash_is_one_short_refusal(tmp_path):
    bad_flag = run_cli("--bogus", cwd=tmp_path)
    assert bad_flag.returncode == 2 and "Traceback" not in bad_flag.stderr
    assert bad_flag.stderr.count("unrecognized arguments: --bogus") == 1  # said once
    refused(run_cli("depth=1,2", "--multirun", "--cfg", "hydra", cwd=tmp_path), "Only one of")
    assert not list(tmp_path.iterdir())


def test_help_into_a_closed_pipe_prints_no_traceback(tmp_path):
    proc = subprocess.run(
        f"{sys.executable} -m xorrelu --help | head -1",
        shell=True,
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert (
        "xorrelu" in proc.stdout
        and "Traceback" not in proc.stderr
        and "Broken pipe" not in proc.stderr
    )


# --- SIGKILL, and a stop in the middle of a sweep ----------------------------------------------
@pytest.mark.slow
def test_sigkill_keeps_whole_rows_and_says_the_job_died_running(tmp_path):
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "xorrelu",
            "steps=200000",
            "replicas=4",
            "compile=false",  # training within a second, not after a compile
            "print_every=100000",
            "plot=false",
            "hydra.run.dir=job",
        ],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    metrics = tmp_path / "job" / "metrics.csv"
    deadline = time.monotonic() + 120
    while (
        not (metrics.is_file() and metrics.stat().st_size > 10_000) and time.monotonic() < deadline
    ):
        time.sleep(0.1)  # the first timed flush (every 5 s)
    proc.kill()
    proc.wait()
    # a SIGKILL that lands inside a write stops the kernel's copy part-way (a fatal signal ends
    # write(2) early), so the file may end in half a row (or in some of a step's rows): the
    # readers drop the half row, and every row they read is whole
    data = metrics.read_bytes()
    whole = data[: data.rfind(b"\n") + 1]
    rows = pd.read_csv(io.BytesIO(whole))
    per_step = rows.groupby("step").size()
    assert len(per_step) > 1 and (per_step.iloc[:-1] == 4).all() and per_step.iloc[-1] <= 4
    assert not rows[["cost", "accuracy"]].isna().any().any()
    assert read_metrics(metrics)[["step", "seed"]].equals(rows[["step", "seed"]])
    assert json.loads((tmp_path / "job" / "summary.json").read_text())["status"] == "running"
    assert not (tmp_path / "job" / "checkpoint.pt").exists()


@pytest.mark.slow
def test_a_stop_signal_stops_the_whole_sweep_and_resume_finishes_it(tmp_path):
    args = [
        "steps=4000",
        "replicas=2",
        "print_every=100000",
        "plot=false",
        "activation=relu,tanh,sigmoid",
        "hydra.sweep.dir=sweep",
        "hydra/launcher=basic",  # one job after another (tests/test_launcher.py: the default)
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "xorrelu", *args, "--multirun"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    log = tmp_path / "sweep" / "1" / "xorrelu.log"
    while not (log.is_file() and "step       0 |" in log.read_text()):
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err, err

    def status(job):
        return json.loads((tmp_path / "sweep" / job / "summary.json").read_text())["status"]

    assert (
        status("0") == "completed"
        and status("1") == "interrupted"
        and not (tmp_path / "sweep" / "2").exists()
    )
    resumed = subprocess.run(
        [sys.executable, "-m", "xorrelu.resume", "sweep"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert status("1") == "completed"


@pytest.mark.slow
@pytest.mark.parametrize("signals_", [[INT, TERM], [INT, INT, HUP, TERM, INT]])
def test_a_signal_storm_during_the_automatic_plot_leaves_whole_files(tmp_path, signals_):
    """Training is done and saved; the storm lands while the plots are written."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "xorrelu",
            "steps=200",
            "replicas=4",
            "print_every=100000",
            "hydra.run.dir=job",
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    plots = tmp_path / "job" / "plots"
    deadline = time.monotonic() + 120
    while (
        not (plots.is_dir() and any(p.suffix == ".png" for p in plots.iterdir()))
        and time.monotonic() < deadline
    ):
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.01)
    for signum in signals_:
        proc.send_signal(signum)
        time.sleep(0.03)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert (
        json.loads((tmp_path / "job" / "summary.json").read_text())["status"] == "completed"
    )  # saved before plotting
    for path in plots.iterdir():
        data = path.read_bytes()
        assert ".tmp" not in path.name
        if path.suffix == ".svg":
            assert data.rstrip().endswith(b"</svg>"), path
        elif path.suffix == ".png":
            assert data.endswith(b"IEND\xaeB`\x82"), path


# --- a save that fails (a full disk while saving) ------------------------------------------------
def _failing_torch_save(*args, **kwargs):
    raise RuntimeError(
        "[enforce fail at inline_container.cc] . PytorchStreamWriter failed writing file data/0: "
        "file write failed"
    )


def test_a_checkpoint_that_cannot_be_written_after_a_stop_still_leaves_an_interrupted_summary(
    tmp_path, monkeypatch
):
    import threading

    from conftest import make_cfg

    from xorrelu.signals import Interrupted
    from xorrelu.train import train

    monkeypatch.setattr(torch, "save", _failing_torch_save)  # torch's own error on a full disk

    def stop_once_training():
        log = tmp_path / "job" / "metrics.csv"
        while not (log.is_file() and log.stat().st_size > 0):
            time.sleep(0.01)
        time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=stop_once_training, daemon=True).start()
    with pytest.raises(Interrupted):
        train(
            # uncompiled: the stop must land in training, not in a compile (where it acts at once)
            make_cfg(
                "steps=200000", "replicas=2", "compile=false", "print_every=1000000", "plot=false"
            ),
            tmp_path / "job",
        )
    summary = json.loads((tmp_path / "job" / "summary.json").read_text())
    assert summary["status"] == "interrupted" and "checkpoint.pt not written" in summary["error"]
    assert not (tmp_path / "job" / "checkpoint.pt").exists() and not [
        p for p in (tmp_path / "job").iterdir() if ".tmp" in p.name
    ]
    assert (tmp_path / "job" / "metrics.csv").read_bytes().endswith(b"\n")


def test_weights_that_cannot_be_written_at_the_end_leave_a_failed_summary(tmp_path, monkeypatch):
    from conftest import make_cfg

    from xorrelu import files
    from xorrelu.train import train

    real = files.write_atomic

    def weights_fail(path, content):
        if path.name == "weights.pt":
            _failing_torch_save()
        real(path, content)

    monkeypatch.setattr(files, "write_atomic", weights_fail)
    with pytest.raises(OSError, match="cannot write"):
        train(make_cfg(*TINY), tmp_path / "job")
    summary = json.loads((tmp_path / "job" / "summary.json").read_text())
    assert summary["status"] == "failed" and "PytorchStreamWriter" in summary["error"]


def test_a_write_that_fails_half_way_is_cut_back_to_the_last_whole_row(tmp_path, monkeypatch):
    """The fault-injecting writer (no tmpfs needed): the third chunk of rows is written half,
    then the disk is full. metrics.csv ends on a whole row and the summary says failed."""
    import functools

    from conftest import make_cfg

    from xorrelu import metrics
    from xorrelu.train import train

    class FullAfterHalf:
        """The file, except that its next write stores half the bytes, the next one fails."""

        def __init__(self, file):
            self.file, self.writes = file, 0

        def write(self, data):
            self.writes += 1
            if self.writes == 1:
                return self.file.write(data[: len(data) // 2])  # a torn row on disk ...
            raise OSError(28, "No space left on device")  # ... and then no room

        def __getattr__(self, name):
            return getattr(self.file, name)

    real_append, calls = metrics.Rows.append, []

    def half_then_full(self, data):
        calls.append(1)
        if len(calls) == 3:
            self.file = FullAfterHalf(self.file)
        real_append(self, data)

    monkeypatch.setattr(metrics.Rows, "append", half_then_full)
    monkeypatch.setattr(
        metrics.Recorder,
        "__init__",
        functools.partialmethod(metrics.Recorder.__init__, flush_rows=40),
    )
    with pytest.raises(OSError, match="No space left"):
        train(make_cfg("steps=100", "replicas=4", "plot=false"), tmp_path / "job")
    data = (tmp_path / "job" / "metrics.csv").read_bytes()
    assert data.endswith(b"\n") and data.count(b"\n") == 1 + 40  # header and the first chunk
    rows = pd.read_csv(tmp_path / "job" / "metrics.csv")
    assert len(rows) == 40 and rows.notna().all().all()
    summary = json.loads((tmp_path / "job" / "summary.json").read_text())
    assert summary["status"] == "failed" and "No space left" in summary["error"]
    assert not (tmp_path / "job" / ".xorrelu-reserve").exists()
