"""The lesson's own numbers (Lab 10-1), on 16 seeds at once."""

import math

import pytest


def test_sigmoid_sticks_at_ln2_and_its_gradient_vanishes(train_run):
    summary, metrics, _ = train_run("activation=sigmoid", "steps=2000", "log_every=100")
    for rep in summary["replicas"]:
        assert rep["final_cost"] == pytest.approx(math.log(2), abs=1e-3)
        assert all(abs(h - 0.5) < 0.01 for h in rep["hypothesis"])
        assert 0.25 <= rep["final_accuracy"] <= 0.75  # a coin toss around h = 0.5
        assert not rep["solved"]
    start = metrics[metrics.step == 0]
    assert (
        start.grad_norm_1 / start.grad_norm_11
    ).median() < 1e-4  # vanishing on its way to the input


def test_relu_solves_some_seeds(train_run):
    summary, _, _ = train_run("activation=relu", "steps=5000", "log_every=100")
    solved = [rep for rep in summary["replicas"] if rep["solved"]]
    assert len(solved) >= 1
    for rep in solved:
        assert rep["final_accuracy"] == 1.0 and rep["final_cost"] < 0.1


def test_tanh_solves_most_seeds(train_run):
    summary, _, _ = train_run("activation=tanh", "steps=5000", "log_every=100")
    assert sum(rep["solved"] for rep in summary["replicas"]) > len(summary["replicas"]) / 2
