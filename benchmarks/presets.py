"""Every sweep preset at full size, as a user runs it: wall time, peak memory of every process,
disk, rows, compile time and per-job overhead; written into benchmarks/presets.md.

    python benchmarks/presets.py                # the five lesson presets, into outputs/presets/
    python benchmarks/presets.py --playground   # the Playground ones -> playground_presets.md
    python benchmarks/presets.py --presets lab10,activations --dir /tmp/p --no-record

Each preset runs as `python -m xorrelu experiment=NAME [extra] --multirun` in a fresh sweep dir
DIR/NAME (refused if it exists: nothing is ever deleted), with the default launcher and a cold
inductor cache of its own (TORCHINDUCTOR_CACHE_DIR=DIR/NAME.inductor, measured separately from
the sweep dir), plots included (the sweep's own AutoPlot at the end). Measured:
- wall: the command's, start to exit;
- peak RSS: the largest of any process of the sweep (os.wait4's ru_maxrss, which covers the
  launcher and every worker it reaped), and, sampled from /proc every 0.2 s, the launcher's
  own peak (VmHWM) and its largest worker's;
- disk: bytes under the sweep dir; the compile cache's bytes apart;
- rows: metrics.csv rows of every job; compile: the first-step seconds of compiled jobs;
- overhead per job: within each worker process (summary.json's host and pid), the time from
  one job's last step (ended_at) to the next one's start (started_at), median over the sweep;
  and plotting: from the last job's end to the command's exit.
The sweep dirs stay for the README's figures (docs/make_docs.py --presets reads them).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from machine import cpu_name  # benchmarks/machine.py: this dir is on sys.path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PRESETS = {  # name: (extra overrides, the wall budget in minutes)
    "lab10": (["activation=sigmoid,relu"], 1),
    "activations": ([], 2),
    "width": ([], 6),
    "init": ([], 6),
    "depth": ([], 10),
}
PLAYGROUND = {  # issue #13 sets no wall budget for them
    "circle_features": ([], None),
    "spiral_features": ([], None),
    "noise": ([], None),
    "batch": ([], None),
    "l2_overfit": ([], None),
}
ALL = {**PRESETS, **PLAYGROUND}
GIB = 1024**3


def _tree(root: int) -> list[int]:
    """root and its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def _peak_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def run_preset(name: str, extra: list[str], out: Path) -> dict:
    sweep, cache = out / name, out / f"{name}.inductor"
    if sweep.exists() or cache.exists():
        sys.exit(f"presets.py: {sweep} or {cache} exists; choose another --dir (nothing deleted)")
    shown = [f"experiment={name}", *extra, "--multirun"]
    command = [sys.executable, "-m", "xorrelu", *shown[:-1], f"hydra.sweep.dir={sweep}", shown[-1]]
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(cache)}
    load_before = os.getloadavg()
    start = time.time()
    log = (out / f"{name}.log").open("w")  # the sweep's console, for the record
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    launcher_kib, worker_kib = 0, 0
    while True:  # os.wait4, not Popen.poll: its rusage has the peak RSS of the whole tree
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            break
        for child in _tree(process.pid):
            peak = _peak_kib(child)
            if child == process.pid:
                launcher_kib = max(launcher_kib, peak)
            else:
                worker_kib = max(worker_kib, peak)
        time.sleep(0.2)
    wall = time.time() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    log.close()
    return {
        "preset": name,
        "command": "xorrelu " + " ".join(shown),
        "exit": process.returncode,
        "wall_s": wall,
        "peak_rss_gib": max(usage.ru_maxrss, launcher_kib, worker_kib) * 1024 / GIB,
        "launcher_gib": launcher_kib * 1024 / GIB,
        "worker_gib": worker_kib * 1024 / GIB,
        "disk_gib": _bytes(sweep) / GIB,
        "cache_gib": _bytes(cache) / GIB,
        "load": (load_before, os.getloadavg()),
        "end": time.time(),
        **_jobs(sweep, start + wall),
    }


def _jobs(sweep: Path, exit_time: float) -> dict:
    """What the job dirs say: jobs, rows, compile seconds, overhead between jobs, plot time."""
    summaries = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/summary.json"))]
    rows = 0
    for csv in sweep.glob("*/metrics.csv"):
        with csv.open("rb") as f:
            rows += sum(block.count(b"\n") for block in iter(lambda: f.read(1 << 24), b"")) - 1
    by_worker: dict[tuple, list[dict]] = {}
    for s in summaries:
        by_worker.setdefault((s.get("host"), s.get("pid")), []).append(s)
    gaps = []
    for jobs in by_worker.values():
        jobs.sort(key=lambda s: s["started_at"])
        gaps += [b["started_at"] - a["ended_at"] for a, b in zip(jobs, jobs[1:], strict=False)]
    compiled = [s.get("warmup_seconds", 0) for s in summaries if s.get("compiled")]
    return {
        "jobs": len(summaries),
        "completed": sum(s.get("status") == "completed" for s in summaries),
        "workers": len(by_worker),
        "rows": rows,
        "compile_s": sum(compiled),
        "compiled_jobs": len(compiled),
        "overhead_s": statistics.median(gaps) if gaps else None,
        "plot_s": exit_time - max((s["ended_at"] for s in summaries), default=exit_time),
        "train_s": sum(s.get("wall_seconds", 0) for s in summaries),
    }


def _machine() -> str:
    cpu = cpu_name()
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB
    return f"{cpu}, {os.cpu_count()} cores, {memory:.0f} GiB, Python {platform.python_version()}"


def markdown(results: list[dict], commit: str) -> str:
    lines = [
        "# Presets at full size",
        "",
        f"Written by `python benchmarks/presets.py` on {datetime.now():%Y-%m-%d %H:%M}, commit "
        f"{commit}. Machine: {_machine()}. Each preset from a fresh sweep dir and a cold "
        "compile cache, plots included; peak RSS is the largest single process of the sweep.",
        "",
        "| preset | jobs | workers | wall | budget | peak RSS (launcher / worker) | disk | "
        "compile cache | rows | compiled jobs (s) | overhead/job (median) | plotting | "
        "load before → after |",
        "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        budget = ALL[r["preset"]][1]
        budget = "-" if budget is None else f"{budget} min"
        overhead = "-" if r["overhead_s"] is None else f"{r['overhead_s']:.1f} s"
        before, after = (" ".join(f"{x:.1f}" for x in load) for load in r["load"])
        lines.append(
            f"| `{r['command']}` | {r['completed']}/{r['jobs']} | {r['workers']} | "
            f"{r['wall_s'] / 60:.1f} min | {budget} | {r['peak_rss_gib']:.2f} GiB "
            f"({r['launcher_gib']:.2f} / {r['worker_gib']:.2f}) | {r['disk_gib'] * 1024:.0f} MiB "
            f"| {r['cache_gib'] * 1024:.0f} MiB | {r['rows']:,} | {r['compiled_jobs']} "
            f"({r['compile_s']:.0f} s) | {overhead} | {r['plot_s']:.0f} s | {before} → {after} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default=None, help="comma-separated names")
    parser.add_argument(
        "--playground", action="store_true", help="the Playground presets (playground_presets.md)"
    )
    parser.add_argument("--dir", default=str(ROOT / "outputs" / "presets"), help="sweeps go here")
    parser.add_argument("--no-record", action="store_true", help="do not write presets.md")
    args = parser.parse_args()
    names = (args.presets or ",".join(PLAYGROUND if args.playground else PRESETS)).split(",")
    unknown = sorted(set(names) - set(ALL))
    if unknown:
        sys.exit(f"presets.py: unknown preset(s) {unknown}; choose from {sorted(ALL)}")
    out = Path(args.dir)
    out.mkdir(parents=True, exist_ok=True)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    results = []
    for name in names:
        result = run_preset(name, ALL[name][0], out)
        results.append(result)
        print(json.dumps(result, default=str), flush=True)
    text = markdown(results, commit)
    print(text)
    if not args.no_record:
        record = HERE / ("playground_presets.md" if args.playground else "presets.md")
        record.write_text(text)
        print(f"wrote {record}")


if __name__ == "__main__":
    main()
