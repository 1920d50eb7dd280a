"""Issue #13's speed check: the fused engine against the autograd engine on a Playground dataset.

    python benchmarks/playground_speed.py                 # ~10 minutes on 2 busy cores
    python benchmarks/playground_speed.py --steps 100 --no-write

The issue asks: "at 500 points, depth 4, width 8, 1,000 replicas, the fused engine compiles in
<= 30 s here and runs >= 2x the autograd engine at the same config and cadence". For
`dataset=circle depth=4 width=8 replicas=1000`, at the dataset's default test_fraction 0.5
(250 training points, and 250 held-out points measured, forward only, at every step) and at
test_fraction 0 (all 500 points trained on), this runs `engine=autograd compile=false` and
`engine=fused compile=true` with the same steps and cadence (log_every=10), and reports:

- compile s: summary.json's `warmup_seconds`, the job's set-up and its first step, which
  carries torch.compile's whole work (0-1 s for autograd, which compiles nothing);
- model-steps/s: summary.json's `model_steps_per_second`, the steps after the first one;
- point-steps/s: model-steps/s x training points. The held-out points' forward pass, which both
  engines run at every step, is work on top of it and is not counted;
- fused/autograd: the ratio of the two engines' model-steps/s in the same config;
- |final cost difference|: the largest difference between the engines' final training cost
  of a replica (summary.json), a check that they trained the same nets.

Every run is `python -m xorrelu ... plot=false hydra.run.dir=<temp dir>` in a process of its
own, with a cold compile cache (TORCHINDUCTOR_CACHE_DIR: a new empty temp dir, removed
afterwards) and the default threads=0 (PyTorch's default: every core), as a user runs it; on a
machine busy with other work, --threads 1 measures more steadily (two threads that wait for each
other at every loop slow down many times when another process holds one of the cores). The
engines alternate within a config, so a change in the machine's load falls on both; with
--repeats N the table holds the median (and for speed the best run too). The result is written
to benchmarks/playground_speed.md and printed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from identity import git  # benchmarks/: this dir is on sys.path
from machine import cpu_name

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "playground_speed.md"

NET = ["dataset=circle", "depth=4", "width=8", "replicas=1000"]
# (label, overrides, training points)
CONFIGS = [
    ("circle, test_fraction 0.5: 250 train + 250 held out", [], 250),
    ("circle, test_fraction 0: 500 train", ["dataset.test_fraction=0"], 500),
]
ENGINES = {
    "autograd": ["engine=autograd", "compile=false"],
    "fused": ["engine=fused", "compile=true"],
}
# the bar
MAX_COMPILE_S, MIN_RATIO = 30.0, 2.0


def run(overrides: list[str], steps: int, log_every: int) -> dict:
    """One `python -m xorrelu OVERRIDES` job with a cold inductor cache; its summary.json."""
    tmp = Path(tempfile.mkdtemp(prefix="playground-speed-"))
    try:
        env = {
            **os.environ,
            "TORCHINDUCTOR_CACHE_DIR": str(tmp / "inductor"),
            "PYTHONPATH": str(ROOT),
        }
        args = [
            *overrides,
            f"steps={steps}",
            f"log_every={log_every}",
            f"print_every={steps}",
            "plot=false",
            f"hydra.run.dir={tmp / 'job'}",
        ]
        proc = subprocess.run(
            [sys.executable, "-m", "xorrelu", *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"xorrelu {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
        return json.loads((tmp / "job" / "summary.json").read_text())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="0: every core (the default)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()

    import torch

    head = git("rev-parse", "--short", "HEAD")
    dirty = bool(git("status", "--porcelain", "--", "xorrelu", "conf"))
    commit = head + (" + uncommitted changes" if dirty else "")
    started, started_load = time.strftime("%Y-%m-%d %H:%M"), load()
    print(f"load average at start: {started_load}", flush=True)
    rows, runs = [], []
    for label, overrides, points in CONFIGS:
        results: dict[str, list[dict]] = {name: [] for name in ENGINES}
        for repeat in range(args.repeats):
            for name, engine in ENGINES.items():
                summary = run(
                    [*NET, *overrides, *engine, f"threads={args.threads}"],
                    args.steps,
                    args.log_every,
                )
                assert summary["engine"] == name, summary["engine"]
                assert summary["compiled"] == (name == "fused"), summary["compiled"]
                results[name].append(summary)
                runs.append(
                    f"{label} | {name} #{repeat + 1}: compile {summary['warmup_seconds']:.1f} s,"
                    f" {summary['model_steps_per_second']:,.0f} model-steps/s, wall"
                    f" {summary['wall_seconds']:.1f} s, {summary['threads']} thread(s)"
                    f" (load average {load()})"
                )
                print(runs[-1], flush=True)
        medians = {
            name: {
                "compile": statistics.median(s["warmup_seconds"] for s in rs),
                "speed": statistics.median(s["model_steps_per_second"] for s in rs),
                "best": max(s["model_steps_per_second"] for s in rs),
                "threads": rs[0]["threads"],
            }
            for name, rs in results.items()
        }
        costs = {name: [r["final_cost"] for r in rs[0]["replicas"]] for name, rs in results.items()}
        difference = max(abs(a - b) for a, b in zip(*costs.values(), strict=True))
        rows.append((label, points, medians, difference))
    ended_load = load()
    print(f"load average at end: {ended_load}", flush=True)

    lines = [
        "# Playground speed: fused against autograd (written by `python "
        "benchmarks/playground_speed.py`)",
        "",
        f"`{' '.join(NET)}`, steps={args.steps}, log_every={args.log_every}, each engine with "
        "the same config and cadence, each run a `python -m xorrelu` process of its own with a "
        f"cold inductor cache and threads={args.threads}"
        + (" (every core)" if args.threads == 0 else "")
        + ". compile s: `warmup_seconds` (set-up and "
        "the first step, which carries the compile); model-steps/s: the steps after the first; "
        "point-steps/s: model-steps/s x **training** points (the held-out points' forward pass, "
        "which both engines run at every step, is not counted). "
        f"{args.repeats} run(s) per engine and config, alternating: the median"
        + (", and the best run's speed" if args.repeats > 1 else "")
        + ". See the script's docstring.",
        "",
        f"Machine: {cpu_name()}, {os.cpu_count()} cores, shared with other work (load average "
        f"{started_load} at the start, {ended_load} at the end); torch {torch.__version__}; "
        f"commit {commit}; {started}.",
        "",
        "| config | engine | threads | compile s | model-steps/s | point-steps/s "
        "| fused/autograd | max abs final cost difference |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    verdicts = []
    for label, points, medians, difference in rows:
        ratio = medians["fused"]["speed"] / medians["autograd"]["speed"]
        for name, m in medians.items():
            best = f" (best {m['best']:,.0f})" if args.repeats > 1 else ""
            lines.append(
                f"| {label} | {name}{', compiled' if name == 'fused' else ''} | {m['threads']} "
                f"| {m['compile']:.1f} | {m['speed']:,.0f}{best} | {m['speed'] * points:,.0f} "
                f"| {f'**{ratio:.2f}**' if name == 'fused' else ''} "
                f"| {f'{difference:.1e}' if name == 'fused' else ''} |"
            )
        compile_s = medians["fused"]["compile"]
        ok = compile_s <= MAX_COMPILE_S and ratio >= MIN_RATIO
        verdicts.append(
            f"- {label}: fused compiles in {compile_s:.1f} s (bar: <= {MAX_COMPILE_S:.0f} s) and "
            f"runs {ratio:.2f}x autograd (bar: >= {MIN_RATIO:.0f}x): "
            + ("**meets the bar**" if ok else "**misses the bar**")
        )
    lines += ["", "Issue #13's bar:", "", *verdicts]
    lines += ["", "<details><summary>Every run, in order</summary>", "", "```", *runs, "```"]
    lines += ["", "</details>", ""]
    print("\n".join(lines))
    if not args.no_write:
        RESULTS.write_text("\n".join(lines))
        print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
