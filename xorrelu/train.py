"""The training loop: full-batch gradient descent on all replicas at once.

    python -m xorrelu                                  # the lesson's ReLU net, 16 seeds
    python -m xorrelu activation=sigmoid,relu --multirun

`train(cfg, out_dir)` is the whole job, in three parts a notebook can also call one by one:
`setup` builds the data, the model and the engine (or takes them from a checkpoint) and writes
nothing, `loop` opens the outputs and runs the steps, `finish` writes the results.
`python -m xorrelu` is a thin Hydra shell around it (xorrelu.__main__), and the only place that
sets threads or handles exit codes.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import platform
import socket
import subprocess
import sys
import time
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import hydra
import torch
from omegaconf import OmegaConf
from torch import nn
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from xorrelu import signals
from xorrelu.config import Device
from xorrelu.data import Split, make_split, points_csv
from xorrelu.engines import Engine, compile_estimate, make_engine
from xorrelu.files import Reserve, locked, save_torch, write_atomic, write_json
from xorrelu.metrics import Recorder, curves_steps, forward, logged
from xorrelu.model import build_model
from xorrelu.outcomes import Outcomes, judging, solved
from xorrelu.regularization import regularized
from xorrelu.signals import Interrupted
from xorrelu.tensorboard import TensorBoardLog

log = logging.getLogger(__name__)
progress_bar = True  # on a terminal; off in xorrelu's launcher's workers (it prints a line a job)


@dataclass
class Run:
    """Everything one training job holds, from `setup` to `finish`."""

    cfg: object
    out_dir: Path
    data: tuple[torch.Tensor, torch.Tensor]  # training inputs x [points, inputs], labels y
    split: Split  # the dataset as drawn, train and test (data.csv)
    model: nn.Sequential
    engine: Engine
    seeds: list[int]
    initial: dict  # the parameters at step 0, on the CPU (weights.pt keeps them)
    outcomes: Outcomes
    summary: dict
    first: int = 0  # the step this session starts at (a resumed run's checkpoint step)
    step: int = 0  # the step being taken: `step` updates are done
    warm: float | None = None  # when the first step (with any compilation) was done
    start: float = field(default_factory=time.perf_counter)
    started_at: float = field(default_factory=time.time)  # the same moment, as a UNIX time
    resume_point: dict | None = None  # where a longer run would go on from (before the last row)
    resume_at: int | None = None  # a resumed run's metrics.csv is cut back to this many bytes
    curves_at: int | None = None  # and its curves.csv to this many (None: made again)
    recorder: Recorder | None = None
    board: TensorBoardLog | None = None


def train(
    cfg, out_dir: str | Path, checkpoint: dict | None = None, model: nn.Sequential | None = None
) -> dict:
    """Train cfg.replicas nets; write metrics.csv, summary.json, weights.pt and checkpoint.pt
    into out_dir and return the summary. With `checkpoint` (xorrelu.resume), continue from it
    in the same files. One process at a time writes into a job dir (xorrelu.files.locked)."""
    out_dir = Path(out_dir)
    if checkpoint and not 0 <= checkpoint["step"] <= cfg.steps:  # xorrelu.resume checks this first
        raise ValueError(
            f"checkpoint step {checkpoint['step']} is outside 0..{cfg.steps}: "
            "resuming would cut metrics.csv and run no step"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    with signals.installed(), locked(out_dir):
        reserve = None
        try:
            with signals.mode("hold"):
                reserve = Reserve(out_dir)
            run = setup(cfg, out_dir, checkpoint, model)
            try:
                loop(run)
                summary = finish(run)
            except BaseException as error:
                with signals.mode("hold"):
                    _save_what_we_have(run, error, reserve)
                raise
            finally:
                if run.board:
                    run.board.close()
        finally:
            if reserve is not None:
                reserve.release()
        if signals.pending():  # asked to stop while the results were written: they are whole
            raise Interrupted(signals.take_pending())
    return summary


def setup(
    cfg, out_dir: str | Path, checkpoint: dict | None = None, model: nn.Sequential | None = None
) -> Run:
    """The data, the model (`model`, or built from cfg) and its engine, at step 0 or at the
    checkpoint's step. Writes nothing."""
    device = resolve_device(cfg.device)
    split = make_split(cfg.dataset, device)
    data = split.x_train, split.y_train
    model = (model if model is not None else build_model(cfg, data[0].shape[1])).to(device)
    if checkpoint:
        model.load_state_dict(checkpoint["model"])
    test = (split.x_test, split.y_test) if split.has_test else None
    engine = make_engine(cfg, model, data, checkpoint, test)
    if checkpoint:
        engine.load_state_dict(checkpoint["engine_state"])
    log.info("%s", model)
    compiled = ", compiled" if engine.compiled else ""
    why = ""
    if cfg.compile == "auto" and not checkpoint:
        compile_s, eager_s = compile_estimate(cfg)
        why = f" (compile=auto: compiling ~{compile_s:.0f} s, training uncompiled ~{eager_s:.0f} s)"
    threads = torch.get_num_threads()
    log.info("engine: %s%s, %d thread(s), %s%s", engine.name, compiled, threads, device, why)
    summary = _job_info(cfg, device, engine)
    if checkpoint:
        summary["resumed_from_step"] = checkpoint["step"]
    first = checkpoint["step"] if checkpoint else 0
    rule, plateaus = judging(cfg.dataset, split.y_train)
    outcomes = Outcomes(cfg.replicas, cfg.steps, device, rule=rule, plateaus=plateaus)
    if checkpoint:  # the outcome tracker goes on from the checkpoint's state
        outcomes.load_state_dict(checkpoint["recorder"])
    return Run(
        cfg=cfg,
        out_dir=Path(out_dir),
        data=data,
        split=split,
        model=model,
        engine=engine,
        seeds=list(range(cfg.seed, cfg.seed + cfg.replicas)),
        initial=checkpoint["initial"] if checkpoint else _cpu_state(model),
        outcomes=outcomes,
        summary=summary,
        first=first,
        step=first,
        resume_at=checkpoint["recorder"]["csv_bytes"] if checkpoint else None,
        # an extended run keeps other steps in curves.csv: it is made again from metrics.csv
        curves_at=checkpoint["recorder"].get("curves_bytes")
        if checkpoint and checkpoint["config"]["steps"] == cfg.steps
        else None,
    )


def _open_outputs(run: Run) -> None:
    """summary.json (status running), data.csv, metrics.csv and, for a job that logs more than
    2 x MAX_POINTS steps, curves.csv: their headers, or, resuming, cut back to the checkpoint's
    last row."""
    run.out_dir.mkdir(parents=True, exist_ok=True)
    cfg = run.cfg
    with signals.mode("hold"):  # the summary and the CSV's header appear together
        write_json(run.out_dir / "summary.json", run.summary)
        write_atomic(run.out_dir / "data.csv", points_csv(run.split))
        run.recorder = Recorder(
            run.out_dir / "metrics.csv",
            cfg.depth,
            run.seeds,
            run.outcomes,
            penalty=regularized(cfg),
            test=run.split.has_test,
            curves=curves_steps(cfg.steps, cfg.log_every, cfg.log_first),
            resume_at=run.resume_at,
            curves_at=run.curves_at,
        )
    if run.cfg.tensorboard:
        run.board = TensorBoardLog(run.out_dir)


def loop(run: Run) -> None:
    """Steps run.first .. cfg.steps: measure every replica at the current parameters, log the
    row, then update (the last step only measures). Until the first step is done (and
    compiled), a stop signal stops at once; from then on the loop finishes its step first, so
    that a checkpoint is of a whole step. Opens the outputs first (summary.json, metrics.csv)."""
    _open_outputs(run)
    cfg, engine, recorder, board = run.cfg, run.engine, run.recorder, run.board
    steps, print_every = cfg.steps, cfg.print_every  # plain ints
    # the cadence as plain ints too: reading a DictConfig key costs ~40 us, three per step
    cadence = SimpleNamespace(steps=steps, log_every=cfg.log_every, log_first=cfg.log_first)
    bar = tqdm(
        initial=run.first,
        total=steps,
        unit="step",
        disable=not (progress_bar and sys.stderr.isatty()),
        leave=False,
    )
    # log lines go around a bar that is drawn (the redirect would also undo a console level)
    redirect = nullcontext() if bar.disable else logging_redirect_tqdm()
    with bar, redirect, ExitStack() as deferred:
        for step in range(run.first, steps + 1):
            run.step = step
            if signals.pending():
                raise Interrupted(signals.take_pending())
            is_logged = logged(cadence, step)
            if step == steps:  # where a longer run would go on: before the final row
                run.resume_point = _resume_point(run)
            metrics = engine.step(update=step < steps, log=is_logged)
            recorder.add(step, metrics, is_logged)
            if is_logged and board:
                board.scalars(step, metrics)
            if step % print_every == 0 or step == steps:
                _print_progress(step, metrics, run.outcomes.rule)
                if board:
                    engine.write_back()  # the fused engine keeps its own copy of the weights
                    board.histograms(step, run.model)
            if step == run.first:  # the step is whole: from now on a stop waits for the next one
                deferred.enter_context(signals.mode("defer"))
                run.warm = time.perf_counter()  # the first step carries any compilation
            bar.update(step < steps)


def finish(run: Run) -> dict:
    """checkpoint.pt, weights.pt, the final summary.json and the printed table."""
    with signals.mode("hold"):  # from here to the end, signals wait for the results
        run.recorder.close()
        timing = _timing(run)
        _save_checkpoint(run, run.step, run.resume_point)
        weights = {
            "initial": run.initial,
            "final": _cpu_state(run.model),
            "seeds": run.seeds,
            "step": run.step,
        }
        save_torch(run.out_dir / "weights.pt", weights)
        run.summary["replicas"] = _replica_results(run)
        run.summary.update(status="completed", **timing)
        write_json(run.out_dir / "summary.json", run.summary)
        _print_table(run.summary["replicas"], run.data[0].cpu())
        causes = [r["cause"] for r in run.summary["replicas"] if r["cause"]]
        if causes:
            counts = ", ".join(f"{c} {causes.count(c)}" for c in dict.fromkeys(causes))
            log.info("unsolved: %s", counts)
    return run.summary


MAX_HYPOTHESIS_POINTS = 256  # summary.json lists h at each training point up to this many


def _replica_results(run: Run) -> list[dict]:
    """summary.json's line per replica: the outcome tracker's verdict and, for a dataset of at
    most MAX_HYPOTHESIS_POINTS training points, the final output at each (data.csv and
    weights.pt give it for any size)."""
    hypotheses = None
    if len(run.data[1]) <= MAX_HYPOTHESIS_POINTS:
        with torch.no_grad():
            hypotheses = torch.sigmoid(forward(run.model, run.data[0])[0]).cpu()
    outcomes = run.outcomes
    last = {name: values.cpu() for name, values in outcomes.last.items()}
    diverged, first = outcomes.diverged.cpu(), outcomes.first_step_solved.cpu()

    def final(name: str, r: int) -> dict:
        """{final_<name>: value} where the run measures it (null once diverged)."""
        if name not in last:
            return {}
        return {f"final_{name}": None if diverged[r] else last[name][r].item()}

    return [
        {
            "seed": seed,
            **final("cost", r),
            **final("accuracy", r),
            **final("test_cost", r),
            **final("test_accuracy", r),
            "solved": bool(first[r] >= 0),
            "first_step_solved": int(first[r]) if first[r] >= 0 else None,
            "diverged": bool(diverged[r]),
            "cause": cause,
            **({} if hypotheses is None else {"hypothesis": hypotheses[r].tolist()}),
        }
        for r, (seed, cause) in enumerate(zip(run.seeds, outcomes.causes(), strict=True))
    ]


def resolve_device(device) -> torch.device:
    device = Device(device)
    if device is Device.auto:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device.value)


def _cpu_state(model: nn.Module) -> dict:
    """A copy of the model's state on the CPU, safe to keep while training goes on."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _resume_point(run: Run) -> dict:
    """The lengths of metrics.csv and curves.csv (None without one) and the outcome tracker's
    state, after every logged row so far."""
    return {
        "csv_bytes": run.recorder.position(),
        "curves_bytes": run.recorder.curves_position(),
        **run.outcomes.state_dict(),
    }


def _save_checkpoint(run: Run, step: int, resume_point: dict) -> None:
    """Everything a run needs to go on from `step` (the next step to measure;
    `step` updates done)."""
    run.engine.write_back()
    save_torch(
        run.out_dir / "checkpoint.pt",
        {
            "step": step,
            "model": _cpu_state(run.model),
            "engine": run.engine.name,
            "compiled": run.engine.compiled,
            "engine_state": run.engine.state_dict(),
            "recorder": resume_point,
            "initial": run.initial,
            "threads": torch.get_num_threads(),
            "config": OmegaConf.to_container(run.cfg, resolve=True, enum_to_str=True),
        },
    )


def _save_what_we_have(run: Run, error: BaseException, reserve: Reserve) -> None:
    """On a stop signal: flush, checkpoint the last completed step (none when the first step
    was not done, so an earlier checkpoint stays as it is), mark the summary interrupted. On
    any other failure: keep every complete row and say so. The reserve is freed first, so that
    a full disk still gets the summary. Each file is tried on its own, and nothing here masks
    the original error."""
    reserve.release()
    point = None
    if run.recorder is not None:
        try:
            point = _resume_point(run)
            run.recorder.close()
        except OSError as also:
            log.error(
                "could not write the last rows after %s: %s (every row before them is whole)",
                type(error).__name__,
                also,
            )
    if isinstance(error, KeyboardInterrupt):
        run.summary.update(status="interrupted", error=str(error) or "KeyboardInterrupt")
        _checkpoint_on_stop(run, point)
    else:
        run.summary.update(status="failed", error=f"{type(error).__name__}: {error}")
    run.summary.update(_timing(run))
    try:
        write_json(run.out_dir / "summary.json", run.summary)
    except OSError as also:
        log.error("could not write summary.json after %s: %s", type(error).__name__, also)


def _checkpoint_on_stop(run: Run, point: dict | None) -> None:
    """checkpoint.pt at the step the loop stopped before, if a whole step was done."""
    if run.warm is not None and point is not None:
        try:
            _save_checkpoint(run, run.step, point)
            log.warning(
                "interrupted at step %d: metrics flushed, checkpoint.pt written; go on with: "
                "python -m xorrelu.resume %s",
                run.step,
                run.out_dir,
            )
        except OSError as also:
            run.summary["error"] += f"; checkpoint.pt not written: {also}"
            log.error(
                "interrupted at step %d, but checkpoint.pt could not be written: %s",
                run.step,
                also,
            )
    elif (run.out_dir / "checkpoint.pt").is_file():  # a resumed run: its checkpoint holds
        log.warning(
            "interrupted before its first step; the checkpoint is unchanged; go on with: "
            "python -m xorrelu.resume %s",
            run.out_dir,
        )
    else:
        log.warning("interrupted before the first step: nothing was trained; run it again")


def _print_progress(step: int, metrics: dict[str, torch.Tensor], rule) -> None:
    costs = metrics["cost"]
    finite = torch.isfinite(costs)
    alive = costs[finite]
    spread = (
        f"{alive.quantile(0.5):.7g} ({alive.min():.4g}-{alive.max():.4g})" if len(alive) else "nan"
    )
    judged = ("test_cost", "test_accuracy") if "test_cost" in metrics else ("cost", "accuracy")
    solved_now = int((solved(*(metrics[k] for k in judged), rule) & finite).sum())
    test = ""
    if "test_accuracy" in metrics and finite.any():
        test = f" | test accuracy {metrics['test_accuracy'][finite].quantile(0.5):.3f}"
    extra = f", diverged {int((~finite).sum())}" if not finite.all() else ""
    log.info(
        "step %7d | cost %s%s | solved %d/%d%s", step, spread, test, solved_now, len(costs), extra
    )


def _print_table(replicas: list[dict], x: torch.Tensor, max_points: int = 8) -> None:
    """A line per replica: its final cost, accuracy (and test accuracy) and whether it solved;
    for a binary dataset (xor, parity) also its outputs h at the first points."""
    binary = bool(((x == 0) | (x == 1)).all())
    shown = x[:max_points] if binary else x[:0]
    points = ["h(" + ",".join(str(int(v)) for v in p) + ")" for p in shown]
    more = " ..." if len(x) > len(shown) > 0 else ""
    test = "final_test_accuracy" in replicas[0]

    def number(value, form: str) -> str:
        return "-" if value is None else format(value, form)

    log.info(
        "%6s %12s %8s%s %6s  %s%s",
        "seed",
        "cost",
        "accuracy",
        f" {'test acc':>8}" if test else "",
        "solved",
        "  ".join(f"{p:>10}" for p in points),
        more,
    )
    for rep in replicas:
        cost_ = rep["final_cost"]
        hyps = "  ".join(f"{h:10.7f}" for h in rep.get("hypothesis", [])[: len(shown)])
        log.info(
            "%6d %12s %8s%s %6s  %s%s",
            rep["seed"],
            "diverged" if cost_ is None else f"{cost_:.7g}",
            number(rep["final_accuracy"], ".2f"),
            f" {number(rep.get('final_test_accuracy'), '.3f'):>8}" if test else "",
            "yes" if rep["solved"] else "no",
            hyps,
            more,
        )


def _timing(run: Run) -> dict:
    """Wall time of this session, and throughput over its steps after the first one (whose
    time, with any compilation, is `warmup_seconds`)."""
    now = time.perf_counter()
    step = run.step if run.warm is not None else run.first
    timing = {
        "last_step": step,
        "wall_seconds": now - run.start,
        "started_at": run.started_at,  # UNIX times: where the job sat in its sweep
        "ended_at": run.started_at + (now - run.start),
    }
    if run.warm is not None:
        done = step - run.first - 1
        timing["warmup_seconds"] = run.warm - run.start
        timing["model_steps_per_second"] = (
            done * run.cfg.replicas / (now - run.warm) if done > 0 and now > run.warm else None
        )
    return timing


def _job_info(cfg, device: torch.device, engine) -> dict:
    return {
        "status": "running",
        "last_step": 0,
        "config": OmegaConf.to_container(cfg, resolve=True, enum_to_str=True),
        "device": str(device),
        "engine": engine.name,
        "compiled": engine.compiled,
        "threads": torch.get_num_threads(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        **slurm_job(),
        "versions": {
            "xorrelu": _version(),
            "torch": torch.__version__,
            "hydra": hydra.__version__,
            "python": platform.python_version(),
        },
        "git_commit": _git_commit(),
    }


def slurm_job() -> dict:
    """{"slurm": {job_id, node, restarts}} inside a SLURM job, else {}: which job of the cluster
    ran this, where, and how often SLURM requeued it. job_id is the one squeue, sacct and scancel
    take: ARRAYJOB_TASK for a job array's task (a sweep), else the job's own id."""
    env = os.environ
    if "SLURM_JOB_ID" not in env:
        return {}
    array, task = env.get("SLURM_ARRAY_JOB_ID"), env.get("SLURM_ARRAY_TASK_ID")
    restarts = env.get("SLURM_RESTART_COUNT", "0")
    return {
        "slurm": {
            "job_id": f"{array}_{task}" if array and task else env["SLURM_JOB_ID"],
            "node": env.get("SLURMD_NODENAME"),
            "restarts": int(restarts) if restarts.isdigit() else 0,
        }
    }


def _version() -> str | None:
    try:
        return importlib.metadata.version("xorrelu")
    except importlib.metadata.PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    """The commit of the checkout this code runs from, if it runs from one."""
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None
