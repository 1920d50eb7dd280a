"""Scaling out: Hydra launchers, the experiment presets, TensorBoard, --help."""

import json

import pytest
import torch
from conftest import CONF, run_cli
from omegaconf import OmegaConf

from xorrelu.__main__ import job_threads


def summaries(root):
    return [
        json.loads(p.read_text()) for p in sorted(root.glob("outputs/multirun/*/*/*/summary.json"))
    ]


@pytest.mark.slow
def test_joblib_sweep_runs_jobs_in_parallel_processes_sharing_the_cores(tmp_path):
    proc = run_cli(
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "activation=sigmoid,relu",
        "depth=2,3",
        "steps=20",
        "replicas=2",
        "--multirun",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    done = summaries(tmp_path)
    assert len(done) == 4 and all(s["status"] == "completed" for s in done)
    assert len({(s["config"]["activation"]["name"], s["config"]["depth"]) for s in done}) == 4
    assert all(s["threads"] == max(1, (__import__("os").cpu_count() or 1) // 2) for s in done)
    assert list(tmp_path.glob("outputs/multirun/*/*/plots/success_heatmap.png"))


@pytest.mark.slow
def test_submitit_local_sweep(tmp_path):
    proc = run_cli(
        "hydra/launcher=submitit_local",
        "hydra.launcher.cpus_per_task=1",
        "activation=tanh,relu",
        "steps=10",
        "replicas=2",
        "--multirun",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    done = summaries(tmp_path)
    assert [s["status"] for s in done] == ["completed"] * 2 and all(s["threads"] == 1 for s in done)
    assert list(tmp_path.glob("outputs/multirun/*/*/plots/cost.png"))


def test_the_slurm_recipe_composes(tmp_path):
    proc = run_cli(
        "hydra/launcher=slurm",
        "hydra.launcher.partition=cpu",
        "--cfg",
        "hydra",
        "-p",
        "hydra.launcher",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    launcher = OmegaConf.create(proc.stdout)
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.partition, launcher.cpus_per_task, launcher.timeout_min) == ("cpu", 2, 60)


def test_jobs_times_threads_never_exceed_the_cores(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    assert job_threads(0, OmegaConf.create({"n_jobs": 2})) == 4
    assert job_threads(0, OmegaConf.create({"n_jobs": -1})) == 1
    assert job_threads(0, OmegaConf.create({"n_jobs": 16})) == 1
    assert job_threads(0, OmegaConf.create({"cpus_per_task": 3})) == 3
    assert job_threads(0, OmegaConf.create({})) == 0  # basic launcher: PyTorch's default
    assert job_threads(2, OmegaConf.create({"n_jobs": 8})) == 2  # an explicit threads= wins


PRESETS = {  # preset: (jobs, keys that vary)
    "lab10": (1, []),
    "activations": (11, ["activation"]),
    "depth": (60, ["depth", "activation"]),
    "width": (38, ["width", "activation"]),
    "init": (27, ["init", "activation"]),
    "circle_features": (2, ["dataset.features"]),
    "spiral_features": (2, ["dataset.features"]),
    "noise": (6, ["dataset.noise"]),
    "batch": (3, ["batch_size"]),
    "l2_overfit": (6, ["regularization.rate"]),
    "search_relu": (3, ["init.bound", "optimizer.lr"]),  # 2 trials, then the re-run
}
TINY = {"search_relu": ["hydra.sweeper.n_trials=2"]}  # a study's size is its own key


def test_every_preset_file_is_known_here():
    assert {p.stem for p in (CONF / "experiment").glob("*.yaml")} == set(PRESETS)


@pytest.mark.slow
@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_each_preset_sweeps_and_plots_at_a_tiny_budget(tmp_path, preset):
    jobs, keys = PRESETS[preset]
    proc = run_cli(
        f"experiment={preset}",
        *TINY.get(preset, []),
        "steps=3",
        "replicas=2",
        "log_every=1",
        "print_every=1",
        "--multirun",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(summaries(tmp_path)) == jobs
    (plots,) = tmp_path.glob("outputs/multirun/*/*/plots")
    header = (plots / "summary.md").read_text().splitlines()[2]
    assert all(key in header for key in keys)
    assert (plots / "success_heatmap.png").is_file() == (len(keys) == 2)


@pytest.mark.parametrize("engine", [["engine=autograd"], ["engine=fused", "compile=false"]])
def test_tensorboard_logs_scalars_and_histograms(train_run, engine):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, metrics, job = train_run(
        "tensorboard=true",
        "steps=20",
        "log_every=5",
        "print_every=10",
        "replicas=3",
        "depth=2",
        *engine,
    )
    events = EventAccumulator(
        str(job / "tensorboard"), size_guidance={"scalars": 0, "histograms": 0}
    ).Reload()
    tags = events.Tags()
    assert {
        "cost/median",
        "cost/replica_0",
        "accuracy/median",
        "grad_norm_1/median",
        "grad_norm_3/replica_0",
    } <= set(tags["scalars"])
    assert [e.step for e in events.Scalars("cost/median")] == [0, 5, 10, 15, 20]
    assert {"layer_1/weight", "layer_3/bias"} <= set(tags["histograms"])
    assert [e.step for e in events.Histograms("layer_1/weight")] == [0, 10, 20]
    # the scalars are the CSV's numbers: replica 0's gradient at layer 3, the median cost
    logged = metrics[metrics.step % 5 == 0]
    first = logged[logged.seed == 0].grad_norm_3.tolist()
    assert [e.value for e in events.Scalars("grad_norm_3/replica_0")] == pytest.approx(first)
    median = logged.groupby("step").cost.median().tolist()
    assert [e.value for e in events.Scalars("cost/median")] == pytest.approx(median)
    # the histograms are of the weights as trained (the fused engine writes them back first)
    final = torch.load(job / "weights.pt", weights_only=True)["final"]["0.weight"]
    (last,) = [e for e in events.Histograms("layer_1/weight") if e.step == 20]
    assert last.histogram_value.min == pytest.approx(final.min().item())


def test_help_lists_every_group_option_and_key(tmp_path):
    proc = run_cli("--help", cwd=tmp_path)
    assert proc.returncode == 0
    for group in ("activation", "init", "optimizer", "dataset", "regularization", "experiment"):
        line = next(line for line in proc.stdout.splitlines() if line.startswith(f"{group}: "))
        assert {p.stem for p in (CONF / group).glob("*.yaml")} == set(
            line.split(": ", 1)[1].split(", ")
        )
    for key in ("depth:", "replicas:", "engine:", "tensorboard:", "hydra/launcher: basic"):
        assert key in proc.stdout
    assert "schema" not in proc.stdout


@pytest.mark.slow
def test_the_memory_estimate_covers_a_real_run_without_overstating_it(tmp_path):
    """config.estimated_bytes decides whether a run fits: it must not be below what a run
    really peaks at (measured by the kernel for the child process), nor twice above it."""
    import os
    import subprocess
    import sys

    from conftest import make_cfg

    from xorrelu.config import estimated_bytes

    size = ["replicas=100000", "steps=3"]  # the size config.estimated_bytes was measured at
    proc = subprocess.Popen(
        [sys.executable, "-m", "xorrelu", *size, "plot=false", f"hydra.run.dir={tmp_path}/job"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    peak = usage.ru_maxrss * 1024  # Linux reports KiB
    assert peak <= estimated_bytes(make_cfg(*size)) <= 2 * peak
