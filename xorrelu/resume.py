"""Go on with interrupted jobs, in their own dirs, from their checkpoints.

    python -m xorrelu.resume JOB_DIR [--steps N]      # or: xorrelu-resume

JOB_DIR is a job dir, or a multirun dir whose unfinished jobs are all resumed (finished ones
are skipped). The config is the one saved in the job dir: Hydra does not compose it again
(that would rewrite .hydra/config.yaml). --steps N extends a run to N steps; it never shortens
one. On the same machine a resumed metrics.csv is byte-identical to an uninterrupted run's.

Every value read from summary.json and checkpoint.pt is checked against the config, the model
it builds and the size of metrics.csv before anything is written: a job that cannot be resumed
exactly is refused with one line, and its files stay as they were.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from xorrelu import signals
from xorrelu.callbacks import plot_safely
from xorrelu.config import ConfigError, upgrade, validate
from xorrelu.data import make_dataset, test_points
from xorrelu.engines import fused_runs, make_engine
from xorrelu.files import JobDirBusy
from xorrelu.jobdir import (
    STATUSES,
    JobDirError,
    Problem,
    check_config,
    file_size,
    find_jobs,
    load_checkpoint,
    present,
    read_config,
    read_summary,
    short,
)
from xorrelu.metrics import columns, last_logged_before
from xorrelu.model import build_model
from xorrelu.process import use_threads
from xorrelu.regularization import regularized
from xorrelu.train import Interrupted, train

log = logging.getLogger("xorrelu.resume")

# What xorrelu.train._save_checkpoint writes, with the type each value must have (checkpoints
# written before 2026-11-29 also hold an "rng" that nothing reads: it is ignored).
CHECKPOINT = {
    "step": int,
    "model": dict,
    "engine": str,
    "compiled": bool,
    "engine_state": dict,
    "recorder": dict,
    "initial": dict,
    "threads": int,
    "config": dict,
}
# The outcome tracker's state, as xorrelu.outcomes.Outcomes.state_dict() saves it.
RECORDER = {
    "diverged": torch.bool,
    "first_step_solved": torch.int64,
    "first_ratio": torch.float32,
    "below_ln2": torch.bool,
    "cost_at_90": torch.float32,
}
MAX_THREADS = (
    1024  # torch.set_num_threads(N) starts N threads; more than this is not a real machine's count
)


class ResumeError(JobDirError):
    """A job that cannot be resumed; the message says why."""


def _saved(job_dir: Path) -> tuple[dict | None, dict]:
    """(summary.json or None, the job's config: jobdir.read_config's, and one train() can run).
    A summary must say the job's status: only a completed job is skipped."""
    summary = read_summary(job_dir)
    if summary is not None and summary.get("status") is None:
        raise Problem(job_dir / "summary.json", "status", None, allowed=", ".join(STATUSES))
    config, source = read_config(job_dir, summary)
    check_config(config, str(source))
    return summary, config


def saved_config(job_dir: Path) -> dict:
    return _saved(job_dir)[1]


def _differences(a: dict, b: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        if isinstance(x, dict) and isinstance(y, dict):
            out += _differences(x, y, f"{prefix}{key}.")
        elif x != y and f"{prefix}{key}" != "steps":
            out.append(f"{prefix}{key}: checkpoint {short(x)}, job dir {short(y)}")
    return out


def _mismatch(saved, expected, where: str) -> str | None:
    """How `saved` differs from `expected` (what this code itself would save): tensors in shape,
    dtype and layout, containers in keys and length, other values in type and value (an
    optimizer's lr, its parameter indices). None when they agree. Recursion follows `expected`,
    so a deeply nested hostile value costs nothing."""
    if isinstance(expected, torch.Tensor):
        if not isinstance(saved, torch.Tensor) or saved.layout != torch.strided:
            return f"{where} is {short(saved)}, not a tensor"
        if saved.shape != expected.shape or saved.dtype != expected.dtype:
            return (
                f"{where} is {saved.dtype} {list(saved.shape)}, "
                f"not {expected.dtype} {list(expected.shape)}"
            )
        return None
    if isinstance(expected, dict):
        if not isinstance(saved, dict) or set(saved) != set(expected):
            keys = sorted(map(str, saved)) if isinstance(saved, dict) else saved
            return f"{where} is {short(keys)}, not the keys {short(sorted(map(str, expected)))}"
        return next(
            filter(None, (_mismatch(saved[k], v, f"{where}[{k!r}]") for k, v in expected.items())),
            None,
        )
    if isinstance(expected, (list, tuple)):
        if type(saved) is not type(expected) or len(saved) != len(expected):
            return f"{where} is {short(saved)}, not a {type(expected).__name__} of {len(expected)}"
        return next(
            filter(
                None,
                (
                    _mismatch(s, e, f"{where}[{i}]")
                    for i, (s, e) in enumerate(zip(saved, expected, strict=True))
                ),
            ),
            None,
        )
    if (
        isinstance(saved, (torch.Tensor, dict, list, tuple))
        or isinstance(saved, bool) != isinstance(expected, bool)
        or saved != expected
    ):
        return f"{where} is {short(saved)}, not {short(expected)}"
    return None


def _update_counts(engine_state: dict) -> list[float]:
    """The number of updates the engine state says it has made: the fused engine's t, each
    torch optimizer state's "step" (Adam, RMSprop)."""
    if "t" in engine_state:
        return [float(engine_state["t"])]
    return [float(s["step"]) for s in engine_state.get("state", {}).values() if "step" in s]


def _check_rows(path: Path, csv_bytes: int, step: int, *, cfg, checkpoint_path: Path) -> None:
    """metrics.csv must hold, before csv_bytes, this config's header and whole steps before the
    checkpoint's. Resume cuts the file at csv_bytes and appends: a wrong position would pad it
    with NUL bytes, cut a row in half, or repeat and lose steps."""
    fix = "restore metrics.csv and checkpoint.pt from the same moment, or run the job again"
    if not present(path):
        raise ResumeError(
            f"{path} is missing: the rows before the checkpoint are lost; run the job again"
        )
    size = file_size(path, "rows")
    names = columns(cfg.depth, regularized(cfg), test=test_points(cfg.dataset) > 0)
    header = (",".join(names) + "\n").encode()
    if not len(header) <= csv_bytes <= size:
        raise ResumeError(
            f"{checkpoint_path} says metrics.csv holds {csv_bytes} bytes before step {step}, "
            f"but {path} is {size} bytes (and its header {len(header)}); {fix}"
        )
    longest = (
        32 * len(names) + 64
    )  # a row: an int step, an int seed and float32s, each far under 32 characters
    begin = max(
        len(header) - 1, csv_bytes - 1 - longest
    )  # from the header's newline at the earliest
    try:
        with open(path, "rb") as file:
            head = file.read(len(header))
            file.seek(begin)
            tail = file.read(csv_bytes - begin)
    except OSError as error:
        raise JobDirError(f"cannot read {path}: {error.strerror or error}") from None
    if head != header:
        raise ResumeError(
            f"{path} does not start with the header of this config's columns "
            f"({short(header.decode())}); {fix}"
        )
    # step 0 is always logged: rows exactly when step > 0
    if (csv_bytes == len(header)) != (step == 0):
        rows = "no rows" if step else "rows"
        raise ResumeError(
            f"{path} has {rows} before byte {csv_bytes}, but {checkpoint_path} is at step {step}; "
            f"{fix}"
        )
    if step == 0:
        return
    if not tail.endswith(b"\n"):
        raise ResumeError(
            f"{checkpoint_path} says the rows end at byte {csv_bytes} of {path}, "
            f"which is inside a row; {fix}"
        )
    start = tail.rfind(b"\n", 0, len(tail) - 1)
    fields = tail[start + 1 : -1].split(b",")
    try:
        last_step, last_seed = int(fields[0]), int(fields[1])
    except (ValueError, IndexError):
        last_step = last_seed = None
    if start < 0 or len(fields) != len(names) or last_step is None:
        raise ResumeError(
            f"{path} has no row of this config's {len(names)} columns just before byte "
            f"{csv_bytes}; {fix}"
        )
    if last_seed != cfg.seed + cfg.replicas - 1:
        raise ResumeError(
            f"{path} ends in the middle of step {last_step} at byte {csv_bytes} (seed {last_seed}, "
            f"not the last replica's {cfg.seed + cfg.replicas - 1}); {fix}"
        )
    logged = last_logged_before(cfg, step)
    if last_step != logged:
        raise ResumeError(
            f"{path} ends with step {last_step} at byte {csv_bytes}, but {checkpoint_path} goes on "
            f"from step {step}, after step {logged}; {fix}"
        )


def _check_fields(checkpoint, path: Path, job_dir: Path, *, config: dict, cfg) -> None:
    """The checkpoint's plain values: present, of their types, in range,
    and of this job's config."""
    if not isinstance(checkpoint, dict):
        raise ResumeError(
            f"{path} is not an xorrelu checkpoint (it holds a {type(checkpoint).__name__}, "
            "not a dict)"
        )
    missing = sorted(set(CHECKPOINT) - set(checkpoint))
    if missing:
        raise ResumeError(f"{path} is not an xorrelu checkpoint (it lacks {', '.join(missing)})")
    for key, kind in CHECKPOINT.items():
        if not isinstance(checkpoint[key], kind) or kind is int and type(checkpoint[key]) is bool:
            raise _damaged(
                path,
                f"{key} is {short(checkpoint[key])}, not {'an' if kind is int else 'a'} "
                f"{kind.__name__}",
            )
    checkpoint["config"] = upgrade(checkpoint["config"])  # as read_config reads the job's
    check_config(checkpoint["config"], str(path))
    changed = _differences(checkpoint["config"], config)
    if changed:
        raise ResumeError(
            f"the config in {job_dir} is not the one its checkpoint was made with: "
            f"{'; '.join(changed)}"
        )

    step, engine, threads = checkpoint["step"], checkpoint["engine"], checkpoint["threads"]
    if not 0 <= step <= checkpoint["config"]["steps"]:
        raise _damaged(
            path,
            f"step {step} is outside 0..{checkpoint['config']['steps']}, the steps of its config",
        )
    if step > cfg.steps:  # train() would run no step at all, after cutting metrics.csv
        source = "summary.json" if present(job_dir / "summary.json") else ".hydra/config.yaml"
        raise ResumeError(
            f"{path} is at step {step}, past the {cfg.steps} steps this resume would run to "
            f"(the steps of {source}): pass --steps {step} or more"
        )
    if engine not in ("autograd", "fused"):
        raise _damaged(path, f"engine {short(engine)} is neither autograd nor fused")
    if engine == "autograd" and checkpoint["compiled"]:
        raise _damaged(path, "it says the autograd engine was compiled, which it never is")
    if engine == "fused" and not fused_runs(cfg):
        raise _damaged(path, f"the fused engine does not run activation {cfg.activation.name}")
    if not 0 <= threads <= MAX_THREADS:
        raise _damaged(path, f"threads {threads} is outside 0..{MAX_THREADS}")


def _check_state(checkpoint: dict, path: Path, cfg, model: nn.Sequential) -> None:
    """Parameters and engine state: laid out exactly as this code makes them for this config."""
    step, engine = checkpoint["step"], checkpoint["engine"]
    expected = model.state_dict()
    for key in ("model", "initial"):
        wrong = _mismatch(checkpoint[key], expected, key)
        if wrong:
            raise _damaged(path, f"{wrong} (the model of this config)")
    # the engine state this code makes for this model: fresh at step 0, after one update later
    same_engine = {"engine": engine, "compiled": False}
    reference = make_engine(cfg, model, make_dataset(cfg.dataset), same_engine)
    if step > 0:
        reference.step(update=True, log=False)
    wrong = _mismatch(checkpoint["engine_state"], reference.state_dict(), "engine_state")
    if wrong:
        raise _damaged(path, f"{wrong} (the {engine} engine's state for this config)")
    counts = _update_counts(checkpoint["engine_state"])
    expected = float(
        torch.tensor(float(step), dtype=torch.float32)
    )  # float32 counters stop at 2**24
    if any(count not in (step, expected) for count in counts):
        raise _damaged(
            path,
            f"its engine state counts {short(sorted(set(counts)))} updates, but its step is {step}",
        )


def _check_recorder(checkpoint: dict, path: Path, job_dir: Path, cfg) -> None:
    """The metrics writer's state: one value per replica, and a position in metrics.csv."""
    recorder, step = checkpoint["recorder"], checkpoint["step"]
    if "since" in recorder and "first_step_solved" not in recorder:  # its name before 2026-11-29
        recorder["first_step_solved"] = recorder.pop("since")
    # curves_bytes: none before curves.csv; where curves.csv goes on (a position that is not a
    # row's end makes it again from metrics.csv, so it needs no more checks than its type)
    if set(recorder) - {"curves_bytes"} != {"csv_bytes", *RECORDER}:
        raise _damaged(
            path,
            f"recorder has the keys {short(sorted(map(str, recorder)))}, not csv_bytes, "
            f"{', '.join(RECORDER)} (and curves_bytes)",
        )
    if type(recorder["csv_bytes"]) is not int:
        raise _damaged(path, f"recorder csv_bytes is {short(recorder['csv_bytes'])}, not an int")
    curves = recorder.get("curves_bytes")
    if curves is not None and type(curves) is not int:
        raise _damaged(path, f"recorder curves_bytes is {short(curves)}, not an int or None")
    for key, dtype in RECORDER.items():
        wrong = _mismatch(recorder[key], torch.empty(cfg.replicas, dtype=dtype), f"recorder {key}")
        if wrong:
            raise _damaged(path, f"{wrong} (one per replica)")
    first = recorder["first_step_solved"]
    if not ((first == -1) | ((first >= 0) & (first < step))).all():
        raise _damaged(
            path,
            f"recorder first_step_solved holds steps outside -1..{step - 1}: "
            f"{short(first.tolist())}",
        )
    _check_rows(job_dir / "metrics.csv", recorder["csv_bytes"], step, cfg=cfg, checkpoint_path=path)


def _damaged(path: Path, what: str) -> ResumeError:
    return ResumeError(f"{path} is damaged: {what}; restore it, or run the job again")


def checked_checkpoint(job_dir: Path, cfg, config: dict) -> dict:
    """checkpoint.pt, loaded within the size bound of cfg's model and checked in full."""
    path = job_dir / "checkpoint.pt"
    x, _ = make_dataset(cfg.dataset)
    try:  # on the CPU, never trained: only its shapes and its engine's state layout are used
        model = build_model(cfg, x.shape[1])
    except (ValueError, RuntimeError, OverflowError) as error:  # e.g. a seed beyond torch's 64 bits
        raise ResumeError(
            f"the config in {job_dir} cannot build its model: {short(str(error))}"
        ) from None
    checkpoint = load_checkpoint(job_dir, model.state_dict())
    # everything train() reads from it, checked before train() opens a file for writing
    _check_fields(checkpoint, path, job_dir, config=config, cfg=cfg)
    _check_state(checkpoint, path, cfg, model)
    _check_recorder(checkpoint, path, job_dir, cfg)
    return checkpoint


def prepare(job_dir: Path, steps: int | None = None) -> tuple[DictConfig, dict] | None:
    """The config and the checked checkpoint to resume one job with (xorrelu.train.train);
    None when it is already complete (and not extended). The caller, an entry point, runs it
    on the checkpoint's thread count (xorrelu.process.use_threads) so its numbers go on
    exactly."""
    summary, config = _saved(job_dir)
    target = config["steps"] if steps is None else steps
    if target < config["steps"]:
        raise ResumeError(
            f"--steps {target} would shorten {job_dir}, which runs {config['steps']} steps: "
            "--steps may only extend a run"
        )
    if summary and summary["status"] == "completed" and target == config["steps"]:
        log.info("skipping %s: completed", job_dir)
        return None
    if present(job_dir / "xorrelu.log") and not (job_dir / "xorrelu.log").is_file():
        raise ResumeError(
            f"{job_dir / 'xorrelu.log'} is not a regular file, so the resumed job cannot log to "
            "it; move it away"
        )
    cfg = OmegaConf.create({**config, "steps": target})
    try:
        validate(cfg)
    except ConfigError as error:
        raise ResumeError(f"{job_dir}: {error}") from None
    checkpoint = checked_checkpoint(job_dir, cfg, config)
    log.info("resuming %s at step %d of %d", job_dir, checkpoint["step"], target)
    return cfg, checkpoint


def _error(message: str) -> None:
    """One line on stderr, whatever the message holds (a dir name may contain a newline)."""
    print(
        "xorrelu-resume: error: " + message.replace("\r", "\\r").replace("\n", "\\n"),
        file=sys.stderr,
    )


def _wants_plot(jobs: list[Path]) -> bool:
    def plot(job: Path) -> bool:
        try:
            return bool(saved_config(job).get("plot", True))
        except JobDirError:
            return False  # already reported

    return any(plot(job) for job in jobs)


def _resume_all(root: Path, steps: int | None) -> int:
    if not root.is_dir():
        _error(f"not a directory: {root}")
        return 2
    try:
        jobs = find_jobs(root, depth=1)  # root itself, or the jobs of a sweep: never deeper
    except JobDirError as error:  # root cannot be listed
        _error(str(error))
        return 2
    if not jobs:
        _error(f"no xorrelu job in {root}")
        return 2
    failed = 0
    for job in jobs:
        handler = logging.FileHandler(
            job / "xorrelu.log", delay=True
        )  # delay: a refused job gets no new file
        logging.getLogger().addHandler(handler)
        try:
            prepared = prepare(job, steps)
            if prepared:
                cfg, checkpoint = prepared
                use_threads(checkpoint["threads"])
                train(cfg, job, checkpoint=checkpoint)
        except JobDirError as error:  # ResumeError included: refused before anything was written
            _error(str(error))
            failed += 1
        except Interrupted as stop:
            return stop.exit_code
        except JobDirBusy as error:  # another process resumes or runs it right now
            _error(str(error))
            failed += 1
        except OSError as error:
            _error(f"cannot write the results in {job}: {error}")
            failed += 1
        finally:
            logging.getLogger().removeHandler(handler)
            handler.close()
    if jobs != [root] and _wants_plot(jobs):
        plot_safely(root)
    return 2 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="xorrelu-resume", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "path",
        metavar="JOB_DIR",
        help="a job dir, or a multirun dir to resume every unfinished job below it",
    )
    parser.add_argument("--steps", type=int, help="extend the run(s) to this many steps")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, or a bad argument: argparse has said why
        return exit_.code if isinstance(exit_.code, int) else 2
    logging.basicConfig(format="%(message)s", level=logging.INFO, stream=sys.stdout)
    with signals.installed():  # SIGINT, SIGTERM, SIGHUP, SIGUSR2: stop cleanly (xorrelu.signals)
        try:
            code = _resume_all(Path(args.path), args.steps)
        # before training started, or after it ended: train() saves what it has
        except KeyboardInterrupt:
            code = None
        except SystemExit as exit_:
            _error(f"stopped (exit {exit_.code!r})")
            return exit_.code if isinstance(exit_.code, int) else 1
        stop = signals.requested()
    if stop is not None or code is None:
        interrupted = signals.Interrupted(stop or signal.SIGINT)
        _error(
            f"{interrupted}; a job that was training has its checkpoint: run this again to go on"
        )
        return interrupted.exit_code
    return code


if __name__ == "__main__":
    sys.exit(main())
