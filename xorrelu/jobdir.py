"""Everything that knows what a job dir is: finding job dirs, reading their files when they may be
damaged, truncated or hostile, and composing the config a job runs.

- `find_jobs(root)`: the job dirs at or below a path (the one rule, see there);
- `read_summary`, `read_hydra_config`, `read_config`, `check_config`: summary.json and the
  job's config, every field checked;
- `load_weights`, `load_checkpoint`, `load_torch_file`: torch.load within a size bound;
- `compose(overrides)`: the config `python -m xorrelu OVERRIDES` runs, outside the command line;
- `short`, `one_line`: values and errors as they go into a one-line message.

Every reader here is bounded in memory (sizes are checked before anything is parsed), checks
the type of what it returns, and fails with one JobDirError whose message names the file, what
is wrong with it and what to do instead. Nothing here writes. This module sits at the bottom of
the import graph: it imports xorrelu.config, and nothing that trains, plots or resumes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import reprlib
import types
import typing
import zipfile
from collections.abc import Iterable
from enum import Enum
from pathlib import Path

import yaml
from omegaconf import OmegaConf

from xorrelu import config as config_module
from xorrelu.config import CONFIG_PATH

log = logging.getLogger(__name__)

# A dir holding anything at one of these names is a job dir (see find_jobs).
JOB_MARKERS = ("summary.json", "metrics.csv", "checkpoint.pt")
SKIP_DIRS = {".hydra", "plots"}  # never job dirs, and plots/ may be big
# A summary.json holds the config and one short entry per replica: ~300 bytes a replica, so
# 64 MiB is ~200,000 replicas, beyond what fits a machine. Anything larger is not ours.
# weights.pt: torch.save stores tensors uncompressed, so a real one declares about its own size.
# Its own config is not trusted before it is read, so the bound is relative: refuse an archive
# declaring more than WEIGHTS_INFLATE_RATIO x the file AND more than WEIGHTS_INFLATE_FLOOR.
WEIGHTS_INFLATE_RATIO = 64
WEIGHTS_INFLATE_FLOOR = 256 * 2**20
MAX_SUMMARY_BYTES = 64 * 2**20
MAX_HYDRA_CONFIG_BYTES = 2**20  # the composed config is under 2 KiB
STATUSES = ("running", "interrupted", "failed", "completed")  # what xorrelu.train writes
MAX_WHOLE = 2**53  # seeds and steps beyond this are not exact in a float column


# --- messages -------------------------------------------------------------------------------

_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 60


def short(value) -> str:
    """A value for a message: its repr, cut to a few dozen characters (values from a hostile file
    can be huge or deep); a numpy scalar as the Python number it holds (7.0, not
    np.float64(7.0))."""
    if type(value).__module__ == "numpy" and getattr(value, "ndim", None) == 0:
        value = value.item()
    return _REPR.repr(value)


def one_line(error, limit: int | None = 200, *, every_line: bool = False) -> str:
    """An error (or a text) as one line for a message; its type's name when it says nothing.

    By default the first line, cut to `limit`: a reader's message quotes a parser's complaint
    about a file that may be hostile, and the first line says what is wrong. every_line=True
    joins every line instead, for Hydra's and OmegaConf's messages, which go on over several
    ("Available options in 'activation': ..."): the search-path listing Hydra appends is left
    out, and the error's cause is added when its text does not hold it already."""
    text = str(error)
    if every_line:
        text = " ".join(text.split("\nConfig search path")[0].split()) or type(error).__name__
        cause = getattr(error, "__cause__", None)
        if cause is not None and str(cause) and str(cause) not in text:
            text += " (" + " ".join(str(cause).split()) + ")"
    else:
        lines = text.strip().splitlines()
        text = lines[0] if lines else type(error).__name__
    return text if limit is None else text[:limit]


def json_type(value) -> str:
    """What a JSON value is, in words: "an object", "a list", "text", "null", ..."""
    names = {
        dict: "an object",
        list: "a list",
        str: "text",
        bool: "true/false",
        int: "a number",
        float: "a number",
    }
    return "null" if value is None else names.get(type(value), type(value).__name__)


def is_int(value, low: int, high: int) -> bool:
    """A whole number (not true/false) from low to high."""
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


# --- errors ---------------------------------------------------------------------------------


class JobDirError(Exception):
    """A file of a job dir that cannot be used; the message says which, why, and what to do."""


class Problem(JobDirError):
    """What is wrong with a job dir's summary.json or .hydra/config.yaml, as data: `kind` (a key
    of WORDS), `found` (the value, or the parser's exception), `where` (the field) and `allowed`.
    str() is WORDS' wording; a command that words these its own way (the plotter) passes its own
    table to words()."""

    def __init__(self, path: Path, kind: str, found=None, *, where: str = "", allowed: str = ""):
        self.path, self.kind, self.found = Path(path), kind, found
        self.where, self.allowed = where, allowed
        super().__init__(self.words(WORDS))

    def words(self, table: dict) -> str:
        """The message, from `table`'s template for this kind."""
        found = self.found
        return table[self.kind].format(
            path=self.path,
            where=self.where,
            allowed=self.allowed,
            value=short(found),
            json=json_type(found),
            type=type(found).__name__,
            line=one_line(found) if isinstance(found, BaseException) else "",
        )


_SUMMARY = "{path} is damaged (%s); restore it, or move it aside to resume with .hydra/config.yaml"
_HYDRA = "{path} is damaged (%s); restore it"
# Each Problem's message: {value} is short(found), {json} json_type(found), {type} its Python
# type, {line} one_line(found) of a parser's exception.
WORDS = {
    "summary-utf8": _SUMMARY % "not UTF-8 text",
    "summary-nested": _SUMMARY % "JSON nested too deeply",
    "summary-syntax": _SUMMARY % "not valid JSON: {line}",
    "summary-object": _SUMMARY % "a JSON {type}, not an object",
    "config": _SUMMARY % "its config is {value}, not an object",
    "status": _SUMMARY % "status {value} is none of {allowed}",
    "error": _SUMMARY % "its error is {value}, not text",
    "replicas": _SUMMARY % "its replicas is {value}, not a list",
    "replica": _SUMMARY % "{where} is {value}, not an object",
    "seed": _SUMMARY % "{where}.seed is {value}, not a whole number >= 0",
    "cause": _SUMMARY % "{where}.cause is {value}, not one of {allowed} or null",
    "hydra-aliases": _HYDRA % "YAML aliases, which Hydra never writes",
    "hydra-utf8": _HYDRA % "not UTF-8 text",
    "hydra-nested": _HYDRA % "YAML nested too deeply",
    "hydra-syntax": _HYDRA % "{type}: {line}",
    "hydra-mapping": _HYDRA % "a YAML {type}, not a mapping",
    "no-config": "{path} holds no config (summary.json or .hydra/config.yaml): "
    "not an xorrelu job dir",
}


# --- finding job dirs -----------------------------------------------------------------------


def present(path: Path) -> bool:
    """True for anything at `path`, a dangling symlink included (that is a damaged file,
    not a missing one)."""
    return os.path.lexists(path)


def is_job(path: Path) -> bool:
    """A job dir: a directory with anything at summary.json, metrics.csv or checkpoint.pt."""
    return any(present(Path(path) / name) for name in JOB_MARKERS)


def natural(path: Path) -> list:
    """Sort key for paths as a person counts: 2 before 10, names after numbers."""
    return [
        (0, int(part), "") if part.isascii() and part.isdigit() else (1, 0, part)
        for part in Path(path).parts
    ]


def find_jobs(root: Path, *, depth: int | None = None, seen: set | None = None) -> list[Path]:
    """The job dirs at or below `root`, in natural order (2 before 10).

    The rule: a job dir is a directory with anything at summary.json, metrics.csv or
    checkpoint.pt, a dangling link or a directory there included (a damaged job is found, and
    its reader says what is wrong). `root` itself, when it is one, is the only job; a job dir is
    never looked inside, nor is a .hydra/ or plots/. Symbolic links are followed (outputs ->
    /scratch/..., a folder of links to compare runs), each real directory (st_dev, st_ino) once:
    a link back up ends there, and a job reached by two paths is listed once, by its plain path
    rather than a link's. `depth` limits how far below `root` to look (1: the jobs of a sweep
    dir); `seen` is shared over several roots so that a job below two of them is listed once.
    A subdirectory that cannot be read is skipped with a warning; JobDirError when `root` is
    missing, not a directory or cannot be read."""
    root = Path(root)
    if not root.exists():
        raise JobDirError(f"no such file or directory: {root}")
    if not root.is_dir():
        raise JobDirError(f"not a directory: {root}")
    seen = set() if seen is None else seen
    jobs = []
    plain, linked = [(root, 0)], []  # plain subdirectories are walked before any link
    while plain or linked:
        directory, level = plain.pop() if plain else linked.pop(0)
        if not _first_visit(directory, root, seen):
            continue
        if is_job(directory):
            jobs.append(directory)
        elif depth is None or level < depth:
            for entry in _subdirs(directory, root):
                (linked if entry.is_symlink() else plain).append((Path(entry.path), level + 1))
    return sorted(jobs, key=natural)


def _first_visit(directory: Path, root: Path, seen: set) -> bool:
    """Remember the real directory; False when it was seen before or cannot be looked at."""
    try:
        info = directory.stat()
    except OSError as error:  # it vanished, or no permission
        if directory == root:
            raise JobDirError(f"cannot list {root}: {error.strerror or error}") from None
        log.warning("not looking inside %s: %s", directory, error.strerror or error)
        return False
    if (info.st_dev, info.st_ino) in seen:
        return False
    seen.add((info.st_dev, info.st_ino))
    return True


def _subdirs(directory: Path, root: Path) -> list[os.DirEntry]:
    """The subdirectories of `directory` (links to them included), in a stable order: the first
    link found to a directory is the one listed."""
    try:
        entries = sorted(os.scandir(directory), key=lambda e: natural(Path(e.name)))
    except OSError as error:
        if directory == root:
            raise JobDirError(f"cannot list {root}: {error.strerror or error}") from None
        log.warning("not looking inside %s: %s", directory, error.strerror or error)
        return []
    found = []
    for entry in entries:
        try:
            if entry.name not in SKIP_DIRS and entry.is_dir():  # is_dir follows links
                found.append(entry)
        except OSError:
            continue
    return found


# --- reading files --------------------------------------------------------------------------


def file_size(path: Path, what: str) -> int:
    """The size of `path`, refusing anything but a regular file
    (a FIFO would block the read forever)."""
    try:
        if not path.is_file():
            raise JobDirError(
                f"{path} is not a regular file: cannot read {what} from it; "
                "restore the file or run the job again"
            )
        return path.stat().st_size
    except OSError as error:
        raise JobDirError(f"cannot read {path}: {error.strerror or error}") from None


def read_bounded(path: Path, max_bytes: int, what: str) -> bytes:
    """The bytes of a regular file, refused when longer than max_bytes
    (read at most max_bytes + 1)."""
    size = file_size(path, what)
    if size > max_bytes:
        raise JobDirError(
            f"{path} is {size / 2**20:.1f} MiB, more than the {max_bytes / 2**20:.0f} MiB {what} "
            "can be: it is not one written by xorrelu; restore the file or run the job again"
        )
    try:
        with open(path, "rb") as file:
            data = file.read(max_bytes + 1)  # the file may have grown since stat()
    except OSError as error:
        raise JobDirError(f"cannot read {path}: {error.strerror or error}") from None
    if len(data) > max_bytes:
        raise JobDirError(
            f"{path} is more than the {max_bytes / 2**20:.0f} MiB {what} can be; "
            "restore the file or run the job again"
        )
    return data


def read_summary(job_dir: Path) -> dict | None:
    """summary.json, every field a reader uses checked; None when there is nothing at the name
    (a dangling link or a directory there is a damaged summary, not a missing one).

    It is a JSON object whose "config" is an object (check_config says whether it is one train()
    can run), whose "status", when there, is one of STATUSES, whose "error", when there, is text,
    and whose "replicas", when there, are objects with a whole "seed" >= 0 and a "cause" from
    xorrelu.outcomes or null. Problem (a JobDirError) when it is not."""
    path = Path(job_dir) / "summary.json"
    if not present(path):
        return None
    data = read_bounded(path, MAX_SUMMARY_BYTES, "a summary")
    try:
        summary = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise Problem(path, "summary-utf8", error) from None
    except RecursionError:  # "[[[[..." deeper than Python's recursion limit
        raise Problem(path, "summary-nested") from None
    except ValueError as error:
        raise Problem(path, "summary-syntax", error) from None
    _check_summary(path, summary)
    return summary


def job_failure(job_dir: Path) -> str | None:
    """Why a job that has ended did not complete, from its summary.json: its error, else its
    status; None when it completed. The launchers' one reading (a job returns its objective)."""
    try:
        summary = read_summary(Path(job_dir))
    except JobDirError as error:
        return str(error)
    if summary is None:
        return "it left no summary.json"
    if summary.get("status") == "completed":
        return None
    return summary.get("error") or summary.get("status")


def _check_summary(path: Path, summary) -> None:
    if not isinstance(summary, dict):
        raise Problem(path, "summary-object", summary)
    if not isinstance(summary.get("config"), dict):
        raise Problem(path, "config", summary.get("config"))
    if summary.get("status") is not None and summary["status"] not in STATUSES:
        raise Problem(path, "status", summary["status"], allowed=", ".join(STATUSES))
    if summary.get("error") is not None and not isinstance(summary["error"], str):
        raise Problem(path, "error", summary["error"])
    replicas = summary.get("replicas", [])
    if not isinstance(replicas, list):
        raise Problem(path, "replicas", replicas)
    if replicas:
        _check_replicas(path, replicas)


def _check_replicas(path: Path, replicas: list) -> None:
    from xorrelu.outcomes import CAUSES  # imports torch: only for a summary with replicas

    for i, replica in enumerate(replicas):
        where = f"replicas[{i}]"
        if not isinstance(replica, dict):
            raise Problem(path, "replica", replica, where=where)
        if not is_int(replica.get("seed"), 0, MAX_WHOLE):
            raise Problem(path, "seed", replica.get("seed"), where=where)
        if replica.get("cause") is not None and replica["cause"] not in CAUSES:
            raise Problem(path, "cause", replica["cause"], where=where, allowed=", ".join(CAUSES))


def read_hydra_config(job_dir: Path) -> dict:
    """.hydra/config.yaml (the config Hydra composed) as a plain dict; Problem when it is not
    one Hydra wrote."""
    path = Path(job_dir) / ".hydra" / "config.yaml"
    data = read_bounded(path, MAX_HYDRA_CONFIG_BYTES, "a config")
    try:
        text = data.decode("utf-8")
        # an alias repeats a node by reference; expanding nested ones takes exponential memory
        events = yaml.parse(text, Loader=yaml.SafeLoader)
        if any(isinstance(event, yaml.AliasEvent) for event in events):
            raise Problem(path, "hydra-aliases")
        config = OmegaConf.to_container(OmegaConf.create(text), resolve=True)
    except Problem:
        raise
    except UnicodeDecodeError as error:
        raise Problem(path, "hydra-utf8", error) from None
    except RecursionError as error:
        raise Problem(path, "hydra-nested", error) from None
    except Exception as error:  # noqa: BLE001 — yaml and omegaconf raise many types for bad text
        raise Problem(path, "hydra-syntax", error) from None
    if not isinstance(config, dict):
        raise Problem(path, "hydra-mapping", config)
    return config


def read_config(job_dir: Path, summary: dict | None = None) -> tuple[dict, Path]:
    """The job's config as it was written (nested; with any key added since, at the value that
    does what xorrelu did before it: config.ADDED_LATER), and the file it came from: summary.json's
    (`summary`, when the caller has read it already), else .hydra/config.yaml's. A damaged
    summary.json is refused, never silently replaced by the other file."""
    job_dir = Path(job_dir)
    summary = summary if summary is not None else read_summary(job_dir)
    if summary is not None:
        return config_module.upgrade(summary["config"]), job_dir / "summary.json"
    if present(job_dir / ".hydra" / "config.yaml"):
        hydra_config = read_hydra_config(job_dir)
        return config_module.upgrade(hydra_config), job_dir / ".hydra" / "config.yaml"
    raise Problem(job_dir, "no-config")


def _type_ok(value, hint) -> bool:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):  # X | None
        return any(_type_ok(value, option) for option in typing.get_args(hint))
    if origin is list:
        return type(value) is list and all(_type_ok(v, typing.get_args(hint)[0]) for v in value)
    if hint is type(None):
        return value is None
    if hint is bool:
        return type(value) is bool
    if hint is int:
        return type(value) is int  # a bool is an int to Python, not to a config
    if hint is float:
        return type(value) in (int, float)
    if hint is str:
        return type(value) is str
    if isinstance(hint, type) and issubclass(hint, Enum):
        return type(value) is str and value in {member.value for member in hint}
    # Any (compile): validate() checks its values
    return value is None or type(value) in (bool, int, float, str)


def _group_fields(base: type) -> dict:
    """Field name -> type over `base` and every group option's schema that extends it."""
    fields = {}
    for schema in vars(config_module).values():
        if (
            isinstance(schema, type)
            and dataclasses.is_dataclass(schema)
            and issubclass(schema, base)
        ):
            fields.update(typing.get_type_hints(schema))
    return fields


def check_config(config, source: str) -> None:
    """A config as train() reads it: exactly the keys of xorrelu.config.Config, each of its type,
    every group a mapping of known keys. The ranges are xorrelu.config.validate's to check; this
    makes sure it and train() can read every value without a TypeError."""
    fix = "restore the file or run the job again"
    if not isinstance(config, dict):
        raise JobDirError(f"{source}: the config is {short(config)}, not a mapping; {fix}")
    hints = typing.get_type_hints(config_module.Config)
    missing, unknown = sorted(set(hints) - set(config)), sorted(map(str, set(config) - set(hints)))
    if missing or unknown:
        what = "; ".join(
            filter(
                None,
                [
                    missing and f"missing {', '.join(missing)}",
                    unknown and f"unknown {short(', '.join(unknown))}",
                ],
            )
        )
        raise JobDirError(f"{source}: the config is not an xorrelu config ({what}); {fix}")
    for key, hint in hints.items():
        value = config[key]
        if dataclasses.is_dataclass(hint):  # a group: activation, init, optimizer, dataset
            fields = _group_fields(hint)
            if not isinstance(value, dict) or type(value.get("name")) is not str:
                raise JobDirError(
                    f"{source}: config {key} is {short(value)}, not a mapping with a name; {fix}"
                )
            for name, item in value.items():
                if name not in fields or not _type_ok(item, fields[name]):
                    raise JobDirError(
                        f"{source}: config {key}.{short(name)}={short(item)} is not an xorrelu "
                        f"config value; {fix}"
                    )
        elif not _type_ok(value, hint):
            raise JobDirError(f"{source}: config {key}={short(value)} has the wrong type; {fix}")


# --- torch files ----------------------------------------------------------------------------


def load_torch_file(path: Path, max_bytes: int, what: str = "an xorrelu checkpoint") -> object:
    """torch.load a file written by torch.save (a zip archive), refusing before loading when the
    file, or what its members declare they inflate to, is larger than max_bytes, or when a member
    fails its CRC. Tensors land on the CPU; weights_only, so a pickle can never run code."""
    import torch

    path = Path(path)
    size = file_size(path, what)
    if size > max_bytes:
        raise JobDirError(
            f"{path} is {size / 2**20:.1f} MiB, more than the {max_bytes / 2**20:.0f} MiB {what} "
            f"of this config can be: it is not this job's; restore the file or run the job again"
        )
    try:
        with open(path, "rb") as file:
            _check_archive(file, path, max_bytes, what)
    except OSError as error:
        raise JobDirError(f"cannot read {path}: {error.strerror or error}") from None
    try:
        return torch.load(path, weights_only=True, map_location="cpu")  # never unpickles code
    except Exception as error:  # noqa: BLE001 — any failure of the loader on a hostile file is a refusal
        raise JobDirError(f"{path} is not {what} (refused: {one_line(error)})") from None


def _check_archive(file, path: Path, max_bytes: int, what: str) -> None:
    """The zip archive's declared content within max_bytes and every member's CRC right, checked
    before anything is inflated for torch."""
    start = file.read(4)
    file.seek(0)
    try:
        with zipfile.ZipFile(file) as archive:
            declared = sum(member.file_size for member in archive.infolist())
            if declared > max_bytes:
                raise JobDirError(
                    f"{path} declares {declared / 2**20:.0f} MiB of content, "
                    f"more than the {max_bytes / 2**20:.0f} MiB {what} of this config can "
                    "hold: refused unread (damaged, or not this job's); "
                    "restore the file or run the job again"
                )
            # torch does not check CRCs: a flipped bit would load as a wrong weight
            bad = archive.testzip()
            if bad is not None:
                raise JobDirError(
                    f"{path} is damaged (its member {short(bad)} fails its checksum); "
                    "restore the file or run the job again"
                )
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        EOFError,
        ValueError,
        NotImplementedError,
    ) as error:
        # it began as a zip archive but its end (the central directory) is unreadable
        if start == b"PK\x03\x04":
            raise JobDirError(
                f"{path} is damaged (truncated: its zip archive ends early or is corrupt: "
                f"{error}); restore the file or run the job again"
            ) from None
        raise JobDirError(
            f"{path} is not {what} (not a zip archive as torch.save writes); "
            "restore the file or run the job again"
        ) from None


def load_weights(job_dir: Path) -> dict:
    """A job's weights.pt ({"initial", "final", "seeds", "step"}), loaded within the bound above."""
    path = Path(job_dir) / "weights.pt"
    what = "a weights file written by xorrelu"
    bound = max(WEIGHTS_INFLATE_RATIO * file_size(path, what), WEIGHTS_INFLATE_FLOOR)
    state = load_torch_file(path, bound, what)
    if not isinstance(state, dict) or not {"initial", "final", "seeds"} <= set(state):
        raise JobDirError(f"{path} is not {what} (it lacks initial, final or seeds)")
    seeds = state["seeds"]
    if not isinstance(seeds, list) or not all(
        isinstance(s, int) and not isinstance(s, bool) for s in seeds
    ):
        raise JobDirError(f"{path} is not {what} (its seeds are not a list of whole numbers)")
    return state


def checkpoint_bound(model_state: dict) -> int:
    """The most bytes a checkpoint of this model may hold, checked before it is loaded: model,
    initial and two optimizer slots per parameter (Adam), times 4 for slack, plus 16 MiB for the
    config, the RNG state and the pickle."""
    params = sum(t.numel() * t.element_size() for t in model_state.values())
    return 4 * (4 * params) + 16 * 2**20


def load_checkpoint(job_dir: Path, model_state: dict) -> object:
    """A job's checkpoint.pt, refused unread when it is larger than a checkpoint of the model
    whose state_dict is `model_state` can be (checkpoint_bound). What it holds is the caller's
    to check against the job's config (xorrelu.resume does, field by field)."""
    path = Path(job_dir) / "checkpoint.pt"
    if not present(path):
        raise JobDirError(
            f"{job_dir} has no checkpoint.pt to resume from (a job killed with SIGKILL leaves "
            "none: run it again)"
        )
    return load_torch_file(path, checkpoint_bound(model_state))


# --- composing a config ---------------------------------------------------------------------


@contextlib.contextmanager
def hydra_context(config_path: str = CONFIG_PATH):
    """Hydra initialized on xorrelu's configs (a checkout's conf/, else the installed
    xorrelu.conf; "pkg://..." for a package) with the schemas registered, for hydra.compose."""
    from hydra import initialize_config_dir, initialize_config_module

    config_module.register_configs()
    if config_path.startswith("pkg://"):
        context = initialize_config_module(
            config_module=config_path.removeprefix("pkg://"), version_base="1.3"
        )
    else:
        context = initialize_config_dir(
            config_dir=config_path, version_base="1.3", job_name="xorrelu"
        )
    with context:
        yield


def compose(overrides: Iterable[str] = (), *, validated: bool = True):
    """The config (a DictConfig, without Hydra's own node) that `python -m xorrelu OVERRIDES`
    runs, for scripts and tests. Range-checked by xorrelu.config.validate unless
    validated=False (tests compose bad values on purpose, to test what refuses them)."""
    from hydra import compose as hydra_compose

    with hydra_context():
        cfg = hydra_compose("config", overrides=list(overrides))
    if validated:
        config_module.validate(cfg)
    return cfg
