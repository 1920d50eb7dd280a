"""The plotter against hostile input: links and loops, damaged or wrongly typed files, zip bombs,
failed and killed jobs, Ctrl-C. Whatever the input: no traceback; one line and exit 2 when nothing
is usable; one warning per bad job among good ones; every file written whole or not at all; and
no file it did not write is ever changed."""

import json
import logging
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import make_cfg, snapshot
from matplotlib.figure import Figure

from xorrelu import jobdir, plot
from xorrelu.train import train


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """One small finished job (2 replicas, 6 logged steps), copied by every case."""
    job = tmp_path_factory.mktemp("template") / "job"
    train(make_cfg("steps=5", "replicas=2", "plot=false"), job)
    return job


# --- helpers ------------------------------------------------------------------------------------


def leftovers(root: Path) -> list[str]:
    return [str(p) for p in root.rglob("*.tmp")]


def is_whole(path: Path) -> bool:
    data = path.read_bytes()
    if path.suffix == ".svg":
        return data.rstrip().endswith(b"</svg>")
    return data.startswith(b"\x89PNG") and data.endswith(b"IEND\xaeB`\x82")


@pytest.fixture
def fast_savefig(monkeypatch):
    """Figure.savefig writing a stub: drawing the real files takes seconds a run and is tested in
    test_plot.py; here what counts is which files are written, and how."""

    def savefig(self, file, format=None, **kwargs):
        stub = f"stub {format}".encode()
        file.write(stub) if hasattr(file, "write") else Path(file).write_bytes(stub)

    monkeypatch.setattr(Figure, "savefig", savefig)


def copy_job(template: Path, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(template, dest, symlinks=True)
    return dest


def edit_summary(job: Path, change: Callable[[dict], object]) -> None:
    summary = json.loads((job / "summary.json").read_text())
    result = change(summary)
    (job / "summary.json").write_text(json.dumps(summary if result is None else result))


def set_cell(job: Path, row: int, column: str, value: str) -> None:
    """Put `value` into data row `row` (1 = the first after the header) of metrics.csv, as text."""
    lines = (job / "metrics.csv").read_text().splitlines()
    cells = lines[row].split(",")
    cells[lines[0].split(",").index(column)] = value
    lines[row] = ",".join(cells)
    (job / "metrics.csv").write_text("\n".join(lines) + "\n")


def set_column(job: Path, column: str, values: list[str]) -> None:
    lines = (job / "metrics.csv").read_text().splitlines()
    index = lines[0].split(",").index(column)
    for row, value in enumerate(values, start=1):
        cells = lines[row].split(",")
        cells[index] = value
        lines[row] = ",".join(cells)
    (job / "metrics.csv").write_text("\n".join(lines) + "\n")


def killed(job: Path) -> None:
    """What SIGKILL before the first flush leaves: an empty metrics.csv,
    a summary saying running."""
    (job / "metrics.csv").write_bytes(b"")
    kept = ("config", "device", "engine", "versions")  # what train() writes before its first step
    edit_summary(
        job,
        lambda s: {k: v for k, v in s.items() if k in kept} | {"status": "running", "last_step": 0},
    )


def zip_bomb(job: Path, megabytes: int) -> None:
    """weights.pt replaced by a zip whose one member inflates `megabytes` MiB of zeros."""
    with zipfile.ZipFile(job / "weights.pt", "w", compression=zipfile.ZIP_DEFLATED) as archive:
        with archive.open("archive/data/0", "w", force_zip64=True) as member:
            block = bytes(2**20)
            for _ in range(megabytes):
                member.write(block)


def sweep(root: Path, template: Path, n: int = 3) -> list[Path]:
    return [copy_job(template, root / "sweep" / str(i)) for i in range(n)]


# --- the corpus ---------------------------------------------------------------------------------


@dataclass
class Case:
    build: Callable  # (root, template, monkeypatch) -> argv for plot.main
    code: int  # exit code
    says: str = ""  # in the one error line (exit 2), or in the one warning (exit 0)
    skipped: str = ""  # exit 0: the job dir (below root) the warning must name
    replicas: int = 0  # exit 0: replicas in summary.csv, all groups together
    listed: str = ""  # exit 0: in summary.md's and report.html's "Jobs not completed"


def one_job(change: Callable[[Path], object]) -> Callable:
    def build(root, template, monkeypatch):
        job = copy_job(template, root / "job")
        change(job)
        return [str(job)]

    return build


def a_sweep_where_job_1(change: Callable[[Path], object]) -> Callable:
    def build(root, template, monkeypatch):
        jobs = sweep(root, template)
        change(jobs[1])
        return [str(root / "sweep")]

    return build


def linked(make: Callable[[Path, Path], Path]) -> Callable:
    def build(root, template, monkeypatch):
        return [str(make(root, template))]

    return build


def outputs_with_latest(root, template):
    copy_job(template, root / "outputs" / "runs" / "2026-01-01" / "job")
    (root / "outputs" / "latest").symlink_to(Path("runs") / "2026-01-01" / "job")
    return root / "outputs"


def job_with_loop(root, template):
    job = copy_job(template, root / "outputs" / "job")
    (job / "loop").symlink_to(".")
    (root / "outputs" / "up").symlink_to("..")
    return root / "outputs"


def folder_of_links(root, template):
    a, b = copy_job(template, root / "runs" / "a"), copy_job(template, root / "runs" / "b")
    edit_summary(b, lambda s: s["config"].update(activation={"name": "tanh"}))
    (root / "compare").mkdir()
    (root / "compare" / "relu").symlink_to(a)
    (root / "compare" / "tanh").symlink_to(b)
    (root / "compare" / "relu-again").symlink_to(a)
    return root / "compare"


def two_dirs_linked_to_each_other(root, template):
    copy_job(template, root / "outputs" / "a" / "job")
    (root / "outputs" / "b").mkdir()
    (root / "outputs" / "a" / "to_b").symlink_to(root / "outputs" / "b")
    (root / "outputs" / "b" / "to_a").symlink_to(root / "outputs" / "a")
    (root / "outputs" / "dangling").symlink_to(root / "nowhere")
    (root / "outputs" / "file_link").symlink_to(root / "outputs" / "a" / "job" / "metrics.csv")
    return root / "outputs"


def monkeypatched_bound(root, template, monkeypatch):
    """A 24 MiB member compressed to ~24 KB; the floor lowered from 256 MiB to 1 MiB keeps it
    fast. torch.load must never run on it."""
    job = copy_job(template, root / "job")
    zip_bomb(job, 24)
    monkeypatch.setattr(jobdir, "WEIGHTS_INFLATE_FLOOR", 2**20)
    monkeypatch.setattr(
        plot.torch, "load", lambda *a, **k: pytest.fail("torch.load ran on a zip bomb")
    )
    return [str(job)]


def out_is_a_file(root, template, monkeypatch):
    job = copy_job(template, root / "job")
    (root / "figs").write_text("my notes\n")
    return [str(job), "--out", str(root / "figs")]


def out_holds_a_users_file(root, template, monkeypatch):
    job = copy_job(template, root / "job")
    (root / "figs").mkdir()
    (root / "figs" / "summary.md").write_text("my own summary, not the plotter's\n")
    return [str(job), "--out", str(root / "figs")]


def every_job_unusable(root, template, monkeypatch):
    for job in sweep(root, template, 2):
        killed(job)
    return [str(root / "sweep")]


def empty_dir(root, template, monkeypatch):
    (root / "nothing").mkdir()
    return [str(root / "nothing")]


def no_summary_and_an_alias_bomb(job):
    (job / "summary.json").unlink()
    (job / ".hydra").mkdir(exist_ok=True)
    lines = ["a: &a [x, x, x, x, x, x, x, x, x]"] + [
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]"
        for p, c in zip("abc", "bcd", strict=True)
    ]
    (job / ".hydra" / "config.yaml").write_text("\n".join(lines) + "\n")


def write(name: str, data: bytes | str) -> Callable[[Path], None]:
    """An edit: replace the job's file `name` with `data`."""
    return lambda job: (job / name).write_bytes(data if isinstance(data, bytes) else data.encode())


def cell(row: int, column: str, value: str) -> Callable[[Path], None]:
    return lambda job: set_cell(job, row, column, value)


def summary_with(**fields) -> Callable[[Path], None]:
    return lambda job: edit_summary(job, lambda s: s.update(fields))


def config_with(**fields) -> Callable[[Path], None]:
    return lambda job: edit_summary(job, lambda s: s["config"].update(fields))


def replica_with(index: int, **fields) -> Callable[[Path], None]:
    return lambda job: edit_summary(job, lambda s: s["replicas"][index].update(fields))


def header_only(job: Path) -> None:
    (job / "metrics.csv").write_text((job / "metrics.csv").read_text().split("\n")[0] + "\n")


def written_twice(job: Path) -> None:
    (job / "metrics.csv").write_bytes(
        (job / "metrics.csv").read_bytes() * 2
    )  # header and all, as `cat a a > a`


def first_two_rows_again(job: Path) -> None:
    rows = (job / "metrics.csv").read_text().splitlines(keepends=True)
    (job / "metrics.csv").write_text("".join(rows + rows[1:3]))


def truncated_weights(job: Path) -> None:
    (job / "weights.pt").write_bytes((job / "weights.pt").read_bytes()[:3000])


def every_replica_diverged(job: Path) -> None:
    """NaN in every metric from step 0 on (step and seed stay), as a run at a huge lr leaves it."""
    frame = pd.read_csv(job / "metrics.csv")
    frame.iloc[:, 2:] = np.nan
    frame.to_csv(job / "metrics.csv", index=False)


NOT_WEIGHTS = "weights.pt is not a weights file written by xorrelu"
NOT_A_SUMMARY = "summary.json is not a summary written by xorrelu"

CASES = {
    # metrics.csv of the only job: one line, exit 2
    "metrics-text-in-cost": Case(
        one_job(cell(3, "cost", "abc")), 2, "metrics.csv row 3: cost is 'abc', not a number"
    ),
    "metrics-text-in-seed": Case(
        one_job(cell(1, "seed", "x")), 2, "row 1: seed is 'x', not a number"
    ),
    "metrics-text-in-a-layer": Case(
        one_job(cell(12, "grad_norm_4", "oops")), 2, "row 12: grad_norm_4 is 'oops'"
    ),
    "metrics-true-false": Case(
        one_job(lambda j: set_column(j, "accuracy", ["True", "False"] * 6)),
        2,
        "accuracy is True, not a number",
    ),
    "metrics-header-only": Case(
        one_job(header_only), 2, "metrics.csv has a header but no complete row"
    ),
    "metrics-empty": Case(one_job(write("metrics.csv", b"")), 2, "metrics.csv is empty"),
    "metrics-binary": Case(
        one_job(write("metrics.csv", bytes(range(256)) * 8)),
        2,
        "metrics.csv lacks the columns step, seed",
    ),
    "metrics-not-utf8": Case(
        one_job(write("metrics.csv", b"\xff\xfe\x00garbage\n\x81\n")), 2, "is not a metrics CSV"
    ),
    "metrics-negative-step": Case(
        one_job(cell(2, "step", "-1")), 2, "row 2: step is -1, not a whole number >= 0"
    ),
    "metrics-half-a-seed": Case(
        one_job(cell(2, "seed", "0.5")), 2, "row 2: seed is 0.5, not a whole number >= 0"
    ),
    "metrics-accuracy-7": Case(
        one_job(cell(4, "accuracy", "7")), 2, "row 4: accuracy is 7.0, not a number from 0 to 1"
    ),
    "metrics-negative-cost": Case(
        one_job(cell(5, "cost", "-0.5")), 2, "row 5: cost is -0.5, not a number >= 0"
    ),
    "metrics-written-twice": Case(
        one_job(written_twice), 2, "row 13: step is 'step', not a number"
    ),
    "metrics-repeated-rows": Case(
        one_job(first_two_rows_again), 2, "holds 2 repeated rows (first: step 0, seed 0)"
    ),
    # summary.json of the only job
    "summary-array": Case(
        one_job(write("summary.json", "[1, 2]")), 2, f"{NOT_A_SUMMARY}: it holds a list"
    ),
    "summary-nested-100000": Case(
        one_job(write("summary.json", "[" * 100000)), 2, f"{NOT_A_SUMMARY}: JSON nested too deeply"
    ),
    "summary-not-json": Case(
        one_job(write("summary.json", '{"config": ')),
        2,
        f"{NOT_A_SUMMARY}: not JSON (Expecting value",
    ),
    "summary-binary": Case(
        one_job(write("summary.json", b"\xff\xfe\x00\x81garbage")),
        2,
        f"{NOT_A_SUMMARY}: it is not UTF-8 text",
    ),
    "summary-config-list": Case(
        one_job(summary_with(config=[1, 2])), 2, "its config is a list, not an object"
    ),
    "summary-config-number": Case(
        one_job(summary_with(config=5)), 2, "its config is a number, not an object"
    ),
    "summary-replicas-string": Case(
        one_job(summary_with(replicas="lots")), 2, "its replicas is text, not a list"
    ),
    "summary-seed-string": Case(
        one_job(replica_with(0, seed="0")), 2, "replicas[0].seed is '0', not a whole number >= 0"
    ),
    "summary-status-number": Case(
        one_job(summary_with(status=7)), 2, "its status is 7, not one of"
    ),
    "summary-unknown-cause": Case(
        one_job(replica_with(1, cause="gremlins")), 2, "replicas[1].cause is 'gremlins'"
    ),
    "summary-config-value-list": Case(
        one_job(config_with(depth=[1, 2])), 2, "config key depth holds a list, not a single value"
    ),
    "summary-unknown-dataset": Case(
        one_job(config_with(dataset={"name": "mnist"})),
        2,
        "dataset.name is 'mnist', not one of xor, parity",
    ),
    "summary-unknown-activation": Case(
        one_job(config_with(activation={"name": "x" * 5000})), 2, "activation.name is 'xxxxxxx"
    ),
    "hydra-config-alias-bomb": Case(
        one_job(no_summary_and_an_alias_bomb), 2, ".hydra/config.yaml uses YAML aliases"
    ),
    # weights.pt of the only job
    "weights-zip-bomb": Case(
        monkeypatched_bound, 2, "weights.pt declares 24 MiB of content, more than the"
    ),
    "weights-truncated": Case(one_job(truncated_weights), 2, "weights.pt is damaged (truncated"),
    "weights-config-wants-1000-replicas": Case(
        one_job(config_with(replicas=1000)), 2, "it holds 2 replicas, the job's config says 1000"
    ),
    "weights-config-wants-a-wider-net": Case(
        one_job(config_with(width=200)), 2, "numbers are fewer than the"
    ),
    # where to write, and nothing to read
    "out-is-a-file": Case(out_is_a_file, 2, "figs: it is a file, not a directory"),
    "out-holds-a-users-file": Case(
        out_holds_a_users_file, 2, "figs/summary.md exists and was not written by xorrelu-plot"
    ),
    "no-job-at-all": Case(empty_dir, 2, "no job with a metrics.csv below"),
    "every-job-unusable": Case(every_job_unusable, 2, "no usable job below"),
    # one bad job among good ones: skipped with one warning naming it, the rest plotted,
    # listed in the report
    "sweep-with-a-sigkilled-job": Case(
        a_sweep_where_job_1(killed),
        0,
        "metrics.csv is empty",
        "sweep/1",
        4,
        "summary.json says running",
    ),
    "sweep-with-a-header-only-job": Case(
        a_sweep_where_job_1(write("metrics.csv", "step,seed,cost,accuracy,grad_norm_1\n")),
        0,
        "has a header but no complete row",
        "sweep/1",
        4,
        "skipped, not plotted",
    ),
    "sweep-with-a-garbage-summary": Case(
        a_sweep_where_job_1(write("summary.json", b"\x00\x01\xfe")),
        0,
        NOT_A_SUMMARY,
        "sweep/1",
        4,
        "skipped, not plotted",
    ),
    "sweep-with-a-job-without-metrics": Case(
        a_sweep_where_job_1(lambda j: (j / "metrics.csv").unlink()),
        0,
        "has no metrics.csv",
        "sweep/1",
        4,
        "has no metrics.csv",
    ),
    # jobs that did not complete but left metrics: plotted, and listed with their reason
    "sweep-with-a-failed-job": Case(
        a_sweep_where_job_1(
            summary_with(status="failed", error="OSError: [Errno 28] No space left on device")
        ),
        0,
        replicas=6,
        listed="failed (OSError: [Errno 28] No space left on device)",
    ),
    "sweep-with-an-interrupted-job": Case(
        a_sweep_where_job_1(summary_with(status="interrupted", error="SIGTERM")),
        0,
        replicas=6,
        listed="interrupted (SIGTERM); go on with: xorrelu-resume",
    ),
    # links: followed, each real job once, no endless loop
    "link-to-a-job-counted-once": Case(linked(outputs_with_latest), 0, replicas=2),
    "loop-to-itself-and-up": Case(linked(job_with_loop), 0, replicas=2),
    "folder-of-links-to-two-jobs": Case(linked(folder_of_links), 0, replicas=4),
    "dirs-linked-to-each-other": Case(linked(two_dirs_linked_to_each_other), 0, replicas=2),
    # odd but valid values
    "every-replica-diverged": Case(one_job(every_replica_diverged), 0, replicas=2),
    "labels-with-pipes-and-newlines": Case(
        a_sweep_where_job_1(config_with(note="a|b\nc")), 0, replicas=6
    ),
}


@pytest.mark.parametrize("name", CASES)
def test_hostile_input(name, tmp_path, template, monkeypatch, capsys, caplog, fast_savefig):
    case = CASES[name]
    root = tmp_path / "in"
    root.mkdir()
    args = case.build(root, template, monkeypatch)
    before = snapshot(tmp_path, exclude=("plots",))
    with caplog.at_level(logging.WARNING, logger="xorrelu"):
        code = plot.main(args)
    out, err = capsys.readouterr()
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("xorrelu") and r.levelno >= logging.WARNING
    ]
    assert "Traceback" not in err
    assert code == case.code, err
    if case.code == 2:
        assert err.startswith("xorrelu-plot: error: ") and err.count("\n") == 1, err
        assert case.says in err
        assert warnings == []
    else:
        assert err == ""
        if case.skipped:  # exactly one warning, naming the dir and the reason
            assert (
                len(warnings) == 1
                and str(root / case.skipped) in warnings[0]
                and case.says in warnings[0]
            ), warnings
        else:
            assert warnings == []
        plots = Path(args[0]) / "plots"
        assert pd.read_csv(plots / "summary.csv").replicas.sum() == case.replicas
        report, page = (plots / "summary.md").read_text(), (plots / "report.html").read_text()
        if case.listed:
            assert (
                "Jobs not completed" in report
                and case.listed in report
                and str(root / "sweep" / "1") in report
            )
            assert "Jobs not completed" in page and case.listed in page
        else:
            assert "Jobs not completed" not in report + page
    assert (
        snapshot(tmp_path, exclude=("plots",)) == before
    )  # nothing the plotter did not write has changed
    assert leftovers(tmp_path) == []


def test_a_job_reached_through_a_link_keeps_its_own_path(tmp_path, template):
    outputs = outputs_with_latest(tmp_path, template)
    results = plot.collect([outputs])
    assert results.jobs == [str(outputs / "runs" / "2026-01-01" / "job")]


def test_links_are_followed_from_the_path_given(tmp_path, template):
    compare = folder_of_links(tmp_path, template)
    results = plot.collect([compare])
    assert sorted(results.jobs) == [str(compare / "relu"), str(compare / "tanh")]
    assert results.groups == ["activation=relu", "activation=tanh"]


def test_a_job_whose_every_replica_diverged_is_drawn_on_a_linear_axis(tmp_path, template):
    job = copy_job(template, tmp_path / "job")
    every_replica_diverged(job)
    figure = Figure()
    ax = plot.plot_cost(plot.collect([job]), ax=figure.subplots())
    assert ax.get_yscale() == "linear"  # nothing positive to put on a log axis
    figure.savefig(tmp_path / "cost.png")  # a log axis would raise here


def test_group_labels_that_make_the_same_file_name_get_distinct_files(
    tmp_path, template, fast_savefig
):
    for i, note in enumerate(["a|b", "a b", "x" * 500]):
        copy_job(template, tmp_path / "sweep" / str(i))
        edit_summary(
            tmp_path / "sweep" / str(i), lambda s, note=note: s["config"].update(note=note)
        )
    out = plot.write_report([tmp_path / "sweep"])
    names = sorted(p.name for p in out.glob("decision_boundary*.png"))
    assert (
        len(names) == 3
        and names[0] == "decision_boundary_note_a_b.png"
        and all(len(n) < 130 for n in names)
    )
    assert "a\\|b" in (out / "summary.md").read_text()  # the cell escapes its |


# --- writes: whole or absent --------------------------------------------------------------------


def interrupt_the_nth_savefig(monkeypatch, n: int, error: BaseException):
    """Figure.savefig that works n - 1 times, then writes half a file and raises."""
    real, calls = Figure.savefig, []

    def savefig(self, fname, **kwargs):
        calls.append(1)
        if len(calls) < n:
            return real(self, fname, **kwargs)
        fname.write(b"<?xml half a plot")
        raise error

    monkeypatch.setattr(Figure, "savefig", savefig)


def test_an_interrupted_plot_write_leaves_the_old_file_and_no_temp_file(
    tmp_path, template, monkeypatch, capsys
):
    job = copy_job(template, tmp_path / "job")
    assert plot.main([str(job)]) == 0
    plots = job / "plots"
    earlier = {p.name: p.read_bytes() for p in plots.iterdir()}
    assert all(is_whole(p) for p in plots.glob("*.*g"))
    interrupt_the_nth_savefig(monkeypatch, 4, KeyboardInterrupt())  # the 4th: accuracy.svg
    capsys.readouterr()
    assert plot.main([str(job)]) == 130
    assert capsys.readouterr().err == "xorrelu-plot: interrupted; plots written so far are whole\n"
    assert {p.name for p in plots.iterdir()} == set(earlier)  # no temp file, nothing new
    assert (plots / "accuracy.svg").read_bytes() == earlier["accuracy.svg"]  # the old one, whole
    assert (plots / "report.html").read_bytes() == earlier["report.html"]  # not reached
    assert all(is_whole(p) for p in plots.glob("*.*g"))


def test_an_interrupted_first_write_leaves_no_file_at_all(tmp_path, template, monkeypatch, capsys):
    job = copy_job(template, tmp_path / "job")
    interrupt_the_nth_savefig(monkeypatch, 1, KeyboardInterrupt())
    assert plot.main([str(job)]) == 130
    assert sorted(p.name for p in (job / "plots").iterdir()) == [
        plot.MANIFEST
    ]  # cost.png was never half there


def test_a_full_disk_is_one_line_and_leaves_no_temp_file(tmp_path, template, monkeypatch, capsys):
    job = copy_job(template, tmp_path / "job")
    interrupt_the_nth_savefig(monkeypatch, 3, OSError(28, "No space left on device"))
    assert plot.main([str(job)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "No space left on device" in err
    assert sorted(p.name for p in (job / "plots").iterdir()) == sorted(
        [plot.MANIFEST, "cost.png", "cost.svg"]
    )
    assert all(is_whole(p) for p in (job / "plots").glob("*.*g"))


def test_the_plotter_replaces_its_own_files_in_an_out_dir_and_nothing_else(
    tmp_path, template, capsys, fast_savefig
):
    job = copy_job(template, tmp_path / "job")
    figs = tmp_path / "figs"
    figs.mkdir()
    (figs / "notes.md").write_text("mine\n")
    assert plot.main([str(job), "--out", str(figs)]) == 0
    (figs / "summary.md").write_text("stale\n")
    assert plot.main([str(job), "--out", str(figs)]) == 0  # its own files: replaced
    assert (figs / "notes.md").read_text() == "mine\n" and (
        figs / "summary.md"
    ).read_text() != "stale\n"
    assert "summary.md" in (figs / plot.MANIFEST).read_text().splitlines()


def test_ctrl_c_during_the_automatic_plot_is_one_line_and_raised_again(
    tmp_path, template, monkeypatch, caplog
):
    from xorrelu.callbacks import plot_safely

    run = copy_job(template, tmp_path / "run")
    interrupt_the_nth_savefig(monkeypatch, 2, KeyboardInterrupt())
    with caplog.at_level(logging.INFO, logger="xorrelu"), pytest.raises(KeyboardInterrupt):
        plot_safely(run)
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("xorrelu")]
    assert (
        len(lines) == 1
        and "plotting interrupted (training results are saved" in lines[0]
        and "\n" not in lines[0]
    )
    assert sorted(p.name for p in (run / "plots").iterdir()) == [plot.MANIFEST, "cost.png"]
    assert is_whole(run / "plots" / "cost.png")


# --- the command line: warnings and Ctrl-C in a real process --------------------------------------


def plot_process(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "xorrelu.plot", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_sigkilled_job_in_a_sweep_is_one_warning_line_from_the_command_line(tmp_path, template):
    jobs = sweep(tmp_path, template, 2)
    killed(jobs[1])
    out, err = plot_process(str(tmp_path / "sweep")).communicate(timeout=120)
    assert "Traceback" not in err
    assert [line for line in err.splitlines() if line.startswith("WARNING")] == [
        f"WARNING: skipping a job, the others are plotted: {jobs[1]}/metrics.csv is empty: "
        "the job wrote no row (killed or failed before its first flush); "
        "run it again (summary.json says running)"
    ]
    assert "## Jobs not completed" in out and str(jobs[1]) in out


@pytest.fixture(scope="module")
def long_job(tmp_path_factory, template):
    """A job with 60,000 rows (30 replicas x 2000 steps): seconds to plot."""
    job = copy_job(template, tmp_path_factory.mktemp("long") / "job")
    header = (job / "metrics.csv").read_text().splitlines()[0].split(",")
    steps, seeds = np.meshgrid(np.arange(2000), np.arange(30), indexing="ij")
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"step": steps.ravel(), "seed": seeds.ravel()})
    for column in header[2:]:
        frame[column] = rng.uniform(0.01, 0.9, len(frame))
    frame.to_csv(job / "metrics.csv", index=False, columns=header, float_format="%.5g")
    return job


@pytest.mark.parametrize("when", ["after-1s", "while-writing-plots"])
def test_ctrl_c_from_the_command_line_is_130_and_one_line(tmp_path, long_job, when):
    job = copy_job(long_job, tmp_path / "job")
    proc = plot_process(str(job))
    if when == "after-1s":
        time.sleep(1.0)
    else:
        deadline = time.monotonic() + 60
        while (
            not list((job / "plots").glob("*.png"))
            and time.monotonic() < deadline
            and proc.poll() is None
        ):
            time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert err.splitlines() == ["xorrelu-plot: interrupted; plots written so far are whole"]
    written = list((job / "plots").glob("*.*g")) if (job / "plots").is_dir() else []
    assert all(is_whole(p) for p in written) and leftovers(job) == []
    if when == "while-writing-plots":
        assert written and not (job / "plots" / "report.html").exists()  # stopped part-way
