"""The weighted square-root lasso (one lam_i per unit): exact solver, layer and the gated model.

Referees: cvxpy (nelu.reference.weighted_sqrt_lasso), the optimality conditions checked directly,
and torch.autograd.gradcheck in float64.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nelu import functional as F
from nelu.models import SparseAE, build_model
from nelu.nn import WeightedNeLU

cp = pytest.importorskip("cvxpy")
from nelu.reference import weighted_sqrt_lasso  # noqa: E402


def _problem(seed: int, rows: int = 8, m: int = 16):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(rows, m, generator=g, dtype=torch.float64)
    lam = 0.15 + 0.4 * torch.rand(m, generator=g, dtype=torch.float64)  # sum of lam_i**2 > 1: no zero residual
    return u, lam


def _objective(u, z, lam):
    return np.linalg.norm(u - z, axis=-1) + (np.abs(z) * lam).sum(-1)


@pytest.mark.parametrize("nonneg", [True, False])
@pytest.mark.parametrize("seed", range(4))
def test_optimal_against_cvxpy_and_kkt(seed, nonneg):
    u, lam = _problem(seed)
    z = F.weighted_nelu(u, lam, nonneg=nonneg)
    ref = weighted_sqrt_lasso(u, lam, nonneg=nonneg)
    un, zn, ln = u.numpy(), z.numpy(), lam.numpy()
    assert np.all(_objective(un, zn, ln) <= _objective(un, ref, ln) + 1e-9)  # never worse than the referee
    np.testing.assert_allclose(zn, ref, atol=1e-3)
    # Optimality (subgradient) conditions of the exact answer, with r = ||u - z||:
    r = np.linalg.norm(un - zn, axis=-1, keepdims=True)
    g = (un - zn) / r
    active = zn != 0
    np.testing.assert_allclose(np.abs(g[active]), np.broadcast_to(ln, zn.shape)[active], rtol=1e-10)
    off = g if nonneg else np.abs(g)
    assert np.all(off[~active] <= np.broadcast_to(ln, zn.shape)[~active] + 1e-12)
    if nonneg:
        assert np.all(zn >= 0)


def test_equal_weights_give_nelu():
    u, _ = _problem(9)
    for nonneg in (True, False):
        torch.testing.assert_close(F.weighted_nelu(u, torch.full((16,), 0.2, dtype=torch.float64), nonneg=nonneg),
                                   F.nelu(u, 0.2, nonneg=nonneg), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("nonneg", [True, False])
def test_gradcheck(nonneg):
    u, lam = _problem(3, rows=3, m=7)
    torch.autograd.gradcheck(lambda a, b: F.weighted_nelu(a, b, nonneg=nonneg),
                             (u.requires_grad_(), lam.requires_grad_()), eps=1e-7, atol=1e-6)


@pytest.mark.parametrize("dtype, lo, hi", [(torch.float32, -30, 30), (torch.float64, -300, 300)])
def test_positively_homogeneous_at_every_scale(dtype, lo, hi):
    u, lam = _problem(5)
    u, lam = u.to(dtype), lam.to(dtype)
    base = F.weighted_nelu(u, lam)
    for e in range(lo, hi + 1, 10):
        c = 10.0**e
        torch.testing.assert_close(F.weighted_nelu(u * c, lam) / c, base, rtol=1e-5, atol=1e-6 * base.abs().max())


def test_degenerate_rows_have_finite_gradients():
    lam = torch.full((4,), 0.1, dtype=torch.float64, requires_grad=True)
    u = torch.tensor([[0.0, 0.0, 0.0, 0.0], [1.0, 2.0, 3.0, 4.0], [-1.0, -2.0, -3.0, -4.0]],
                     dtype=torch.float64, requires_grad=True)
    z = F.weighted_nelu(u, lam)
    torch.testing.assert_close(z[1], u[1].detach())  # all active, zero residual: z = u
    assert not z[0].any() and not z[2].any()
    z.sum().backward()
    assert torch.isfinite(u.grad).all() and torch.isfinite(lam.grad).all()


def test_bad_weights():
    with pytest.raises(ValueError, match="positive and finite"):
        F.weighted_nelu(torch.randn(2, 3), torch.tensor([0.1, 0.0, 0.1]))


def test_layer_thresholds_and_learned():
    layer = WeightedNeLU(16, lam=0.1)
    u = torch.randn(5, 16)
    z = layer(u)
    tau = layer.thresholds(u)
    torch.testing.assert_close(z, torch.relu(u - tau))
    assert layer.pivotal and layer.learned()["lam_median"] == pytest.approx(0.1)


def test_gated_model_is_pivotal_and_starts_near_the_ungated_one():
    g = torch.Generator().manual_seed(0)
    gated = build_model({"activation": "wnelu", "patch": 4, "m": 32, "nelu_lam": 0.1, "gate": True})
    plain = build_model({"activation": "wnelu", "patch": 4, "m": 32, "nelu_lam": 0.1})
    y = torch.rand(10, 16, generator=g)
    torch.testing.assert_close(gated(3.0 * y), 3.0 * gated(y), rtol=1e-4, atol=1e-5)
    assert (gated(y) - plain(y)).abs().max() < 0.1 * (y - plain(y)).abs().max()  # g ~ 0.05 at the start
    assert isinstance(gated, SparseAE) and gated.gate and {"gate_a", "gate_b"} <= dict(gated.named_parameters()).keys()


@pytest.mark.parametrize("nonneg", [True, False])
@pytest.mark.parametrize("steps", [F.ACTIVE_SET_STEPS, 1, 0])
def test_inference_steps_find_the_training_sort_active_set(monkeypatch, nonneg, steps):
    """Without gradients the active set comes from certified steps (sort as fallback, forced by
    fewer steps); with gradients from the sort. Both give the same codes, bit for bit."""
    monkeypatch.setattr(F, "ACTIVE_SET_STEPS", steps)
    gen = torch.Generator().manual_seed(7)
    u = torch.randn(300, 64, generator=gen) * torch.logspace(0, 2, 64)[torch.randperm(64, generator=gen)]
    lam = 0.08 * torch.exp(0.5 * torch.randn(64, generator=gen))
    training = F.weighted_nelu(u.clone().requires_grad_(), lam, nonneg=nonneg).detach()
    with torch.no_grad():
        inference = F.weighted_nelu(u, lam, nonneg=nonneg)
    assert torch.equal(training, inference)
    ref = torch.from_numpy(weighted_sqrt_lasso(u[:5].double(), lam.double(), nonneg=nonneg))
    torch.testing.assert_close(inference[:5].double(), ref, rtol=1e-4, atol=1e-5 * float(u.abs().max()))
