"""Behaviour identity: the current tree against a reference commit, byte for byte.

What it proves: for a fixed set of runs, the xorrelu of this checkout (its working tree, as it is
now, uncommitted changes included; or the commit given with --current) writes the same numbers
as the xorrelu of a reference commit, on this machine:

- every job's metrics.csv is byte-identical;
- every job's summary.json is equal once the keys that measure time or name the code are
  dropped (TIMING_KEYS, CODE_KEYS), and a config key added since the reference is dropped where
  it has the value that does what the reference did (xorrelu.config.ADDED_LATER);
- the current tree still reads what the reference wrote: its plotter draws the reference's job
  dirs (exit 0, no job skipped), and it resumes a checkpoint that the reference left when it was
  stopped part-way, ending in the same metrics.csv as the reference's own resume.

The runs (CONFIGS): the README's canonical sweep, a fused compiled run, a run stopped part-way
by SIGINT and resumed, a prelu run and a parity run. The stop is deterministic: the run is
started under STOP_AT_STEP, which sends SIGINT to the process itself when the console line of
a chosen step is logged, so both trees stop after the same step.

How: the reference commit is exported with `git archive` into a temp dir (nothing is installed;
the repository is not touched; a compiled run may reuse kernels from torch's inductor cache,
which is keyed on the generated graph). Each tree runs with this same interpreter (sys.executable),
with PYTHONPATH and the working directory set to that tree, into fresh output dirs under a temp
root (`hydra.run.dir` / `hydra.sweep.dir`). Everything is removed at the end unless --keep.

    python benchmarks/identity.py --reference 3ffbfeb                 # the working tree
    python benchmarks/identity.py --reference 3ffbfeb --current HEAD  # a commit instead
    python benchmarks/identity.py --reference 3ffbfeb --keep /tmp/identity   # keep every file

Time: the canonical sweep dominates (twice; ~30 s each on 2 idle cores, per the README), so
about 3-4 minutes on an idle machine (an estimate). Measured on a shared 2-core machine at load
average ~6.5: 14 minutes, 285 s of it per canonical sweep. The load average is printed at both
ends.

Prints one line per compared job and per compatibility check; exit 0 when all are identical,
1 on any difference or failed run, 2 when the reference cannot be exported.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent  # the current tree: the checkout this file is in

# summary.json keys that measure time, and keys that name the code or the environment
TIMING_KEYS = {
    "wall_seconds",
    "warmup_seconds",
    "model_steps_per_second",
    "started_at",
    "ended_at",
    "host",
    "pid",
}
CODE_KEYS = {"git_commit", "versions"}

# (name, overrides, sweep?); a name's runs go into <root>/<tree>/<name>/. All but the canonical
# sweep run one thread: on a busy 2-core machine two threads per job are slower, not faster.
SMALL = ["replicas=8", "threads=1", "plot=false"]
CONFIGS = [
    ("canonical", ["activation=sigmoid,relu"], True),  # the README's: 16 seeds x 10000 steps
    ("fused", ["engine=fused", "compile=true", "steps=2000", "replicas=64", "threads=1"], False),
    ("prelu", ["activation=prelu", "steps=1000", *SMALL], False),
    ("parity", ["dataset=parity", "dataset.bits=4", "depth=4", "steps=600", *SMALL], False),
]
# Stopped by SIGINT after step STOP_STEP (a print step), then resumed with xorrelu.resume.
# Adam, so that the optimizer's state has to come back from the checkpoint too.
RESUME_RUN = ["optimizer=adam", "steps=1000", "print_every=250", *SMALL]
STOP_STEP = 500
STOP_EXIT_CODE = 130  # SIGINT, at both commits

# `python -c STOP_AT_STEP STEP key=value ...`: `python -m xorrelu key=value ...`, which sends
# itself SIGINT when the console line of step STEP is logged ("step    1000 | cost ...").
STOP_AT_STEP = """
import logging, os, runpy, signal, sys

stop_at = sys.argv.pop(1)


class StopAt(logging.Handler):
    def emit(self, record):
        if record.getMessage().split()[:2] == ["step", stop_at]:
            os.kill(os.getpid(), signal.SIGINT)


logging.getLogger("xorrelu").addHandler(StopAt())
runpy.run_module("xorrelu", run_name="__main__", alter_sys=True)
"""


@dataclass
class Tree:
    """One xorrelu source tree and where its runs go."""

    name: str  # "reference" or "current"
    src: Path  # the tree's root: xorrelu/ and conf/ are in it
    out: Path  # <root>/<name>


@dataclass
class Row:
    """One line of the table."""

    config: str
    job: str
    csv_bytes: str  # the metrics.csv size, or "-"
    identical: str  # metrics.csv: "yes", "NO", or "-" where there is no CSV to compare
    summary: str  # summary.json: "yes", "no: <the keys that differ>", or what the check found
    ok: bool


def check_row(config: str, job: str, ok: bool, verdict: str) -> Row:
    """A line for a check that compares no CSV: a run's exit code, a plot."""
    return Row(config, job, "-", "-" if ok else "NO", verdict, ok)


# --- the trees ------------------------------------------------------------------------------
def export(commit: str, dest: Path) -> str:
    """`git archive` of `commit` unpacked into dest; the full commit id."""
    full = git("rev-parse", "--verify", f"{commit}^{{commit}}")
    archive = dest.parent / f"{dest.name}.tar"
    git("archive", "--format=tar", f"--output={archive}", full)
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")
    archive.unlink()
    return full


def git(*args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(HERE), *args], capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def describe_current() -> str:
    head = git("rev-parse", "--short", "HEAD")
    changed = git("status", "--porcelain", "--", "xorrelu", "conf").splitlines()
    return f"{HERE} (HEAD {head}, {len(changed)} uncommitted change(s) under xorrelu/ conf/)"


# --- running xorrelu ------------------------------------------------------------------------
def python(tree: Tree, args: list[str]) -> subprocess.CompletedProcess:
    """`python ARGS` with this interpreter, `tree` on the path and as the working directory."""
    env = {**os.environ, "PYTHONPATH": str(tree.src)}
    env.pop("SLURM_RESTART_COUNT", None)  # never taken for a scheduler's requeue
    return subprocess.run(
        [sys.executable, *args], cwd=tree.src, env=env, capture_output=True, text=True
    )


def run(tree: Tree, args: list[str], expect: int = 0) -> Row | None:
    """Run `python ARGS`; None when it exits with `expect`, else a failed row (and the tail of
    its output, printed)."""
    done = python(tree, args)
    if done.returncode == expect:
        return None
    print(f"  {tree.name}: exit {done.returncode}, expected {expect}: python {' '.join(args)}")
    for line in (done.stdout + done.stderr).splitlines()[-15:]:
        print(f"    {line}")
    return check_row("run", f"{tree.name} {args[1]}", False, f"exit {done.returncode}")


def check_imports(tree: Tree) -> None:
    """Refuse to go on if `import xorrelu` would not load this tree's package."""
    code = "import xorrelu, pathlib; print(pathlib.Path(xorrelu.__file__).resolve())"
    found = python(tree, ["-c", code]).stdout.strip()
    if Path(found) != (tree.src / "xorrelu" / "__init__.py").resolve():
        sys.exit(f"identity: the {tree.name} tree imports xorrelu from {found!r}, not {tree.src}")


def run_configs(tree: Tree) -> list[Row]:
    """Every config of CONFIGS, then the stopped-and-resumed run; a row per failed run."""
    failed = []
    for name, overrides, sweep in CONFIGS:
        start = time.perf_counter()
        where = f"hydra.{'sweep' if sweep else 'run'}.dir={tree.out / name}"
        args = ["-m", "xorrelu", *overrides, where] + (["--multirun"] if sweep else [])
        failed.append(run(tree, args))
        print(f"  {tree.name:9} {name:12} {time.perf_counter() - start:5.1f} s")
    start = time.perf_counter()
    failed.append(run_stopped_and_resumed(tree))
    print(f"  {tree.name:9} {'resume':12} {time.perf_counter() - start:5.1f} s")
    return [row for row in failed if row]


def run_stopped_and_resumed(tree: Tree) -> Row | None:
    """RESUME_RUN stopped after STOP_STEP into <out>/resume/job; a copy of it as it was then
    into <out>/stopped/job; then resumed in place."""
    job, stopped = tree.out / "resume" / "job", tree.out / "stopped" / "job"
    stop = ["-c", STOP_AT_STEP, str(STOP_STEP), *RESUME_RUN, f"hydra.run.dir={job}"]
    failed = run(tree, stop, expect=STOP_EXIT_CODE)
    if failed:
        return failed
    shutil.copytree(job, stopped)
    return run(tree, ["-m", "xorrelu.resume", str(job)])


# --- comparing ------------------------------------------------------------------------------
def compare_config(name: str, reference: Path, current: Path) -> list[Row]:
    """A row per job dir (a dir with metrics.csv) found under either output dir."""
    jobs = sorted(
        {p.parent.relative_to(d) for d in (reference, current) for p in d.rglob("metrics.csv")}
    )
    if not jobs:
        return [check_row(name, "-", False, "no job dir in either tree")]
    return [compare_job(name, str(job), reference / job, current / job) for job in jobs]


def compare_job(config: str, job: str, reference: Path, current: Path) -> Row:
    ref_csv, cur_csv = reference / "metrics.csv", current / "metrics.csv"
    if not (ref_csv.is_file() and cur_csv.is_file()):
        missing = "reference" if not ref_csv.is_file() else "current"
        return check_row(config, job, False, f"no metrics.csv in the {missing} tree")
    identical = filecmp.cmp(ref_csv, cur_csv, shallow=False)
    sizes = f"{ref_csv.stat().st_size:,}"
    if not identical:
        sizes += f" / {cur_csv.stat().st_size:,}"
    summary = compare_summaries(reference, current)
    ok = identical and summary == "yes"
    return Row(config, job, sizes, "yes" if identical else "NO", summary, ok)


def compare_summaries(reference: Path, current: Path) -> str:
    """ "yes", or the keys (dotted) whose values differ once timing and code keys are dropped."""
    try:
        ref, cur = (
            comparable(json.loads((d / "summary.json").read_text())) for d in (reference, current)
        )
    except (OSError, ValueError) as error:
        return f"unreadable: {error}"
    for key, as_before in ADDED_LATER.items():  # a key the reference did not have yet
        if key not in ref.get("config", {}) and cur.get("config", {}).get(key) == as_before:
            del cur["config"][key]
    differ = differing_keys(ref, cur)
    return "yes" if not differ else "no: " + ", ".join(differ)


def comparable(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k not in TIMING_KEYS | CODE_KEYS}


# xorrelu.config.ADDED_LATER, as of this script (it may not import)
ADDED_LATER = {"log_first": 0, "regularization": {"name": "none"}}


def differing_keys(a, b, prefix: str = "") -> list[str]:
    """Dotted paths where a and b differ (list items by index: replicas.3.final_cost)."""
    if isinstance(a, dict) and isinstance(b, dict):
        keys = sorted(set(a) | set(b), key=str)
        return [d for k in keys for d in differing_keys(a.get(k), b.get(k), f"{prefix}{k}.")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [
            d
            for i, (x, y) in enumerate(zip(a, b, strict=True))
            for d in differing_keys(x, y, f"{prefix}{i}.")
        ]
    return [] if a == b else [prefix.rstrip(".")]


# --- backward compatibility -----------------------------------------------------------------
def plot_reference_dirs(current: Tree, reference: Tree, root: Path) -> list[Row]:
    """The current plotter on every output dir the reference wrote: exit 0 and no skipped job."""
    rows = []
    for name in [c[0] for c in CONFIGS] + ["resume"]:
        out = root / "plots" / name
        done = python(current, ["-m", "xorrelu.plot", str(reference.out / name), "--out", str(out)])
        warnings = [line for line in done.stderr.splitlines() if "WARNING" in line]
        for line in warnings + (done.stderr.splitlines()[-5:] if done.returncode else []):
            print(f"    plot {name}: {line}")
        verdict = f"exit {done.returncode}" + (f", {len(warnings)} warning(s)" if warnings else "")
        ok = done.returncode == 0 and not warnings
        rows.append(check_row("compat: plot", f"reference {name}", ok, verdict))
    return rows


def resume_reference_checkpoint(current: Tree, reference: Tree, root: Path) -> Row:
    """The current tree resumes a copy of the reference's stopped job; it must end where the
    reference's own resume ended."""
    config, job_name = "compat: resume", "reference checkpoint"
    stopped = reference.out / "stopped" / "job"
    if not stopped.is_dir():
        return check_row(config, job_name, False, "the reference left no stopped job")
    job = root / "resume" / "job"
    shutil.copytree(stopped, job)
    if run(current, ["-m", "xorrelu.resume", str(job)]):
        return check_row(config, job_name, False, "the resume failed")
    return compare_job(config, job_name, reference.out / "resume" / "job", job)


# --- the table ------------------------------------------------------------------------------
def print_table(rows: list[Row]) -> None:
    lines = [("config", "job", "csv bytes", "identical", "summary equal")]
    lines += [(r.config, r.job, r.csv_bytes, r.identical, r.summary) for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(4)]
    print()
    for config, job, csv_bytes, identical, summary in lines:
        print(
            f"{config:{widths[0]}}  {job:{widths[1]}}  {csv_bytes:>{widths[2]}}  "
            f"{identical:{widths[3]}}  {summary}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", required=True, help="the commit to compare with")
    parser.add_argument(
        "--current",
        metavar="COMMIT",
        help="compare this commit instead of the working tree (e.g. HEAD, while it is edited)",
    )
    parser.add_argument("--keep", metavar="DIR", help="work in DIR (new or empty) and keep it")
    args = parser.parse_args(argv)

    if args.keep:
        root = Path(args.keep).resolve()
        root.mkdir(parents=True, exist_ok=True)
        if any(root.iterdir()):
            parser.error(f"--keep {root}: not empty")
    else:
        root = Path(tempfile.mkdtemp(prefix="xorrelu-identity-"))
    started = time.perf_counter()
    print(f"load average {os.getloadavg()[0]:.1f}")
    try:
        return compare(args.reference, args.current, root)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
        kept = f"; kept {root}" if args.keep else ""
        print(
            f"\n{time.perf_counter() - started:.0f} s, load average {os.getloadavg()[0]:.1f}{kept}"
        )


def compare(reference_commit: str, current_commit: str | None, root: Path) -> int:
    reference = Tree("reference", root / "reference-src", root / "reference")
    current = Tree("current", HERE, root / "current")
    try:
        full = export(reference_commit, reference.src)
        print(f"reference: {full[:12]} exported to {reference.src}")
        if current_commit:
            current.src = root / "current-src"
            full = export(current_commit, current.src)
            print(f"current:   {full[:12]} exported to {current.src}")
        else:
            print(f"current:   {describe_current()}")
    except subprocess.CalledProcessError as error:
        print(f"identity: cannot export: {error.stderr.strip()}", file=sys.stderr)
        return 2
    for tree in (reference, current):
        check_imports(tree)

    rows = run_configs(reference) + run_configs(current)  # the failed runs
    for name in [c[0] for c in CONFIGS] + ["stopped", "resume"]:
        rows += compare_config(name, reference.out / name, current.out / name)
    rows += plot_reference_dirs(current, reference, root / "compat")
    rows.append(resume_reference_checkpoint(current, reference, root / "compat"))
    print_table(rows)
    bad = sum(not row.ok for row in rows)
    print(f"\n{'ALL IDENTICAL' if not bad else f'{bad} DIFFERENCE(S) OR FAILURE(S)'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
