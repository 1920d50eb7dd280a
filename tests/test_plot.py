"""Plots and the summary report from a small real multirun, the auto-plot callback, bad input."""

import json
import logging

import matplotlib
import matplotlib.image
import pytest
from conftest import run_cli
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure

import xorrelu
from xorrelu import plot

PLOTS = [
    "cost",
    "accuracy",
    "grad_norms",
    "grad_profile",
    "outcomes",
    "stuck_units",
    "success_heatmap",
    "solved_rate",
]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """activation x depth, 3 seeds each, with the plots the callback writes at the end."""
    cwd = tmp_path_factory.mktemp("sweep")
    proc = run_cli(
        "activation=sigmoid,relu", "depth=2,3", "steps=60", "replicas=3", "--multirun", cwd=cwd
    )
    assert proc.returncode == 0, proc.stderr
    (sweep_dir,) = list((cwd / "outputs" / "multirun").glob("*/*"))
    return sweep_dir


def test_multirun_ends_with_every_plot_and_the_summary(sweep):
    out = sweep / "plots"
    for name in PLOTS:
        image = matplotlib.image.imread(out / f"{name}.png")  # a whole PNG, with something drawn
        assert image.shape[0] > 200 and image.shape[1] > 200 and image[..., :3].std() > 0.05
        assert (out / f"{name}.svg").read_text().rstrip().endswith("</svg>")
    summary = (out / "summary.md").read_text()
    assert summary.count("\n| ") == 1 + 4 and "solved (95% CI)" in summary
    csv = xorrelu.results.pd.read_csv(out / "summary.csv")
    assert list(csv[["activation", "depth"]].itertuples(index=False, name=None)) == [
        ("sigmoid", 2),
        ("sigmoid", 3),
        ("relu", 2),
        ("relu", 3),
    ]
    assert (csv.replicas == 3).all() and (csv.solved_ci_low <= csv.solved_rate).all()


def test_each_plot_function_draws_one_line_or_band_per_group(sweep):
    results = plot.collect([sweep])
    assert results.groups == [
        "activation=sigmoid, depth=2",
        "activation=sigmoid, depth=3",
        "activation=relu, depth=2",
        "activation=relu, depth=3",
    ]
    n = len(results.groups)
    ax = plot.plot_cost(results, ax=Figure().subplots())
    assert sum(isinstance(c, PolyCollection) for c in ax.collections) == n  # one IQR band per group
    assert (
        len([line for line in ax.lines if line.get_linewidth() == 2]) == n
    )  # one median per group
    assert len(plot.plot_accuracy(results, ax=Figure().subplots()).lines) == 2 * n
    assert len(plot.plot_grad_profile(results, ax=Figure().subplots()).lines) == 2 * n
    assert len(plot.plot_stuck_units(results, ax=Figure().subplots()).lines) == 2 * n
    ax = plot.plot_outcomes(results, ax=Figure().subplots())  # one scatter per cause, x = the group
    xs = [x for c in ax.collections for x in c.get_offsets()[:, 0]]
    assert len(xs) == 4 * 3 and {round(x) for x in xs} == set(range(n))
    assert (
        len(plot.plot_grad_norms(results, "activation=relu, depth=3", ax=Figure().subplots()).lines)
        == 4
    )  # 3 hidden + output
    ax = plot.plot_success_heatmap(results, ax=Figure().subplots())
    assert ax.images[0].get_array().shape == (2, 2)
    ax = plot.plot_solved_rate(results, ax=Figure().subplots())  # depth on x, a line per activation
    assert [len(line.get_xdata()) for line in ax.lines] == [2, 2]
    rates = sorted(float(y) for line in ax.lines for y in line.get_ydata())
    assert rates == sorted(results.summary.solved_rate)


def test_plot_functions_draw_on_the_current_axes_when_given_none(sweep):
    import matplotlib.pyplot as plt

    matplotlib.use("Agg")
    plt.figure()
    assert plot.plot_cost(plot.collect([sweep])) is plt.gca()
    plt.close("all")


def test_load_api_has_the_experimental_keys_as_columns(sweep):
    metrics = xorrelu.load(sweep)
    assert {"job", "activation", "depth", "step", "seed", "cost"} <= set(metrics.columns)
    assert "seed" not in metrics.columns[:3]
    assert len(metrics) == 4 * 61 * 3
    replicas = xorrelu.load_summary(sweep)
    assert len(replicas) == 12 and {
        "activation",
        "depth",
        "solved",
        "first_step_solved",
        "final_cost",
    } <= set(replicas.columns)


def test_single_run_writes_its_plots_and_plot_false_writes_none(tmp_path):
    assert run_cli("steps=20", "replicas=2", cwd=tmp_path).returncode == 0
    assert run_cli("steps=20", "replicas=2", "plot=false", cwd=tmp_path).returncode == 0
    jobs = sorted((tmp_path / "outputs" / "runs").glob("*/*"))
    assert [(job / "plots" / "cost.png").is_file() for job in jobs] == [True, False]


def test_newest_run_is_the_default_path(tmp_path, sweep, monkeypatch, capsys):
    import shutil

    target = tmp_path / "outputs" / "multirun" / "2099-01-01" / "00-00-00-000000"
    shutil.copytree(sweep, target, ignore=shutil.ignore_patterns("plots"))
    shutil.copytree(sweep / "0", tmp_path / "outputs" / "runs" / "2000-01-01" / "00-00-00-000000")
    monkeypatch.chdir(tmp_path)
    assert plot.main([]) == 0
    assert (target / "plots" / "cost.png").is_file()


def test_interrupted_csv_is_read_to_its_last_complete_row(tmp_path, sweep):
    import shutil

    job = tmp_path / "job"
    shutil.copytree(sweep / "3", job, ignore=shutil.ignore_patterns("plots"))
    data = (job / "metrics.csv").read_bytes()
    (job / "metrics.csv").write_bytes(data[: len(data) - 25])  # cut the last row in half
    metrics = xorrelu.load(job)
    assert len(metrics) == 61 * 3 - 1 and metrics.cost.notna().all()
    assert plot.main([str(job)]) == 0


def test_jobs_without_metrics_are_skipped_with_a_warning(tmp_path, sweep, caplog):
    import shutil

    shutil.copytree(sweep, tmp_path / "sweep", ignore=shutil.ignore_patterns("plots"))
    (tmp_path / "sweep" / "1" / "metrics.csv").unlink()
    with caplog.at_level(logging.WARNING):
        results = plot.collect([tmp_path / "sweep"])
    assert len(results.groups) == 3
    assert any("sweep/1" in r.message and "no metrics.csv" in r.message for r in caplog.records)


@pytest.mark.parametrize("case", ["missing", "empty", "columns", "garbage"])
def test_bad_input_is_one_line_and_exit_2(tmp_path, case, capsys):
    path = tmp_path / "in"
    if case != "missing":
        path.mkdir()
    if case in ("columns", "garbage"):
        (path / "summary.json").write_text(json.dumps({"config": {"depth": 1}}))
        (path / "metrics.csv").write_bytes(
            b"step,seed,cost\n0,0,0.5\n" if case == "columns" else b"\xff\xfe\x00garbage"
        )
    assert plot.main([str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("xorrelu-plot: error: ") and err.count("\n") == 1
    assert {
        "missing": "no such file",
        "empty": "no job",
        "columns": "lacks the columns accuracy, grad_norm_1",
        "garbage": "not a metrics CSV",
    }[case] in err
    assert not (path / "plots").exists() or case == "missing"


def test_bad_input_from_the_command_line_has_no_traceback(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "xorrelu.plot", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "no such file" in proc.stderr


def test_a_plotting_failure_is_reported_and_never_raised(tmp_path, caplog):
    from xorrelu.callbacks import plot_safely

    with caplog.at_level(logging.ERROR):
        plot_safely(tmp_path / "missing")
    assert "plotting failed (training results are intact)" in caplog.text


def test_a_job_plots_the_same_from_curves_csv_as_from_metrics_csv(tmp_path):
    """A completed job is read from its curves.csv (the rows at the steps drawn), and the curves
    and tables come out as they do from metrics.csv alone; a curves.csv that is not whole is
    passed over for metrics.csv."""
    import shutil

    import numpy as np
    from conftest import make_cfg

    from xorrelu import results
    from xorrelu.train import train

    job, bare = tmp_path / "job", tmp_path / "bare"
    train(make_cfg("steps=2500", "replicas=3", "depth=2", "plot=false"), job)
    shutil.copytree(job, bare)
    (bare / "curves.csv").unlink()
    assert len(results.read_job(job, curves=True).metrics) == 1000 * 3
    assert len(results.read_job(job).metrics) == len(results.read_job(bare, curves=True).metrics)
    a, b = plot.collect([job]), plot.collect([bare])
    for name, value in vars(a.curves["all"]).items():
        other = vars(b.curves["all"])[name]
        if isinstance(value, dict):
            assert value.keys() == other.keys(), name
            for key in value:
                np.testing.assert_array_equal(value[key], other[key], err_msg=f"{name} {key}")
        else:
            np.testing.assert_array_equal(value, other, err_msg=name)
    assert a.summary.equals(b.summary) and plot.summary_markdown(a) == plot.summary_markdown(b)
    assert a.replicas.drop(columns="job").equals(b.replicas.drop(columns="job"))

    data = (job / "curves.csv").read_bytes()
    (job / "curves.csv").write_bytes(
        data[: data.rindex(b"\n2400,") + 1]
    )  # steps missing at the end
    assert len(results.read_job(job, curves=True).metrics) == 2501 * 3


def test_a_legend_of_sixty_groups_sits_beside_the_axes_without_squashing_them():
    import io
    import warnings

    figure = Figure(figsize=(7.5, 4.8), layout="constrained")
    ax = figure.subplots()
    for i in range(60):  # the depth preset: 20 depths x 3 activations
        ax.plot([0, 1], [i, i], label=f"activation=sigmoid, depth={i}")
    plot._legend(ax)
    assert ax.get_legend()._ncols == 3 and figure.get_size_inches()[0] > 7.5
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # constrained_layout's "axes sizes collapsed" warning
        figure.savefig(io.BytesIO(), format="png")
    assert ax.get_position().width > 0.3
