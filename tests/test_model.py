"""Registries, initializers, shapes, data, and the batched model against plain per-replica models."""

import math

import pytest
import torch
from conftest import make_cfg

from xorrelu.activations import ACTIVATIONS, unit_slopes
from xorrelu.data import make_dataset
from xorrelu.init import INITIALIZERS, init_weight
from xorrelu.model import BatchedLinear, build_model, export_replica, linear_layers
from xorrelu.metrics import forward

FAN_IN, FAN_OUT = 300, 200


def draw(*overrides):
    cfg = make_cfg(*overrides)
    return init_weight(cfg.init, FAN_IN, FAN_OUT, torch.Generator().manual_seed(0))


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
    with pytest.raises(KeyError, match="lab_uniform, normal"):
        init_weight(make_cfg("init.name=nope").init, 2, 2, torch.Generator())
    assert set(ACTIVATIONS) == {"sigmoid", "tanh", "relu", "leaky_relu", "elu", "selu", "gelu", "silu", "softplus", "prelu", "maxout"}
    assert len(INITIALIZERS) == 9


def test_maxout_and_prelu_shapes():
    model = build_model(make_cfg("activation=maxout", "activation.pieces=3", "replicas=4", "depth=2", "width=5"), 2)
    assert [layer.weight.shape for layer in linear_layers(model)] == [(4, 2, 15), (4, 5, 15), (4, 5, 1)]
    logits, z = forward(model, torch.rand(7, 2))
    assert logits.shape == (4, 7) and [t.shape for t in z] == [(4, 7, 15), (4, 7, 15)]
    model = build_model(make_cfg("activation=prelu", "replicas=4", "depth=2", "width=5"), 2)
    slopes = [p for name, p in model.named_parameters() if name.endswith("1.weight") or name.endswith("3.weight")]
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
    cfg = make_cfg(f"activation={activation}", "replicas=3", "depth=3", "init=xavier_normal", "init.bias=0.1")
    model = build_model(cfg, 2)
    x = torch.rand(6, 2)
    logits, _ = forward(model, x)
    for r in range(3):
        plain = export_replica(model, r)
        assert all(isinstance(m, torch.nn.Linear) for m in plain if "Linear" in type(m).__name__)
        torch.testing.assert_close(plain(x).squeeze(-1), logits[r], rtol=1e-6, atol=1e-7)


def test_replica_r_starts_like_a_single_run_with_seed_plus_r():
    batched = build_model(make_cfg("replicas=5", "seed=10"), 2)
    for r in range(5):
        single = build_model(make_cfg("replicas=1", f"seed={10 + r}"), 2)
        for a, b in zip(linear_layers(batched), linear_layers(single)):
            assert torch.equal(a.weight[r], b.weight[0]) and torch.equal(a.bias[r], b.bias[0])


@pytest.mark.parametrize("name", ["sigmoid", "tanh", "relu", "leaky_relu", "elu", "selu", "gelu", "silu", "softplus"])
def test_peak_slopes_match_a_numeric_maximum(name):
    cfg = make_cfg(f"activation={name}").activation
    act = ACTIVATIONS[name].make(cfg, 1, 1)
    z = torch.linspace(-30, 30, 600_001, dtype=torch.float64).reshape(1, -1, 1)
    assert unit_slopes(act, z, 1).max().item() == pytest.approx(ACTIVATIONS[name].peak_slope(cfg), rel=1e-4)


def test_stuck_rule():
    relu = ACTIVATIONS["relu"].make(None, 1, 2)
    z = torch.tensor([[[-1.0, 2.0], [-3.0, -1.0]]])  # unit 0 negative at both points, unit 1 alive at one
    assert (unit_slopes(relu, z, 2) < 0.01).all(dim=1).tolist() == [[True, False]]
    maxout = ACTIVATIONS["maxout"].make(make_cfg("activation=maxout").activation, 1, 2)
    assert (unit_slopes(maxout, torch.randn(1, 4, 4), 2) == 1).all()  # never stuck
