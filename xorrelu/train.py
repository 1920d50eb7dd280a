"""The training loop: full-batch gradient descent on all replicas at once.

    python -m xorrelu                                  # the lesson's ReLU net, 16 seeds
    python -m xorrelu activation=sigmoid,relu --multirun

`train(cfg, out_dir)` is the whole job; `python -m xorrelu` is a thin Hydra shell around it.
"""

from __future__ import annotations

import importlib.metadata
import logging
import platform
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import hydra
import torch
from omegaconf import OmegaConf
from torch import nn
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from xorrelu import fused
from xorrelu.activations import Activation, BatchedPReLU, get_activation
from xorrelu.config import Device, Engine
from xorrelu.data import make_dataset
from xorrelu.files import save_torch, write_json
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
from xorrelu.tensorboard import TensorBoardLog

log = logging.getLogger(__name__)

OPTIMIZERS = {
    "sgd": lambda params, c: torch.optim.SGD(params, lr=c.lr),
    "momentum": lambda params, c: torch.optim.SGD(params, lr=c.lr, momentum=c.momentum, nesterov=c.nesterov),
    "adam": lambda params, c: torch.optim.Adam(params, lr=c.lr, betas=(c.beta1, c.beta2), eps=c.eps),
    "rmsprop": lambda params, c: torch.optim.RMSprop(params, lr=c.lr, alpha=c.alpha, eps=c.eps),
}


COMPILE_AUTO_MODEL_STEPS = 2_000_000  # compile=auto compiles from here: ~15 s of compiling pays off (benchmarks/results.md)


def resolve_device(device) -> torch.device:
    device = Device(device)
    if device is Device.auto:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device.value)


class AutogradEngine:
    """The nn.Sequential and torch.optim as they are: the reference every fast path is held to."""

    name, compiled = "autograd", False

    def __init__(self, model: nn.Sequential, x: torch.Tensor, y: torch.Tensor, act: Activation, cfg):
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
                row += [grad_norms(self.layers), stuck_fractions(pre_activations, self.act, self.act_cfg, prelu)]
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


def make_engine(cfg, model: nn.Sequential, x: torch.Tensor, y: torch.Tensor, same_as: dict | None = None):
    """compile=auto compiles when the run is long enough for ~15 s of compilation to pay off;
    engine=auto takes the fused engine exactly then (uncompiled, autograd is as fast). A resumed
    run keeps the engine of its checkpoint (`same_as`), so its numbers continue exactly."""
    act = get_activation(cfg.activation.name)
    compile_ = cfg.steps * cfg.replicas >= COMPILE_AUTO_MODEL_STEPS if cfg.compile == "auto" else bool(cfg.compile)
    engine = Engine(cfg.engine)
    if same_as:
        engine, compile_ = Engine(same_as["engine"]), same_as["compiled"]
    if engine is Engine.auto:
        engine = Engine.fused if compile_ and fused.supports(cfg) else Engine.autograd
    if engine is Engine.autograd:
        return AutogradEngine(model, x, y, act, cfg)
    return fused.FusedEngine(model, x, y, act, cfg, compile=compile_)


class Interrupted(BaseException):
    """A stop signal arrived: training stopped at a step boundary with everything saved."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum
        self.exit_code = 130 if signum == signal.SIGINT else 143  # SIGUSR2 (preemption) as SIGTERM


STOP_SIGNALS = [signal.SIGINT, signal.SIGTERM, signal.SIGUSR2]


@contextmanager
def _stop_on_signals():
    """SIGINT, SIGTERM and SIGUSR2 (what submitit sends before preemption) set a flag that the
    loop reads between steps; the handlers before are restored afterwards."""
    flag = {"signum": None}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = {s: signal.signal(s, lambda signum, frame: flag.update(signum=signum)) for s in STOP_SIGNALS}
    try:
        yield flag
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def train(cfg, out_dir: str | Path, checkpoint: dict | None = None) -> dict:
    """Train cfg.replicas nets; write metrics.csv, summary.json, weights.pt and checkpoint.pt
    into out_dir. With `checkpoint` (xorrelu.resume), continue from it in the same files."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
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
    log.info("engine: %s%s, %d thread(s), %s", engine.name, ", compiled" if engine.compiled else "", torch.get_num_threads(), device)

    summary = _job_info(cfg, device, engine)
    if checkpoint:
        summary["resumed_from_step"] = checkpoint["step"]
    write_json(out_dir / "summary.json", summary)
    initial = checkpoint["initial"] if checkpoint else _cpu_state(model)
    seeds = list(range(cfg.seed, cfg.seed + cfg.replicas))
    recorder = Recorder(out_dir / "metrics.csv", columns(cfg.depth), seeds, device, cfg.steps, resume=checkpoint and checkpoint["recorder"])
    board = TensorBoardLog(out_dir, cfg.depth) if cfg.tensorboard else None
    steps, log_every, print_every = cfg.steps, cfg.log_every, cfg.print_every  # plain ints in the hot loop
    first = checkpoint["step"] if checkpoint else 0
    start, warm, step = time.perf_counter(), None, first
    bar = tqdm(initial=first, total=steps, unit="step", disable=not sys.stderr.isatty(), leave=False)
    try:
        with logging_redirect_tqdm(), _stop_on_signals() as stop:
            for step in range(first, steps + 1):
                if stop["signum"]:
                    raise Interrupted(stop["signum"])
                logged = step % log_every == 0 or step == steps
                if step == steps:  # where a longer run would go on: before the final row
                    resume_point = recorder.snapshot()
                row = engine.step(update=step < steps, log=logged)  # metrics after `step` updates, then update
                if logged:
                    recorder.add(step, row)
                    if board:
                        board.scalars(step, row)
                if step % print_every == 0 or step == steps:
                    _print_progress(step, row)
                    if board:
                        engine.write_back()  # the fused engine keeps its own copy of the weights
                        board.histograms(step, model)
                if step == first:
                    warm = time.perf_counter()  # the first step carries any compilation
                bar.update(step < steps)
        recorder.close()
    except BaseException as error:
        _save_what_we_have(error, out_dir, step, cfg, model, engine, recorder, initial, summary, (start, warm, first))
        raise
    finally:
        bar.close()
        if board:
            board.close()
    timing = _timing(step, cfg.replicas, start, warm, first)
    _save_checkpoint(out_dir, step, cfg, model, engine, resume_point, initial)

    final = _cpu_state(model)
    save_torch(out_dir / "weights.pt", {"initial": initial, "final": final, "seeds": seeds, "step": step})
    with torch.no_grad():
        hypotheses = torch.sigmoid(forward(model, x)[0]).cpu()
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
    write_json(out_dir / "summary.json", summary)
    _print_table(summary["replicas"], x.cpu())
    unsolved = [c for c in causes if c]
    if unsolved:
        log.info("unsolved: %s", ", ".join(f"{c} {unsolved.count(c)}" for c in dict.fromkeys(unsolved)))
    return summary


def _cpu_state(model: nn.Module) -> dict:
    """A copy of the model's state on the CPU, safe to keep while training goes on."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _save_checkpoint(out_dir: Path, step: int, cfg, model, engine, recorder_state: dict, initial: dict) -> None:
    """Everything a run needs to go on from `step` (the next step to measure; `step` updates done)."""
    engine.write_back()
    save_torch(
        out_dir / "checkpoint.pt",
        {
            "step": step,
            "model": _cpu_state(model),
            "engine": engine.name,
            "compiled": engine.compiled,
            "engine_state": engine.state_dict(),
            "recorder": recorder_state,
            "initial": initial,
            "threads": torch.get_num_threads(),
            "config": OmegaConf.to_container(cfg, resolve=True, enum_to_str=True),
            "rng": torch.get_rng_state(),
        },
    )


def _save_what_we_have(error, out_dir, step, cfg, model, engine, recorder, initial, summary, clock) -> None:
    """On a stop signal: flush, checkpoint the last completed step, mark the summary interrupted.
    On any other failure: keep every complete row and say so. Never mask the original error."""
    try:
        state = recorder.snapshot()
        recorder.close()
        if isinstance(error, (Interrupted, KeyboardInterrupt)):
            _save_checkpoint(out_dir, step, cfg, model, engine, state, initial)
            summary.update(status="interrupted", error=str(error) or "KeyboardInterrupt")
            log.warning("interrupted at step %d: metrics flushed, checkpoint.pt written; go on with: python -m xorrelu.resume %s", step, out_dir)
        else:
            summary.update(status="failed", error=f"{type(error).__name__}: {error}")
        summary.update(_timing(step, cfg.replicas, *clock))
        write_json(out_dir / "summary.json", summary)
    except OSError as also:
        log.error("could not save everything after %s: %s", type(error).__name__, also)


def _print_progress(step: int, row: torch.Tensor) -> None:
    costs, accs = row[:, 0], row[:, 1]
    finite = torch.isfinite(costs)
    alive = costs[finite]
    spread = f"{alive.quantile(0.5):.7g} ({alive.min():.4g}-{alive.max():.4g})" if len(alive) else "nan"
    solved_now = int(solved(costs, accs).sum())
    extra = f", diverged {int((~finite).sum())}" if not finite.all() else ""
    log.info("step %7d | cost %s | solved %d/%d%s", step, spread, solved_now, len(costs), extra)


def _print_table(replicas: list[dict], x: torch.Tensor, max_points: int = 8) -> None:
    points = ["h(" + ",".join(str(int(v)) for v in p) + ")" for p in x[:max_points]]
    more = " ..." if len(x) > max_points else ""
    log.info("%6s %12s %8s %6s  %s%s", "seed", "cost", "accuracy", "solved", "  ".join(f"{p:>10}" for p in points), more)
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


def _timing(step: int, replicas: int, start: float, warm: float | None = None, first: int = 0) -> dict:
    """Wall time of this session, and throughput over its steps after the first one (`first`,
    whose time, with any compilation, is `warmup_seconds`)."""
    now = time.perf_counter()
    timing = {"last_step": step, "wall_seconds": now - start}
    if warm is not None:
        done = step - first - 1
        timing["warmup_seconds"] = warm - start
        timing["model_steps_per_second"] = done * replicas / (now - warm) if done > 0 and now > warm else None
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
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None
