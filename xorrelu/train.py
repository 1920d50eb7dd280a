"""The training loop: full-batch gradient descent on all replicas at once.

    python -m xorrelu                                  # the lesson's ReLU net, 16 seeds
    python -m xorrelu activation=sigmoid,relu --multirun

`train(cfg, out_dir)` is the whole job; `python -m xorrelu` is a thin Hydra shell around it.
"""

from __future__ import annotations

import importlib.metadata
import logging
import platform
import subprocess
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import hydra
import torch
from omegaconf import OmegaConf
from torch import nn
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from xorrelu import fused, signals
from xorrelu.activations import Activation, BatchedPReLU, get_activation
from xorrelu.config import Device, Engine
from xorrelu.data import make_dataset
from xorrelu.files import Reserve, locked, save_torch, write_json
from xorrelu.metrics import (
    Recorder,
    accuracy,
    columns,
    cost,
    forward,
    grad_norms,
    prelu_slopes,
    solved,
    stuck_fractions,
)
from xorrelu.model import build_model, linear_layers
from xorrelu.optimizers import OPTIMIZERS
from xorrelu.signals import Interrupted
from xorrelu.tensorboard import TensorBoardLog

log = logging.getLogger(__name__)

# compile=auto compiles from here: ~15 s of compiling pays off (benchmarks/results.md)
COMPILE_AUTO_MODEL_STEPS = 2_000_000


def resolve_device(device) -> torch.device:
    device = Device(device)
    if device is Device.auto:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device.value)


class AutogradEngine:
    """The nn.Sequential and torch.optim as they are: the reference every fast path is held to."""

    name, compiled = "autograd", False

    def __init__(
        self, model: nn.Sequential, x: torch.Tensor, y: torch.Tensor, act: Activation, cfg
    ):
        self.model, self.x, self.y, self.act, self.act_cfg = model, x, y, act, cfg.activation
        self.layers = linear_layers(model)
        self.has_prelu = any(isinstance(m, BatchedPReLU) for m in model)
        self.optimizer = OPTIMIZERS[cfg.optimizer.name](model.parameters(), cfg.optimizer)

    def step(self, update: bool = True, log: bool = True) -> torch.Tensor:
        """Metrics [replicas, columns] at the current parameters (cost and accuracy only unless
        `log`); then one update if `update`."""
        logits, pre_activations = forward(self.model, self.x)
        costs = cost(logits, self.y)
        self.optimizer.zero_grad(set_to_none=False)
        costs.sum().backward()  # a sum keeps replicas independent: each gets its own gradient
        with torch.inference_mode():  # metrics only: no autograd bookkeeping
            row = [costs[None], accuracy(logits, self.y)[None]]
            if log:
                prelu = prelu_slopes(self.model) if self.has_prelu else None
                row += [
                    grad_norms(self.layers),
                    stuck_fractions(pre_activations, self.act, self.act_cfg, prelu),
                ]
            row = torch.cat(row).T  # [replicas, columns]
        if update:
            self.optimizer.step()
        return row

    def write_back(self) -> None:
        pass  # trains the nn.Sequential itself

    def state_dict(self) -> dict:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state)


def make_engine(
    cfg, model: nn.Sequential, x: torch.Tensor, y: torch.Tensor, same_as: dict | None = None
):
    """compile=auto compiles when the run is long enough for ~15 s of compilation to pay off;
    engine=auto takes the fused engine exactly then (uncompiled, autograd is as fast). A resumed
    run keeps the engine of its checkpoint (`same_as`), so its numbers continue exactly."""
    act = get_activation(cfg.activation.name)
    compile_ = (
        cfg.steps * cfg.replicas >= COMPILE_AUTO_MODEL_STEPS
        if cfg.compile == "auto"
        else bool(cfg.compile)
    )
    engine = Engine(cfg.engine)
    if same_as:
        engine, compile_ = Engine(same_as["engine"]), same_as["compiled"]
    if engine is Engine.auto:
        engine = Engine.fused if compile_ and fused.supports(cfg) else Engine.autograd
    if engine is Engine.autograd:
        return AutogradEngine(model, x, y, act, cfg)
    return fused.FusedEngine(model, x, y, act, cfg, compile=compile_)


def train(cfg, out_dir: str | Path, checkpoint: dict | None = None) -> dict:
    """Train cfg.replicas nets; write metrics.csv, summary.json, weights.pt and checkpoint.pt
    into out_dir. With `checkpoint` (xorrelu.resume), continue from it in the same files.
    One process at a time writes into a job dir (xorrelu.files.locked)."""
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
            return _train(cfg, out_dir, checkpoint, reserve)
        finally:
            if reserve is not None:
                reserve.release()


def _train(cfg, out_dir: Path, checkpoint: dict | None, reserve: Reserve) -> dict:
    threads = checkpoint["threads"] if checkpoint else cfg.threads
    if threads > 0:
        torch.set_num_threads(threads)
    device = resolve_device(cfg.device)
    x, y = make_dataset(cfg.dataset, device)
    model = build_model(cfg, x.shape[1]).to(device)
    if checkpoint:
        model.load_state_dict(checkpoint["model"])
    engine = make_engine(cfg, model, x, y, same_as=checkpoint)
    if checkpoint:
        engine.load_state_dict(checkpoint["engine_state"])
    log.info("%s", model)
    log.info(
        "engine: %s%s, %d thread(s), %s",
        engine.name,
        ", compiled" if engine.compiled else "",
        torch.get_num_threads(),
        device,
    )

    summary = _job_info(cfg, device, engine)
    if checkpoint:
        summary["resumed_from_step"] = checkpoint["step"]
    initial = checkpoint["initial"] if checkpoint else _cpu_state(model)
    saved = _Saved(out_dir, cfg, model, engine, initial)  # what the checkpoint is made of
    seeds = list(range(cfg.seed, cfg.seed + cfg.replicas))
    # plain ints in the hot loop
    steps, log_every, print_every = cfg.steps, cfg.log_every, cfg.print_every
    first = checkpoint["step"] if checkpoint else 0
    start, warm, step, recorder, board, bar = time.perf_counter(), None, first, None, None, None
    try:
        with signals.mode("hold"):  # the summary and the CSV's header appear together
            write_json(out_dir / "summary.json", summary)
            recorder = Recorder(
                out_dir / "metrics.csv",
                columns(cfg.depth),
                seeds,
                device,
                cfg.steps,
                resume=checkpoint and checkpoint["recorder"],
            )
        bar = tqdm(
            initial=first, total=steps, unit="step", disable=not sys.stderr.isatty(), leave=False
        )
        board = TensorBoardLog(out_dir, cfg.depth) if cfg.tensorboard else None
        # Until the first step is done (and compiled), a stop signal stops at once; from then on
        # the loop finishes its step first, so that the checkpoint is of a whole step.
        with logging_redirect_tqdm(), ExitStack() as deferred:
            for step in range(first, steps + 1):
                if signals.pending():
                    raise Interrupted(signals.take_pending())
                logged = step % log_every == 0 or step == steps
                if step == steps:  # where a longer run would go on: before the final row
                    resume_point = recorder.snapshot()
                # metrics after `step` updates, then update
                row = engine.step(update=step < steps, log=logged)
                if logged:
                    recorder.add(step, row)
                    if board:
                        board.scalars(step, row)
                if step % print_every == 0 or step == steps:
                    _print_progress(step, row)
                    if board:
                        engine.write_back()  # the fused engine keeps its own copy of the weights
                        board.histograms(step, model)
                if step == first:  # the step is whole: from now on a stop waits for the next one
                    deferred.enter_context(signals.mode("defer"))
                    warm = time.perf_counter()  # the first step carries any compilation
                bar.update(step < steps)
            with signals.mode("hold"):  # from here to the end, signals wait for the results
                recorder.close()
                timing = _timing(step, cfg.replicas, start, warm, first)
                _save_checkpoint(saved, step, resume_point)
                summary = _finish(saved, x, recorder, summary, seeds, step, timing)
    except BaseException as error:
        with signals.mode("hold"):
            _save_what_we_have(
                error,
                saved,
                step if warm is not None else None,
                recorder,
                summary,
                reserve,
                (start, warm, first),
            )
        raise
    finally:
        if bar is not None:
            bar.close()
        if board:
            board.close()
    if signals.pending():  # asked to stop while the results were written: they are whole; stop now
        raise Interrupted(signals.take_pending())
    return summary


def _finish(
    saved: _Saved,
    x: torch.Tensor,
    recorder: Recorder,
    summary: dict,
    seeds: list[int],
    step: int,
    timing: dict,
) -> dict:
    """weights.pt, the final summary.json and the printed table of a completed run."""
    weights = {
        "initial": saved.initial,
        "final": _cpu_state(saved.model),
        "seeds": seeds,
        "step": step,
    }
    save_torch(saved.out_dir / "weights.pt", weights)
    with torch.no_grad():
        hypotheses = torch.sigmoid(forward(saved.model, x)[0]).cpu()
    last, diverged, since = recorder.last_row.cpu(), recorder.diverged.cpu(), recorder.since.cpu()
    causes = recorder.causes()
    summary["replicas"] = [
        {
            "seed": seed,
            "final_cost": None if diverged[r] else last[r, 0].item(),
            "final_accuracy": None if diverged[r] else last[r, 1].item(),
            "solved": bool(since[r] >= 0),
            "first_step_solved": int(since[r]) if since[r] >= 0 else None,
            "diverged": bool(diverged[r]),
            "cause": causes[r],
            "hypothesis": hypotheses[r].tolist(),
        }
        for r, seed in enumerate(seeds)
    ]
    summary.update(status="completed", **timing)
    write_json(saved.out_dir / "summary.json", summary)
    _print_table(summary["replicas"], x.cpu())
    unsolved = [c for c in causes if c]
    if unsolved:
        log.info(
            "unsolved: %s", ", ".join(f"{c} {unsolved.count(c)}" for c in dict.fromkeys(unsolved))
        )
    return summary


def _cpu_state(model: nn.Module) -> dict:
    """A copy of the model's state on the CPU, safe to keep while training goes on."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


@dataclass
class _Saved:
    """What a checkpoint is made of, besides the step and the metrics writer's position."""

    out_dir: Path
    cfg: object
    model: nn.Sequential
    engine: object
    initial: dict


def _save_checkpoint(saved: _Saved, step: int, recorder_state: dict) -> None:
    """Everything a run needs to go on from `step` (the next step to measure;
    `step` updates done)."""
    saved.engine.write_back()
    save_torch(
        saved.out_dir / "checkpoint.pt",
        {
            "step": step,
            "model": _cpu_state(saved.model),
            "engine": saved.engine.name,
            "compiled": saved.engine.compiled,
            "engine_state": saved.engine.state_dict(),
            "recorder": recorder_state,
            "initial": saved.initial,
            "threads": torch.get_num_threads(),
            "config": OmegaConf.to_container(saved.cfg, resolve=True, enum_to_str=True),
            "rng": torch.get_rng_state(),
        },
    )


def _save_what_we_have(
    error: BaseException,
    saved: _Saved,
    step: int | None,
    recorder: Recorder | None,
    summary: dict,
    reserve: Reserve,
    clock,
) -> None:
    """On a stop signal: flush, checkpoint the last completed step (`step`; None when the
    first step was not done, so an earlier checkpoint stays as it is), mark the summary
    interrupted. On any other failure: keep every complete row and say so. The reserve is
    freed first, so that a full disk still gets the summary. Each file is tried on its own, and
    nothing here masks the original error."""
    reserve.release()
    state = None
    if recorder is not None:
        try:
            state = recorder.snapshot()
            recorder.close()
        except OSError as also:
            log.error(
                "could not write the last rows after %s: %s (every row before them is whole)",
                type(error).__name__,
                also,
            )
    interrupted = isinstance(error, KeyboardInterrupt)
    if interrupted:
        summary.update(status="interrupted", error=str(error) or "KeyboardInterrupt")
        if step is not None and state is not None:
            try:
                _save_checkpoint(saved, step, state)
                log.warning(
                    "interrupted at step %d: metrics flushed, checkpoint.pt written; go on with: "
                    "python -m xorrelu.resume %s",
                    step,
                    saved.out_dir,
                )
            except OSError as also:
                summary["error"] += f"; checkpoint.pt not written: {also}"
                log.error(
                    "interrupted at step %d, but checkpoint.pt could not be written: %s", step, also
                )
        elif (saved.out_dir / "checkpoint.pt").is_file():  # a resumed run: its checkpoint holds
            log.warning(
                "interrupted before its first step; the checkpoint is unchanged; go on with: "
                "python -m xorrelu.resume %s",
                saved.out_dir,
            )
        else:
            log.warning("interrupted before the first step: nothing was trained; run it again")
    else:
        summary.update(status="failed", error=f"{type(error).__name__}: {error}")
    summary.update(_timing(step if step is not None else clock[2], saved.cfg.replicas, *clock))
    try:
        write_json(saved.out_dir / "summary.json", summary)
    except OSError as also:
        log.error("could not write summary.json after %s: %s", type(error).__name__, also)


def _print_progress(step: int, row: torch.Tensor) -> None:
    costs, accs = row[:, 0], row[:, 1]
    finite = torch.isfinite(costs)
    alive = costs[finite]
    spread = (
        f"{alive.quantile(0.5):.7g} ({alive.min():.4g}-{alive.max():.4g})" if len(alive) else "nan"
    )
    solved_now = int(solved(costs, accs).sum())
    extra = f", diverged {int((~finite).sum())}" if not finite.all() else ""
    log.info("step %7d | cost %s | solved %d/%d%s", step, spread, solved_now, len(costs), extra)


def _print_table(replicas: list[dict], x: torch.Tensor, max_points: int = 8) -> None:
    points = ["h(" + ",".join(str(int(v)) for v in p) + ")" for p in x[:max_points]]
    more = " ..." if len(x) > max_points else ""
    log.info(
        "%6s %12s %8s %6s  %s%s",
        "seed",
        "cost",
        "accuracy",
        "solved",
        "  ".join(f"{p:>10}" for p in points),
        more,
    )
    for rep in replicas:
        cost_, acc = rep["final_cost"], rep["final_accuracy"]
        hyps = "  ".join(f"{h:10.7f}" for h in rep["hypothesis"][:max_points])
        log.info(
            "%6d %12s %8s %6s  %s%s",
            rep["seed"],
            "diverged" if cost_ is None else f"{cost_:.7g}",
            "-" if acc is None else f"{acc:.2f}",
            "yes" if rep["solved"] else "no",
            hyps,
            more,
        )


def _timing(
    step: int, replicas: int, start: float, warm: float | None = None, first: int = 0
) -> dict:
    """Wall time of this session, and throughput over its steps after the first one (`first`,
    whose time, with any compilation, is `warmup_seconds`)."""
    now = time.perf_counter()
    timing = {"last_step": step, "wall_seconds": now - start}
    if warm is not None:
        done = step - first - 1
        timing["warmup_seconds"] = warm - start
        timing["model_steps_per_second"] = (
            done * replicas / (now - warm) if done > 0 and now > warm else None
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
        "versions": {
            "xorrelu": _version(),
            "torch": torch.__version__,
            "hydra": hydra.__version__,
            "python": platform.python_version(),
        },
        "git_commit": _git_commit(),
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
