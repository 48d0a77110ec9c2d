"""nelu.kernels: the exact NeLU's numba backend against cvxpy, the PyTorch backend and gradcheck."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch.autograd import gradcheck

from nelu import functional as F
from nelu import kernels
from nelu.nn import NeLU
from nelu.reference import sqrt_lasso
from nelu.train import ConfigError, TrainConfig

pytestmark = pytest.mark.skipif(not kernels.available(), reason="numba is not installed")

D = torch.float64


def numba_nelu(u, lam, nonneg=True):
    return F.nelu(u, lam, nonneg=nonneg, backend="numba")


def rows(kind: str, n: int, m: int, gen: torch.Generator, dtype=D) -> torch.Tensor:
    u = torch.randn(n, m, dtype=dtype, generator=gen)
    if kind == "sparse":  # a few large entries on a small dense floor
        spikes = torch.randn(n, m, dtype=dtype, generator=gen).abs()
        u = 0.05 * u + 10.0 * (torch.rand(n, m, generator=gen) < 0.05) * spikes
    elif kind == "ties":
        u = torch.round(u * 2) / 2
    elif kind == "zeros":
        u = u * (torch.rand(n, m, generator=gen) < 0.3)
    elif kind == "negative":
        u = -u.abs()
    return u


@pytest.mark.parametrize("nonneg", [True, False])
@pytest.mark.parametrize("kind", ["dense", "sparse", "ties", "zeros", "negative"])
@pytest.mark.parametrize("m", [1, 2, 7, 64])
def test_numba_backend_matches_cvxpy(m, kind, nonneg):
    gen = torch.Generator().manual_seed(m)
    u = rows(kind, 8, m, gen) * torch.logspace(-6, 6, 8, dtype=D)[:, None]
    for lam in (0.02, 0.25, 0.999 / math.sqrt(m), 1.5):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # cvxpy's "may be inaccurate" note
            ref = torch.from_numpy(sqrt_lasso(u, lam, nonneg=nonneg))
        err = (numba_nelu(u, lam, nonneg) - ref).norm(dim=-1) / u.norm(dim=-1).clamp_min(1e-300)
        assert float(err.max()) < 1e-6, (m, kind, lam)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("nonneg", [True, False])
def test_numba_backend_equals_the_torch_backend_to_rounding(dtype, nonneg):
    """Same z and tau as the float64 solution, for any batch shape and a lam per row.

    Float32 inputs: the kernel sums in float64, so its tau is within 1e-6 of the float64
    solution's (the torch backend's float32 sums reach a few 1e-6 where lam^2 k is near 1).
    """
    gen = torch.Generator().manual_seed(0)
    u = 3 * torch.randn(5, 300, 256, dtype=dtype, generator=gen)
    lam = (0.05 + 0.2 * torch.rand(5, 300, 1, generator=gen)).to(dtype)
    z_ref, tau_ref = F._exact(u.double(), lam.double(), nonneg)
    z, tau = F._exact(u, lam, nonneg, "numba")
    assert z.dtype == tau.dtype == dtype and z.shape == u.shape and tau.shape == lam.shape
    rtol = 1e-6 if dtype == torch.float32 else 1e-13
    torch.testing.assert_close(tau.double(), tau_ref, rtol=rtol, atol=0)
    torch.testing.assert_close(z.double(), z_ref, rtol=0, atol=4 * rtol * float(u.abs().max()))
    if dtype == torch.float64:
        assert torch.equal(z != 0, z_ref != 0)
    strided = u.transpose(0, 1)  # a non-contiguous input (channels-last codes)
    torch.testing.assert_close(numba_nelu(strided, 0.1, nonneg), F.nelu(strided, 0.1, nonneg=nonneg),
                               rtol=0, atol=8 * rtol * float(u.abs().max()))


@pytest.mark.parametrize("nonneg", [True, False])
def test_rows_solved_by_sorting_agree_with_the_active_set_steps(nonneg):
    gen = torch.Generator().manual_seed(3)
    u = torch.randn(200, 100, dtype=D, generator=gen) * torch.logspace(0, 3, 100, dtype=D)
    lam = torch.full((200,), 0.05, dtype=D)
    z, tau, c = kernels.exact_forward(u, lam, nonneg)
    z0, tau0, c0 = kernels.exact_forward(u, lam, nonneg, steps=0)  # every row by the sort
    torch.testing.assert_close(tau0, tau, rtol=1e-13, atol=0)
    assert torch.equal(c0, c)


@pytest.mark.parametrize("nonneg", [True, False])
def test_numba_backend_gradients(nonneg):
    """gradcheck (float64) in u and lam, scalar and per-row lam, z and tau; at the degenerate
    rows (zero, all negative, the z = u regime) the torch backend's gradients."""
    gen = torch.Generator().manual_seed(1)
    u = torch.randn(6, 3, 12, dtype=D, generator=gen)
    u[1, 0] = -u[1, 0].abs()  # all negative
    u.requires_grad_()
    lam = torch.tensor(0.2, dtype=D, requires_grad=True)
    lam_rows = (0.1 + 0.3 * torch.rand(6, 3, 1, dtype=D, generator=gen)).requires_grad_()
    assert gradcheck(lambda a, b: numba_nelu(a, b, nonneg), (u, lam))
    assert gradcheck(lambda a, b: numba_nelu(a, b, nonneg), (u, lam_rows))
    assert gradcheck(lambda a, b: F.sqrt_lasso_threshold(a, b, nonneg=nonneg, backend="numba"), (u, lam_rows))
    with torch.no_grad():
        u[0, 0] = 0.0  # zero row: tau = 0
        u[2, 0, 2:] = 0.0  # the z = u regime (lam^2 k <= 1, zero elsewhere)
    g = torch.randn(6, 3, 12, dtype=D, generator=gen)
    grads = [torch.autograd.grad((F.nelu(u, lam_rows, nonneg=nonneg, backend=b) * g).sum(), (u, lam_rows))
             for b in ("torch", "numba")]
    for a, b in zip(*grads):
        assert torch.isfinite(b).all()
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("dtype, scales", [(torch.float32, (1e-30, 1e30)), (torch.float64, (1e-250, 1e250))])
def test_numba_backend_at_extreme_magnitudes(dtype, scales):
    gen = torch.Generator().manual_seed(4)
    u = torch.randn(16, 64, dtype=dtype, generator=gen)
    z = numba_nelu(u, 0.15)
    for c in scales:
        zc = numba_nelu(u * c, 0.15)
        assert torch.isfinite(zc).all()
        torch.testing.assert_close(zc / c, z, rtol=1e-5 if dtype == torch.float32 else 1e-12, atol=0)
    big = (torch.randn(4, 8, dtype=D, generator=gen) * 1e200).requires_grad_()
    assert gradcheck(lambda a: numba_nelu(a, 0.3) * 1e-200, (big,))


def test_non_finite_rows_are_nan_and_leave_the_others_alone():
    gen = torch.Generator().manual_seed(5)
    u = torch.randn(300, 64, generator=gen)
    clean = numba_nelu(u, 0.2)
    u[7, 3], u[100, 0], u[200, 5] = float("nan"), float("inf"), -float("inf")
    z = numba_nelu(u, 0.2)
    bad = torch.tensor([7, 100, 200])
    assert torch.isnan(z[bad]).all()
    keep = torch.ones(300, dtype=torch.bool)
    keep[bad] = False
    assert torch.equal(z[keep], clean[keep])
    assert torch.equal(numba_nelu(torch.zeros(3, 5), 0.2), torch.zeros(3, 5))


def test_output_does_not_depend_on_the_number_of_threads():
    gen = torch.Generator().manual_seed(6)
    u = torch.randn(1000, 256, generator=gen, requires_grad=True)
    lam = torch.tensor(0.12, requires_grad=True)
    g = torch.randn(1000, 256, generator=gen)
    old = torch.get_num_threads()
    out = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            z = numba_nelu(u, lam)
            out.append((z, *torch.autograd.grad((z * g).sum(), (u, lam))))
    finally:
        torch.set_num_threads(old)
    assert all(torch.equal(a, b) for a, b in zip(*out))


def test_bad_backend_requests_are_clear_errors():
    u = torch.randn(3, 4)
    with pytest.raises(ValueError, match="backend must be one of"):
        F.nelu(u, 0.2, backend="jax")
    with pytest.raises(ValueError, match="float32 or float64"):
        F.nelu(u.half(), 0.2, backend="numba")
    with pytest.raises(ValueError, match="method='exact' only"):
        F.nelu(u, 0.2, method="unrolled", backend="numba")
    with pytest.raises(ValueError, match="backend must be one of"):
        NeLU(0.2, backend="jax")
    with pytest.raises(ConfigError, match="numba"):
        TrainConfig(backend="numba", device="cuda").validate()
    with pytest.raises(ValueError, match="backend must be one of"):
        TrainConfig(backend="jax").validate()


def test_a_layer_switches_backend_and_keeps_its_gradients():
    layer = NeLU(0.2)
    u = torch.randn(64, 32, requires_grad=True)
    z_torch = layer(u)
    layer.backend = "numba"
    z = layer(u)
    torch.testing.assert_close(z, z_torch, rtol=0, atol=1e-5)
    z.sum().backward()
    assert torch.isfinite(u.grad).all() and layer.parametrizations.lam.original.grad is not None
    assert "backend='numba'" in repr(layer)


def test_the_training_configs_choose_the_backend():
    from nelu.conv import ConvConfig, build_conv_model
    from nelu.models import build_model
    from nelu.synthetic import SyntheticConfig, dictionary, fit

    model = build_model({"activation": "nelu", "patch": 4, "m": 32, "backend": "numba"})
    assert model.activation.backend == "numba"
    conv = build_conv_model({"activation": "nelu-global", "m": 4, "kernel": 3, "backend": "numba"})
    assert conv.activation.inner.backend == "numba"
    with pytest.raises(ConfigError, match="backend must be one of"):
        ConvConfig(backend="jax").validate()
    cfg = SyntheticConfig(n=8, m=16, k=2, steps=20, batch_size=16, backend="numba")
    assert fit("nelu", 0.1, dictionary(cfg), cfg).activation.backend == "numba"


def test_float32_results_do_not_depend_on_the_vector_width(tmp_path):
    """Compiled for generic x86-64 (SSE2) instead of this CPU, the float32 outputs are the same bits:
    they are float64 sums rounded once (the committed models' reproducibility across machines)."""
    import os
    import subprocess
    import sys

    script = (
        "import torch, sys\n"
        "from nelu import kernels\n"
        "u = torch.randn(1024, 256, generator=torch.Generator().manual_seed(0))\n"
        "lam = torch.full((1024,), 0.05)\n"
        "z, tau, c = kernels.exact_forward(u, lam, True)\n"
        "g = torch.randn(1024, 256, generator=torch.Generator().manual_seed(1))\n"
        "gu, gl = kernels.exact_backward(u, z, g, torch.zeros(1024), tau, c, lam)\n"
        "torch.save([z, tau, gu, gl], sys.argv[1])\n"
    )
    out = {}
    for target in ("host", "x86-64"):
        env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / target)}
        if target != "host":
            env["NUMBA_CPU_NAME"] = target
        path = tmp_path / f"{target}.pt"
        subprocess.run([sys.executable, "-c", script, str(path)], env=env, check=True, timeout=300)
        out[target] = torch.load(path)
    assert all(torch.equal(a, b) for a, b in zip(out["host"], out["x86-64"]))
