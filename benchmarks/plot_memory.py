"""Peak memory and wall time of `python -m xorrelu.plot` on a synthetic sweep (issue #11).

    python benchmarks/plot_memory.py --jobs 60 --replicas 100 --steps 10000   # 60 x 1M rows, ~9 GB
    python benchmarks/plot_memory.py --jobs 4 --replicas 100 --steps 1000 --no-record
    python benchmarks/plot_memory.py --dir /scratch/pm --keep --curves   # then: --reuse --no-curves

One small real job (the CLI, `depth` as asked, `replicas` R, 20 steps) gives the files a job dir
holds: summary.json, .hydra/, weights.pt. Each synthetic job copies them with its own seed
(config and summary say seed = job x R, the replicas' seeds follow, weights.pt names them) and
an activation taken in turn from sigmoid, tanh, relu (so the jobs form 3 groups of pooled
seeds), and gets a metrics.csv of R replicas x S steps with every column a real one has, written
by pyarrow (values: falling costs, accuracies in quarters, positive gradient norms, stuck
fractions in fifths). With --curves each job also gets the curves.csv training would write
(xorrelu.metrics.write_curves over its metrics.csv, which a test holds equal to the streamed
one), and the plotter reads that instead; --reuse --no-curves removes them again, to time
metrics.csv alone. Then the plotter runs in a subprocess over the sweep; its wall time and peak
RSS (os.wait4's ru_maxrss) are printed, and written into benchmarks/results.md between the
`plot_memory` markers unless --no-record.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import torch
from machine import cpu_name  # benchmarks/machine.py: this dir is on sys.path

from xorrelu.metrics import curves_steps, write_curves

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
ACTIVATIONS = ["sigmoid", "tanh", "relu"]
BEGIN, END = "<!-- plot_memory -->", "<!-- /plot_memory -->"


def template_job(work: Path, replicas: int, depth: int) -> Path:
    """One real job of the CLI: the summary, config and weights every synthetic job copies."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run(
        [sys.executable, "-m", "xorrelu", f"depth={depth}", f"replicas={replicas}", "steps=20"]
        + ["plot=false", "print_every=1000"],
        cwd=work,
        env=env,
        check=True,
        capture_output=True,
    )
    (job,) = (work / "outputs" / "runs").glob("*/*")
    return job


def metrics_table(rng, seeds: np.ndarray, steps: int, depth: int, width: int) -> pa.Table:
    """R x S rows ordered as a job writes them (step, then seed), every column a real one has."""
    r = len(seeds)
    step = np.repeat(np.arange(steps, dtype=np.int64), r)
    seed = np.tile(seeds.astype(np.int64), steps)
    rate = np.tile(rng.uniform(1e-4, 5e-3, r), steps)
    floor = np.tile(rng.choice([1e-4, 0.347, 0.477, 0.693], r), steps)
    cost = (floor + (0.7 - floor) * np.exp(-rate * step)).astype(np.float32)
    columns = {
        "step": step,
        "seed": seed,
        "cost": cost,
        "accuracy": np.where(cost < 0.1, 1.0, rng.integers(1, 4, len(step)) / 4).astype(np.float32),
    }
    for layer in range(1, depth + 2):
        columns[f"grad_norm_{layer}"] = (
            rng.uniform(0.5, 2, len(step)) * 10.0 ** (layer - depth - 2)
        ).astype(np.float32)
    for layer in range(1, depth + 1):
        columns[f"stuck_frac_{layer}"] = (rng.integers(0, width + 1, len(step)) / width).astype(
            np.float32
        )
    return pa.table(columns)


def synthesize(
    sweep: Path, template: Path, jobs: int, replicas: int, steps: int, curves: bool = False
) -> int:
    """`jobs` job dirs below `sweep` (with `curves`, each with its curves.csv); returns the bytes
    of metrics.csv written."""
    summary = json.loads((template / "summary.json").read_text())
    config_yaml = (template / ".hydra" / "config.yaml").read_text()
    weights = torch.load(template / "weights.pt", weights_only=True)
    depth, width = summary["config"]["depth"], summary["config"]["width"]
    rng = np.random.default_rng(0)
    written = 0
    for i in range(jobs):
        job = sweep / str(i)
        (job / ".hydra").mkdir(parents=True)
        seed0, activation = i * replicas, ACTIVATIONS[i % len(ACTIVATIONS)]
        seeds = np.arange(seed0, seed0 + replicas)
        table = metrics_table(rng, seeds, steps, depth, width)
        pacsv.write_csv(table, job / "metrics.csv")
        written += (job / "metrics.csv").stat().st_size
        last = {c: table.column(c).to_numpy()[-replicas:] for c in ("cost", "accuracy")}
        config = {**summary["config"], "seed": int(seed0), "steps": steps - 1}
        config["activation"] = {"name": activation}
        kept = curves_steps(config["steps"], config["log_every"], config.get("log_first", 0))
        if curves and kept is not None:
            write_curves(job / "metrics.csv", job / "curves.csv", kept)
        solved = (last["accuracy"] == 1) & (last["cost"] < 0.1)
        job_summary = {
            **summary,
            "config": config,
            "last_step": steps - 1,
            "replicas": [
                {
                    "seed": int(seed),
                    "final_cost": float(c),
                    "final_accuracy": float(a),
                    "solved": bool(s),
                    "first_step_solved": 500 if s else None,
                    "diverged": False,
                    "cause": None if s else "plateau",
                    "hypothesis": [0.5, 0.5, 0.5, 0.5],
                }
                for seed, c, a, s in zip(seeds, last["cost"], last["accuracy"], solved, strict=True)
            ],
        }
        (job / "summary.json").write_text(json.dumps(job_summary, indent=2))
        text = config_yaml.replace("seed: 0\n", f"seed: {seed0}\n")
        text = text.replace(f"steps: {summary['config']['steps']}\n", f"steps: {steps - 1}\n")
        text = text.replace(
            f"name: {summary['config']['activation']['name']}\n", f"name: {activation}\n", 1
        )
        (job / ".hydra" / "config.yaml").write_text(text)
        torch.save({**weights, "seeds": seeds.tolist()}, job / "weights.pt")
    return written


def run_plotter(sweep: Path, out: Path, code: Path = ROOT) -> tuple[float, float, int]:
    """(wall seconds, peak RSS in MiB, exit status) of `python -m xorrelu.plot SWEEP --out OUT`
    with the xorrelu of the checkout `code`."""
    env = {**os.environ, "PYTHONPATH": str(code), "MPLBACKEND": "Agg"}
    start = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "xorrelu.plot", str(sweep), "--out", str(out)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace")
    if proc.returncode:
        print(err, file=sys.stderr)
    return wall, usage.ru_maxrss / 1024, proc.returncode  # ru_maxrss: KiB on Linux


def record(line: str) -> None:
    """Add a row to the plot-memory table in benchmarks/results.md (kept between its markers)."""
    path = HERE / "results.md"
    text = path.read_text() if path.exists() else ""
    header = (
        "| jobs × replicas × steps | rows | metrics.csv | read from | wall (s) | peak RSS (MiB) | "
        "plotter | machine |\n|---|---:|---:|---|---:|---:|---|---|\n"
    )
    if BEGIN not in text:
        text = text.rstrip("\n") + (
            f"\n\n## Plotter memory (written by `python benchmarks/plot_memory.py`)\n\n"
            f"{BEGIN}\n{header}{END}\n"
        )
    head, rest = text.split(BEGIN, 1)
    body, tail = rest.split(END, 1)
    path.write_text(f"{head}{BEGIN}{body}{line}\n{END}{tail}")


def machine() -> str:
    cpu = cpu_name()
    return f"{cpu}, {os.cpu_count()} cores"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=60)
    parser.add_argument("--replicas", type=int, default=100)
    parser.add_argument("--steps", type=int, default=10000)
    parser.add_argument("--depth", type=int, default=10)
    parser.add_argument("--dir", help="where to put the sweep (default: a temporary dir)")
    parser.add_argument("--keep", action="store_true", help="keep the sweep afterwards")
    parser.add_argument("--reuse", action="store_true", help="plot the sweep in --dir as it is")
    parser.add_argument("--code", default=str(ROOT), help="checkout whose plotter runs")
    parser.add_argument("--label", default="this checkout", help="the plotter column's text")
    parser.add_argument("--no-record", action="store_true", help="do not write results.md")
    parser.add_argument("--curves", action="store_true", help="give each job its curves.csv")
    parser.add_argument(
        "--no-curves", action="store_true", help="with --reuse: remove the jobs' curves.csv"
    )
    args = parser.parse_args()
    work = Path(args.dir or tempfile.mkdtemp(prefix="plot_memory-"))
    sweep = work / "sweep"
    try:
        if not args.reuse:
            if sweep.exists():
                shutil.rmtree(sweep)
            work.mkdir(parents=True, exist_ok=True)
            template = template_job(work, args.replicas, args.depth)
            start = time.monotonic()
            size = synthesize(sweep, template, args.jobs, args.replicas, args.steps, args.curves)
            print(
                f"synthesized {args.jobs} jobs, {size / 2**30:.2f} GiB of metrics.csv "
                f"in {time.monotonic() - start:.0f} s",
                flush=True,
            )
        if args.no_curves:
            for path in sweep.glob("*/curves.csv"):
                path.unlink()
        size = sum(p.stat().st_size for p in sweep.glob("*/metrics.csv"))
        read = "curves.csv" if any(sweep.glob("*/curves.csv")) else "metrics.csv"
        shutil.rmtree(work / "plots", ignore_errors=True)
        wall, rss, code = run_plotter(sweep, work / "plots", Path(args.code))
        rows = args.jobs * args.replicas * args.steps
        line = (
            f"| {args.jobs} × {args.replicas} × {args.steps} | {rows:,} | "
            f"{size / 2**30:.2f} GiB | {read} | {wall:.0f} | {rss:,.0f} | {args.label} | "
            f"{machine()} |"
        )
        print(line if code == 0 else f"the plotter failed (exit {code})")
        if code == 0 and not args.no_record:
            record(line)
        return code
    finally:
        if not args.keep and not args.dir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
