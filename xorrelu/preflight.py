"""Everything `python -m xorrelu` checks before Hydra starts, so that a refused command writes
nothing: Hydra makes the job dir, opens the log and writes `.hydra/*.yaml` before the task runs.

- every job of a sweep is composed and range-checked (one line names the bad job's overrides);
  a study (hydra/sweeper=search or optuna), whose values are chosen as it goes, has its fixed
  job checked so, its direction matched to the objective, and each searched key composed once;
- the run or sweep dir is resolved once (its `${now:...}` included) and handed to Hydra as an
  override, so the dir checked is the dir written;
- a dir that already holds results is refused (resume it instead), and so is a dir that cannot
  be made (a file in the way, a name too long, a read-only or unwritable place).
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path

from xorrelu.jobdir import JobDirError, find_jobs, one_line, read_summary

# what train() writes into a job dir; a job finding any of these in its dir does not train there
RUN_OUTPUTS = (
    "metrics.csv",
    "curves.csv",
    "data.csv",
    "summary.json",
    "checkpoint.pt",
    "weights.pt",
)
# every name xorrelu or Hydra writes into a job dir: a dir holding any of them is not written into
RESULT_MARKERS = (
    *RUN_OUTPUTS,
    *("search.json", "search.md"),  # a study's report in its sweep dir (hydra/sweeper=search)
    *(".hydra", "xorrelu.log", "plots", "tensorboard", ".xorrelu-reserve"),
)
REMOTE_LAUNCHERS = (
    "submitit_slurm",
    "slurm",
    "ray",
)  # jobs run on other machines: their memory is theirs
INFORMATIONAL = (
    "help",
    "hydra_help",
    "cfg",
    "info",
    "shell_completion",
    "experimental_rerun",
    "version",
)


class Refused(Exception):
    """A command that must not run; the message says why and what to do instead."""


@dataclass
class Plan:
    argv: list[str]  # what Hydra gets: the user's overrides with the resolved dir
    jobs: int  # 0 when Hydra only prints something (--help, --cfg)
    sweep_dir: Path | None = None  # for --multirun
    counted: bool = True  # False when the sweeper chooses how many jobs (a study): `jobs` is not

    def unfinished_jobs(self) -> list[str]:
        """After a sweep: one line per job that did not complete, from each job's summary.json;
        a job dir Hydra made that holds no summary.json (its job was killed) on its own line, and
        the jobs that left no dir at all (never started) on one line when the sweep's size is
        known (a study's sweeper chooses it)."""
        lines, done = [], 0
        found = _jobs_below(self.sweep_dir)
        for job in found:
            try:
                summary = read_summary(job)
            except JobDirError:
                summary = {"status": "unreadable", "error": "summary.json cannot be read"}
            if summary is None:
                summary = {"status": "killed", "error": "it left no summary.json"}
            status, error = summary.get("status"), summary.get("error")
            if status == "completed":
                done += 1
            else:
                lines.append(
                    f"{job.relative_to(self.sweep_dir)}: {status}{': ' + error if error else ''}"
                )
        for job in _started_below(self.sweep_dir, set(found)):
            lines.append(f"{job.relative_to(self.sweep_dir)}: killed: it left no summary.json")
        missing = self.jobs - done - len(lines) if self.counted else 0
        if missing > 0:
            lines.append(f"{missing} job(s) left no dir (never started)")
        return lines


def _started_below(sweep_dir: Path, found: set[Path]) -> list[Path]:
    """The sweep's subdirs that Hydra made for a job (.hydra/) and that are no job dir yet."""
    try:
        dirs = sorted(sweep_dir.iterdir(), key=lambda d: (len(d.name), d.name))
    except OSError:
        return []
    return [d for d in dirs if d not in found and (d / ".hydra").is_dir()]


def _jobs_below(sweep_dir: Path) -> list[Path]:
    try:
        return find_jobs(sweep_dir)
    except JobDirError:  # the sweep dir is gone: its jobs are counted as leaving nothing
        return []


def check(argv: list[str], config_path: str) -> Plan:
    """The plan for `argv`, or Refused."""
    from hydra._internal.utils import get_args_parser

    try:
        with contextlib.redirect_stderr(io.StringIO()):
            args = get_args_parser().parse_args(argv)
    except SystemExit:  # a bad flag: Hydra says what is wrong, once
        return Plan(argv, 0)
    if any(getattr(args, flag, None) for flag in INFORMATIONAL):
        return Plan(argv, 0)  # prints something and exits
    key = "hydra.sweep.dir" if args.multirun else "hydra.run.dir"
    _check_subdirs(args.overrides)
    # a config from elsewhere: Hydra checks its values
    if args.config_dir or args.config_path or args.config_name:
        given = [a.split("=", 1)[1] for a in args.overrides if a.startswith(key + "=")]
        if given and "${" not in given[-1]:
            _check_dir(Path(given[-1]), key, args.multirun)
        return Plan(argv, 1)
    jobs, base = _compose_all(args.overrides, args.multirun, config_path)
    out_dir = _resolve_dir(base, key)
    if args.multirun and _is_remote(base):  # a relative dir would be relative to each node's cwd
        out_dir = out_dir.absolute()
    _check_dir(out_dir, key, args.multirun)
    _make_dir(out_dir, key)
    kept = [a for a in argv if not a.lstrip("+~").startswith(key + "=")]
    return Plan(
        [f"{key}={_quoted(str(out_dir))}", *kept],
        len(jobs),
        out_dir if args.multirun else None,
        counted=not (args.multirun and _chooses_jobs(base)),
    )


def _chooses_jobs(base) -> bool:
    """Whether the sweeper chooses the number of jobs (a study, an adaptive sweeper)."""
    from omegaconf import OmegaConf

    sweeper = OmegaConf.select(base, "hydra.sweeper._target_", default="") or ""
    return "BasicSweeper" not in sweeper


def _check_subdirs(overrides: list[str]) -> None:
    """Hydra writes .hydra/ (hydra.output_subdir) and each sweep job (hydra.sweep.subdir) below the
    checked dir; a value that leaves it would write where nothing was checked."""
    for key in ("hydra.output_subdir", "hydra.sweep.subdir"):
        for arg in overrides:
            if arg.startswith(key + "="):
                value = arg.split("=", 1)[1].strip("'\"")
                if value.startswith(("/", "~")) or ".." in Path(value).parts:
                    raise Refused(
                        f"{key}={value!r} leaves the run's dir; give a name inside it (no '/' at "
                        "the start, no '..')"
                    )


def _make_dir(out_dir: Path, key: str) -> None:
    """Make the checked dir now, exclusively: two commands started at once into the same new dir
    cannot both pass the check."""
    if out_dir.is_dir():
        return  # an existing dir without results (hydra.run.dir=.): it was checked above
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        os.mkdir(out_dir)
    except FileExistsError:
        raise Refused(f"{out_dir} was just made by another command; choose another {key}") from None
    except OSError as error:
        raise Refused(f"cannot make {out_dir}: {error.strerror or error}") from None


def _compose_all(overrides: list[str], multirun: bool, config_path: str):
    """Compose every job's config and validate it; (the jobs' overrides, the base config)."""
    from hydra import compose
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf, open_dict, read_write

    from xorrelu.config import ConfigError, validate
    from xorrelu.jobdir import hydra_context

    with hydra_context(config_path):
        parser = OverridesParser.create(config_loader=GlobalHydra.instance().hydra.config_loader)
        try:
            parsed = parser.parse_overrides(overrides)
            fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
            base = compose(
                "config", overrides=fixed if multirun else overrides, return_hydra_config=True
            )
            jobs = [overrides]
            if multirun:
                launcher = OmegaConf.select(base, "hydra.launcher._target_", default="") or ""
                sweeper = OmegaConf.select(base, "hydra.sweeper._target_", default="") or ""
                if launcher.endswith("xorrelu_launcher.LocalLauncher"):
                    from hydra_plugins.xorrelu_launcher.xorrelu_launcher import check_n_jobs

                    check_n_jobs(OmegaConf.select(base, "hydra.launcher.n_jobs"))
                if launcher.endswith("xorrelu_launcher.ray_launcher.RayLauncher"):
                    _connect_ray(base.hydra.launcher.ray)
                if _searches(sweeper):
                    jobs, searched = _search_jobs(parser, base, overrides)
                elif "BasicSweeper" not in sweeper:  # adaptive sweepers choose values as they go
                    jobs = [fixed]
                else:
                    params = OmegaConf.select(base, "hydra.sweeper.params") or {}
                    arguments = [f"{k}={v}" for k, v in params.items()] + list(overrides)
                    jobs = BasicSweeper.split_arguments(parser.parse_overrides(arguments), None)[0]
            else:
                launcher = sweeper = ""
        except Exception as error:  # noqa: BLE001 — Hydra's and OmegaConf's messages, in one line
            raise Refused(one_line(error, None, every_line=True)) from None
        check_memory = not (multirun and _is_remote(base))
        compose_job = _Composer(parser, GlobalHydra.instance().hydra.config_loader.list_groups(""))
        swept = [i for i in range(len(jobs[0])) if len({job[i] for job in jobs}) > 1]
        for number, job in enumerate(jobs):
            where = (
                f"job {number} ({' '.join(job[i] for i in swept) or ' '.join(job)}): "
                if multirun
                else ""
            )
            try:
                with read_write(base.hydra), open_dict(base.hydra):
                    base.hydra.job.num = number
                HydraConfig.instance().set_config(
                    base
                )  # for ${hydra:job.num} and the like in values
                validate(compose_job(list(job)), check_memory=check_memory)
            except ConfigError as error:
                raise Refused(f"{where}{error}") from None
            except Exception as error:  # noqa: BLE001
                raise Refused(where + one_line(error, None, every_line=True)) from None
        if _searches(sweeper):
            _check_search(base, compose_job, jobs[0], searched)
    return jobs, base


def _is_remote(base) -> bool:
    """The sweep's launcher runs its jobs on other machines (see REMOTE_LAUNCHERS)."""
    from omegaconf import OmegaConf

    launcher = OmegaConf.select(base, "hydra.launcher._target_", default="") or ""
    return any(name in launcher.lower() for name in REMOTE_LAUNCHERS)


def _connect_ray(ray_cfg) -> None:
    """hydra/launcher=ray: Ray installed here, whole CPUs per job, and the cluster connected to
    now (the launcher goes on with this connection), so that a wrong address is refused before
    anything is written; an address nothing answers at would have Ray retry for ever."""
    from omegaconf import OmegaConf

    try:
        import ray
        from ray._private.services import canonicalize_bootstrap_address
    except ImportError as error:
        raise Refused(
            f"hydra/launcher=ray needs Ray ({error}): pip install 'xorrelu[ray]'"
        ) from None
    num_cpus = OmegaConf.select(ray_cfg, "remote.num_cpus")
    if num_cpus is not None and not (
        isinstance(num_cpus, (int, float)) and not isinstance(num_cpus, bool) and num_cpus >= 1
    ):
        raise Refused(
            f"hydra.launcher.ray.remote.num_cpus={num_cpus!r}: a number >= 1 "
            "(the cores a job uses, its torch threads with threads=0)"
        )
    try:  # Ray checks the options' names and values as it wraps a function
        ray.remote(**OmegaConf.to_container(ray_cfg.remote, resolve=True))(_job)
    except Exception as error:  # noqa: BLE001
        raise Refused(f"hydra.launcher.ray.remote: {one_line(error)}") from None
    init = OmegaConf.to_container(ray_cfg.init, resolve=True)
    given = init.get("address")
    try:
        address = given if "://" in str(given) else canonicalize_bootstrap_address(given)
        if address and "://" not in address:
            host, port = address.rsplit(":", 1)
            socket.create_connection((host, int(port)), timeout=10).close()
        ray.init(**init)
    except Exception as error:  # noqa: BLE001 — Ray's reasons, in one line
        raise Refused(
            f"cannot connect to the Ray cluster (hydra.launcher.ray.init.address={given}): "
            f"{one_line(error)}; start one with `ray start --head`, or "
            "give its address in RAY_ADDRESS or hydra.launcher.ray.init.address=HOST:PORT"
        ) from None


def _job() -> None:
    """What _connect_ray wraps to have Ray check the sweep's ray.remote options."""


def _searches(sweeper: str) -> bool:
    """hydra/sweeper=search (xorrelu's) or optuna: a study that asks each job for a number."""
    return "xorrelu_search" in sweeper or "optuna" in sweeper.lower()


def _search_jobs(parser, base, overrides: list[str]) -> tuple[list[list[str]], list]:
    """The study's one fixed job (the overrides and hydra.sweeper.params that are not searched:
    every trial has them) and the searched overrides (interval, choice, range)."""
    from omegaconf import OmegaConf

    params = OmegaConf.select(base, "hydra.sweeper.params") or {}
    parsed = parser.parse_overrides([f"{k}={v}" for k, v in params.items()] + list(overrides))
    searched = [o for o in parsed if o.is_sweep_override()]
    return [[o.input_line for o in parsed if not o.is_sweep_override()]], searched


def _check_search(base, compose_job, job: list[str], searched: list) -> None:
    """The study's direction is its objective's, and each searched key takes a value of its
    space: one (a choice each, an interval's middle) is composed with the fixed job, so that a
    key that is not a config key, or a value of the wrong type, is refused now rather than in
    every trial. Ranges are each trial's to check: a trial whose values validate() refuses is
    a failed trial, and the study goes on."""
    from omegaconf import OmegaConf

    from xorrelu.config import Objective

    objective = Objective(compose_job(list(job)).objective)
    direction = OmegaConf.select(base, "hydra.sweeper.direction")
    direction = getattr(direction, "name", direction)  # Optuna's Direction enum, or its name
    if direction != objective.direction:
        raise Refused(
            f"hydra.sweeper.direction={direction} does not fit objective={objective.value}, "
            f"which the study must {objective.direction}: set "
            f"hydra.sweeper.direction={objective.direction}"
        )
    if not searched:
        raise Refused(
            "the study searches nothing: give hydra.sweeper.params (or key=interval(a,b), "
            "key=choice(a,b) overrides), e.g. 'optimizer.lr=tag(log,interval(0.001,1.0))'"
        )
    for override in searched:
        for value in _examples(override):
            key = override.get_key_element()
            try:
                compose_job([*job, f"{key}={value}"])
            except Exception as error:  # noqa: BLE001 — Hydra's and OmegaConf's messages
                raise Refused(
                    f"searched {override.input_line}: {key}={value} does not compose: "
                    f"{one_line(error, None, every_line=True)}"
                ) from None


def _examples(override) -> list[str]:
    """Values a searched override can take: each choice, a range's start, an interval's middle
    (geometric for tag(log, ...); an interval of ints searches ints)."""
    import math

    if not override.is_interval_sweep():
        values = list(override.sweep_string_iterator())
        return values if override.is_choice_sweep() else values[:1]
    interval = override.value()
    start, end = interval.start, interval.end
    if "log" in interval.tags and start > 0 and end > 0:
        middle = math.sqrt(start * end)
    else:
        middle = (start + end) / 2
    return [str(int(middle) if isinstance(start, int) and isinstance(end, int) else middle)]


class _Composer:
    """Hydra's compose for each job of a sweep, ~70 ms each, done once per choice of config
    groups: jobs that differ only in plain values (depth=1..20, seed=0..999) reuse it."""

    def __init__(self, parser, groups: list[str]):
        self.parser, self.groups, self.cache = parser, set(groups), {}

    def __call__(self, overrides: list[str]):
        from hydra import compose
        from omegaconf import OmegaConf, open_dict

        parsed = self.parser.parse_overrides(overrides)
        plain = [o for o in parsed if self._is_plain_value(o)]
        choices = tuple(o.input_line for o in parsed if o not in plain)
        if choices not in self.cache:
            cfg = compose("config", overrides=list(choices))
            with open_dict(cfg):
                cfg.pop("hydra", None)
            self.cache[choices] = cfg
        cfg = self.cache[choices].copy()
        for override in plain:  # the schema converts and checks types as compose would
            OmegaConf.update(cfg, override.key_or_group, override.value(), merge=False)
        return cfg

    def _is_plain_value(self, override) -> bool:
        key = override.key_or_group
        return (
            not (override.is_add() or override.is_force_add() or override.is_delete())
            and override.package is None
            and not key.startswith("hydra")
            and key.split(".")[0] not in self.groups
            and "/" not in key
        )


def _resolve_dir(base, key: str) -> Path:
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    HydraConfig.instance().set_config(base)  # for ${hydra:job.name} and the like in the dir

    try:
        value = OmegaConf.select(base, key, throw_on_resolution_failure=True)
    except Exception as error:  # noqa: BLE001
        raise Refused(f"cannot resolve {key}: {one_line(error, None, every_line=True)}") from None
    if not value:
        raise Refused(f"{key} is empty: give a directory, e.g. {key}=outputs/mine")
    if "${" in str(value):  # Hydra resolves the dir again inside its logging config
        raise Refused(f"{key}={value!r}: a directory name cannot contain '${{'; choose another")
    return Path(str(value))


def _check_dir(out_dir: Path, key: str, multirun: bool) -> None:
    """Refuse a dir that holds results or cannot be made; make nothing."""
    try:
        _check_dir_unguarded(out_dir, key, multirun)
    except OSError as error:  # a path the system refuses to look at (too long, no permission)
        raise Refused(f"cannot write results under {key}: {error.strerror or error}") from None


def _check_dir_unguarded(out_dir: Path, key: str, multirun: bool) -> None:
    for part in out_dir.parts:
        if len(os.fsencode(part)) > 255:
            raise Refused(
                f"cannot write results under {key}: the name {part[:40]}... "
                "is longer than 255 bytes; choose a shorter one"
            )
    absolute = out_dir.absolute()
    for path in [absolute, *absolute.parents]:
        if path.exists() or path.is_symlink():
            if not path.is_dir():
                what = "a broken link" if not path.exists() else "a file, not a directory"
                raise Refused(f"cannot write results under {out_dir}: {path} is {what}")
            if path != absolute:
                _check_writable(path, out_dir)
            break
    if out_dir.is_dir():
        holds = _results_in(out_dir) if not multirun else _results_in(out_dir, sweep=True)
        if holds:
            what, verb = ("a sweep", "finish its jobs") if multirun else ("a run", "continue it")
            raise Refused(
                f"{out_dir} already holds {what} ({holds} is there); nothing was changed. "
                f"To {verb}: python -m xorrelu.resume {out_dir}; to start anew, "
                f"choose another {key} (or leave it out)"
            )
        _check_writable(out_dir, out_dir)


def _results_in(directory: Path, sweep: bool = False) -> str:
    """What in `directory` says it holds results ('' when nothing does)."""
    if sweep and (directory / "multirun.yaml").exists():
        return "multirun.yaml"
    for name in RESULT_MARKERS:
        if (directory / name).exists():
            return name
    if sweep:
        for child in sorted(directory.iterdir()):
            if child.is_dir() and _results_in(child):
                return f"{child.name}/{_results_in(child)}"
    return ""


def _check_writable(path: Path, out_dir: Path) -> None:
    try:
        read_only = os.statvfs(path).f_flag & os.ST_RDONLY
    except OSError:
        read_only = False
    if read_only or not os.access(path, os.W_OK | os.X_OK):
        reason = "is on a read-only file system" if read_only else "is not writable"
        raise Refused(
            f"cannot write results under {out_dir}: {path} {reason} "
            f"({errno.errorcode.get(errno.EROFS if read_only else errno.EACCES)})"
        )


def _quoted(value: str) -> str:
    """A Hydra override value that stays exactly `value`. In Hydra's quoted strings only a
    quote and the backslashes right before a quote (or before the closing one) are escaped."""
    body = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", value)
    trailing = len(body) - len(body.rstrip("\\"))
    return "'" + body + "\\" * trailing + "'"
