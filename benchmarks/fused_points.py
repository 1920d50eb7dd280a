"""Compile time and steady speed of the compiled fused engine against the number of points, for
this tree and a reference commit, measured back to back.

    python benchmarks/fused_points.py --reference main          # ~30-40 minutes on 2 busy cores
    python benchmarks/fused_points.py --reference main --repeats 1 --only lesson

Why: the fused step used to add its sums over data points term by term, so its compiled graph,
and torch.compile's time, grew with the points (issue #11). This measures, for each CONFIGS row:

- compile s: `warmup_seconds` of summary.json, the job's set-up and its first step, which
  carries torch.compile's whole work (tracing, inductor, the C++ compiler);
- model-steps/s: `model_steps_per_second`, the steps after the first one.

Every measurement is one xorrelu.train.train in a process of its own, on one thread, with a cold
compile cache: TORCHINDUCTOR_CACHE_DIR is a new empty temp dir for each (removed afterwards), so
no kernel or graph is reused between trees, configs or repeats. The reference commit is exported
with `git archive` into a temp dir and imported from there (PYTHONPATH); the current tree is
this checkout's working tree. The trees alternate (reference, current, reference, ...) for each
config, so a change in the machine's load falls on both. The table holds the median of the
repeats, and for speed also the best run (on a machine shared with other work, the run least
disturbed). Compare the two trees within a row, not rows across runs.

The table replaces the section between this script's markers in benchmarks/results.md (the rest
of that file is throughput.py's).
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

from identity import export, git  # benchmarks/: this dir is on sys.path
from machine import cpu_name

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results.md"
BEGIN, END = "<!-- begin fused_points.py -->", "<!-- end fused_points.py -->"

# (label, group, overrides, steps). The parity rows are issue #11's net (depth 4, width 8, 16
# replicas); the lesson's rows are the default net at the replica counts of throughput.py.
PARITY = ["dataset=parity", "depth=4", "width=8", "replicas=16"]
CONFIGS = [
    ("parity, 2 bits (4 points), 16 replicas", "parity", [*PARITY, "dataset.bits=2"], 3000),
    ("parity, 4 bits (16 points), 16 replicas", "parity", [*PARITY, "dataset.bits=4"], 3000),
    ("parity, 6 bits (64 points), 16 replicas", "parity", [*PARITY, "dataset.bits=6"], 3000),
    ("lesson (xor, depth 10, width 5), 100 replicas", "lesson", ["replicas=100"], 20000),
    ("lesson (xor, depth 10, width 5), 10000 replicas", "lesson", ["replicas=10000"], 500),
]


def child(tree: str, steps: int, overrides: list[str]) -> None:
    """One compiled fused run of `tree`'s xorrelu on one thread; prints one JSON line."""
    sys.path.insert(0, tree)
    import logging

    import torch
    from hydra import compose, initialize_config_dir

    import xorrelu
    from xorrelu.config import register_configs
    from xorrelu.train import train

    assert Path(xorrelu.__file__).resolve().is_relative_to(Path(tree).resolve()), xorrelu.__file__
    logging.disable(logging.INFO)
    torch.set_num_threads(1)
    register_configs()
    overrides = [
        *overrides,
        "engine=fused",
        "compile=true",
        "threads=1",
        f"steps={steps}",
        "log_every=100",
        f"print_every={steps}",
        "plot=false",
    ]
    with initialize_config_dir(config_dir=str(Path(tree) / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    with tempfile.TemporaryDirectory() as out:
        summary = train(cfg, out)
    assert summary["engine"] == "fused" and summary["compiled"], summary
    keys = ("warmup_seconds", "model_steps_per_second")
    print(json.dumps({k: summary[k] for k in keys}))


def measure(tree: Path, steps: int, overrides: list[str]) -> dict:
    cache = tempfile.mkdtemp(prefix="inductor-cold-")
    try:
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache, "PYTHONPATH": str(tree)}
        args = ["--child", str(tree), str(steps), *overrides]
        proc = subprocess.run(
            [sys.executable, __file__, *args], capture_output=True, text=True, env=env
        )
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def write_section(lines: list[str]) -> None:
    """Replace this script's section of results.md (or append it)."""
    text = RESULTS.read_text() if RESULTS.exists() else ""
    section = "\n".join([BEGIN, *lines, END])
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + section + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    RESULTS.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", required=True, help="commit to compare against")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", choices=["parity", "lesson"], help="one group of CONFIGS")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()

    import torch

    head = git("rev-parse", "--short", "HEAD")
    dirty = bool(git("status", "--porcelain", "--", "xorrelu", "conf"))
    current = head + (" + uncommitted changes" if dirty else "")
    configs = [c for c in CONFIGS if args.only in (None, c[1])]
    rows, runs = [], []
    started, started_load = time.strftime("%Y-%m-%d %H:%M"), load()
    print(f"load average at start: {started_load}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        reference_tree = Path(tmp) / "reference"
        reference = export(args.reference, reference_tree)[:7]
        trees = {"before": reference_tree, "after": ROOT}
        for label, _, overrides, steps in configs:
            results: dict[str, list[dict]] = {"before": [], "after": []}
            for repeat in range(args.repeats):
                for name, tree in trees.items():
                    result = measure(tree, steps, overrides)
                    results[name].append(result)
                    runs.append(
                        f"{label} | {name} #{repeat + 1}: compile {result['warmup_seconds']:.1f}"
                        f" s, {result['model_steps_per_second']:,.0f} model-steps/s"
                        f" (load average {load()})"
                    )
                    print(runs[-1], flush=True)
            summary = {
                name: (
                    statistics.median(r["warmup_seconds"] for r in rs),
                    statistics.median(r["model_steps_per_second"] for r in rs),
                    max(r["model_steps_per_second"] for r in rs),
                )
                for name, rs in results.items()
            }
            rows.append((label, summary["before"], summary["after"]))
    print(f"load average at end: {load()}", flush=True)

    lines = [
        "## Fused engine: compile time and speed against the number of points",
        "",
        "Written by `python benchmarks/fused_points.py` (see its docstring). Compiled fused "
        "engine, one thread, a cold inductor cache for every run, log_every=100; "
        f"{args.repeats} run(s) per tree and config, the two trees alternating: the median, "
        f"and the best run's speed. Before: {reference}; after: {current}. Machine: {cpu_name()}, "
        f"{os.cpu_count()} cores, shared with other work (load average {started_load} at the "
        f"start, {load()} at the end); torch {torch.__version__}; {started}.",
        "",
        "| config | compile s, before | compile s, after | model-steps/s, before "
        "| model-steps/s, after | after/before (median) | after/before (best) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {label} | {cb:.1f} | {ca:.1f} | {sb:,.0f} (best {bb:,.0f}) "
        f"| {sa:,.0f} (best {ba:,.0f}) | {sa / sb:.2f} | {ba / bb:.2f} |"
        for label, (cb, sb, bb), (ca, sa, ba) in rows
    ]
    lines += ["", "<details><summary>Every run, in order</summary>", "", "```", *runs, "```"]
    lines += ["", "</details>"]
    print("\n".join(lines))
    if not args.no_write:
        write_section(lines)
        print(f"wrote {RESULTS}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        tree, steps, *overrides = sys.argv[2:]
        child(tree, int(steps), overrides)
    else:
        main()
