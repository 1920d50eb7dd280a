"""Go on with interrupted jobs, in their own dirs, from their checkpoints.

    python -m xorrelu.resume JOB_DIR [--steps N]      # or: xorrelu-resume

JOB_DIR is a job dir, or a multirun dir whose unfinished jobs are all resumed (finished ones
are skipped). The config is the one saved in the job dir: Hydra does not compose it again
(that would rewrite .hydra/config.yaml). --steps N extends a run to N steps; it never shortens
one. On the same machine a resumed metrics.csv is byte-identical to an uninterrupted run's.
"""

from __future__ import annotations

import argparse
import json
import logging
import pickle
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf

from xorrelu.callbacks import plot_safely
from xorrelu.config import ConfigError, validate
from xorrelu.train import Interrupted, train

log = logging.getLogger("xorrelu.resume")


class ResumeError(Exception):
    """A job that cannot be resumed; the message says why."""


def saved_config(job_dir: Path) -> dict:
    summary = job_dir / "summary.json"
    try:
        return json.loads(summary.read_text())["config"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    hydra_config = job_dir / ".hydra" / "config.yaml"
    if hydra_config.is_file():
        return OmegaConf.to_container(OmegaConf.load(hydra_config), resolve=True)
    raise ResumeError(f"{job_dir} holds no config (summary.json or .hydra/config.yaml): not an xorrelu job dir")


def load_checkpoint(job_dir: Path) -> dict:
    path = job_dir / "checkpoint.pt"
    if not path.is_file():
        raise ResumeError(f"{job_dir} has no checkpoint.pt to resume from (a job killed with SIGKILL leaves none: run it again)")
    try:
        checkpoint = torch.load(path, weights_only=True, map_location="cpu")  # never unpickles code
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, AttributeError) as error:
        raise ResumeError(f"{path} is not an xorrelu checkpoint (refused: {str(error).splitlines()[0]})") from None
    if not isinstance(checkpoint, dict) or not {"step", "model", "engine", "engine_state", "recorder", "config"} <= set(checkpoint):
        raise ResumeError(f"{path} is not an xorrelu checkpoint")
    return checkpoint


def _differences(a: dict, b: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        if isinstance(x, dict) and isinstance(y, dict):
            out += _differences(x, y, f"{prefix}{key}.")
        elif x != y and f"{prefix}{key}" != "steps":
            out.append(f"{prefix}{key}: checkpoint {x!r}, job dir {y!r}")
    return out


def resume_job(job_dir: Path, steps: int | None = None) -> dict | None:
    """Resume one job; None when it is already complete (and not extended)."""
    config = saved_config(job_dir)
    summary = json.loads((job_dir / "summary.json").read_text()) if (job_dir / "summary.json").is_file() else {}
    target = config["steps"] if steps is None else steps
    if target < config["steps"]:
        raise ResumeError(f"--steps {target} would shorten {job_dir}, which runs {config['steps']} steps: --steps may only extend a run")
    if summary.get("status") == "completed" and target == config["steps"]:
        log.info("skipping %s: completed", job_dir)
        return None
    checkpoint = load_checkpoint(job_dir)
    changed = _differences(checkpoint["config"], config)
    if changed:
        raise ResumeError(f"the config in {job_dir} is not the one its checkpoint was made with: {'; '.join(changed)}")
    config["steps"] = target
    cfg = OmegaConf.create(config)
    try:
        validate(cfg)
    except ConfigError as error:
        raise ResumeError(f"{job_dir}: {error}") from None
    log.info("resuming %s at step %d of %d", job_dir, checkpoint["step"], target)
    return train(cfg, job_dir, checkpoint=checkpoint)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="xorrelu-resume", description=__doc__.split("\n\n")[0])
    parser.add_argument("path", metavar="JOB_DIR", help="a job dir, or a multirun dir to resume every unfinished job below it")
    parser.add_argument("--steps", type=int, help="extend the run(s) to this many steps")
    args = parser.parse_args(argv)
    logging.basicConfig(format="%(message)s", level=logging.INFO, stream=sys.stdout)
    root = Path(args.path)
    if not root.is_dir():
        print(f"xorrelu-resume: error: not a directory: {root}", file=sys.stderr)
        return 2
    jobs = [root] if (root / "checkpoint.pt").is_file() or (root / "summary.json").is_file() else sorted(
        (p.parent for p in root.glob("*/summary.json")), key=lambda p: int(p.name) if p.name.isdigit() else p.name
    )
    if not jobs:
        print(f"xorrelu-resume: error: no xorrelu job in {root}", file=sys.stderr)
        return 2
    failed = 0
    for job in jobs:
        handler = logging.FileHandler(job / "xorrelu.log")
        logging.getLogger().addHandler(handler)
        try:
            resume_job(job, args.steps)
        except ResumeError as error:
            print(f"xorrelu-resume: error: {error}", file=sys.stderr)
            failed += 1
        except Interrupted as stop:
            return stop.exit_code
        except OSError as error:
            print(f"xorrelu-resume: error: cannot write the results in {job}: {error}", file=sys.stderr)
            failed += 1
        finally:
            logging.getLogger().removeHandler(handler)
            handler.close()
    if root not in jobs and saved_config(jobs[0]).get("plot", True):
        plot_safely(root)
    return 2 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
