"""hydra/sweeper=search: an Optuna study whose trials are xorrelu's jobs, each returning its
objective, and the best trial trained again on seeds no trial used."""

import json
import re

import pytest
from conftest import CONF, run_cli
from omegaconf import OmegaConf

from xorrelu.preflight import Refused, check
from xorrelu.stats import objective_value, wilson_interval

optuna = pytest.importorskip("optuna", reason="pip install 'xorrelu[search]'")


def test_a_job_returns_its_objective_measured_where_solved_is():
    replicas = [
        {"solved": True, "diverged": False, "final_cost": 0.01, "final_accuracy": 1.0},
        {"solved": False, "diverged": False, "final_cost": 0.69, "final_accuracy": 0.5},
        {"solved": False, "diverged": True, "final_cost": None, "final_accuracy": None},
    ]
    assert objective_value(replicas, "solved_rate") == pytest.approx(1 / 3)
    assert objective_value(replicas, "mean_accuracy") == pytest.approx(0.5)  # diverged: 0
    assert objective_value(replicas, "median_cost") == pytest.approx(0.69)  # diverged: inf
    held_out = [
        {**r, "final_test_accuracy": a, "final_test_cost": c}
        for r, a, c in zip(replicas, [0.75, 0.25, None], [0.3, 0.9, None], strict=True)
    ]
    assert objective_value(held_out, "mean_accuracy") == pytest.approx(1 / 3)
    assert objective_value(held_out, "median_cost") == pytest.approx(0.9)


@pytest.mark.parametrize(
    "args, says",
    [
        (["hydra.sweeper.direction=minimize"], "set hydra.sweeper.direction=maximize"),
        (["objective=median_cost"], "set hydra.sweeper.direction=minimize"),
        (["optimizer.lrr=interval(0.1,0.2)"], "Key 'lrr' not in 'OptimizerConf'"),
        (["depth=interval(1.0,20.0)"], "depth=10.5 does not compose"),
        (["activation=choice(relu,swish)"], "Could not find 'activation/swish'"),
    ],
)
def test_a_study_that_cannot_search_is_refused_before_anything_is_written(tmp_path, args, says):
    sweep = tmp_path / "sweep"
    with pytest.raises(Refused, match=re.escape(says)):
        check(
            ["experiment=search_relu", *args, f"hydra.sweep.dir={sweep}", "--multirun"], str(CONF)
        )
    assert not sweep.exists()


def test_a_study_within_its_space_passes_the_checks(tmp_path):
    sweep = tmp_path / "sweep"
    plan = check(["experiment=search_relu", f"hydra.sweep.dir={sweep}", "--multirun"], str(CONF))
    assert plan.sweep_dir == sweep and plan.jobs == 1  # the study picks its values as it goes


@pytest.mark.parametrize("name", ["search.json", "search.md"])
def test_a_sweep_dir_that_holds_a_study_report_is_refused(tmp_path, name):
    """The study writes search.json and search.md into its sweep dir: one that holds either (a
    study's, or anyone's file of that name) is not written over."""
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / name).write_text("mine")
    with pytest.raises(Refused, match=f"already holds a sweep .{re.escape(name)} is there"):
        check(["experiment=search_relu", f"hydra.sweep.dir={sweep}", "--multirun"], str(CONF))
    assert (sweep / name).read_text() == "mine" and len(list(sweep.iterdir())) == 1


TINY = ["depth=2", "steps=30", "replicas=3", "print_every=30", "plot=false"]


def search(tmp_path, *args: str):
    return run_cli(
        "experiment=search_relu",
        "hydra.sweeper.storage=sqlite:///study.db",
        "hydra.sweeper.study_name=tiny",
        "hydra.sweep.dir=sweep",
        *TINY,
        *args,
        "--multirun",
        cwd=tmp_path,
    )


def job_summary(job):
    return json.loads((job / "summary.json").read_text())


@pytest.mark.slow
def test_a_tiny_study_goes_on_past_refused_trials_and_reruns_its_best_on_fresh_seeds(tmp_path):
    # validate() refuses init.bound=-1: every trial that draws it fails
    proc = search(tmp_path, "hydra.sweeper.n_trials=4", "init.bound=choice(-1.0,1.0)")
    assert proc.returncode == 1, proc.stderr[-3000:]  # trials failed; the study finished
    assert "Traceback" not in proc.stderr
    assert "init.bound=-1.0 is not allowed" in proc.stderr
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path / 'study.db'}")
    trials = study.trials
    assert len(trials) == 4
    states = {t.state for t in trials}
    assert states == {optuna.trial.TrialState.FAIL, optuna.trial.TrialState.COMPLETE}
    sweep = tmp_path / "sweep"
    for trial in trials:  # a fresh study's trial n is the sweep's job n
        summary = job_summary(sweep / str(trial.number))
        if trial.params["init.bound"] < 0:
            assert trial.state is optuna.trial.TrialState.FAIL and summary["status"] == "failed"
        else:
            solved = [r["solved"] for r in summary["replicas"]]
            assert trial.value == sum(solved) / len(solved)
    best = study.best_trial
    assert OmegaConf.load(sweep / "optimization_results.yaml").best_params == best.params

    report = json.loads((sweep / "search.json").read_text())
    assert (report["trials"], report["failed_trials"]) == (4, sum(t.value is None for t in trials))
    assert report["best"]["job"] == str(best.number) and report["best"]["value"] == best.value
    rerun = job_summary(sweep / report["rerun"]["job"])
    best_config = job_summary(sweep / str(best.number))["config"]
    assert rerun["status"] == "completed"
    assert {**rerun["config"], "seed": None} == {**best_config, "seed": None}
    used = set()
    for trial in trials:
        config = job_summary(sweep / str(trial.number))["config"]
        used |= set(range(config["seed"], config["seed"] + config["replicas"]))
    seeds = [r["seed"] for r in rerun["replicas"]]
    assert not used & set(seeds) and report["rerun"]["seeds"] == [seeds[0], seeds[-1]]
    solved = sum(r["solved"] for r in rerun["replicas"])
    assert report["rerun"]["value"] == solved / len(seeds)
    assert report["rerun"]["solved_ci95"] == list(wilson_interval(solved, len(seeds)))
    assert "re-run on fresh seeds" in (sweep / "search.md").read_text()


@pytest.mark.slow
def test_a_study_whose_every_trial_fails_ends_with_the_failures_and_no_rerun(tmp_path):
    proc = search(tmp_path, "hydra.sweeper.n_trials=2", "init.bound=choice(-1.0,-2.0)")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "no trial completed, so there is nothing to re-run" in proc.stdout + proc.stderr
    assert "jobs of this sweep did not complete" in proc.stderr
    assert not (tmp_path / "sweep" / "search.json").exists()
    assert sorted(p.name for p in (tmp_path / "sweep").iterdir() if p.name.isdigit()) == ["0", "1"]
