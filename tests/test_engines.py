"""Every fast path gives the numbers of the straightforward one (the autograd engine)."""

import copy
import os
import platform

import numpy as np
import pytest
import torch
from conftest import make_cfg

from xorrelu import process
from xorrelu.activations import ACTIVATIONS
from xorrelu.data import make_dataset
from xorrelu.engines import make_engine
from xorrelu.engines.autograd import AutogradEngine
from xorrelu.engines.fused import (
    BLOCK_ELEMENTS,
    COMPILED_MIN_REPLICAS,
    EAGER_REPLICA_MULTIPLE,
    MAX_POINTS_PER_SUM,
    FusedEngine,
    _sum_points,
    replica_blocks,
)
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


@pytest.mark.parametrize("optimizer", ["optimizer=sgd", "optimizer=adam"])
@pytest.mark.parametrize("regularization", ["l1", "l2"])
def test_fused_updates_equal_autograd_regularized_in_float64(regularization, optimizer):
    """The penalty and its derivative: one update, then two more, from identical states."""
    reference, fast = twin_engines(
        f"regularization={regularization}",
        "regularization.rate=0.05",
        "activation=tanh",
        *optimizer.split(),
        "depth=4",
    )
    first = reference.step(update=False)
    assert set(first) == {"cost", "accuracy", "penalty", "grad_norm", "stuck_frac"}
    assert (first["penalty"] > 0).all()
    assert_same_updates(reference, fast, updates=1, rtol=1e-6)
    assert_same_updates(reference, fast, updates=2, rtol=1e-6)


@pytest.mark.parametrize("regularization", ["l1", "l2"])
def test_autograd_gradient_of_the_penalty_is_rate_sign_or_rate_w(regularization):
    """d penalty / d W = rate sign(W) (l1, sign(0) = 0) or rate W (l2); nothing on the biases;
    the penalty is rate x sum |W| or rate x 1/2 sum W^2 per replica."""
    rate = 0.3
    reference, _ = twin_engines(
        f"regularization={regularization}", f"regularization.rate={rate}", "depth=3"
    )
    layers = reference.linear_layers
    with torch.no_grad():
        layers[1].weight[0, 0, 0] = 0.0  # abs has no derivative at 0: autograd takes 0
    for p in reference.model.parameters():
        p.grad = None
    penalty = reference.penalty()
    penalty.sum().backward()
    for layer in layers:
        w = layer.weight.detach()
        expected = rate * (torch.sign(w) if regularization == "l1" else w)
        torch.testing.assert_close(layer.weight.grad, expected, rtol=0, atol=0)
        assert layer.bias.grad is None or not layer.bias.grad.any()
    assert layers[1].weight.grad[0, 0, 0] == 0 or regularization == "l2"
    terms = [
        (w.weight.abs() if regularization == "l1" else 0.5 * w.weight.square()).sum((1, 2))
        for w in layers
    ]
    torch.testing.assert_close(penalty, rate * torch.stack(terms).sum(0))


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


# (replicas, seed) of the runs compared: every seed of the others is a replica of the first
# (40 from seed 0, two whole vectors of floats with AVX-512 and a part). The lanes differ: seed
# 16 is the last, masked lane of 17 replicas, lane 15 of 16 (one whole vector), lane 2 of 3 and
# the only replica of 1.
BATCHES = [(40, 0), (17, 0), (1, 16), (3, 14), (4, 0), (16, 1)]


def replica_numbers(compile: bool, replicas: int, seed: int, *overrides: str) -> dict:
    """{seed: [metrics of each step..., final parameters]}: three updates, then the final
    measurement, of a small net on parity."""
    cfg = make_cfg(f"replicas={replicas}", f"seed={seed}", "depth=2", "width=3", *overrides)
    data = make_dataset(cfg.dataset)
    if compile:
        torch._dynamo.reset()  # a graph per batch size: stay under dynamo's recompile limit
    engine = FusedEngine(build_model(cfg, data[0].shape[1]), data, cfg, compile=compile)
    steps = [engine.step(update=True) for _ in range(3)] + [engine.step(update=False)]
    engine.write_back()
    return {
        seed + r: [{k: v[..., r] for k, v in m.items()} for m in steps]
        + [[p[r] for p in engine.model.parameters()]]
        for r in range(replicas)
    }


def assert_batch_independent(compile: bool, *overrides: str) -> None:
    runs = [replica_numbers(compile, r, seed, *overrides) for r, seed in BATCHES]
    reference = runs[0]
    for (replicas, _), run in zip(BATCHES[1:], runs[1:], strict=True):
        for seed, numbers in run.items():
            # bit for bit (NaN equal to NaN: a diverged replica stays diverged)
            torch.testing.assert_close(
                numbers,
                reference[seed],
                rtol=0,
                atol=0,
                equal_nan=True,
                msg=lambda m, r=replicas, s=seed: f"seed {s} of {r} replicas: {m}",
            )


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6])
@pytest.mark.parametrize(
    "overrides", [["activation=relu"], ["activation=tanh", "optimizer=adam"]], ids=str
)
def test_fused_replicas_do_not_depend_on_the_batch_size(bits, overrides):
    """Eager: with 1, 3, 4, 16, 17 or 40 replicas, on 4 to 64 points, each replica's metrics
    and weights are the same bits in every batch."""
    assert_batch_independent(False, "dataset=parity", f"dataset.bits={bits}", *overrides)


@pytest.mark.slow
@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6, 12])
def test_compiled_replicas_do_not_depend_on_the_batch_size(bits, monkeypatch):
    """Compiled, on two threads: the same, on 4 to 64 points and on 4096, where one sum over
    all the points would be shared among the threads for some batch sizes and not others
    (this test fails so with MAX_POINTS_PER_SUM = 4096), and where 17 and 40 replicas run in
    2 and 3 blocks of 16 (replica_blocks)."""
    assert replica_blocks(40, 4096, True) == (48, 16)
    # two threads, with an inductor cache for two threads (xorrelu.process: kernels compiled
    # for one thread would be reused otherwise); the environment is restored afterwards
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setattr(process, "_OUR_CACHE", None)
    threads = torch.get_num_threads()
    process.use_threads(2)
    try:
        assert_batch_independent(
            True, "dataset=parity", f"dataset.bits={bits}", "activation=tanh", "optimizer=adam"
        )
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow
def test_compiled_blocks_checkpoint_and_write_back_exactly():
    """A compiled run of 40 replicas on 4096 points is 3 blocks with 8 padding replicas: its
    checkpoint (state_dict, then the model's weights) and write_back leave the blocks and come
    back bit for bit. Two updates, a checkpoint, one more in a new engine = three in one."""
    cfg = make_cfg(
        "replicas=40", "depth=2", "width=3", "dataset=parity", "dataset.bits=12",
        "activation=tanh", "optimizer=adam",
    )  # fmt: skip
    assert replica_blocks(40, 4096, True) == (48, 16)
    data = make_dataset(cfg.dataset)
    start = build_model(cfg, data[0].shape[1])
    torch._dynamo.reset()
    whole = FusedEngine(copy.deepcopy(start), data, cfg, compile=True)
    expected = [whole.step(update=True) for _ in range(3)]
    whole.write_back()
    first = FusedEngine(copy.deepcopy(start), data, cfg, compile=True)
    got = [first.step(update=True) for _ in range(2)]
    first.write_back()
    saved = copy.deepcopy(first.state_dict())
    assert all(s.shape[-1] == 40 for s in saved["state"])  # no padding in a checkpoint
    second = FusedEngine(copy.deepcopy(first.model), data, cfg, compile=True)
    second.load_state_dict(saved)
    got.append(second.step(update=True))
    second.write_back()
    torch.testing.assert_close(got, expected, rtol=0, atol=0, equal_nan=True)
    for a, b in zip(second.model.parameters(), whole.model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_compiled_replicas_run_in_blocks_that_stay_in_the_caches():
    """Issue #13: compiled, the replicas run in blocks of one size, each within BLOCK_ELEMENTS
    replicas x points (a block is at least one vector of replicas), in as few blocks as that
    allows, with less than a block of padding; eager, in one block (a multiple of 64)."""
    for replicas in [1, 3, 16, 17, 100, 1000, 10000]:
        for points in [4, 250, 500, 4096]:
            padded, block = replica_blocks(replicas, points, True)
            blocks = padded // block
            assert padded == blocks * block and 0 <= padded - replicas < block
            assert block >= COMPILED_MIN_REPLICAS
            assert block * points <= BLOCK_ELEMENTS or block == COMPILED_MIN_REPLICAS
            if blocks > 1:  # whole vectors, and one block fewer would not do
                assert block % COMPILED_MIN_REPLICAS == 0
                wider = -(-replicas // (blocks - 1))  # the block of one block fewer
                wider = -(-wider // COMPILED_MIN_REPLICAS) * COMPILED_MIN_REPLICAS
                assert wider * points > BLOCK_ELEMENTS
            padded, block = replica_blocks(replicas, points, False)
            assert padded == block and padded % EAGER_REPLICA_MULTIPLE == 0
    assert replica_blocks(1000, 500, True) == (1024, 32)  # issue #13's config: 32 blocks


def test_the_compiled_graph_does_not_grow_with_the_points():
    """Issue #11: sums over points written out term by term made the graph, and the compile
    time, grow with the points. Traced only (a backend that counts the nodes; no inductor):
    XOR's 2 inputs repeated to 4 ... 4096 points. Beyond MAX_POINTS_PER_SUM a sum over points
    takes a few more nodes (blocks, then the blocks), but no more for more points."""
    assert MAX_POINTS_PER_SUM == 256  # the point counts below straddle it
    sizes = {}
    for points in [4, 64, 256, 512, 4096]:
        cfg = make_cfg("replicas=3", "depth=2", "width=3")
        x, y = make_dataset(cfg.dataset)
        data = x.repeat(points // 4, 1), y.repeat(points // 4)
        engine = FusedEngine(build_model(cfg, 2), data, cfg, compile=False)

        def count(graph, inputs, points=points):
            sizes[points] = len(graph.graph.nodes)
            return graph.forward

        torch._dynamo.reset()
        step = torch.compile(engine._step, backend=count, dynamic=False)
        with torch.no_grad():
            block = ([p[0] for p in ps] for ps in (engine.weights, engine.biases, engine.state))
            step(*block, engine.t, True)
    assert sizes[4] == sizes[64] == sizes[256] and sizes[512] == sizes[4096], sizes


@pytest.mark.slow
def test_compiled_sum_over_points_in_blocks():
    """Past MAX_POINTS_PER_SUM points, compiled: blocks of consecutive points (the last one
    filled up with zeros), then the blocks, each added up in order in every lane: bit for bit
    the sum written out here (600 points: 3 blocks of 200)."""
    assert MAX_POINTS_PER_SUM == 256  # 600 points: 3 blocks
    terms = torch.randn(600, 3, 17, generator=torch.Generator().manual_seed(0))
    torch._dynamo.reset()
    total = torch.compile(_sum_points, dynamic=False)(terms)
    expected = torch.zeros(3, 17)
    for block in terms.split(200):
        partial = torch.zeros(3, 17)
        for term in block:
            partial = partial + term
        expected = expected + partial
    torch.testing.assert_close(total, expected, rtol=0, atol=0)


def test_engine_choice_is_recorded(train_run):
    summary, _, _ = train_run("steps=3", "replicas=2")
    assert (summary["engine"], summary["compiled"]) == ("autograd", False)  # short runs: no compile
    summary, _, _ = train_run("steps=3", "replicas=2", "engine=fused", "compile=false")
    assert (summary["engine"], summary["compiled"]) == ("fused", False)
    summary, _, _ = train_run("steps=3", "replicas=2", "activation=maxout", "compile=true")
    assert summary["engine"] == "autograd"  # the fused engine has no maxout: auto falls back


def test_compile_auto_compiles_only_what_pays_for_its_compile():
    """No job waits longer for a compile than it would train: the default job and every point
    of the sweep presets stay uncompiled (a compile per shape would cost more than the sweep);
    the lesson's 200,000-step run and a 1,000-replica, 512-point run compile. Issue #13's
    Playground net (circle, 1,000 replicas; benchmarks/playground_speed.md) stays uncompiled
    for 300 steps (~12 s uncompiled against a ~16 s compile) and compiles for 2,000 (~78 s),
    which the cost model fitted at 4 points (20 ns per replica x point x unit x layer) did not
    tell apart (~80 s for 300 steps)."""
    circle = ["dataset=circle", "depth=4", "width=8", "replicas=1000"]
    presets = [
        [f"experiment={name}", f"{key}={value}"]
        for name, key, values in [
            ("activations", "activation", ["relu", "sigmoid"]),
            ("depth", "depth", [1, 20]),
            ("width", "width", [2, 20]),
            ("init", "init", ["xavier_uniform", "lab_uniform"]),
        ]
        for value in values
    ]
    for overrides, expected in [
        (["steps=10000", "replicas=16"], ("autograd", False)),
        *[(preset, ("autograd", False)) for preset in presets],
        (["experiment=lab10"], ("fused", True)),
        (["steps=200000", "replicas=16"], ("fused", True)),
        (["dataset=parity", "dataset.bits=9", "replicas=1000", "steps=2000"], ("fused", True)),
        (["steps=200000", "activation=prelu"], ("autograd", False)),
        ([*circle, "steps=300"], ("autograd", False)),
        ([*circle, "steps=2000"], ("fused", True)),
    ]:
        cfg = make_cfg(*overrides)
        data = make_dataset(cfg.dataset)
        model = build_model(make_cfg(*overrides, "replicas=1"), data[0].shape[1])
        engine = make_engine(cfg, model, data, None)
        assert (engine.name, engine.compiled) == expected, overrides


@pytest.mark.slow
def test_compiled_update_equals_autograd_in_float64():
    reference, fast = twin_engines("activation=relu", "optimizer=adam", compile=True)
    assert_same_updates(reference, fast, updates=3, rtol=1e-6)


def test_compiled_regularized_update_equals_autograd_in_float64():
    """The penalty inside the compiled step (a small net: one compile)."""
    reference, fast = twin_engines(
        "regularization=l1", "regularization.rate=0.05", "depth=2", "optimizer=adam", compile=True
    )
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


@pytest.mark.slow
def test_compiled_final_measurement_is_the_compiled_step_on_copies():
    """A compiled run's last row (no update) comes from the compiled step, run on copies: no
    second graph, nothing changed, and the same numbers as an update step at those parameters."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    _, fast = twin_engines("activation=relu", "optimizer=adam", "depth=2", compile=True)
    fast.step(update=True)
    graphs = counters["stats"]["unique_graphs"]
    before = [t.clone() for t in (*fast.weights, *fast.biases, *fast.state, fast.t)]
    final = fast.step(update=False)
    assert counters["stats"]["unique_graphs"] == graphs
    after = [*fast.weights, *fast.biases, *fast.state, fast.t]
    assert all(torch.equal(a, b) for a, b in zip(after, before, strict=True))
    torch.testing.assert_close(fast.step(update=True), final, rtol=0, atol=0)


@pytest.mark.skipif(
    not (platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"),
    reason="glibc's malloc only",
)
def test_entry_points_keep_freed_memory():
    """A compiled step frees all its buffers at its end; glibc handed those pages back to the
    kernel and faulted them in again every step (xorrelu.process.keep_freed_memory). Setting
    the thresholds is accepted (and does no harm when set again)."""
    assert process.keep_freed_memory()
    assert process.keep_freed_memory()
