"""Every fast path gives the numbers of the straightforward one (the autograd engine)."""

import copy
import os

import numpy as np
import pytest
import torch
from conftest import make_cfg

from xorrelu.activations import ACTIVATIONS
from xorrelu.data import make_dataset
from xorrelu.engines import make_engine
from xorrelu.engines.autograd import AutogradEngine
from xorrelu.engines.fused import FusedEngine
from xorrelu.model import build_model

FUSED_ACTIVATIONS = ACTIVATIONS.names(lambda activation: activation.fused)

OPTIMIZERS = [
    "optimizer=sgd",
    "optimizer=momentum",
    "optimizer=momentum optimizer.nesterov=true",
    "optimizer=adam",
    "optimizer=rmsprop",
]


def twin_engines(*overrides, compile=False, dtype=torch.float64):
    cfg = make_cfg("replicas=5", "init=xavier_normal", "init.bias=0.05", *overrides)
    data = tuple(t.to(dtype) for t in make_dataset(cfg.dataset))
    model = build_model(cfg, data[0].shape[1]).to(dtype)
    reference = AutogradEngine(copy.deepcopy(model), data, cfg)
    return reference, FusedEngine(model, data, cfg, compile=compile)


def assert_same_updates(reference, fast, updates: int, rtol: float):
    for _ in range(updates):
        torch.testing.assert_close(
            fast.step(update=True), reference.step(update=True), rtol=rtol, atol=1e-12
        )
    fast.write_back()
    for (name, a), b in zip(
        fast.model.named_parameters(), reference.model.parameters(), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=rtol, atol=1e-12, msg=name)


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("activation", sorted(FUSED_ACTIVATIONS))
def test_fused_updates_equal_autograd_in_float64(activation, optimizer):
    """One update, then two more (optimizer state), from identical states:
    all metrics and weights."""
    reference, fast = twin_engines(f"activation={activation}", *optimizer.split(), "depth=4")
    assert_same_updates(reference, fast, updates=1, rtol=1e-6)
    assert_same_updates(reference, fast, updates=2, rtol=1e-6)


def test_fused_metrics_measure_a_dead_layer_and_a_diverged_replica():
    reference, fast = twin_engines("activation=relu")
    with torch.no_grad():
        for engine in (reference, fast):
            layer = engine.model[6]  # a hidden Linear layer: make replica 1's units all negative
            layer.weight[1] = 0
            layer.bias[1] = -1
            engine.model[20].weight[3] = float("nan")  # replica 3's output
    cfg, data = make_cfg("activation=relu"), (reference.x, reference.y)
    # made again: the fused engine copied the weights when it was made
    fast = FusedEngine(fast.model, data, cfg, compile=False)
    a, b = fast.step(update=False), reference.step(update=False)
    # hidden layer 4 (nn.Sequential index 6) of replica 1 is all stuck; replica 3's cost is NaN
    assert a["stuck_frac"][3, 1] == 1.0 and b["stuck_frac"][3, 1] == 1.0
    assert torch.isnan(a["cost"][3]) and torch.isnan(b["cost"][3])
    keep = [0, 1, 2, 4]
    torch.testing.assert_close(
        {k: v[..., keep] for k, v in a.items()},
        {k: v[..., keep] for k, v in b.items()},
        rtol=1e-6,
        atol=1e-12,
    )


@pytest.mark.parametrize(
    "overrides",
    [["activation=relu"], ["activation=sigmoid"], ["activation=tanh", "optimizer.lr=0.03"]],
)
def test_twenty_steps_of_train_agree_in_float32(train_run, overrides):
    """The lesson's nets with plain GD. (Float32 rounding differs between any two orders of
    summation; Adam divides near-zero gradients by sqrt(v) and so magnifies it, and a replica
    oscillating at lr 0.1 doubles it every step: those are held to 1e-6 in float64 above.)"""
    _, reference, _ = train_run("engine=autograd", "steps=20", "replicas=16", *overrides)
    _, fast, _ = train_run("engine=fused", "compile=false", "steps=20", "replicas=16", *overrides)
    np.testing.assert_allclose(fast.values, reference.values, rtol=1e-4, atol=1e-7)


def test_fused_replicas_do_not_depend_on_the_batch(train_run):
    _, batched, _ = train_run("engine=fused", "compile=false", "replicas=4", "seed=3", "steps=20")
    _, single, _ = train_run("engine=fused", "compile=false", "replicas=1", "seed=5", "steps=20")
    np.testing.assert_array_equal(
        batched[batched.seed == 5].to_numpy(float), single.to_numpy(float)
    )


def test_engine_choice_is_recorded(train_run):
    summary, _, _ = train_run("steps=3", "replicas=2")
    assert (summary["engine"], summary["compiled"]) == ("autograd", False)  # short runs: no compile
    summary, _, _ = train_run("steps=3", "replicas=2", "engine=fused", "compile=false")
    assert (summary["engine"], summary["compiled"]) == ("fused", False)
    summary, _, _ = train_run("steps=3", "replicas=2", "activation=maxout", "compile=true")
    assert summary["engine"] == "autograd"  # the fused engine has no maxout: auto falls back


def test_compile_auto_decides_from_steps_times_replicas():
    for overrides, expected in [
        (["steps=10000", "replicas=16"], ("autograd", False)),
        (["steps=200000", "replicas=16"], ("fused", True)),
        (["steps=200000", "activation=prelu"], ("autograd", False)),
    ]:
        cfg = make_cfg(*overrides)
        data = make_dataset(cfg.dataset)
        engine = make_engine(cfg, build_model(make_cfg(*overrides, "replicas=1"), 2), data, None)
        assert (engine.name, engine.compiled) == expected, overrides


@pytest.mark.slow
def test_compiled_update_equals_autograd_in_float64():
    reference, fast = twin_engines("activation=relu", "optimizer=adam", compile=True)
    assert_same_updates(reference, fast, updates=3, rtol=1e-6)


@pytest.mark.slow
def test_compiled_lesson_numbers_and_trajectories(train_run):
    """Compiled float32: twenty steps as autograd's to 1e-4, and the lesson's sigmoid plateau."""
    _, reference, _ = train_run("engine=autograd", "steps=20", "replicas=16", "activation=sigmoid")
    summary, fast, _ = train_run(
        "engine=fused",
        "compile=true",
        "steps=2000",
        "log_every=1",
        "replicas=16",
        "activation=sigmoid",
    )
    assert summary["compiled"]
    early = fast[fast.step <= 20].reset_index(drop=True)
    np.testing.assert_allclose(early.values, reference.values, rtol=1e-4, atol=1e-7)
    assert all(abs(rep["final_cost"] - np.log(2)) < 1e-3 for rep in summary["replicas"])
    start = fast[fast.step == 0]
    assert (start.grad_norm_1 / start.grad_norm_11).median() < 1e-4


def test_train_leaves_the_process_as_it_was(train_run):
    """Threads and the environment belong to the entry points (xorrelu.process)."""
    threads, environment = torch.get_num_threads(), dict(os.environ)
    train_run("steps=3", "replicas=2", "threads=1", "engine=fused", "compile=false")
    assert torch.get_num_threads() == threads and dict(os.environ) == environment
