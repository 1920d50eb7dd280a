"""Typed config schema (Hydra ConfigStore) and the range checks Hydra cannot do.

Each group option in conf/<group>/<name>.yaml extends one of these dataclasses, so a wrong
type or an unknown key fails at start-up with Hydra's own message naming the key. Values
that have the right type but are out of range are refused by `validate`.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

# Where Hydra finds the configs: a source checkout's top-level conf/, else the copy installed as
# xorrelu.conf (pyproject maps conf/ there).
_CHECKOUT_CONF = Path(__file__).resolve().parent.parent / "conf"
CONFIG_PATH = (
    str(_CHECKOUT_CONF) if (_CHECKOUT_CONF / "config.yaml").is_file() else "pkg://xorrelu.conf"
)


# Keys added after the first release, with the value that does what xorrelu did before them: a
# job dir written before a key existed reads as if it had been set so (jobdir.read_config).
ADDED_LATER = {
    "log_first": 0,
    "batch_size": None,
    "regularization": {"name": "none"},
    "dataset": {"features": None, "test_fraction": 0.0, "solved_accuracy": 1.0, "solved_cost": 0.1},
    "objective": "solved_rate",
}


def upgrade(config):
    """An older job's config (a plain mapping) with the keys added since, at their old value
    (a group's keys within the group)."""
    if not isinstance(config, dict):
        return config
    merged = {**copy.deepcopy(ADDED_LATER), **config}
    for key, added in ADDED_LATER.items():
        if isinstance(added, dict) and isinstance(config.get(key), dict):
            merged[key] = {**copy.deepcopy(added), **config[key]}
    return merged


class ConfigError(ValueError):
    """A config value that has the right type but is not allowed."""

    def __init__(self, key: str, value: Any, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key}={value!r} is not allowed: {allowed}")


# --- activation (hidden layers only; the output unit is always a sigmoid) -------------------
@dataclass
class ActivationConf:
    name: str = MISSING  # registry name, see xorrelu.activations.ACTIVATIONS


@dataclass
class LeakyReluConf(ActivationConf):
    slope: float = 0.01  # slope for x < 0, in [0, 1)


@dataclass
class EluConf(ActivationConf):
    alpha: float = 1.0  # ELU saturates at -alpha for x -> -inf, > 0


@dataclass
class SoftplusConf(ActivationConf):
    beta: float = 1.0  # log(1 + exp(beta x)) / beta; larger = closer to ReLU, > 0


@dataclass
class PreluConf(ActivationConf):
    init: float = 0.25  # starting slope for x < 0, learned per unit and replica


@dataclass
class MaxoutConf(ActivationConf):
    pieces: int = 2  # linear pieces per unit (the Linear before it outputs width * pieces), >= 2


# --- weight initializer ---------------------------------------------------------------------
@dataclass
class InitConf:
    name: str = MISSING  # registry name, see xorrelu.init.INITIALIZERS
    bias: float = 0.0  # every bias starts at this constant (the lesson: 0)


@dataclass
class UniformInitConf(InitConf):
    bound: float = 1.0  # weights ~ U(-bound, bound); the lesson's tf.random_uniform(-1, 1), > 0


@dataclass
class NormalInitConf(InitConf):
    std: float = 1.0  # weights ~ N(0, std^2), like tf.random_normal's default, > 0


# --- optimizer ------------------------------------------------------------------------------
@dataclass
class OptimizerConf:
    name: str = MISSING  # registry name, see xorrelu.optimizers.OPTIMIZERS
    lr: float = 0.1  # learning rate, > 0


@dataclass
class MomentumConf(OptimizerConf):
    momentum: float = 0.9  # in [0, 1)
    nesterov: bool = False


@dataclass
class AdamConf(OptimizerConf):
    beta1: float = 0.9  # in [0, 1)
    beta2: float = 0.999  # in [0, 1)
    eps: float = 1e-8  # > 0


@dataclass
class RmspropConf(OptimizerConf):
    alpha: float = 0.99  # smoothing of the squared-gradient average, in [0, 1)
    eps: float = 1e-8  # > 0


# --- dataset --------------------------------------------------------------------------------
@dataclass
class DatasetConf:
    name: str = MISSING  # registry name, see xorrelu.data.DATASETS
    # the first layer's inputs, for 2-D datasets: any of x1 x2 x1_sq x2_sq x1x2 sin_x1 sin_x2;
    # null = the dataset's raw inputs
    features: list[str] | None = None
    test_fraction: float = 0.0  # held out (never trained on), in [0, 1); 0 = no test split
    # solved: accuracy >= solved_accuracy and (unless null) cost < solved_cost, measured on the
    # test split when there is one, else on the training points
    solved_accuracy: float = 1.0  # in (0, 1]
    solved_cost: float | None = 0.1  # > 0, or null


@dataclass
class PlaygroundConf(DatasetConf):
    points: int = 500  # drawn before the split (the Playground's 500), >= 2
    noise: float = 0.0  # the Playground's noise slider, 0..50
    seed: int = 0  # the points' generator (the same points for every replica), >= 0
    test_fraction: float = 0.5  # the Playground's default ratio of training data, 50%
    solved_accuracy: float = 0.9
    solved_cost: float | None = None


@dataclass
class ParityConf(DatasetConf):
    bits: int = 3  # inputs; all 2**bits points, label = sum of bits mod 2 (bits=2 is XOR), 1..16


# --- regularization -------------------------------------------------------------------------
@dataclass
class RegularizationConf:
    name: str = MISSING  # registry name, see xorrelu.regularization.REGULARIZERS (none: no rate)


@dataclass
class PenaltyConf(RegularizationConf):
    rate: float = 0.001  # the penalty's weight in the loss, >= 0


class EngineName(Enum):
    auto = "auto"  # fused when it is compiled and applies (elementwise activations), else autograd
    autograd = "autograd"  # the nn.Sequential and torch.optim as they are: the reference
    fused = "fused"  # explicit backward, replicas on the last axis; compiled per `compile`


class Device(Enum):
    auto = "auto"  # cuda when available, else cpu
    cpu = "cpu"
    cuda = "cuda"


class Objective(Enum):
    """The number a job returns to a searching sweeper (hydra/sweeper=search), over its replicas,
    measured where *solved* is (the test split when there is one, else the training points)."""

    solved_rate = "solved_rate"  # solved replicas / replicas: maximize
    mean_accuracy = "mean_accuracy"  # mean final accuracy, a diverged replica counting 0: maximize
    median_cost = "median_cost"  # median final cost, a diverged replica counting inf: minimize

    @property
    def direction(self) -> str:
        return "minimize" if self is Objective.median_cost else "maximize"


@dataclass
class Config:
    activation: ActivationConf = MISSING  # hidden-layer non-linearity (group conf/activation)
    init: InitConf = MISSING  # weight initializer (group conf/init)
    optimizer: OptimizerConf = MISSING  # update rule (group conf/optimizer)
    dataset: DatasetConf = MISSING  # training points (group conf/dataset)
    # weight penalty added to the loss (group conf/regularization): none | l1 | l2
    regularization: RegularizationConf = MISSING
    depth: int = 10  # hidden layers (the net has depth + 1 Linear layers), >= 1
    width: int = 5  # units per hidden layer, >= 1
    steps: int = 10000  # gradient-descent updates, >= 1
    seed: int = 0  # replica r starts from torch.Generator seeded seed + r, >= 0
    replicas: int = 16  # independent nets trained together (seeds seed .. seed+replicas-1), >= 1
    # updates per mini-batch of this many training points, each replica drawing its own order
    # (seeded seed + r, apart from its init); null = the full batch (the lesson), >= 1
    batch_size: int | None = None
    log_every: int = 1  # write a metrics.csv row per replica every this many steps, >= 1
    log_first: int = 0  # and at every step up to this one (dense where the cost moves most), >= 0
    print_every: int = 1000  # print a console line every this many steps, >= 1
    device: Device = Device.auto  # auto | cpu | cuda
    engine: EngineName = (
        EngineName.auto
    )  # auto | autograd | fused (same numbers, see README Performance)
    # fused engine under torch.compile: auto (when quicker than training uncompiled) | true | false
    compile: Any = "auto"
    threads: int = (
        0  # torch threads per job; 0 = the cores shared among the jobs a launcher runs at once
    )
    # what a job returns to a searching sweeper: solved_rate | mean_accuracy | median_cost
    objective: Objective = Objective.solved_rate
    plot: bool = True  # write comparison plots and summary tables into the run dir when it ends
    tensorboard: bool = (
        False  # also log scalars and weight histograms for TensorBoard (extra [tensorboard])
    )


@dataclass
class RayConf:
    # ray.init's arguments: auto = the cluster in RAY_ADDRESS, else the one `ray start` made on
    # this machine (never a private one started here); object_store_memory is the cluster's; the
    # jobs' output goes to their xorrelu.log, not to this console
    init: dict[str, Any] = dataclasses.field(
        default_factory=lambda: {
            "address": "auto",
            "object_store_memory": None,
            "log_to_driver": False,
        }
    )
    # ray.remote's options for each job: num_cpus = cores per job = torch threads (threads=0);
    # max_retries 0: a job whose worker died is reported, not rerun into its own results
    remote: dict[str, Any] = dataclasses.field(
        default_factory=lambda: {"num_cpus": 1, "max_retries": 0}
    )


@dataclass
class RayLauncherConf:
    """hydra/launcher=ray (pip install 'xorrelu[ray]'): every sweep job a task on a Ray cluster
    (hydra_plugins/xorrelu_launcher/ray_launcher.py)."""

    _target_: str = "hydra_plugins.xorrelu_launcher.ray_launcher.RayLauncher"
    ray: RayConf = dataclasses.field(default_factory=RayConf)


def register_configs() -> None:
    """Store the schemas; conf/<group>/<name>.yaml extends
    /schema/<group>/<kind> in its defaults. hydra/launcher=ray replaces hydra-ray-launcher's own
    `ray`, which its plugin stores when Hydra scans the plugins: scan them first (a ray.yaml in
    conf/ would be merged into that one, with a deprecation warning at every start)."""
    from hydra.core.plugins import Plugins

    Plugins.instance()
    cs = ConfigStore.instance()
    cs.store(name="schema_config", node=Config)
    cs.store(group="hydra/launcher", name="ray", node=RayLauncherConf, provider="xorrelu")
    schemas = {
        "activation": {
            "activation": ActivationConf,
            "leaky_relu": LeakyReluConf,
            "elu": EluConf,
            "softplus": SoftplusConf,
            "prelu": PreluConf,
            "maxout": MaxoutConf,
        },
        "init": {"init": InitConf, "uniform": UniformInitConf, "normal": NormalInitConf},
        "optimizer": {
            "optimizer": OptimizerConf,
            "momentum": MomentumConf,
            "adam": AdamConf,
            "rmsprop": RmspropConf,
        },
        "dataset": {"dataset": DatasetConf, "parity": ParityConf, "playground": PlaygroundConf},
        "regularization": {"regularization": RegularizationConf, "penalty": PenaltyConf},
    }
    for group, nodes in schemas.items():
        for name, node in nodes.items():
            cs.store(group=f"schema/{group}", name=name, node=node)


# --- range checks ---------------------------------------------------------------------------
_AT_LEAST_1 = ("depth", "width", "steps", "replicas", "log_every", "print_every")
_POSITIVE = (
    "optimizer.lr",
    "optimizer.eps",
    "activation.alpha",
    "activation.beta",
    "init.bound",
    "init.std",
)
_FINITE = ("init.bias", "activation.init")
_UNIT_INTERVAL = (
    "optimizer.momentum",
    "optimizer.beta1",
    "optimizer.beta2",
    "optimizer.alpha",
    "activation.slope",
)


def validate(cfg: DictConfig, check_memory: bool = True) -> None:
    """Raise ConfigError for the first value that is out of range or unknown. `check_memory`
    compares the run's size with this machine's free memory (off where jobs run elsewhere)."""
    _refuse_unknown_keys(cfg, "")
    _check_names(cfg)
    _check_ranges(cfg)
    _check_machine(cfg)
    if check_memory:
        _check_memory(cfg)


def _check_names(cfg: DictConfig) -> None:
    """Each group's name is in its registry; engine=fused only with what it runs."""
    from xorrelu.activations import ACTIVATIONS
    from xorrelu.data import DATASETS
    from xorrelu.init import INITIALIZERS
    from xorrelu.optimizers import OPTIMIZERS
    from xorrelu.regularization import REGULARIZERS

    for group, registry in (
        ("activation", ACTIVATIONS),
        ("init", INITIALIZERS),
        ("optimizer", OPTIMIZERS),
        ("dataset", DATASETS),
        ("regularization", REGULARIZERS),
    ):
        name = cfg[group].name
        if name not in registry:
            raise ConfigError(f"{group}.name", name, f"one of {', '.join(registry)}")
    if EngineName(cfg.engine) is EngineName.fused:
        fused = ACTIVATIONS.names(lambda activation: activation.fused)
        if cfg.activation.name not in fused:
            raise ConfigError(
                "engine",
                "fused",
                f"the fused engine runs {', '.join(sorted(fused))}; use engine=autograd or auto",
            )


def _check_ranges(cfg: DictConfig) -> None:
    for key in _AT_LEAST_1:
        _check(cfg, key, lambda v: v >= 1, "an integer >= 1")
    # seeds seed .. seed + replicas - 1 fit metrics.csv's int64 seed column
    last_seed = 2**63 - cfg.replicas
    _check(
        cfg,
        "seed",
        lambda v: 0 <= v <= last_seed,
        f"an integer from 0 to 2**63 - replicas = {last_seed}",
    )
    _check(cfg, "threads", lambda v: v >= 0, "an integer >= 0 (0 = PyTorch's default)")
    _check(cfg, "log_first", lambda v: v >= 0, "an integer >= 0")
    if cfg.compile not in ("auto", True, False):
        raise ConfigError("compile", cfg.compile, "auto, true or false")
    for key in _POSITIVE:
        _check(cfg, key, lambda v: 0 < v < math.inf, "a finite number > 0")
    for key in _FINITE:
        _check(cfg, key, math.isfinite, "a finite number")
    for key in _UNIT_INTERVAL:
        _check(cfg, key, lambda v: 0 <= v < 1, "a number in [0, 1)")
    _check(cfg, "regularization.rate", lambda v: 0 <= v < math.inf, "a finite number >= 0")
    _check(cfg, "activation.pieces", lambda v: v >= 2, "an integer >= 2")
    _check(cfg, "dataset.bits", lambda v: 1 <= v <= 16, "an integer from 1 to 16")
    check_dataset(cfg)
    _check(cfg, "batch_size", lambda v: v >= 1, "an integer >= 1, or null for the full batch")


def check_dataset(cfg: DictConfig) -> None:
    """The Playground's ranges, a split that leaves points to train on, features by name for
    2-D datasets only (also the plotter's check of a job's dataset before it rebuilds it)."""
    from xorrelu.data import DATASETS, FEATURES, test_points

    dataset = cfg.dataset
    _check(cfg, "dataset.points", lambda v: 2 <= v <= 1_000_000, "an integer from 2 to 1000000")
    _check(cfg, "dataset.noise", lambda v: 0 <= v <= 50, "a number from 0 to 50 (the Playground's)")
    _check(cfg, "dataset.seed", lambda v: 0 <= v < 2**63, "an integer >= 0")
    _check(cfg, "dataset.test_fraction", lambda v: 0 <= v < 1, "a number in [0, 1)")
    _check(cfg, "dataset.solved_accuracy", lambda v: 0 < v <= 1, "a number in (0, 1]")
    _check(cfg, "dataset.solved_cost", lambda v: 0 < v < math.inf, "a finite number > 0, or null")
    record = DATASETS.get(dataset.name)
    held_out = test_points(dataset)
    if held_out >= record.size(dataset):
        raise ConfigError(
            "dataset.test_fraction",
            dataset.test_fraction,
            f"a fraction that leaves training points: {record.size(dataset)} points, "
            f"{held_out} held out",
        )
    features = dataset.features
    if features is None:
        return
    if record.dims(dataset) != 2:
        raise ConfigError(
            "dataset.features",
            list(features),
            f"null: features are computed from 2-D points, and {dataset.name} is not 2-D",
        )
    for name in features:
        if name not in FEATURES:
            raise ConfigError("dataset.features", name, f"one of {', '.join(FEATURES)}")
    if not features or len(set(features)) != len(features):
        raise ConfigError(
            "dataset.features",
            list(features),
            f"a list of distinct names from {', '.join(FEATURES)} (at least one), or null",
        )


def _check_machine(cfg: DictConfig) -> None:
    """What this machine must have: tensorboard when asked for, a GPU for device=cuda."""
    if cfg.tensorboard:
        try:
            import tensorboard  # noqa: F401
        except ImportError:
            raise ConfigError(
                "tensorboard",
                True,
                "needs the tensorboard package: pip install 'xorrelu[tensorboard]'",
            ) from None
    if Device(cfg.device) is Device.cuda:
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(
                "device", "cuda", "no CUDA GPU is visible here; use device=cpu or device=auto"
            )


def estimated_bytes(cfg) -> int:
    """Memory a run needs, from its size: parameters (with gradients, optimizer state and saved
    copies) and activations per replica, plus ~0.5 GiB for PyTorch itself. Measured: 100,000
    replicas of the default net peak at 1.4 GiB; this says 1.8."""
    pieces = cfg.activation.get("pieces", 1) if cfg.activation.name == "maxout" else 1
    from xorrelu.data import dataset_shape

    points, inputs = dataset_shape(cfg.dataset)
    units = cfg.width * pieces
    params = (inputs + 1) * units + (cfg.depth - 1) * (cfg.width + 1) * units + cfg.width + 1
    activations = points * units * cfg.depth
    return cfg.replicas * 4 * (6 * params + 8 * activations) + 512 * 2**20


def available_bytes(device) -> int:
    import torch

    if Device(device) is not Device.cpu and torch.cuda.is_available():
        return torch.cuda.mem_get_info()[0]
    try:
        with open("/proc/meminfo") as meminfo:
            fields = dict(line.split(":", 1) for line in meminfo)
        return int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):  # not Linux: free pages, where the system says
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError):
            return 2**62  # unknown: do not refuse


def _check_memory(cfg) -> None:
    need, have = estimated_bytes(cfg), available_bytes(cfg.device)
    if need > have:
        raise ConfigError(
            "replicas",
            cfg.replicas,
            f"this run needs about {need / 2**30:.1f} GiB (replicas x depth x width^2 x points), "
            f"more than the {have / 2**30:.1f} GiB free here; use fewer replicas or a smaller net",
        )


def _check(cfg: DictConfig, key: str, ok, allowed: str) -> None:
    value = OmegaConf.select(cfg, key)
    if value is not None and not ok(value):
        raise ConfigError(key, value, allowed)


def _refuse_unknown_keys(node: DictConfig, prefix: str) -> None:
    """`+key=value` bypasses Hydra's struct check; refuse keys the schema does not define."""
    schema = OmegaConf.get_type(node)
    if dataclasses.is_dataclass(schema):
        known = {f.name for f in dataclasses.fields(schema)}
        for key in node:
            if key not in known:
                raise ConfigError(
                    prefix + str(key),
                    node[key],
                    f"not a config key; known keys: {', '.join(sorted(known))}",
                )
    for key in node:
        child = node._get_node(key)
        if isinstance(child, DictConfig):
            _refuse_unknown_keys(child, f"{prefix}{key}.")


__all__ = [
    "Config",
    "ConfigError",
    "Device",
    "Objective",
    "check_dataset",
    "register_configs",
    "validate",
]
