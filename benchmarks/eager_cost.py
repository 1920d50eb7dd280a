"""compile=auto's cost model (xorrelu.engines: EAGER_*, COMPILE_*) against measured runs.

    python benchmarks/eager_cost.py             # ~5 minutes on 2 busy cores
    python benchmarks/eager_cost.py --no-write

compile=auto compiles when the fused step's compile is expected to take less than half the time
the run would take uncompiled (`compile_estimate`). This measures both sides on this machine,
at 4 points (the lesson) and at hundreds (the Playground datasets), each a `python -m xorrelu`
process of its own with threads=0 (every core), as a user runs it, or --threads N (on a
machine busy with other work, one thread measures more steadily):

- eager step ms: one step of the autograd engine (engine=autograd compile=false), from
  summary.json's `model_steps_per_second` (steps after the first), against the model's
  per-step estimate;
- compile s: summary.json's `warmup_seconds` of the fused engine compiled with a cold inductor
  cache (set-up and the first step, which carries the compile), against the model's.

The result is written to benchmarks/eager_cost.md and printed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from machine import cpu_name  # benchmarks/: this dir is on sys.path
from playground_speed import load, run

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
RESULTS = HERE / "eager_cost.md"

LESSON = ["depth=10", "width=5"]  # the default dataset: XOR's 4 points
PLAYGROUND = ["dataset=circle", "depth=4", "width=8"]
# (label, overrides, steps) of the eager runs
EAGER = [
    ("xor (4 points), depth 10, width 5, 100 replicas", [*LESSON, "replicas=100"], 2000),
    ("xor (4 points), depth 10, width 5, 1,000 replicas", [*LESSON, "replicas=1000"], 1000),
    ("xor (4 points), depth 10, width 5, 10,000 replicas", [*LESSON, "replicas=10000"], 200),
    (
        "xor (4 points), depth 4, width 8, 1,000 replicas",
        ["depth=4", "width=8", "replicas=1000"],
        1000,
    ),
    (
        "circle, 500 train, depth 4, width 8, 100 replicas",
        [*PLAYGROUND, "dataset.test_fraction=0", "replicas=100"],
        500,
    ),
    (
        "circle, 500 train, depth 4, width 8, 1,000 replicas",
        [*PLAYGROUND, "dataset.test_fraction=0", "replicas=1000"],
        100,
    ),
    (
        "circle, 250 train + 250 held out, depth 4, width 8, 1,000 replicas",
        [*PLAYGROUND, "replicas=1000"],
        100,
    ),
    (
        "parity, 9 bits (512 points), depth 4, width 8, 1,000 replicas",
        ["dataset=parity", "dataset.bits=9", "depth=4", "width=8", "replicas=1000"],
        100,
    ),
]
# (label, overrides) of the compiled runs (cold cache, 20 steps)
COMPILED = [
    ("xor (4 points), depth 10, width 5, 100 replicas", [*LESSON, "replicas=100"]),
    (
        "circle, 500 train, depth 4, width 8, 1,000 replicas",
        [*PLAYGROUND, "dataset.test_fraction=0", "replicas=1000"],
    ),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=0, help="0: every core (the default)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()

    import torch

    from xorrelu.engines import compile_estimate
    from xorrelu.jobdir import compose

    def estimate(overrides: list[str], steps: int) -> tuple[float, float]:
        """(compile s, eager s a step) of the cost model."""
        compile_s, eager_s = compile_estimate(compose([*overrides, f"steps={steps}"]))
        return compile_s, eager_s / steps

    started, started_load = time.strftime("%Y-%m-%d %H:%M"), load()
    lines = [
        "# compile=auto's cost model against measured runs (written by `python "
        "benchmarks/eager_cost.py`)",
        "",
        f"Each run a `python -m xorrelu` process of its own, threads={args.threads}"
        + (" (every core)" if args.threads == 0 else "")
        + "; eager: "
        "engine=autograd compile=false, a step's time from `model_steps_per_second`; compile: "
        "engine=fused compile=true with a cold inductor cache, `warmup_seconds`. See the "
        "script's docstring.",
        "",
        "| config | eager step ms, measured | model | model / measured |",
        "|---|---:|---:|---:|",
    ]
    for label, overrides, steps in EAGER:
        engine = ["engine=autograd", "compile=false", f"threads={args.threads}"]
        summary = run([*overrides, *engine], steps, 10)
        replicas = len(summary["replicas"])
        measured = replicas / summary["model_steps_per_second"]
        model = estimate(overrides, steps)[1]
        lines.append(
            f"| {label} | {measured * 1e3:.2f} | {model * 1e3:.2f} | {model / measured:.2f} |"
        )
        print(lines[-1], f"(load average {load()})", flush=True)
    lines += [
        "",
        "| config | compile s, measured | model | model / measured |",
        "|---|---:|---:|---:|",
    ]
    for label, overrides in COMPILED:
        engine = ["engine=fused", "compile=true", f"threads={args.threads}"]
        summary = run([*overrides, *engine], 20, 10)
        measured, model = summary["warmup_seconds"], estimate(overrides, 20)[0]
        lines.append(f"| {label} | {measured:.1f} | {model:.1f} | {model / measured:.2f} |")
        print(lines[-1], f"(load average {load()})", flush=True)
    lines += [
        "",
        f"Machine: {cpu_name()}, {os.cpu_count()} cores, shared with other work (load average "
        f"{started_load} at the start, {load()} at the end); torch {torch.__version__}; "
        f"{started}.",
        "",
    ]
    print("\n".join(lines))
    if not args.no_write:
        RESULTS.write_text("\n".join(lines))
        print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
