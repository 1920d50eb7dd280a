"""Nothing lost: stop signals, checkpoints and resume, atomic files, hostile input."""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import pandas as pd
import pytest
import torch
from conftest import make_cfg, run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xorrelu import resume
from xorrelu.config import ConfigError, validate
from xorrelu.train import Interrupted, train

RUN = [
    "steps=6000",
    "replicas=4",
    "log_every=7",
    "print_every=2000",
    "plot=false",
]  # ~5 s: long enough to be stopped mid-run


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """metrics.csv and final weights of the uninterrupted run."""
    cwd = tmp_path_factory.mktemp("reference")
    assert run_cli(*RUN, "hydra.run.dir=job", cwd=cwd).returncode == 0
    return (cwd / "job" / "metrics.csv").read_bytes(), torch.load(
        cwd / "job" / "weights.pt", weights_only=True
    )


def start_and_stop(cwd, signum, *extra):
    """Start a run, send `signum` once it is training, and wait for it to end."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "xorrelu", *RUN, "hydra.run.dir=job", *extra],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    for line in proc.stdout:  # the first step is done once its line is printed
        if line.startswith("step"):
            break
    time.sleep(0.3)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    return proc.returncode, err


@pytest.mark.slow
@pytest.mark.parametrize(
    "signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGUSR2, 143)]
)
def test_a_stop_signal_saves_everything_and_resume_is_byte_identical(
    tmp_path, reference, signum, code
):
    returncode, err = start_and_stop(tmp_path, signum)
    assert returncode == code, err
    assert "Traceback" not in err
    job = tmp_path / "job"
    summary = json.loads((job / "summary.json").read_text())
    assert summary["status"] == "interrupted" and 0 < summary["last_step"] < 6000
    checkpoint = torch.load(job / "checkpoint.pt", weights_only=True)
    assert checkpoint["step"] == summary["last_step"]
    data = (job / "metrics.csv").read_bytes()
    assert data.endswith(b"\n")
    metrics = pd.read_csv(job / "metrics.csv")
    assert metrics.notna().all().all() and metrics.step.max() < checkpoint["step"]
    assert len(metrics) % 4 == 0  # whole steps: every replica's row
    assert reference[0].startswith(data)  # what was written is what the full run writes

    outer = time.perf_counter()
    assert resume.main([str(job)]) == 0
    outer = time.perf_counter() - outer
    assert (job / "metrics.csv").read_bytes() == reference[0]
    final = torch.load(job / "weights.pt", weights_only=True)
    assert all(torch.equal(final["final"][k], reference[1]["final"][k]) for k in final["final"])
    resumed = json.loads((job / "summary.json").read_text())
    assert resumed["status"] == "completed" and resumed["resumed_from_step"] == checkpoint["step"]
    steps_this_session = 6000 - checkpoint["step"] - 1  # after the warm-up step
    assert resumed["wall_seconds"] < outer  # timed by the clock around the call
    assert resumed["model_steps_per_second"] > steps_this_session * 4 / outer


def stop_soon(seconds: float) -> threading.Timer:
    timer = threading.Timer(seconds, lambda: os.kill(os.getpid(), signal.SIGTERM))
    timer.start()
    return timer


@pytest.mark.slow
def test_resume_a_sweep_skips_finished_jobs_and_extends_with_steps(tmp_path):
    args = ["steps=2000", "replicas=3", "log_every=9", "plot=false", "print_every=100000"]
    train(make_cfg(*args), tmp_path / "sweep" / "0")
    stop_soon(0.8)
    with pytest.raises(Interrupted):
        train(make_cfg(*args, "activation=tanh"), tmp_path / "sweep" / "1")
    assert (
        json.loads((tmp_path / "sweep" / "1" / "summary.json").read_text())["status"]
        == "interrupted"
    )
    train(make_cfg(*args, "activation=tanh"), tmp_path / "whole")
    before = (tmp_path / "sweep" / "0" / "metrics.csv").read_bytes()

    assert resume.main([str(tmp_path / "sweep")]) == 0
    assert (tmp_path / "sweep" / "0" / "metrics.csv").read_bytes() == before  # finished: untouched
    assert (tmp_path / "sweep" / "1" / "metrics.csv").read_bytes() == (
        tmp_path / "whole" / "metrics.csv"
    ).read_bytes()

    # --steps extends a finished run exactly as if it had been asked for that many steps
    train(make_cfg(*args[1:], "steps=2500", "activation=tanh"), tmp_path / "longer")
    assert resume.main([str(tmp_path / "sweep" / "1"), "--steps", "2500"]) == 0
    assert (tmp_path / "sweep" / "1" / "metrics.csv").read_bytes() == (
        tmp_path / "longer" / "metrics.csv"
    ).read_bytes()
    assert resume.main([str(tmp_path / "sweep" / "1"), "--steps", "100"]) == 2  # never shortens


def test_resume_refuses_what_would_not_continue_exactly(tmp_path, capsys):
    for name, act in (("a", "relu"), ("b", "tanh")):
        train(make_cfg("steps=20", "replicas=2", f"activation={act}"), tmp_path / name)

    def refused(*args) -> str:
        assert resume.main([str(tmp_path / "a"), "--steps", "40", *args]) == 2
        return capsys.readouterr().err

    shutil.copy(
        tmp_path / "b" / "checkpoint.pt", tmp_path / "a" / "checkpoint.pt"
    )  # a foreign checkpoint
    message = refused()
    assert (
        "not the one its checkpoint was made with" in message
        and "activation.name: checkpoint 'tanh', job dir 'relu'" in message
    )

    class Payload:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    torch.save({"step": Payload()}, tmp_path / "a" / "checkpoint.pt")
    assert "not an xorrelu checkpoint" in refused() and not (tmp_path / "pwned").exists()
    (tmp_path / "a" / "checkpoint.pt").write_bytes(b"\x00garbage")
    assert "not an xorrelu checkpoint" in refused()
    (tmp_path / "a" / "checkpoint.pt").unlink()
    assert "no checkpoint.pt" in refused()
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    summary["config"]["optimizer"]["lr"] = 0.5
    (tmp_path / "b" / "summary.json").write_text(json.dumps(summary))
    assert resume.main([str(tmp_path / "b"), "--steps", "40"]) == 2
    assert "optimizer.lr: checkpoint 0.1, job dir 0.5" in capsys.readouterr().err


def test_a_failing_write_keeps_every_complete_row(tmp_path, monkeypatch):
    import functools

    from xorrelu import metrics

    flush, calls = metrics.Recorder.flush, []

    def flaky_flush(self):
        calls.append(1)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        flush(self)

    monkeypatch.setattr(metrics.Recorder, "flush", flaky_flush)
    monkeypatch.setattr(
        metrics.Recorder,
        "__init__",
        functools.partialmethod(metrics.Recorder.__init__, flush_rows=40),
    )
    with pytest.raises(OSError):
        train(make_cfg("steps=100", "replicas=4"), tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "failed" and "No space left" in summary["error"]
    rows = pd.read_csv(tmp_path / "metrics.csv")
    assert len(rows) >= 40 and len(rows) % 4 == 0 and rows.notna().all().all()


NUMERIC = {
    "depth": st.integers(-2, 12),
    "width": st.integers(-2, 9),
    "steps": st.integers(-2, 6),
    "replicas": st.integers(-2, 6),
    "seed": st.integers(-3, 2**40),
    "log_every": st.integers(-2, 4),
    "print_every": st.integers(-2, 4),
    "threads": st.integers(-2, 2),
    "optimizer.lr": st.floats(-1, 1e4),
    "init.bias": st.floats(-1e3, 1e3),
    "init.bound": st.floats(-2, 100),
}


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.fixed_dictionaries(NUMERIC))
def test_any_numeric_values_either_train_or_are_refused_clearly(tmp_path, values):
    cfg = make_cfg(*(f"{k}={v}" for k, v in values.items()), "plot=false")
    try:
        validate(cfg)
    except ConfigError as error:
        value = values[error.key]  # the message names the key and the value it refused
        assert str(value) in str(error) or repr(value) in str(error)
        return
    summary = train(cfg, tmp_path / "job")
    assert summary["status"] == "completed" and len(summary["replicas"]) == values["replicas"]


def test_a_summary_that_is_not_json_is_one_line_for_the_plotter(tmp_path, capsys):
    from xorrelu import plot

    train(make_cfg("steps=5", "replicas=2"), tmp_path / "job")
    (tmp_path / "job" / "summary.json").write_text("{not json")
    assert plot.main([str(tmp_path / "job")]) == 2
    assert "is not a summary written by xorrelu" in capsys.readouterr().err


def test_extra_columns_and_nan_rows_do_not_stop_the_plotter(tmp_path):
    from xorrelu import plot

    train(make_cfg("steps=5", "replicas=2"), tmp_path / "job")
    frame = pd.read_csv(tmp_path / "job" / "metrics.csv").assign(note="x")
    frame.loc[len(frame)] = [5, 9] + [float("nan")] * (frame.shape[1] - 3) + ["y"]
    frame.to_csv(tmp_path / "job" / "metrics.csv", index=False)
    assert plot.main([str(tmp_path / "job")]) == 0


@pytest.mark.parametrize("content", ["garbage", "payload"])
def test_a_weights_file_that_is_not_one_is_refused_by_the_plotter(tmp_path, capsys, content):
    from xorrelu import plot

    train(make_cfg("steps=5", "replicas=2"), tmp_path / "job")
    if content == "garbage":
        (tmp_path / "job" / "weights.pt").write_bytes(b"\x80\x04garbage")
    else:

        class Payload:
            def __reduce__(self):
                return (os.system, ("touch " + str(tmp_path / "pwned"),))

        torch.save({"seeds": Payload()}, tmp_path / "job" / "weights.pt")
    assert plot.main([str(tmp_path / "job")]) == 2
    err = capsys.readouterr().err
    assert "is not a weights file written by xorrelu" in err and err.count("\n") == 1
    assert not (tmp_path / "pwned").exists()


def test_a_file_where_the_outputs_dir_should_be(tmp_path):
    (tmp_path / "outputs").write_text("")
    proc = run_cli("steps=2", cwd=tmp_path)
    assert (
        proc.returncode == 2
        and "outputs is a file, not a directory" in proc.stderr
        and "Traceback" not in proc.stderr
    )


def test_a_run_too_large_for_the_machine_is_refused_before_allocating(tmp_path):
    proc = run_cli("replicas=100000000", cwd=tmp_path)
    assert proc.returncode == 2 and "GiB" in proc.stderr and "replicas=100000000" in proc.stderr
    assert not list(tmp_path.rglob("metrics.csv"))


@pytest.mark.slow
def test_eight_joblib_jobs_leave_eight_complete_distinct_dirs(tmp_path):
    proc = run_cli(
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "seed=0,1,2,3,4,5,6,7",
        "steps=20",
        "replicas=2",
        "--multirun",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    summaries = [
        json.loads(p.read_text()) for p in tmp_path.glob("outputs/multirun/*/*/*/summary.json")
    ]
    assert len(summaries) == 8 and {s["config"]["seed"] for s in summaries} == set(range(8))
    assert all(s["status"] == "completed" for s in summaries)


@pytest.mark.slow
def test_a_stopped_fused_run_resumes_byte_identical(tmp_path):
    fused = ("engine=fused", "compile=false")
    (tmp_path / "whole").mkdir(), (tmp_path / "cut").mkdir()
    assert run_cli(*RUN, "hydra.run.dir=job", *fused, cwd=tmp_path / "whole").returncode == 0
    returncode, err = start_and_stop(tmp_path / "cut", signal.SIGTERM, *fused)
    assert returncode == 143, err
    job = tmp_path / "cut" / "job"
    checkpoint = torch.load(job / "checkpoint.pt", weights_only=True)
    assert checkpoint["engine"] == "fused" and 0 < checkpoint["step"] < 6000
    assert resume.main([str(job)]) == 0
    whole = tmp_path / "whole" / "job"
    assert (job / "metrics.csv").read_bytes() == (whole / "metrics.csv").read_bytes()
    a, b = (torch.load(d / "weights.pt", weights_only=True)["final"] for d in (job, whole))
    assert all(torch.equal(a[k], b[k]) for k in b)


def test_a_checkpoint_holds_exactly_what_resume_reads(tmp_path):
    """Nothing saved that nothing reads (it once held an unread "rng")."""
    train(make_cfg("steps=5", "replicas=2"), tmp_path / "job")
    checkpoint = torch.load(tmp_path / "job" / "checkpoint.pt", weights_only=True)
    assert set(checkpoint) == set(resume.CHECKPOINT)
    assert set(checkpoint["recorder"]) == {"csv_bytes", "curves_bytes", *resume.RECORDER}


def test_a_job_dir_from_before_the_refactor_still_resumes_and_plots(tmp_path):
    """Written as 3ffbfeb wrote it: no log_first nor regularization in its configs, the tracker's
    first step named "since", an unread "rng" in the checkpoint. Extended by 20 steps, it ends as
    a 60-step run."""
    import yaml

    train(make_cfg("steps=40", "replicas=3", "plot=false"), tmp_path / "old")
    train(make_cfg("steps=60", "replicas=3", "plot=false"), tmp_path / "new")
    old = tmp_path / "old"
    checkpoint = torch.load(old / "checkpoint.pt", weights_only=True)
    del checkpoint["config"]["log_first"], checkpoint["config"]["regularization"]
    checkpoint["recorder"]["since"] = checkpoint["recorder"].pop("first_step_solved")
    checkpoint["rng"] = torch.get_rng_state()
    torch.save(checkpoint, old / "checkpoint.pt")
    summary = json.loads((old / "summary.json").read_text())
    del summary["config"]["log_first"], summary["config"]["regularization"]
    (old / "summary.json").write_text(json.dumps(summary))
    (old / ".hydra").mkdir()
    (old / ".hydra" / "config.yaml").write_text(yaml.safe_dump(summary["config"]))
    from xorrelu import plot

    assert plot.main([str(old), "--out", str(tmp_path / "plots")]) == 0
    assert resume.main([str(old), "--steps", "60"]) == 0
    new = tmp_path / "new"
    assert (old / "metrics.csv").read_bytes() == (new / "metrics.csv").read_bytes()


def test_curves_csv_is_a_prefix_when_stopped_and_whole_when_resumed(tmp_path, monkeypatch):
    """Stopped at step 1234, curves.csv holds the rows of the full run's up to there; resumed, it
    is the full run's byte for byte: from the checkpoint's position, or made again from
    metrics.csv when the checkpoint has none (older ones) or --steps moves the steps kept."""
    from xorrelu import metrics

    args = ("steps=2500", "replicas=3", "depth=2", "plot=false", "print_every=100000")
    train(make_cfg(*args), tmp_path / "whole")
    train(make_cfg(*args[1:], "steps=3000"), tmp_path / "longer")
    whole, longer = ((tmp_path / d / "curves.csv").read_bytes() for d in ("whole", "longer"))
    add = metrics.Recorder.add

    def stop_at_1234(self, step, values, logged):
        add(self, step, values, logged)
        if step == 1234:
            os.kill(os.getpid(), signal.SIGTERM)  # training stops before step 1235

    for job, old in (("cut", False), ("old", True)):
        monkeypatch.setattr(metrics.Recorder, "add", stop_at_1234)
        with pytest.raises(Interrupted):
            train(make_cfg(*args), tmp_path / job)
        monkeypatch.undo()
        cut = (tmp_path / job / "curves.csv").read_bytes()
        assert cut.endswith(b"\n") and whole.startswith(cut) and b"\n1234," in cut
        assert b"\n1235," not in cut and len(cut) < len(whole)
        checkpoint = torch.load(tmp_path / job / "checkpoint.pt", weights_only=True)
        assert checkpoint["step"] == 1235 and checkpoint["recorder"]["curves_bytes"] == len(cut)
        if old:  # a checkpoint from before curves.csv, and half a row left by a kill
            del checkpoint["recorder"]["curves_bytes"]
            torch.save(checkpoint, tmp_path / job / "checkpoint.pt")
            (tmp_path / job / "curves.csv").write_bytes(cut[: len(cut) // 2])
        assert resume.main([str(tmp_path / job)]) == 0
        assert (tmp_path / job / "curves.csv").read_bytes() == whole
    assert resume.main([str(tmp_path / "cut"), "--steps", "3000"]) == 0
    assert (tmp_path / "cut" / "curves.csv").read_bytes() == longer
