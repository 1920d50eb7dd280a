"""regularization=none|l1|l2: the config, the penalty column and what reads it back. (The
engines' gradients against autograd: tests/test_engines.py -k regularized.)"""

import json

import pandas as pd
import pytest
import torch
from conftest import make_cfg

from xorrelu import plot, resume
from xorrelu.config import ADDED_LATER, ConfigError, upgrade, validate
from xorrelu.metrics import columns
from xorrelu.regularization import REGULARIZERS, regularized
from xorrelu.results import load, read_metrics
from xorrelu.train import train

SMALL = ("steps=30", "replicas=3", "depth=3", "plot=false", "print_every=1000")


def test_the_registry_and_the_groups_match():
    assert list(REGULARIZERS) == ["none", "l1", "l2"]
    assert make_cfg().regularization.name == "none" and not regularized(make_cfg())
    cfg = make_cfg("regularization=l2", "regularization.rate=0.5")
    assert cfg.regularization.rate == 0.5 and regularized(cfg)


@pytest.mark.parametrize("rate", [-0.1, float("inf"), float("nan")])
def test_a_rate_out_of_range_is_refused_naming_key_and_value(rate):
    with pytest.raises(ConfigError) as error:
        validate(make_cfg("regularization=l1", f"regularization.rate={rate}"), check_memory=False)
    assert error.value.key == "regularization.rate"
    assert str(rate) in str(error.value) and ">= 0" in str(error.value)


def test_none_has_no_rate():
    """A rate given to none would be ignored: Hydra refuses the key."""
    with pytest.raises(Exception, match="rate"):
        make_cfg("regularization.rate=0.1")


@pytest.mark.parametrize("engine", ["engine=autograd", "engine=fused"])
@pytest.mark.parametrize("regularization", ["l1", "l2"])
def test_rate_0_gives_the_rows_of_none(train_run, engine, regularization):
    run = (*SMALL, engine, "compile=false", "activation=tanh")
    _, plain, _ = train_run(*run)
    _, zero, _ = train_run(*run, f"regularization={regularization}", "regularization.rate=0")
    assert list(zero.columns) == columns(3, penalty=True) and (zero.penalty == 0).all()
    pd.testing.assert_frame_equal(zero.drop(columns="penalty"), plain, check_exact=True)


def test_the_penalty_column_only_with_regularization(train_run):
    _, plain, _ = train_run(*SMALL)
    assert list(plain.columns) == columns(3) and "penalty" not in plain
    _, l2, job = train_run(*SMALL, "regularization=l2", "regularization.rate=0.01")
    assert list(l2.columns) == columns(3, penalty=True)
    assert list(l2.columns[:5]) == ["step", "seed", "cost", "accuracy", "penalty"]
    assert (l2.penalty > 0).all()
    # step 0: rate x 1/2 sum w^2 of the initial weights
    initial = torch.load(job / "weights.pt", weights_only=True)["initial"]
    squares = sum(
        0.5 * w.double().square().sum((1, 2)) for k, w in initial.items() if k.endswith("weight")
    )
    first = l2[l2.step == 0].penalty.to_numpy()
    torch.testing.assert_close(torch.tensor(first).double(), 0.01 * squares, rtol=1e-5, atol=0)
    # the cost stays the data cost: the summary's final cost is metrics.csv's cost
    summary = json.loads((job / "summary.json").read_text())
    last = l2[l2.step == 30].cost.to_numpy()
    assert [r["final_cost"] for r in summary["replicas"]] == pytest.approx(last.tolist())


def test_a_regularized_job_reads_plots_and_resumes(tmp_path):
    """The penalty column through the readers, the plotter and resume's row checks: extended
    from 40 to 60 steps, it ends as a 60-step run does, byte for byte."""
    args = ("replicas=3", "depth=3", "plot=false", "regularization=l1", "regularization.rate=0.01")
    train(make_cfg("steps=40", *args), tmp_path / "runs" / "old")
    train(make_cfg("steps=60", *args), tmp_path / "new")
    old = tmp_path / "runs" / "old"
    frame = read_metrics(old / "metrics.csv")
    assert "penalty" in frame and frame.penalty.notna().all()
    assert "penalty" in load(tmp_path / "runs")
    assert plot.main([str(old), "--out", str(tmp_path / "plots")]) == 0
    assert resume.main([str(old), "--steps", "60"]) == 0
    assert (old / "metrics.csv").read_bytes() == (tmp_path / "new" / "metrics.csv").read_bytes()


def test_an_older_config_reads_as_none():
    assert ADDED_LATER["regularization"] == {"name": "none"}
    old = {"depth": 3}
    assert upgrade(old)["regularization"] == {"name": "none"}
    upgrade(old)["regularization"]["name"] = "l1"  # an upgraded config is its own copy
    assert upgrade(old)["regularization"] == {"name": "none"}
    assert upgrade({"regularization": {"name": "l2", "rate": 0.1}})["regularization"]["rate"] == 0.1


def test_a_shared_penalty_is_in_the_titles_and_none_is_not():
    from xorrelu.results import fixed_description

    l2 = {"depth": 3, "regularization.name": "l2", "regularization.rate": 0.01}
    assert fixed_description([l2, l2]).endswith(" · l2 rate 0.01")
    assert fixed_description([l2, {**l2, "regularization.rate": 0.1}]).endswith(" · l2")
    none = {"depth": 3, "regularization.name": "none"}
    assert fixed_description([none]) == fixed_description([{"depth": 3}])
    assert "none" not in fixed_description([none])
