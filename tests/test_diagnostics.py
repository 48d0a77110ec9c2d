"""Tests of nelu.diagnostics: measurements on auto-encoders, and the sparse test codes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from nelu import diagnostics as dg
from nelu.models import SparseAE


def _ae(act: str) -> SparseAE:
    ae = SparseAE(16, 32, act, generator=torch.Generator().manual_seed(0))
    if act == "relu":
        with torch.no_grad():
            ae.activation.threshold.fill_(0.05)
    return ae.eval()


class _Wrapped(nn.Module):
    """An activation that answers the interface (pivotal, thresholds, learned) and has no ``lam``."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.pivotal = inner.pivotal
        self.nonneg = getattr(inner, "nonneg", True)

    def forward(self, u):
        return self.inner(u)

    def thresholds(self, u):
        return self.inner.thresholds(u)

    def learned(self):
        return self.inner.learned()


def test_code_statistics_nelu_is_scale_free_on_pure_noise():
    """Constant patches: the code sees pure noise, and NeLU's statistics do not depend on sigma."""
    flat = torch.full((2000, 16), 0.5)
    st = dg.code_statistics(_ae("nelu"), flat, [5.0, 25.0, 75.0])
    assert st.clean_residual == pytest.approx(0.0, abs=1e-5)
    np.testing.assert_allclose(st.active, st.active[0], rtol=1e-4)
    np.testing.assert_allclose(st.kappa, st.kappa[0], rtol=1e-4)
    np.testing.assert_allclose(st.ratio, st.ratio[0], rtol=1e-4)
    assert 0.5 < st.ratio[0] <= 1.0 + 1e-6                 # some noise passes into the code
    np.testing.assert_allclose(st.noise / st.noise[0], [1.0, 5.0, 15.0], rtol=1e-5)
    # a fixed ReLU threshold lets more and more noise through
    relu = dg.code_statistics(_ae("relu"), flat, [5.0, 25.0, 75.0])
    assert relu.active[0] < relu.active[1] < relu.active[2]
    np.testing.assert_allclose(relu.threshold, 0.05, rtol=1e-6)
    np.testing.assert_allclose(relu.kappa * relu.sigmas, relu.kappa[0] * 5.0, rtol=1e-5)


def test_code_statistics_with_signal():
    g = torch.Generator().manual_seed(1)
    clean = torch.rand(1000, 16, generator=g)
    st = dg.code_statistics(_ae("nelu"), clean, [1.0, 50.0])
    assert st.clean_residual > 0 and 0 < st.clean_negative_share <= 1
    assert st.ratio[0] > st.ratio[1]                       # the signal dominates at low noise
    assert st.crossover == pytest.approx(1.0 * st.clean_residual / st.noise[0])
    with pytest.raises(ValueError):
        dg.code_statistics(_ae("nelu"), clean, [0.0])


@pytest.mark.parametrize("act", ["nelu", "relu"])
def test_measurements_ask_the_activation_not_its_attributes(act):
    """The threshold comes from ``activation.thresholds(u)``: an activation without ``lam`` or
    ``threshold`` attributes gives the same statistics."""
    clean = torch.rand(500, 16, generator=torch.Generator().manual_seed(4))
    ae = _ae(act)
    plain = dg.code_statistics(ae, clean, [10.0, 40.0])
    ae.activation = _Wrapped(ae.activation)
    assert not hasattr(ae.activation, "lam") and not hasattr(ae.activation, "threshold")
    wrapped = dg.code_statistics(ae, clean, [10.0, 40.0])
    np.testing.assert_array_equal(wrapped.threshold, plain.threshold)
    np.testing.assert_array_equal(wrapped.active, plain.active)
    if act == "nelu":
        best, _ = dg.best_lam(ae, clean, [10.0], [0.05, 0.1])
        assert best.shape == (1,)


def test_unit_statistics():
    g = torch.Generator().manual_seed(3)
    clean = torch.rand(2000, 16, generator=g)
    ae = _ae("nelu")
    st = dg.unit_statistics(ae, clean, 25.0)
    assert st.snr.shape == st.active.shape == st.residual_share.shape == (32,)
    assert st.residual_share.sum() == pytest.approx(1.0) and (st.residual_share >= 0).all()
    np.testing.assert_allclose(st.decoder_norm, ae.decoder.weight.detach().norm(dim=0).numpy(), rtol=1e-6)
    # the paired initialization: W = [V; -V] with unit rows on the zero-mean subspace
    np.testing.assert_allclose(st.encoder_norm, 1.0, rtol=1e-5)
    np.testing.assert_allclose(st.snr[:16], st.snr[16:], rtol=1e-5)
    assert dg.unit_statistics(ae, clean, 100.0).snr.mean() < st.snr.mean()
    with pytest.raises(ValueError):
        dg.unit_statistics(ae, clean, 0.0)


def test_best_lam():
    g = torch.Generator().manual_seed(2)
    clean = torch.rand(500, 16, generator=g)
    lams = [0.01, 0.05, 0.2]
    best, mse = dg.best_lam(_ae("nelu"), clean, [10.0, 40.0], lams)
    assert mse.shape == (2, 3) and set(best) <= set(lams)
    assert np.all(best == np.array(lams)[mse.argmin(axis=1)])
    with pytest.raises(ValueError, match="NeLU.*ShiftedReLU.*threshold_mean"):
        dg.best_lam(_ae("relu"), clean, [10.0], lams)


def test_sparse_codes_are_the_chapters_codes():
    """The same codes, bit for bit, as the function the lasso chapters defined for themselves."""
    m, k = 256, 8

    def chapter(count, gen):
        x = torch.zeros(count, m, dtype=torch.float64)
        support = torch.rand(count, m, generator=gen).argsort(dim=1)[:, :k]
        return x.scatter(1, support, 2 + 4 * torch.rand(count, k, generator=gen, dtype=torch.float64))

    a, b = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    for count in (100, 7):                                 # two calls: the generator advances alike
        assert torch.equal(dg.sparse_codes(count, m, k, a), chapter(count, b))
    x = dg.sparse_codes(1000, 20, 3, torch.Generator().manual_seed(1), low=1.0, high=2.0, dtype=torch.float32)
    assert x.dtype == torch.float32 and ((x > 0).sum(dim=1) == 3).all()
    assert x[x > 0].min() >= 1.0 and x.max() <= 2.0 and (x >= 0).all()
