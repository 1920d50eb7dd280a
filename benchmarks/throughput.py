"""Throughput of xorrelu's training code against a naive PyTorch loop, on this machine.

    python benchmarks/throughput.py            # ~8 minutes on 2 cores; writes benchmarks/results.md

It rewrites its own table at the top of results.md; sections that other scripts keep there
(fused_points.py's) stay as they are.

One model-step = one full-batch gradient-descent step of one replica of the default network
(depth 10, width 5, XOR, relu, lr 0.1). Every configuration trains through xorrelu.train.train
with log_every=100 (the fused engine computes every metrics.csv column at every step; the
autograd engine at logged steps) in its own process, so its peak RSS is its own. The naive
loop (one nn.Sequential, torch.optim.SGD, nn.BCELoss) runs in this process, in the same run.
Absolute numbers are noisy on a shared machine: compare the ratios.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import cpu_name  # benchmarks/machine.py: this dir is on sys.path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SECTIONS = "<!-- begin "  # where other scripts' sections of results.md start

# (replicas, engine, compile, threads, steps, log_every)
RUNS = [
    (1, "autograd", False, 1, 3000, 100),
    (100, "autograd", False, 1, 1000, 100),
    (1000, "autograd", False, 1, 200, 100),
    (10000, "autograd", False, 1, 30, 100),
    (1, "fused", True, 1, 30000, 100),
    (100, "fused", True, 1, 20000, 100),
    (1000, "fused", True, 1, 5000, 100),
    (10000, "fused", True, 1, 500, 100),
    (1000, "fused", True, 2, 5000, 100),
    (10000, "fused", True, 2, 500, 100),
    (16, "fused", True, 1, 20000, 100),  # logging cost at the default 16 replicas ...
    (16, "fused", True, 1, 20000, 1),  # ... log_every=1 against log_every=100
    (16, "autograd", False, 1, 3000, 100),
    (16, "autograd", False, 1, 3000, 1),
    (100000, "fused", True, 2, 50, 10),  # memory: 100,000 replicas
]


def naive_loop(steps: int = 3000) -> float:
    """Model-steps per second of the textbook loop: one model, torch.optim.SGD, BCELoss."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for i in range(11):
        layers.append(nn.Linear(2 if i == 0 else 5, 1 if i == 10 else 5))
        layers.append(nn.ReLU() if i < 10 else nn.Sigmoid())
    model = nn.Sequential(*layers)
    for m in model:
        if isinstance(m, nn.Linear):
            nn.init.uniform_(m.weight, -1, 1)
            nn.init.zeros_(m.bias)
    x = torch.tensor([[0.0, 0], [0, 1], [1, 0], [1, 1]])
    y = torch.tensor([[0.0], [1], [1], [0]])
    optimizer, loss_fn = torch.optim.SGD(model.parameters(), lr=0.1), nn.BCELoss()
    start = time.perf_counter()
    for _ in range(steps):
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
    return steps / (time.perf_counter() - start)


def child(
    replicas: int, engine: str, compile_: bool, threads: int, steps: int, log_every: int
) -> None:
    """One configuration through the project's own train(); prints one JSON line."""
    import logging

    sys.path.insert(0, str(ROOT))
    from xorrelu.jobdir import compose
    from xorrelu.process import use_threads
    from xorrelu.train import train

    logging.disable(logging.INFO)
    overrides = [
        f"replicas={replicas}",
        f"engine={engine}",
        f"compile={str(compile_).lower()}",
        f"threads={threads}",
        f"steps={steps}",
        f"log_every={log_every}",
        f"print_every={steps}",
    ]
    cfg = compose(overrides)
    use_threads(threads)  # this child is an entry point: it sets its own threads
    with tempfile.TemporaryDirectory() as out:
        summary = train(cfg, out)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                k: summary[k]
                for k in (
                    "model_steps_per_second",
                    "warmup_seconds",
                    "engine",
                    "compiled",
                    "threads",
                )
            }
            | {"peak_rss_mib": peak_mib}
        )
    )


def run_child(*args) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", *map(str, args)], capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def canonical_job() -> float:
    """Wall seconds of `python -m xorrelu activation=sigmoid,relu --multirun` (plots included)."""
    with tempfile.TemporaryDirectory() as cwd:
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "xorrelu", "activation=sigmoid,relu", "--multirun"],
            cwd=cwd,
            check=True,
            capture_output=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        return time.perf_counter() - start


def machine() -> str:
    import torch

    cpu = cpu_name()
    return (
        f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"torch {torch.__version__}"
    )


def main() -> None:
    import torch

    torch.set_num_threads(1)
    naive = naive_loop()
    print(f"naive loop: {naive:,.0f} model-steps/s", flush=True)
    rows = []
    for replicas, engine, compile_, threads, steps, log_every in RUNS:
        result = run_child(replicas, engine, compile_, threads, steps, log_every)
        rate = result["model_steps_per_second"]
        rows.append(
            (
                replicas,
                engine + (", compiled" if result["compiled"] else ""),
                threads,
                log_every,
                rate,
                rate / naive,
                result["peak_rss_mib"],
                result["warmup_seconds"],
            )
        )
        print(
            f"replicas={replicas:>6} {rows[-1][1]:<16} threads={threads} log_every={log_every:<3}: "
            f"{rate:>12,.0f} model-steps/s = {rate / naive:7.1f}x naive, "
            f"peak {result['peak_rss_mib']:,.0f} MiB, warm-up {result['warmup_seconds']:.1f} s",
            flush=True,
        )
    canonical = canonical_job()
    print(f"canonical job: {canonical:.1f} s", flush=True)

    lines = [
        "# Throughput (written by `python benchmarks/throughput.py`)",
        "",
        f"Machine: {machine()}. Date: {time.strftime('%Y-%m-%d')}.",
        "",
        "Naive loop (one nn.Sequential, torch.optim.SGD, BCELoss, one thread): "
        f"**{naive:,.0f} model-steps/s**.",
        "",
        "| replicas | engine | threads | log_every | model-steps/s | × naive | peak RSS (MiB) | "
        "warm-up / compile (s) |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r} | {e} | {t} | {le} | {rate:,.0f} | {ratio:,.1f} | {rss:,.0f} | {warm:.1f} |"
        for r, e, t, le, rate, ratio, rss, warm in rows
    ]
    lines += [
        "",
        "`python -m xorrelu activation=sigmoid,relu --multirun` (2 jobs × 16 replicas × 10000 "
        f"steps, with plots): **{canonical:.1f} s** wall.",
        "",
    ]
    # other scripts' sections (fused_points.py's <!-- begin --> block, plot_memory.py's table) stay
    old = (HERE / "results.md").read_text() if (HERE / "results.md").exists() else ""
    starts = [old.find(m) for m in (SECTIONS, "\n## Plotter memory") if m in old]
    kept = old[min(starts) :] if starts else ""
    (HERE / "results.md").write_text("\n".join(lines) + ("\n" + kept if kept else ""))
    print(f"wrote {HERE / 'results.md'}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        replicas, engine, compile_, threads, steps, log_every = sys.argv[2:]
        child(int(replicas), engine, compile_ == "True", int(threads), int(steps), int(log_every))
    else:
        main()
