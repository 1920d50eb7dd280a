"""What a job writes: metrics.csv, summary.json, weights.pt — their schema,
meaning and determinism."""

import json
import math
import os
import socket
import time

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import make_cfg

from xorrelu.data import make_dataset
from xorrelu.metrics import (
    CURVES_ABOVE,
    MAX_POINTS,
    columns,
    curves_steps,
    thin,
    write_curves,
)
from xorrelu.model import build_model, export_replica, linear_layers, load_model
from xorrelu.train import train


def test_metrics_csv_schema_and_logged_steps(train_run):
    _, metrics, _ = train_run("steps=25", "log_every=10", "replicas=3", "depth=4", "width=3")
    assert list(metrics.columns) == (
        ["step", "seed", "cost", "accuracy"]
        + [f"grad_norm_{i}" for i in range(1, 6)]
        + [f"stuck_frac_{i}" for i in range(1, 5)]
    )
    assert list(metrics.columns) == columns(4)
    assert sorted(metrics.step.unique()) == [0, 10, 20, 25]  # step 0 and the last step always
    assert metrics.groupby("step").seed.apply(list).tolist() == [[0, 1, 2]] * 4
    assert metrics.step.dtype == np.int64 and metrics.cost.dtype == np.float64
    stuck = metrics.filter(like="stuck_frac")
    assert ((stuck >= 0) & (stuck <= 1)).all().all()
    assert np.allclose((stuck * 3).round(), stuck * 3)  # a fraction of 3 units


def test_summary_and_weights(train_run):
    outer = time.perf_counter()
    summary, metrics, job = train_run("steps=30", "replicas=3", "seed=7", "activation=tanh")
    outer = time.perf_counter() - outer
    assert summary["status"] == "completed" and summary["last_step"] == 30
    assert summary["config"]["activation"]["name"] == "tanh" and summary["device"] == "cpu"
    # timed by the clock around the call: 29 steps (the first is warm-up) of 3 replicas each
    assert 0 < summary["warmup_seconds"] < summary["wall_seconds"] < outer
    elapsed = summary["ended_at"] - summary["started_at"]  # UNIX times: ~0.2 us resolution
    assert elapsed == pytest.approx(summary["wall_seconds"], abs=1e-5)
    assert summary["pid"] == os.getpid() and summary["host"] == socket.gethostname()
    assert summary["model_steps_per_second"] > 29 * 3 / outer
    assert set(summary["versions"]) == {"xorrelu", "torch", "hydra", "python"}
    assert [rep["seed"] for rep in summary["replicas"]] == [7, 8, 9]
    last = metrics[metrics.step == 30].set_index("seed")
    for rep in summary["replicas"]:
        assert math.isclose(rep["final_cost"], last.cost[rep["seed"]], rel_tol=1e-6)
        assert rep["final_accuracy"] == last.accuracy[rep["seed"]]
        assert len(rep["hypothesis"]) == 4 and not rep["diverged"]

    weights = torch.load(job / "weights.pt", weights_only=True)
    assert set(weights) == {"initial", "final", "seeds", "step"}
    assert weights["seeds"] == [7, 8, 9] and weights["step"] == 30
    assert weights["initial"]["0.weight"].shape == (3, 2, 5) and weights["final"][
        "20.weight"
    ].shape == (3, 5, 1)
    # the replica export is the way back to per-replica models
    x, _ = make_dataset(make_cfg().dataset)
    plain = export_replica(load_model(job, "final"), 1)
    h = torch.sigmoid(plain(x)).squeeze(-1)
    np.testing.assert_allclose(h.detach().numpy(), summary["replicas"][1]["hypothesis"], rtol=1e-5)


def test_first_step_solved_is_where_the_solved_streak_starts(train_run):
    summary, metrics, _ = train_run("activation=tanh", "steps=3000", "replicas=4")
    metrics["solved"] = (metrics.accuracy == 1) & (metrics.cost < 0.1)
    for rep in summary["replicas"]:
        rows = metrics[metrics.seed == rep["seed"]]
        unsolved_steps = rows.step[~rows.solved]
        if rep["solved"]:
            expected = rows.step[
                rows.step > (unsolved_steps.max() if len(unsolved_steps) else -1)
            ].min()
            assert rep["first_step_solved"] == expected
        else:
            assert rep["first_step_solved"] is None and not rows.solved.iloc[-1]


def test_same_config_gives_a_byte_identical_csv(train_run):
    _, _, a = train_run("steps=40", "replicas=4", "activation=prelu")
    _, _, b = train_run("steps=40", "replicas=4", "activation=prelu")
    assert (a / "metrics.csv").read_bytes() == (b / "metrics.csv").read_bytes()


def first_non_finite_step(net: torch.nn.Sequential, lr: float, steps: int) -> int | None:
    """An oracle: plain torch, one replica, the lesson's cost; the first step whose cost is not
    finite (None if none)."""
    x, y = make_dataset(make_cfg().dataset)
    optimizer = torch.optim.SGD(net.parameters(), lr=lr)
    for step in range(steps + 1):
        h = net(x).squeeze(1)
        cost = torch.nn.functional.binary_cross_entropy_with_logits(h, y)
        if not torch.isfinite(cost):
            return step
        optimizer.zero_grad()
        cost.backward()
        optimizer.step()
    return None


def test_a_diverged_replica_is_marked_and_the_others_train_on(train_run):
    args = ("activation=elu", "optimizer.lr=10", "depth=3", "steps=50", "replicas=8", "seed=0")
    summary, metrics, _ = train_run(*args)
    model = build_model(make_cfg(*args), 2)
    oracle = {r: first_non_finite_step(export_replica(model, r), 10.0, 50) for r in range(8)}
    assert any(step is not None for step in oracle.values())  # the setting does diverge
    for rep in summary["replicas"]:
        first = oracle[rep["seed"]]
        rows = metrics[metrics.seed == rep["seed"]]
        assert rep["diverged"] == (first is not None)
        if first is None:
            assert rows.notna().all().all() and rep["final_cost"] is not None
            continue
        assert rep["final_cost"] is None and not rep["solved"]
        assert rows[rows.step >= first].drop(columns=["step", "seed"]).isna().all().all()
        assert rows[rows.step < first].notna().all().all()


def test_a_nan_replica_leaves_the_others_bit_identical(train_run, tmp_path):
    args = ("steps=30", "replicas=5", "optimizer=adam", "activation=tanh")
    _, clean, _ = train_run(*args)
    poisoned = build_model(make_cfg(*args), 2)
    with torch.no_grad():
        linear_layers(poisoned)[3].weight[2] = float("inf")
    summary = train(make_cfg(*args), tmp_path / "dirty", model=poisoned)
    dirty = pd.read_csv(tmp_path / "dirty" / "metrics.csv")
    assert [rep["diverged"] for rep in summary["replicas"]] == [False, False, True, False, False]
    assert dirty[dirty.seed == 2].drop(columns=["step", "seed"]).isna().all().all()
    np.testing.assert_array_equal(
        dirty[dirty.seed != 2].to_numpy(float), clean[clean.seed != 2].to_numpy(float)
    )


@pytest.mark.parametrize(
    "run, shows",
    [
        (("activation=elu", "optimizer.lr=1", "depth=3"), "solved"),  # 13 of 16 solve
        (("activation=elu", "optimizer.lr=3", "depth=4"), "diverged"),
    ],
)
def test_the_logging_cadence_never_changes_the_outcomes(train_run, run, shows):
    """Solved streaks, divergence and causes are tracked at every step: a sparse log gives the
    same summary.json (to the last digit), only fewer rows."""
    every, _, _ = train_run(*run, "steps=300")
    sparse, metrics, _ = train_run(*run, "steps=300", "log_every=37", "log_first=5")
    assert json.dumps(sparse["replicas"]) == json.dumps(every["replicas"])  # NaN equal to NaN
    assert sorted(metrics.step.unique()) == [0, 1, 2, 3, 4, 5, *range(37, 300, 37), 300]
    if shows == "solved":  # solved between two logged steps, and still exact
        assert any(r["first_step_solved"] % 37 for r in every["replicas"] if r["solved"])
    else:
        assert any(r["diverged"] for r in every["replicas"])


def test_a_run_in_three_parts_writes_what_train_writes(tmp_path, train_run):
    """setup, loop, finish one by one (a notebook's way) give train()'s files."""
    from xorrelu.train import finish, loop, setup

    args = ("activation=tanh", "replicas=4", "steps=300")
    _, _, whole = train_run(*args)
    run = setup(make_cfg(*args), tmp_path / "parts")
    assert run.engine.name == "autograd" and len(run.seeds) == 4
    assert not (tmp_path / "parts").exists()  # setup writes nothing
    loop(run)
    summary = finish(run)
    assert (tmp_path / "parts" / "metrics.csv").read_bytes() == (whole / "metrics.csv").read_bytes()
    assert summary["replicas"] == json.loads((whole / "summary.json").read_text())["replicas"]


def test_curves_csv_holds_the_drawn_steps_and_is_made_again_from_metrics_csv(train_run, tmp_path):
    """Logging more than 2 x MAX_POINTS steps, a job also writes curves.csv: metrics.csv's rows
    at the steps the plots draw, byte for byte; at 2 x MAX_POINTS or fewer it writes none."""
    _, metrics, job = train_run(
        "steps=3000", "log_every=3", "log_first=1500", "replicas=3", "depth=2"
    )
    logged = np.unique(metrics.step)
    assert len(logged) == 2001 > CURVES_ABOVE
    kept = curves_steps(3000, 3, 1500)
    np.testing.assert_array_equal(kept, logged[thin(len(logged))])
    assert len(kept) == MAX_POINTS and kept[0] == 0 and kept[-1] == 3000
    curves = pd.read_csv(job / "curves.csv")
    np.testing.assert_array_equal(np.unique(curves.step), kept)
    pd.testing.assert_frame_equal(curves, metrics[metrics.step.isin(kept)].reset_index(drop=True))
    size = write_curves(job / "metrics.csv", tmp_path / "made.csv", kept)
    assert (tmp_path / "made.csv").read_bytes() == (job / "curves.csv").read_bytes()
    assert size == (job / "curves.csv").stat().st_size

    _, metrics, job = train_run("steps=1999", "replicas=2", "depth=2")
    assert metrics.step.nunique() == CURVES_ABOVE and not (job / "curves.csv").exists()
