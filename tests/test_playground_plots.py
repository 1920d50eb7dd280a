"""The plots, tables and outcomes of a Playground job (a 2-D dataset with features and a test
split): solved by its own rule, train and test side by side, decision boundaries over the data's
range, an exported replica that takes the points as drawn."""

import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import make_cfg
from matplotlib.figure import Figure

import xorrelu
from xorrelu import plot, results
from xorrelu.data import featurize, make_split
from xorrelu.metrics import forward
from xorrelu.model import Features, export_replica, load_model
from xorrelu.train import train

CIRCLE = (
    "dataset=circle",
    "dataset.points=100",
    "dataset.features=[x1_sq,x2_sq]",
    "depth=2",
    "width=4",
    "steps=50",
    "replicas=3",
    "compile=false",
)


@pytest.fixture(scope="module")
def circle_job(tmp_path_factory):
    job = tmp_path_factory.mktemp("circle") / "job"
    train(make_cfg(*CIRCLE), job)
    return job


def test_a_circle_job_reports_train_and_test_side_by_side(circle_job, tmp_path):
    out = plot.write_report([circle_job], tmp_path / "plots")
    for name in ("test_accuracy", "decision_boundary", "cost", "accuracy", "outcomes"):
        assert (out / f"{name}.png").is_file(), name
    summary = (out / "summary.md").read_text()
    header = summary.splitlines()[2]
    assert header.index("train accuracy") < header.index("test accuracy") < header.index("diverged")
    csv = pd.read_csv(out / "summary.csv")
    assert {"median_final_accuracy", "median_final_test_accuracy", "mean_final_test_accuracy"} <= {
        *csv.columns
    }
    assert 0 <= csv.median_final_test_accuracy[0] <= 1
    assert "test accuracy: median [IQR], mean" in (out / "report.html").read_text()


def test_the_test_accuracy_plot_and_the_curves_follow_the_job_s_rule(circle_job):
    collected = plot.collect([circle_job])
    curves = collected.curves["all"]
    assert curves.test_accuracy is not None and len(curves.test_accuracy) == len(curves.steps)
    ax = plot.plot_test_accuracy(collected, ax=Figure().subplots())
    assert len(ax.lines) == 2  # test (solid) and train (dashed) for the one group
    # every step is logged: the last step's solved fraction is the training job's verdict
    assert curves.solved[-1] == pytest.approx(collected.replicas.solved.mean())
    lines = plot.plateau_lines(collected)
    assert len(lines) == 1 and "labels' entropy (circle)" in next(iter(lines.values()))


def test_an_unfinished_job_is_judged_as_training_judged_it(circle_job, tmp_path):
    """summary.json without its replicas: the outcomes come from metrics.csv, with the job's
    rule (test accuracy >= 0.9, no cost condition) and its plateau at the labels' entropy."""
    import json

    job = tmp_path / "job"
    shutil.copytree(circle_job, job)
    summary = json.loads((job / "summary.json").read_text())
    verdicts = summary.pop("replicas")
    summary["status"] = "running"
    (job / "summary.json").write_text(json.dumps(summary))
    read = results.read_job(job)
    assert read.judging.rule.cost is None and read.judging.rule.held_out
    table = results.job_outcomes(read)
    assert table.solved.tolist() == [v["solved"] for v in verdicts]
    assert table.cause.tolist() == [v["cause"] for v in verdicts]
    np.testing.assert_allclose(
        table.final_test_accuracy, [v["final_test_accuracy"] for v in verdicts], rtol=1e-6
    )


def test_the_decision_boundary_spans_the_data_with_train_and_test_markers(circle_job):
    collected = plot.collect([circle_job])
    ax = plot.plot_decision_boundary(collected, str(circle_job), 0, ax=Figure().subplots())
    data = pd.read_csv(circle_job / "data.csv")
    (x_low, x_high), (y_low, y_high) = ax.get_xlim(), ax.get_ylim()
    assert x_low < data.x1.min() and data.x1.max() < x_high
    assert y_low < data.x2.min() and data.x2.max() < y_high
    assert x_high - x_low < 1.5 * (data.x1.max() - data.x1.min())  # the data's range, not more
    train_dots, test_crosses = ax.collections
    assert len(train_dots.get_offsets()) == (data.split == "train").sum() == 50
    assert len(test_crosses.get_offsets()) == (data.split == "test").sum() == 50
    assert "test accuracy" in ax.get_title()


def test_a_job_without_data_csv_draws_the_points_its_config_makes(circle_job, tmp_path):
    job = tmp_path / "job"
    shutil.copytree(circle_job, job)
    (job / "data.csv").unlink()
    old, new = plot.job_plane(str(job)), plot.job_plane(str(circle_job))
    np.testing.assert_allclose(old.points[["x1", "x2"]], new.points[["x1", "x2"]])
    assert old.points.split.tolist() == new.points.split.tolist()
    assert old.features == ["x1_sq", "x2_sq"]


def test_an_exported_replica_takes_the_points_as_drawn(circle_job):
    model = load_model(circle_job)
    split = make_split(make_cfg(*CIRCLE).dataset)
    points = split.points.float()
    with torch.no_grad():
        batched = forward(model, featurize(points, ["x1_sq", "x2_sq"]))[0]
        for r in range(3):
            plain = export_replica(model, r)
            assert isinstance(plain[0], Features) and plain[0].names == ["x1_sq", "x2_sq"]
            torch.testing.assert_close(plain(points)[:, 0], batched[r])
    metrics = xorrelu.load(circle_job)
    assert {"test_cost", "test_accuracy"} <= set(metrics.columns)


def test_test_columns_out_of_range_make_the_job_unusable(circle_job, tmp_path):
    job = tmp_path / "job"
    shutil.copytree(circle_job, job)
    metrics = pd.read_csv(job / "metrics.csv")
    metrics.loc[3, "test_accuracy"] = 1.5
    metrics.to_csv(job / "metrics.csv", index=False)
    with pytest.raises(results.ResultsError, match="test_accuracy is 1.5, not a number from 0"):
        results.read_metrics(job / "metrics.csv")
