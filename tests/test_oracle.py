"""The batched training path against independent computations (micrograd-style oracles)."""

import pytest
import torch
import torch.nn.functional as F
from conftest import make_cfg

from xorrelu.data import make_dataset
from xorrelu.metrics import cost, forward, grad_norm
from xorrelu.model import build_model, export_replica, linear_layers

DEPTH = 10


@pytest.mark.parametrize("dtype, rtol", [(torch.float64, 1e-6), (torch.float32, 1e-5)])
@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid", "prelu", "maxout", "elu"])
def test_logged_grad_norms_equal_autograd_on_the_exported_replica(activation, dtype, rtol):
    """float64 checks the formula to 1e-6; float32 differs only by bmm-vs-mm rounding (~10 ulp)."""
    cfg = make_cfg(f"activation={activation}", "replicas=4", "init=xavier_uniform")
    x, y = (t.to(dtype) for t in make_dataset(cfg.dataset))
    model = build_model(cfg, 2).to(dtype)
    logits, _ = forward(model, x)
    cost(logits, y).sum().backward()
    norms = grad_norm(linear_layers(model))  # [layers, replicas]
    for r in range(4):
        plain = export_replica(model, r)
        linears = [m for m in plain if isinstance(m, torch.nn.Linear)]
        loss = F.binary_cross_entropy_with_logits(plain(x).squeeze(-1), y)
        grads = torch.autograd.grad(loss, [p for m in linears for p in (m.weight, m.bias)])
        expected = torch.stack(
            [
                torch.cat([gw.flatten(), gb]).norm()
                for gw, gb in zip(grads[::2], grads[1::2], strict=True)
            ]
        )
        torch.testing.assert_close(norms[:, r], expected, rtol=rtol, atol=1e-12)


def _replica_rows(metrics, seed):
    return metrics[metrics.seed == seed].drop(columns="seed").reset_index(drop=True)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_replicas_do_not_couple(train_run, optimizer):
    """Replica r of a batched run follows the replicas=1 run of seed+r:
    one update to 1e-6, 20 to 1e-4."""
    _, batched, _ = train_run(
        "replicas=4", "seed=3", "steps=20", f"optimizer={optimizer}", "activation=tanh"
    )
    for r in range(4):
        _, single, _ = train_run(
            "replicas=1", f"seed={3 + r}", "steps=20", f"optimizer={optimizer}", "activation=tanh"
        )
        a, b = _replica_rows(batched, 3 + r), _replica_rows(single, 3 + r)
        torch.testing.assert_close(
            torch.tensor(a[a.step <= 1].values),
            torch.tensor(b[b.step <= 1].values),
            rtol=1e-6,
            atol=1e-9,
        )
        torch.testing.assert_close(
            torch.tensor(a.values), torch.tensor(b.values), rtol=1e-4, atol=1e-7
        )
