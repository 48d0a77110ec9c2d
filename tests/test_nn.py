"""nelu.nn layers: drop-in behaviour, positivity of lam, learnable thresholds."""

import pytest
import torch
from torch import nn

from nelu import functional as F
from nelu.nn import NeLU, ShiftedReLU, SoftThreshold


def test_nelu_layer_equals_functional():
    u = torch.randn(4, 7, 32)
    layer = NeLU(lam=0.2)
    torch.testing.assert_close(layer(u), F.nelu(u, 0.2))
    assert layer.lam.item() == pytest.approx(0.2)


@pytest.mark.parametrize("method", ["exact", "unrolled", "fixed_point"])
def test_nelu_layer_methods_and_signed(method):
    u = torch.randn(8, 16, dtype=torch.float64)
    layer = NeLU(lam=0.1, nonneg=False, method=method, iters=30 if method != "exact" else None).double()
    lam = layer.lam.detach()  # 0.1 rounded through float32 storage
    expected = F.nelu(u, lam, nonneg=False, method=method, iters=30 if method != "exact" else None)
    torch.testing.assert_close(layer(u), expected)


def test_lam_stays_positive_under_training():
    """A large negative gradient step on lam cannot make it non-positive (exp parametrization)."""
    layer = NeLU(lam=0.05)
    opt = torch.optim.SGD(layer.parameters(), lr=100.0)
    u = torch.randn(64, 32)
    for _ in range(5):
        opt.zero_grad()
        (-layer(u).sum()).backward()  # pushes lam down
        opt.step()
    assert layer.lam.item() > 0
    assert torch.isfinite(layer(u)).all()


def test_lam_learns_in_a_sequential_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32, bias=False), NeLU(lam=0.3), nn.Linear(32, 16, bias=False))
    before = model[1].lam.item()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x = torch.randn(256, 16)
    for _ in range(20):
        opt.zero_grad()
        loss = ((model(x) - x) ** 2).mean()
        loss.backward()
        opt.step()
    assert model[1].lam.item() != before
    names = [name for name, _ in model.named_parameters()]
    assert "1.parametrizations.lam.original" in names


def test_fixed_lam_is_a_buffer():
    layer = NeLU(lam=0.3, learnable=False)
    assert list(layer.parameters()) == []
    assert layer.lam.item() == pytest.approx(0.3)
    loaded = NeLU(lam=0.9, learnable=False)
    loaded.load_state_dict(layer.state_dict())
    assert loaded.lam.item() == pytest.approx(0.3)


@pytest.mark.parametrize("lam", [0.0, -0.5, float("nan")])
def test_bad_initial_lam_raises(lam):
    with pytest.raises(ValueError, match="lam"):
        NeLU(lam=lam)


def test_bad_method_raises():
    with pytest.raises(ValueError, match="method"):
        NeLU(method="sgd")


def test_baselines_are_lasso_codes_with_learned_thresholds():
    u = torch.randn(10, 6)
    relu = ShiftedReLU(6, threshold=0.5)
    soft = SoftThreshold(6, threshold=0.5)
    torch.testing.assert_close(relu(u), torch.relu(u - 0.5))
    torch.testing.assert_close(soft(u), F.soft_threshold(u, 0.5))
    assert relu.threshold.shape == (6,) and relu.threshold.requires_grad
    relu(u).sum().backward()
    assert relu.threshold.grad is not None and (relu.threshold.grad <= 0).all()


def test_baseline_bad_arguments():
    with pytest.raises(ValueError, match="num_features"):
        ShiftedReLU(0)
    with pytest.raises(ValueError, match="threshold"):
        SoftThreshold(3, threshold=float("inf"))


def test_repr_mentions_lam():
    assert "lam=0.2" in repr(NeLU(lam=0.2))
