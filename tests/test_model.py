"""Registries, initializers, shapes, data, and the batched model against plain
per-replica models."""

import math
from pathlib import Path

import pytest
import torch
from conftest import make_cfg

from xorrelu.activations import ACTIVATIONS
from xorrelu.data import DATASETS, make_dataset
from xorrelu.init import INITIALIZERS, init_weights
from xorrelu.metrics import forward, prelu_slopes, stuck_frac
from xorrelu.model import build_model, export_replica, linear_layers
from xorrelu.optimizers import OPTIMIZERS

CONF = Path(__file__).resolve().parent.parent / "conf"
FAN_IN, FAN_OUT = 300, 200


def draw(*overrides):
    cfg = make_cfg(*overrides)
    return init_weights(cfg.init, [(FAN_IN, FAN_OUT)], seeds=[0])[0][0]


@pytest.mark.parametrize(
    "name, bound, std",
    [
        ("lab_uniform", 1.0, 1 / math.sqrt(3)),
        ("normal", None, 1.0),
        ("xavier_uniform", math.sqrt(6 / (FAN_IN + FAN_OUT)), math.sqrt(2 / (FAN_IN + FAN_OUT))),
        ("xavier_normal", None, math.sqrt(2 / (FAN_IN + FAN_OUT))),
        ("kaiming_uniform", math.sqrt(6 / FAN_IN), math.sqrt(2 / FAN_IN)),
        ("kaiming_normal", None, math.sqrt(2 / FAN_IN)),
        ("lecun_normal", None, math.sqrt(1 / FAN_IN)),
    ],
)
def test_init_bounds_and_std(name, bound, std):
    w = draw(f"init={name}")
    assert w.shape == (FAN_IN, FAN_OUT)
    if bound is not None:
        assert w.abs().max() <= bound
        assert w.abs().max() > 0.99 * bound
    assert w.std().item() == pytest.approx(std, rel=0.03)


def test_replicas_and_layers_draw_different_weights():
    weights = init_weights(make_cfg().init, [(5, 5), (5, 5)], seeds=[0, 1])
    assert not torch.equal(weights[0][0], weights[0][1]) and not torch.equal(
        weights[0][0], weights[1][0]
    )
    weights = init_weights(make_cfg("init=orthogonal").init, [(5, 5), (5, 5)], seeds=[0, 1])
    assert not torch.equal(weights[0][0], weights[0][1]) and not torch.equal(
        weights[0][0], weights[1][0]
    )


def test_init_orthogonal_and_zeros():
    w = draw("init=orthogonal")
    torch.testing.assert_close(w.T @ w, torch.eye(FAN_OUT), atol=1e-5, rtol=0)
    assert (draw("init=zeros") == 0).all()


def test_init_normal_std_and_bias_are_configurable():
    assert draw("init=normal", "init.std=0.1").std().item() == pytest.approx(0.1, rel=0.03)
    model = build_model(make_cfg("init.bias=0.5", "replicas=2"), 2)
    assert all((layer.bias == 0.5).all() for layer in linear_layers(model))
    model = build_model(make_cfg("replicas=2"), 2)
    assert all((layer.bias == 0).all() for layer in linear_layers(model))


def test_registries_name_the_valid_choices():
    with pytest.raises(KeyError, match="unknown init 'nope'; valid names: lab_uniform, normal"):
        init_weights(make_cfg("init.name=nope").init, [(2, 2)], [0])


@pytest.mark.parametrize(
    "group, registry",
    [
        ("activation", ACTIVATIONS),
        ("init", INITIALIZERS),
        ("optimizer", OPTIMIZERS),
        ("dataset", DATASETS),
    ],
)
def test_every_registered_name_has_its_config_and_every_config_its_code(group, registry):
    """A name a user can choose (conf/<group>/<name>.yaml) is one the code runs, and back."""
    files = {path.stem for path in (CONF / group).glob("*.yaml")}
    assert files == set(registry)
    for name in files:  # and each file selects its own entry
        assert make_cfg(f"{group}={name}")[group].name == name


def test_maxout_and_prelu_shapes():
    model = build_model(
        make_cfg("activation=maxout", "activation.pieces=3", "replicas=4", "depth=2", "width=5"), 2
    )
    assert [layer.weight.shape for layer in linear_layers(model)] == [
        (4, 2, 15),
        (4, 5, 15),
        (4, 5, 1),
    ]
    logits, z = forward(model, torch.rand(7, 2))
    assert logits.shape == (4, 7) and [t.shape for t in z] == [(4, 7, 15), (4, 7, 15)]
    model = build_model(make_cfg("activation=prelu", "replicas=4", "depth=2", "width=5"), 2)
    slopes = [
        p
        for name, p in model.named_parameters()
        if name.endswith("1.weight") or name.endswith("3.weight")
    ]
    assert [s.shape for s in slopes] == [(4, 1, 5), (4, 1, 5)]
    assert (slopes[0] == 0.25).all()


def test_parity_data():
    x, y = make_dataset(make_cfg("dataset=xor").dataset)
    assert x.tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]] and y.tolist() == [0, 1, 1, 0]
    x2, y2 = make_dataset(make_cfg("dataset=parity", "dataset.bits=2").dataset)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    x, y = make_dataset(make_cfg("dataset=parity", "dataset.bits=3").dataset)
    assert x.shape == (8, 3) and y.tolist() == [0, 1, 1, 0, 1, 0, 0, 1]


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_exported_replica_matches_its_slice(activation):
    cfg = make_cfg(
        f"activation={activation}", "replicas=3", "depth=3", "init=xavier_normal", "init.bias=0.1"
    )
    model = build_model(
        cfg, 2
    ).double()  # float64, so bmm-vs-mm rounding cannot hide a real difference
    x = torch.rand(6, 2, dtype=torch.float64)
    logits, _ = forward(model, x)
    for r in range(3):
        plain = export_replica(model, r)
        assert [type(m).__name__ for m in plain][::2] == ["Linear"] * 4
        torch.testing.assert_close(plain(x).squeeze(-1), logits[r], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("init", ["lab_uniform", "kaiming_normal", "orthogonal"])
def test_replica_r_starts_like_a_single_run_with_seed_plus_r(init):
    batched = build_model(make_cfg("replicas=5", "seed=10", f"init={init}"), 2)
    for r in range(5):
        single = build_model(make_cfg("replicas=1", f"seed={10 + r}", f"init={init}"), 2)
        for a, b in zip(linear_layers(batched), linear_layers(single), strict=True):
            assert torch.equal(a.weight[r], b.weight[0]) and torch.equal(a.bias[r], b.bias[0])


def autograd_slope(module, z, width):
    """f'(z) per unit by autograd through the module itself (maxout:
    summed over a unit's pieces)."""
    z = z.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(module(z).sum(), z)
    return g.unflatten(-1, (width, -1)).sum(-1) if g.shape[-1] != width else g


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_hand_written_slopes_equal_autograd(name):
    cfg = make_cfg(
        f"activation={name}", "activation.slope=0.05" if name == "leaky_relu" else "depth=1"
    ).activation
    module = ACTIVATIONS[name].build(cfg, 3, 4)
    prelu_weight = None
    if name == "prelu":
        with torch.no_grad():
            module.weight.uniform_(-1, 1)
        prelu_weight = module.weight
    z = torch.randn(3, 7, 4 * ACTIVATIONS[name].pieces(cfg), dtype=torch.float64) * 4
    module = module.double()
    expected = autograd_slope(module, z, 4)
    torch.testing.assert_close(
        ACTIVATIONS[name].slope(cfg, z, prelu_weight).expand_as(expected).double(), expected
    )


@pytest.mark.parametrize(
    "name",
    ["sigmoid", "tanh", "relu", "leaky_relu", "elu", "selu", "gelu", "silu", "softplus", "linear"],
)
def test_peak_slopes_match_a_numeric_maximum(name):
    cfg = make_cfg(f"activation={name}").activation
    z = torch.linspace(-30, 30, 600_001, dtype=torch.float64)
    assert ACTIVATIONS[name].slope(cfg, z, None).abs().max().item() == pytest.approx(
        ACTIVATIONS[name].peak_slope(cfg), rel=1e-4
    )


def test_stuck_rule():
    z = torch.tensor(
        [[[-1.0, 2.0], [-3.0, -1.0]]]
    )  # unit 1 negative at both points, unit 2 alive at one
    assert stuck_frac([z], ACTIVATIONS["relu"], None).tolist() == [[0.5]]
    cfg = make_cfg("activation=sigmoid").activation  # peak 0.25; slope at z=-10 is 4.5e-5
    z = torch.tensor([[[-10.0, 0.0], [12.0, -9.0]]])
    assert stuck_frac([z], ACTIVATIONS["sigmoid"], cfg).tolist() == [[0.5]]
    cfg = make_cfg("activation=maxout").activation
    assert stuck_frac([torch.randn(1, 4, 4)], ACTIVATIONS["maxout"], cfg).tolist() == [
        [0.0]
    ]  # never stuck
    cfg = make_cfg("activation=prelu").activation
    prelu = build_model(make_cfg("activation=prelu", "depth=1", "width=2", "replicas=1"), 2)
    with torch.no_grad():
        prelu[1].weight[:] = torch.tensor(
            [0.001, 0.5]
        )  # both units negative everywhere; only unit 1's slope is tiny
    assert stuck_frac(
        [-torch.ones(1, 4, 2)], ACTIVATIONS["prelu"], cfg, prelu_slopes(prelu)
    ).tolist() == [[0.5]]


@pytest.mark.parametrize(
    "overrides",
    [["dataset=xor"], ["dataset=parity", "dataset.bits=1"], ["dataset=parity", "dataset.bits=5"]],
)
def test_dataset_shape_matches_the_data(overrides):
    from xorrelu.data import dataset_shape

    cfg = make_cfg(*overrides).dataset
    x, y = make_dataset(cfg)
    assert dataset_shape(cfg) == (x.shape[0], x.shape[1]) == (len(y), x.shape[1])
