"""`python -m xorrelu` as a user runs it: run dirs, multirun, and every kind of bad input."""

import json

import pandas as pd
import pytest
from conftest import run_cli

JOB_FILES = {"metrics.csv", "summary.json", "weights.pt"}


def result_files(root):
    return [p for p in root.rglob("*") if p.name in JOB_FILES]


def test_single_run_writes_a_job_dir_and_prints_the_lesson_table(tmp_path):
    proc = run_cli("steps=20", "replicas=3", "print_every=10", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    (job,) = list((tmp_path / "outputs" / "runs").glob("*/*"))
    assert JOB_FILES <= {p.name for p in job.iterdir()}
    assert (job / ".hydra" / "config.yaml").is_file() and (job / "xorrelu.log").is_file()
    assert "BatchedLinear(replicas=3, in_features=2, out_features=5)" in proc.stdout  # the model
    assert "step      10 | cost" in proc.stdout and "solved" in proc.stdout
    assert "h(0,1)" in proc.stdout  # the final table, one line per replica
    assert json.loads((job / "summary.json").read_text())["status"] == "completed"


def test_multirun_sweeps_activations_into_numbered_job_dirs(tmp_path):
    proc = run_cli("activation=sigmoid,relu", "steps=5", "replicas=2", "--multirun", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    (sweep,) = list((tmp_path / "outputs" / "multirun").glob("*/*"))
    assert (sweep / "multirun.yaml").is_file()
    for num, activation in [("0", "sigmoid"), ("1", "relu")]:
        job = sweep / num
        summary = json.loads((job / "summary.json").read_text())
        assert summary["config"]["activation"]["name"] == activation
        assert len(pd.read_csv(job / "metrics.csv")) == 6 * 2


def test_two_runs_in_the_same_second_get_distinct_dirs(tmp_path):
    import subprocess
    import sys

    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "xorrelu", "steps=2", "replicas=1"],
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
        )
        for _ in range(2)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    assert len(list((tmp_path / "outputs" / "runs").glob("*/*"))) == 2


BAD_INPUTS = [
    # (overrides, words the message must contain)
    (["activation=swish"], ["activation/swish", "Available options", "relu", "sigmoid"]),
    (["seed=abc"], ["abc", "seed", "Integer"]),
    (["sed=3"], ["sed"]),
    (["+sed=3"], ["sed=3", "not a config key", "seed"]),
    (["+activation.slop=3"], ["activation.slop=3", "not a config key", "name"]),
    (["depth=0"], ["depth=0", ">= 1"]),
    (["width=-2"], ["width=-2", ">= 1"]),
    (["steps=0"], ["steps=0", ">= 1"]),
    (["replicas=0"], ["replicas=0", ">= 1"]),
    (["log_every=0"], ["log_every=0", ">= 1"]),
    (["optimizer.lr=0"], ["optimizer.lr=0", "> 0"]),
    (["optimizer=adam", "optimizer.lr=-1"], ["optimizer.lr=-1", "> 0"]),
    (["activation=maxout", "activation.pieces=1"], ["activation.pieces=1", ">= 2"]),
    (["activation.name=swish"], ["activation.name='swish'", "relu", "maxout"]),
    (["device=gpu"], ["gpu", "auto", "cpu", "cuda"]),
    (["device=cuda"], ["device='cuda'", "no CUDA GPU"]),
    (["engine=fused", "activation=maxout"], ["engine='fused'", "relu", "engine=autograd"]),
    (["engine=turbo"], ["turbo", "autograd", "fused"]),
    (["compile=maybe"], ["compile='maybe'", "auto, true or false"]),
    (["threads=-1"], ["threads=-1", ">= 0"]),
]


@pytest.mark.parametrize("overrides, words", BAD_INPUTS, ids=[" ".join(o) for o, _ in BAD_INPUTS])
def test_bad_input_is_one_clear_message_and_leaves_no_results(tmp_path, overrides, words):
    import torch

    if overrides == ["device=cuda"] and torch.cuda.is_available():
        pytest.skip("a GPU is visible here")
    proc = run_cli(
        "steps=2", *overrides, cwd=tmp_path
    )  # the override under test comes last, so it wins
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    for word in words:
        assert word in proc.stderr, proc.stderr
    assert result_files(tmp_path) == []
    assert not (tmp_path / "outputs" / "runs").exists() or not any(
        (tmp_path / "outputs" / "runs").rglob("*.yaml")
    )


def test_bad_value_in_a_sweep_is_refused_the_same_way(tmp_path):
    proc = run_cli("depth=0,2", "steps=2", "--multirun", cwd=tmp_path)
    assert proc.returncode == 2 and "depth=0" in proc.stderr and "Traceback" not in proc.stderr
    assert result_files(tmp_path) == []
