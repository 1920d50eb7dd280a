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
from pathlib import Path

import hydra
import torch
from omegaconf import OmegaConf
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from xorrelu.activations import get_activation
from xorrelu.config import Device
from xorrelu.data import make_dataset
from xorrelu.files import save_torch, write_json
from xorrelu.metrics import (
    SOLVED_COST,
    MetricsWriter,
    accuracy,
    columns,
    cost,
    forward,
    grad_norms,
    prelu_slopes,
    stuck_fractions,
)
from xorrelu.model import build_model, linear_layers

log = logging.getLogger(__name__)

OPTIMIZERS = {
    "sgd": lambda params, c: torch.optim.SGD(params, lr=c.lr),
    "momentum": lambda params, c: torch.optim.SGD(params, lr=c.lr, momentum=c.momentum, nesterov=c.nesterov),
    "adam": lambda params, c: torch.optim.Adam(params, lr=c.lr, betas=(c.beta1, c.beta2), eps=c.eps),
    "rmsprop": lambda params, c: torch.optim.RMSprop(params, lr=c.lr, alpha=c.alpha, eps=c.eps),
}


def resolve_device(device) -> torch.device:
    device = Device(device)
    if device is Device.auto:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device.value)


def train(cfg, out_dir: str | Path) -> dict:
    """Train cfg.replicas nets; write metrics.csv, summary.json and weights.pt into out_dir."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.device)
    x, y = make_dataset(cfg.dataset, device)
    model = build_model(cfg, x.shape[1]).to(device)
    optimizer = OPTIMIZERS[cfg.optimizer.name](model.parameters(), cfg.optimizer)
    activation = get_activation(cfg.activation.name)
    seeds = list(range(cfg.seed, cfg.seed + cfg.replicas))
    log.info("%s", model)

    summary = _job_info(cfg, device)
    write_json(out_dir / "summary.json", summary)
    initial = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    writer = MetricsWriter(out_dir / "metrics.csv", columns(cfg.depth), seeds)
    diverged = torch.zeros(cfg.replicas, dtype=torch.bool, device=device)
    solved_since = torch.full((cfg.replicas,), -1, dtype=torch.long, device=device)  # -1 = not solved
    linears = linear_layers(model)
    steps, log_every, print_every = cfg.steps, cfg.log_every, cfg.print_every  # plain ints in the hot loop
    start, step = time.perf_counter(), 0
    bar = tqdm(total=steps, unit="step", disable=not sys.stderr.isatty(), leave=False)
    try:
        with logging_redirect_tqdm():
            for step in range(steps + 1):
                # forward and backward at the parameters after `step` updates
                logits, pre_activations = forward(model, x)
                costs = cost(logits, y)
                optimizer.zero_grad(set_to_none=False)
                costs.sum().backward()  # a sum keeps replicas independent: each gets its own gradient
                accs = accuracy(logits, y)
                diverged |= ~torch.isfinite(costs)

                # log: one row per replica
                if step % log_every == 0 or step == steps:
                    with torch.no_grad():
                        stuck = stuck_fractions(pre_activations, activation, cfg.activation, prelu_slopes(model))
                        row = torch.cat([costs[:, None], accs[:, None], grad_norms(linears).T, stuck.T], dim=1)
                        writer.add(step, torch.where(diverged[:, None], float("nan"), row))
                    solved = (accs == 1) & (costs < SOLVED_COST) & ~diverged
                    solved_since = torch.where(solved, torch.where(solved_since < 0, step, solved_since), -1)
                if step % print_every == 0 or step == steps:
                    _print_progress(step, costs, diverged, solved_since)
                if step == steps:
                    break

                # update
                optimizer.step()
                bar.update()
    except BaseException as error:
        writer.close()
        summary.update(status="interrupted" if isinstance(error, KeyboardInterrupt) else "failed", error=repr(error))
        summary.update(_timing(step, cfg.replicas, start))
        write_json(out_dir / "summary.json", summary)
        raise
    finally:
        bar.close()
    writer.close()

    final = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    save_torch(out_dir / "weights.pt", {"initial": initial, "final": final, "seeds": seeds, "step": step})
    hypotheses = torch.sigmoid(logits).detach().cpu()
    summary["replicas"] = [
        {
            "seed": seed,
            "final_cost": None if diverged[r] else costs[r].item(),
            "final_accuracy": None if diverged[r] else accs[r].item(),
            "solved": bool(solved_since[r] >= 0),
            "first_step_solved": int(solved_since[r]) if solved_since[r] >= 0 else None,
            "diverged": bool(diverged[r]),
            "hypothesis": hypotheses[r].tolist(),
        }
        for r, seed in enumerate(seeds)
    ]
    summary.update(status="completed", **_timing(step, cfg.replicas, start))
    write_json(out_dir / "summary.json", summary)
    _print_table(summary["replicas"], x.cpu())
    return summary


def _print_progress(step: int, costs: torch.Tensor, diverged: torch.Tensor, solved_since: torch.Tensor) -> None:
    alive = costs[~diverged].detach()
    spread = f"{alive.quantile(0.5):.7g} ({alive.min():.4g}-{alive.max():.4g})" if len(alive) else "nan"
    extra = f", diverged {int(diverged.sum())}" if diverged.any() else ""
    log.info("step %7d | cost %s | solved %d/%d%s", step, spread, int((solved_since >= 0).sum()), len(costs), extra)


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


def _timing(step: int, replicas: int, start: float) -> dict:
    wall = time.perf_counter() - start
    return {"last_step": step, "wall_seconds": wall, "model_steps_per_second": step * replicas / wall if wall > 0 else None}


def _job_info(cfg, device: torch.device) -> dict:
    return {
        "status": "running",
        "last_step": 0,
        "config": OmegaConf.to_container(cfg, resolve=True, enum_to_str=True),
        "device": str(device),
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
