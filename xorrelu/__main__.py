"""`python -m xorrelu [key=value ...] [--multirun]`: the Hydra shell around xorrelu.train.train."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from xorrelu.config import ConfigError, register_configs, validate
from xorrelu.train import Interrupted, train

# A source checkout reads its top-level conf/; an installed package reads the copy installed as
# xorrelu.conf (pyproject maps conf/ there).
_CHECKOUT_CONF = Path(__file__).resolve().parent.parent / "conf"
CONFIG_PATH = str(_CHECKOUT_CONF) if (_CHECKOUT_CONF / "config.yaml").is_file() else "pkg://xorrelu.conf"

register_configs()
_job_started = False  # set once Hydra has composed a config and handed it to us


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="config")
def _hydra_main(cfg: DictConfig) -> None:
    global _job_started
    _job_started = True
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        validate(cfg)
    except ConfigError as error:
        _remove_job_dir(out_dir)
        print(f"xorrelu: error: {error}", file=sys.stderr)
        sys.exit(2)
    threads = job_threads(cfg.threads, HydraConfig.get().launcher)
    if threads:
        torch.set_num_threads(threads)
    try:
        train(cfg, out_dir)
    except OSError as error:  # a full disk, a vanished dir: every complete row so far is kept
        print(f"xorrelu: error: cannot write the results in {out_dir}: {error}", file=sys.stderr)
        sys.exit(1)


def job_threads(threads: int, launcher) -> int:
    """threads=0 shares the cores among the jobs a launcher runs at once (joblib's n_jobs,
    submitit's cpus_per_task), so that jobs x threads never exceeds the cores; 0 = leave it."""
    if threads > 0:
        return threads
    cores = os.cpu_count() or 1
    if launcher.get("cpus_per_task"):
        return int(launcher.cpus_per_task)
    n_jobs = launcher.get("n_jobs")
    if n_jobs:
        parallel = cores if n_jobs < 0 else min(n_jobs, cores)
        return max(1, cores // parallel)
    return 0


def _remove_job_dir(out_dir: Path) -> None:
    """A rejected run leaves nothing behind: Hydra made its job dir before calling us."""
    shutil.rmtree(out_dir, ignore_errors=True)
    parent = out_dir.parent
    while parent.name != "outputs" and parent != parent.parent:  # prune now-empty dirs, or a sweep dir with no jobs
        leftovers = {p.name for p in parent.iterdir()} if parent.is_dir() else set()
        if leftovers - {"multirun.yaml"}:
            break
        shutil.rmtree(parent, ignore_errors=True)
        parent = parent.parent


def _check_output_root(args: list[str]) -> None:
    """Hydra makes the run dir before anything else and would fail with a traceback when a file
    stands where a directory must go: say it in one line instead, before anything runs."""
    roots = [arg.split("=", 1)[1].split("${")[0] for arg in args if arg.startswith(("hydra.run.dir=", "hydra.sweep.dir="))]
    for root in roots or ["outputs"]:
        for path in [Path(root), *Path(root).parents]:
            if path.exists() and not path.is_dir():
                print(f"xorrelu: error: cannot write results under {root}: {path} is a file, not a directory", file=sys.stderr)
                sys.exit(2)


def main() -> None:
    """Entry point of `python -m xorrelu` and the `xorrelu` script. Exit codes: 2 bad config or
    output path, 1 a failure while training, 130 / 143 stopped by SIGINT / SIGTERM or SIGUSR2."""
    _check_output_root(sys.argv[1:])
    try:
        _hydra_main()
    except Interrupted as stop:
        sys.exit(stop.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except SystemExit as exit_:
        if exit_.code == 1 and not _job_started:  # Hydra refused an override before any job ran
            sys.exit(2)
        raise


if __name__ == "__main__":
    main()
