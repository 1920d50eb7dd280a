"""Regenerate the README's pictures (docs/*.png) and its sample outputs from real runs.

    python docs/make_docs.py              # 1-2 minutes on 2 cores: the canonical sweep, causes.png
    python docs/make_docs.py --presets outputs/presets   # also the preset sweeps that
                                                         # benchmarks/presets.py ran there

Every run goes through the public CLI (`python -m xorrelu ...`) into a temp dir, and is read
with xorrelu.load_summary and xorrelu.plot. The pictures are copied into docs/; the text goes
into README.md between `<!-- make_docs: NAME -->` and `<!-- /make_docs -->`, and nothing else
in the README changes. Runs are pinned to the CPU with fixed seeds, so the same checkout gives
the same text and the same pictures.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from matplotlib.figure import Figure

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import xorrelu  # noqa: E402
import xorrelu.outcomes  # noqa: E402
from xorrelu import plot  # noqa: E402

README = ROOT / "README.md"
DOCS = ROOT / "docs"
PINNED = ["device=cpu"]  # the same numbers on every machine, GPU or not

# The canonical sweep, as the README's first command runs it.
CANONICAL = ["activation=sigmoid,relu"]
SHOWN_JOB = "activation=relu"  # the job whose printout the README shows
SHOWN_ROWS = 5  # replica rows of its final table

# docs/ name <- the plot file of the canonical sweep
PICTURES = {
    "cost.png": "cost.png",
    "accuracy.png": "accuracy.png",
    "grad_norms.png": "grad_norms.png",
    "grad_profile.png": "grad_profile.png",
    "outcomes.png": "outcomes.png",
    "stuck_units.png": "stuck_units.png",
    "decision_boundary_relu.png": "decision_boundary_activation_relu.png",
}

# The preset sweeps (benchmarks/presets.py runs them at full size): name -> (the README block
# that gets its summary table, or None for a table in docs/NAME.md; its figures copied to docs/)
PRESET_DOCS = {
    "lab10": ("lab10", []),
    "activations": ("activations", []),
    "depth": (None, ["success_heatmap", "solved_rate"]),
    "width": (None, ["solved_rate"]),
    "init": (None, ["success_heatmap"]),
    # the Playground's demonstrations (issue #13): a table in the README each
    "circle_features": (
        "circle_features",
        [
            "decision_boundary_dataset.features_x1_x2",
            "decision_boundary_dataset.features_x1_sq_x2_sq",
        ],
    ),
    "spiral_features": (
        "spiral_features",
        [
            "decision_boundary_dataset.features_x1_x2",
            "decision_boundary_dataset.features_x1_x2_sin_x1_sin_x2",
        ],
    ),
    "noise": ("noise", ["test_accuracy", "solved_rate"]),
    "batch": ("batch", ["test_accuracy"]),
    "l2_overfit": (
        "l2_overfit",
        [
            "solved_rate",
            "decision_boundary_regularization.rate_0.0",
            "decision_boundary_regularization.rate_0.01",
        ],
    ),
}

# docs/causes.png: runs to take one replica of each cause from (overrides, causes it has)
CAUSE_RUNS = [
    (["activation=relu", "steps=2000"], ["solved", "dead", "plateau"]),
    (["activation=sigmoid", "steps=2000"], ["vanished"]),
    (["activation=tanh", "steps=50"], ["slow", "other"]),
    (["activation=elu", "optimizer.lr=10", "depth=3", "steps=50", "replicas=8"], ["diverged"]),
    (
        [
            "dataset=circle",
            "dataset.noise=30",
            "dataset.test_fraction=0.9",
            "optimizer=adam",
            "depth=3",
            "width=8",
            "steps=1000",
        ],
        ["overfit"],
    ),
]
CAUSES = ["solved", *xorrelu.outcomes.CAUSES]


# --- running xorrelu --------------------------------------------------------------------------


def xorrelu_cli(*args: str) -> str:
    """`python -m xorrelu ARGS` with this checkout's xorrelu; returns what it printed."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, "-m", "xorrelu", *args],
        cwd=tempfile.gettempdir(),
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        sys.exit(f"make_docs: python -m xorrelu {' '.join(args)} failed:\n{done.stderr}")
    return done.stdout


def run_sweep(overrides: list[str], sweep_dir: Path, plots: bool = True) -> str:
    """One --multirun into sweep_dir (its plots in sweep_dir/plots); returns its printout."""
    return xorrelu_cli(
        *overrides,
        *PINNED,
        f"plot={str(plots).lower()}",
        f"hydra.sweep.dir={sweep_dir}",
        "hydra/launcher=basic",  # each job's lines on the console (the default prints one a job)
        "--multirun",
    )


# --- README text ------------------------------------------------------------------------------


def job_printout(printout: str, job: str) -> list[str]:
    """The lines that the sweep's job with override `job` printed, without Hydra's own lines."""
    lines = printout.splitlines()
    launch = re.compile(r"\]\[HYDRA\] \t#\d+ : (.*)")  # [...][HYDRA] \t#1 : activation=relu ...
    start = 1 + next(
        i for i, line in enumerate(lines) if (m := launch.search(line)) and job in m[1].split()
    )
    end = next((i for i in range(start, len(lines)) if "][HYDRA]" in lines[i]), len(lines))
    return lines[start:end]


def excerpt(lines: list[str]) -> list[str]:
    """The first, second and last step lines, the table's header and first rows, the causes."""
    steps = [line for line in lines if line.startswith("step ")]
    table = [line for line in lines if line.startswith("  seed") or re.match(r" +\d+ ", line)]
    causes = [line for line in lines if line.startswith("unsolved:")]
    return [*steps[:2], "...", steps[-1], *table[: SHOWN_ROWS + 1], "...", *causes]


def outcome_sentence(sweep_dir: Path, job: str) -> str:
    """How many of the job's seeds are solved, and which seeds each cause took."""
    replicas = xorrelu.load_summary(sweep_dir)
    key, value = job.split("=")
    replicas = replicas[replicas[key] == value]
    unsolved = replicas[~replicas.solved]
    by_cause = [
        f"`{cause}` {len(seeds)} (seeds {', '.join(str(s) for s in seeds)})"
        for cause in CAUSES
        if len(seeds := unsolved.seed[unsolved.cause == cause].tolist())
    ]
    text = f"{replicas.solved.sum()} of {len(replicas)} seeds solve XOR."
    text += f" Unsolved, by cause: {', '.join(by_cause)}." if by_cause else ""
    return textwrap.fill(text, width=100)


def canonical_text(printout: str, sweep_dir: Path) -> str:
    """README block `canonical`: the shown job's printout, shortened, and its outcome."""
    lines = excerpt(job_printout(printout, SHOWN_JOB))
    return "```\n" + "\n".join(lines) + "\n```\n\n" + outcome_sentence(sweep_dir, SHOWN_JOB)


def summary_table(sweep_dir: Path) -> str:
    """The table of the sweep's summary.md (without its title line)."""
    text = plot.summary_markdown(plot.collect([sweep_dir]))
    return "\n".join(line for line in text.splitlines() if line.startswith("|"))


def replace_block(text: str, name: str, content: str) -> str:
    """`text` with what lies between the markers of block `name` replaced by `content`."""
    start, end = f"<!-- make_docs: {name} -->\n", "<!-- /make_docs -->"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    if len(pattern.findall(text)) != 1:
        sys.exit(f"make_docs: README.md needs exactly one {start.strip()} ... {end} block")
    return pattern.sub(lambda _: start + content.rstrip("\n") + "\n" + end, text)


def read_block(text: str, name: str) -> str:
    """What lies between the markers of block `name` (for the tests)."""
    start, end = f"<!-- make_docs: {name} -->\n", "\n<!-- /make_docs -->"
    return text.split(start, 1)[1].split(end, 1)[0]


# --- pictures ---------------------------------------------------------------------------------


def copy_pictures(sweep_dir: Path) -> None:
    for name, source in PICTURES.items():
        shutil.copyfile(sweep_dir / "plots" / source, DOCS / name)


def one_per_cause(tmp: Path) -> dict:
    """cause -> (results, job, seed, overrides): the first replica of each cause in CAUSE_RUNS."""
    found = {}
    for i, (overrides, wanted) in enumerate(CAUSE_RUNS):
        job = tmp / f"causes{i}"
        xorrelu_cli(*overrides, *PINNED, "plot=false", f"hydra.run.dir={job}")
        results = plot.collect([job])
        for cause in wanted:
            rows = results.replicas[results.replicas.cause.fillna("solved") == cause]
            if len(rows):
                found[cause] = (results, rows.job.iloc[0], int(rows.seed.iloc[0]), overrides)
    return found


def draw_causes(tmp: Path) -> None:
    """docs/causes.png: one decision boundary per cause, in CAUSES order."""
    found = one_per_cause(tmp)
    if missing := [cause for cause in CAUSES if cause not in found]:
        sys.exit(f"make_docs: no replica of {', '.join(missing)} in CAUSE_RUNS; change the runs")
    figure = Figure(figsize=(15, 3.0), layout="constrained")
    for ax, cause in zip(figure.subplots(1, len(CAUSES)), CAUSES, strict=True):
        results, job, seed, overrides = found[cause]
        plot.plot_decision_boundary(results, job, seed, ax=ax)
        ax.set_title(f"{cause}\n{ax.get_title()}", fontsize="small")
        ax.set_xlabel(textwrap.fill(" ".join(overrides), 30), fontsize="x-small")
    figure.savefig(DOCS / "causes.png", dpi=90)


# --- text from the definitions ----------------------------------------------------------------


def causes_table() -> str:
    """The Failure diagnosis criteria, with the numbers of xorrelu.outcomes (their one home)."""
    from xorrelu import outcomes as o

    plateaus = ", ".join(f"{c:.3f}" for c in o.PLATEAU_COSTS)
    rows = {
        "diverged": "the cost became NaN or inf at some step",
        "dead": "at the end, some hidden layer has every unit stuck (`stuck_frac_i = 1`): the "
        "output no longer depends on the input. A net dead at initialization has 0/0 gradient "
        "ratios: that is dead, not vanished",
        "vanished": f"at step 0, `grad_norm_1 / grad_norm_L < {o.VANISHED_RATIO:g}`, and the "
        f"cost never got below the best constant output's (by more than {o.LN2_BAND:g}; ln 2 "
        "for balanced labels): the net never learned more than a constant",
        "plateau": f"the final cost is within {o.PLATEAU_BAND:g} of a collapsed-network value "
        "while the units still move: the best constant output's, the entropy of the training "
        f"labels (0.693 when balanced); for the 4 XOR points also {plateaus} (all points "
        "merged, three merged, two pairs merged)",
        "overfit": "with a test split: the final training accuracy reaches the dataset's "
        "solved accuracy, the held-out accuracy does not",
        "slow": f"the final cost is more than {o.SLOW_DROP:.0%} below the cost at "
        f"{o.SLOW_AT:.0%} of the run: still falling, more steps would likely solve it",
        "other": "none of the above",
    }
    assert list(rows) == o.CAUSES, "a cause without its line here"
    lines = ["| cause | criterion |", "|---|---|"]
    lines += [f"| `{cause}` | {text} |" for cause, text in rows.items()]
    solved = (
        "A replica is **solved** at a step by its dataset's rule: for xor and parity, accuracy "
        f"1.0 and cost below {o.SOLVED_COST:g}; for the Playground's sets, held-out accuracy "
        "≥ 0.9 (Definitions). A unit is **stuck** when "
        f"|f'(z)| < {o.STUCK_SLOPE:.0%} of the activation's peak slope at every data point."
    )
    return "\n".join([*lines, "", solved]) + "\n"


# --- all of it --------------------------------------------------------------------------------


def document_presets(presets: Path, readme: str) -> str:
    """Each preset's summary table (a README block, or docs/NAME.md) and figures (docs/NAME_*.png)
    from the sweeps in `presets`; returns the README."""
    for name, (block, figures) in PRESET_DOCS.items():
        sweep = presets / name
        if not sweep.is_dir():
            sys.exit(f"make_docs: no {sweep}; run: python benchmarks/presets.py --presets {name}")
        table = summary_table(sweep)
        if block:
            readme = replace_block(readme, block, table)
        else:
            title = plot.collect([sweep]).title
            (DOCS / f"{name}.md").write_text(
                f"# experiment={name}\n\n{title}. Written by `docs/make_docs.py --presets` from "
                "the full-size sweep of `benchmarks/presets.py`.\n\n" + table + "\n"
            )
        for figure in figures:
            shutil.copyfile(sweep / "plots" / f"{figure}.png", DOCS / f"{name}_{figure}.png")
    return readme


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--presets",
        metavar="DIR",
        help="also document the preset sweeps that benchmarks/presets.py ran in DIR",
    )
    args = parser.parse_args(argv)
    readme = replace_block(README.read_text(), "causes", causes_table())
    with tempfile.TemporaryDirectory(prefix="make_docs-") as tmp:
        tmp = Path(tmp)
        printout = run_sweep(CANONICAL, tmp / "canonical")
        readme = replace_block(readme, "canonical", canonical_text(printout, tmp / "canonical"))
        readme = replace_block(readme, "summary", summary_table(tmp / "canonical"))
        copy_pictures(tmp / "canonical")
        draw_causes(tmp)
    if args.presets:
        readme = document_presets(Path(args.presets), readme)
    README.write_text(readme)
    print("wrote README.md and docs/" + ", docs/".join([*PICTURES, "causes.png"]))


if __name__ == "__main__":
    main()
