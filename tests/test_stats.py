"""Summary numbers against hand-worked values."""

import math

import numpy as np
import pandas as pd
import pytest

from xorrelu.results import replica_outcomes, varying_keys
from xorrelu.stats import group_summary, markdown_table, wilson_interval


@pytest.mark.parametrize(
    "k, n, low, high",
    [
        (5, 16, 0.141646, 0.555956),
        (0, 16, 0.0, 0.193608),
        (16, 16, 0.806392, 1.0),
        (1, 2, 0.094531, 0.905469),
    ],
)
def test_wilson_interval_known_counts(k, n, low, high):
    # p = k/n, z = 1.96: (p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n), worked by hand
    assert wilson_interval(k, n) == pytest.approx((low, high), abs=1e-6)


def test_group_summary_median_iqr_divergence_and_steps_to_solve():
    replicas = pd.DataFrame(
        {
            "activation": ["relu"] * 5 + ["tanh"] * 2,
            "final_cost": [0.001, 0.5, 0.7, 0.3, np.nan, 0.01, 0.02],
            "diverged": [False, False, False, False, True, False, False],
            "solved": [True, False, False, False, False, True, True],
            "first_step_solved": [120, np.nan, np.nan, np.nan, np.nan, 40, 60],
            "last_step": [1000] * 7,
            "cause": [None, "dead", "plateau", "plateau", "diverged", None, None],
        }
    )
    summary = group_summary(replicas, ["activation"]).set_index("activation")
    relu = summary.loc["relu"]
    assert (relu.replicas, relu.solved, relu.diverged, relu.unsolved) == (5, 1, 1, 4)
    # the four finite costs 0.001, 0.3, 0.5, 0.7: median 0.4, quartiles 0.22525 and 0.55
    # (linear interpolation)
    assert (relu.median_final_cost, relu.final_cost_q25, relu.final_cost_q75) == pytest.approx(
        (0.4, 0.22525, 0.55)
    )
    assert relu.median_steps_to_solve == 120 and relu.solved_rate == 0.2
    assert summary.loc["tanh"].median_steps_to_solve == 50
    assert (relu.cause_diverged, relu.cause_dead, relu.cause_plateau, relu.cause_vanished) == (
        1,
        1,
        2,
        0,
    )
    table = markdown_table(group_summary(replicas, ["activation"]), ["activation"])
    assert (
        "4 unsolved: > 1000" in table
        and "1/5 = 20%" in table
        and "| diverged 1, dead 1, plateau 2 |" in table
    )
    assert "120" in table.splitlines()[2] and "50" in table.splitlines()[3]


def test_first_step_solved_needs_the_streak_to_last():
    # seed 0 solved at step 2, lost at 3, solved again from 4; seed 1 solved at the end only
    rows = [
        (0, 0, 0.6, 0.5),
        (1, 0, 0.2, 0.75),
        (2, 0, 0.05, 1.0),
        (3, 0, 0.2, 1.0),
        (4, 0, 0.04, 1.0),
        (5, 0, 0.03, 1.0),
        (0, 1, 0.7, 0.5),
        (1, 1, 0.6, 0.5),
        (2, 1, 0.5, 0.5),
        (3, 1, 0.4, 0.75),
        (4, 1, 0.3, 1.0),
        (5, 1, 0.09, 1.0),
        (0, 2, 0.7, 0.5),
        (5, 2, float("nan"), float("nan")),
    ]
    metrics = pd.DataFrame(rows, columns=["step", "seed", "cost", "accuracy"])
    out = replica_outcomes(metrics).set_index("seed")
    assert (
        out.first_step_solved[0] == 4
        and out.first_step_solved[1] == 5
        and math.isnan(out.first_step_solved[2])
    )
    assert out.solved.tolist() == [True, True, False] and out.diverged.tolist() == [
        False,
        False,
        True,
    ]
    assert out.final_cost[1] == 0.09 and out.last_step.tolist() == [5, 5, 5]


def test_grouping_keys_leave_out_seeds_switches_and_dependent_options():
    configs = [
        {"activation.name": "relu", "depth": 10, "seed": 0, "device": "auto", "print_every": 1},
        {
            "activation.name": "leaky_relu",
            "activation.slope": 0.01,
            "depth": 10,
            "seed": 16,
            "device": "cpu",
            "print_every": 5,
        },
        {"activation.name": "relu", "depth": 5, "seed": 0, "device": "auto", "print_every": 1},
    ]
    assert varying_keys(configs) == ["activation.name", "depth"]
    configs += [{"activation.name": "leaky_relu", "activation.slope": 0.2, "depth": 10}]
    assert varying_keys(configs) == ["activation.name", "activation.slope", "depth"]
