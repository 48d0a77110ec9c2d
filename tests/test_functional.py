"""nelu.functional against the cvxpy referee, its degenerate cases, and its gradients."""

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from nelu import functional as F
from nelu.reference import lasso, sqrt_lasso

D = torch.float64
TOL = 1e-6


@pytest.fixture(autouse=True)
def _quiet_solver():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # cvxpy's "may be inaccurate" note
        yield


def rel_err(z: torch.Tensor, z_ref: np.ndarray, u: torch.Tensor) -> float:
    """Largest ``||z - z_ref||_2 / ||u||_2`` over the rows (0 for zero rows)."""
    diff = np.linalg.norm(z.detach().numpy() - z_ref, axis=-1)
    scale = np.linalg.norm(u.detach().numpy(), axis=-1)
    return float(np.max(np.where(scale > 0, diff / np.where(scale > 0, scale, 1.0), diff)))


def random_rows(kind: str, n: int, m: int, gen: torch.Generator) -> torch.Tensor:
    u = torch.randn(n, m, dtype=D, generator=gen)
    if kind == "sparse":  # a few large entries on a small dense floor
        mask = torch.rand(n, m, dtype=D, generator=gen) < 0.05
        u = 0.05 * u + 10.0 * mask * torch.randn(n, m, dtype=D, generator=gen).abs()
    elif kind == "ties":  # repeated values, including zeros
        u = torch.round(u * 2) / 2
    elif kind == "zeros":
        u = u * (torch.rand(n, m, dtype=D, generator=gen) < 0.3)
    elif kind == "negative":
        u = -u.abs()
    return u


# ---- the closed forms of the lasso -------------------------------------------------

@pytest.mark.parametrize("nonneg", [True, False])
def test_lasso_prox_closed_forms_match_cvxpy(nonneg):
    gen = torch.Generator().manual_seed(0)
    u = 3 * torch.randn(20, 16, dtype=D, generator=gen)
    lam = 0.7
    z = F.shifted_relu(u, lam) if nonneg else F.soft_threshold(u, lam)
    assert rel_err(z, lasso(u, lam, nonneg=nonneg), u) < TOL


# ---- exact NeLU against cvxpy --------------------------------------------------------

@pytest.mark.parametrize("nonneg", [True, False])
@pytest.mark.parametrize("kind", ["dense", "sparse", "ties", "zeros", "negative"])
@pytest.mark.parametrize("m", [1, 2, 7, 64, 512])
def test_exact_matches_cvxpy(m, kind, nonneg):
    gen = torch.Generator().manual_seed(m)
    n = 6 if m == 512 else 12
    u = random_rows(kind, n, m, gen)
    u = u * torch.logspace(-6, 6, n, dtype=D)[:, None]  # scales 1e-6 .. 1e6
    lam_near = 1.0 / math.sqrt(max(m, 1)) * 0.999
    for lam in (0.02, 0.25, lam_near, 1.5):
        z = F.nelu(u, lam, nonneg=nonneg)
        assert rel_err(z, sqrt_lasso(u, lam, nonneg=nonneg), u) < TOL, (m, kind, lam)


@pytest.mark.parametrize("nonneg", [True, False])
def test_exact_threshold_is_lam_times_residual(nonneg):
    gen = torch.Generator().manual_seed(1)
    u = torch.randn(50, 40, dtype=D, generator=gen)
    lam = torch.rand(50, 1, dtype=D, generator=gen) * 0.3 + 0.05  # one lam per row
    tau = F.sqrt_lasso_threshold(u, lam, nonneg=nonneg)
    z = F.nelu(u, lam, nonneg=nonneg)
    assert tau.shape == (50, 1)
    torch.testing.assert_close(tau, lam * (u - z).norm(dim=-1, keepdim=True), rtol=1e-12, atol=0)
    assert rel_err(z, sqrt_lasso(u, lam, nonneg=nonneg), u) < TOL


def test_lam_near_inverse_sqrt_k():
    """lam^2 k -> 1: all k entries active, the residual energy tiny; still exact."""
    m = 64
    u = torch.cat([torch.full((1, m - 1), 5.0, dtype=D), torch.full((1, 1), 1e-3, dtype=D)], -1)
    for lam in (1 / math.sqrt(m - 1) * (1 - 1e-3), 1 / math.sqrt(m - 1) * (1 - 1e-6)):
        z = F.nelu(u, lam)
        assert rel_err(z, sqrt_lasso(u, lam), u) < TOL


def test_batch_shapes_and_sort_fallback_agree():
    """Leading batch dims work, and rows that need the sort fallback give the same answer."""
    gen = torch.Generator().manual_seed(2)
    u = torch.randn(3, 4, 100, dtype=D, generator=gen) * torch.logspace(0, 3, 100, dtype=D)
    z = F.nelu(u, 0.05)
    assert z.shape == u.shape
    a = u.reshape(-1, 100)
    lam = torch.full((12, 1), 0.05, dtype=D)
    sorted_tau, _ = F._tau_on_active_set(a, F._active_set_by_sort(a, lam).to(D), lam)
    torch.testing.assert_close(F.sqrt_lasso_threshold(u, 0.05).reshape(12, 1), sorted_tau, rtol=1e-12, atol=0)


def test_sort_fallback_is_used_and_exact(monkeypatch):
    monkeypatch.setattr(F, "ACTIVE_SET_STEPS", 0)
    gen = torch.Generator().manual_seed(3)
    u = torch.randn(10, 30, dtype=D, generator=gen)
    assert rel_err(F.nelu(u, 0.1), sqrt_lasso(u, 0.1), u) < TOL


@pytest.mark.parametrize("steps", [F.ACTIVE_SET_STEPS, 2, 1])
def test_large_batches_iterate_on_the_moving_rows_only_and_stay_exact(monkeypatch, steps):
    """Above ``_COMPACT_MIN_ENTRIES`` the solver drops certified rows; the answer is the sort's.

    With fewer steps some compacted rows end in the sort fallback, whose indices must map
    back to the full batch.
    """
    monkeypatch.setattr(F, "ACTIVE_SET_STEPS", steps)
    gen = torch.Generator().manual_seed(4)
    u = torch.randn(2048, 128, dtype=D, generator=gen) * torch.logspace(0, 2, 128, dtype=D)[torch.randperm(128, generator=gen)]
    assert u.numel() >= F._COMPACT_MIN_ENTRIES
    lam = torch.full((2048, 1), 0.06, dtype=D)
    by_sort, _ = F._tau_on_active_set(u, F._active_set_by_sort(u, lam).to(D), lam)
    tau = F.sqrt_lasso_threshold(u, 0.06)
    torch.testing.assert_close(tau, by_sort, rtol=1e-12, atol=0)
    small = torch.cat([F.sqrt_lasso_threshold(part, 0.06) for part in u.split(256)])  # below the size: no compaction
    assert torch.equal(tau, small)


# ---- degenerate cases ------------------------------------------------------------------

@pytest.mark.parametrize("nonneg", [True, False])
def test_zero_row_gives_zero(nonneg):
    u = torch.zeros(2, 5, dtype=D)
    assert torch.equal(F.nelu(u, 0.3, nonneg=nonneg), u)
    assert torch.equal(F.sqrt_lasso_threshold(u, 0.3, nonneg=nonneg), torch.zeros(2, 1, dtype=D))


def test_all_negative_row_gives_zero_code_and_full_threshold():
    u = -torch.rand(1, 8, dtype=D) - 0.1
    assert torch.equal(F.nelu(u, 0.3), torch.zeros_like(u))
    torch.testing.assert_close(F.sqrt_lasso_threshold(u, 0.3), 0.3 * u.norm(dim=-1, keepdim=True))


def test_z_equals_u_regime():
    """Non-negative entries and lam^2 * #{u > 0} <= 1: zero residual, z = u."""
    u = torch.tensor([[2.0, 0.0, 1.0, 0.0]], dtype=D)
    lam = 0.6  # lam^2 k = 0.72 < 1 (at exactly 1 the minimizer is a segment)
    torch.testing.assert_close(F.nelu(u, lam), u)
    assert F.sqrt_lasso_threshold(u, lam).item() == 0.0
    assert rel_err(F.nelu(u, 0.5), sqrt_lasso(u, 0.5), u) < TOL


@pytest.mark.parametrize("method", F.METHODS)
@pytest.mark.parametrize("nonneg", [True, False])
def test_nan_propagates_to_its_row_only(method, nonneg):
    # lam = 0.2 puts the rows in the z = u regime (lam^2 * 3 <= 1), which "unrolled" short-cuts.
    u = torch.tensor([[1.0, float("nan"), 2.0], [1.0, 2.0, 3.0], [1.0, -2.0, 3.0]], dtype=D)
    for lam in (0.2, 0.9):
        z = F.nelu(u, lam, nonneg=nonneg, method=method)
        assert torch.isnan(z[0]).all() and torch.isfinite(z[1:]).all(), (lam, z)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("nonneg", [True, False])
def test_nan_row_in_a_large_batch(dtype, nonneg):
    """The exact solver relies on clamp/relu propagating NaN (no guard of its own): check it on the
    vectorized kernels of a batch of training size, with and without row compaction."""
    gen = torch.Generator().manual_seed(0)
    for rows in (256, 1024):  # 1024 x 256 entries iterate on the moving rows only
        u = torch.randn(rows, 256, generator=gen, dtype=dtype)
        clean = F.nelu(u, 0.1, nonneg=nonneg)
        u[7, 100] = float("nan")
        z = F.nelu(u, 0.1, nonneg=nonneg)
        assert torch.isnan(z[7]).all()
        others = torch.arange(rows) != 7
        assert torch.equal(z[others], clean[others])


@pytest.mark.parametrize("lam", [0.0, -1.0, float("nan"), float("inf"), "a", torch.tensor([0.1, -0.1])])
def test_bad_lam_raises_naming_the_argument(lam):
    with pytest.raises(ValueError, match="lam"):
        F.nelu(torch.randn(2, 3), lam)


def test_lam_that_does_not_broadcast_raises():
    with pytest.raises(ValueError, match=r"lam must broadcast .* got a tensor of shape \(3,\)"):
        F.nelu(torch.randn(2, 5), torch.full((3,), 0.1))
    with pytest.raises(ValueError, match="lam must broadcast"):
        F.nelu(torch.randn(2, 5), torch.full((2, 5), 0.1))  # per-entry lam is not a square-root lasso


def test_bad_method_and_iters_raise():
    with pytest.raises(ValueError, match="method"):
        F.nelu(torch.randn(2, 3), 0.1, method="newton")
    with pytest.raises(ValueError, match="iters"):
        F.nelu(torch.randn(2, 3), 0.1, method="unrolled", iters=0)
    with pytest.raises(ValueError, match="iters and step"):
        F.nelu(torch.randn(2, 3), 0.1, iters=5)


# ---- properties ------------------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(
    u=arrays(np.float64, st.integers(1, 40), elements=st.floats(-1e3, 1e3, allow_subnormal=False)),
    c=st.floats(1e-3, 1e3),
    lam=st.floats(0.01, 2.0),
    nonneg=st.booleans(),
)
def test_positive_homogeneity(u, c, lam, nonneg):
    # At lam^2 k = 1 exactly the minimizer is a whole segment (see the module docstring).
    assume(all(abs(lam * lam * k - 1) > 1e-6 for k in range(1, u.size + 1)))
    u_t = torch.from_numpy(u)
    z = F.nelu(u_t, lam, nonneg=nonneg)
    z_c = F.nelu(c * u_t, lam, nonneg=nonneg)
    torch.testing.assert_close(z_c, c * z, rtol=1e-9, atol=1e-9 * c * (1 + float(np.abs(u).max())))


def test_threshold_rises_with_noise_energy_at_fixed_lam():
    """Same sparse signal, more noise: tau grows (about in proportion to sigma) with lam fixed."""
    gen = torch.Generator().manual_seed(4)
    m = 256
    x = torch.zeros(200, m, dtype=D)
    x[:, :8] = 20.0
    noise = torch.randn(200, m, dtype=D, generator=gen)
    lam = F.universal_lam(m)
    taus = [F.sqrt_lasso_threshold(x + s * noise, lam, nonneg=False).mean().item() for s in (0.5, 1, 2, 4)]
    assert all(b > a for a, b in zip(taus, taus[1:]))
    assert 6.0 < taus[-1] / taus[0] < 10.0  # sigma grew 8x


@pytest.mark.parametrize("nonneg", [True, False])
@pytest.mark.parametrize("method", ["unrolled", "fixed_point"])
def test_iterative_methods_approach_exact(method, nonneg):
    gen = torch.Generator().manual_seed(5)
    u = torch.randn(64, 32, dtype=D, generator=gen) + 0.5
    lam = 0.25  # lam^2 * 32 = 2 > 1: no row is in the z = u regime, which "unrolled" solves directly
    exact = F.nelu(u, lam, nonneg=nonneg)
    errors = [(F.nelu(u, lam, nonneg=nonneg, method=method, iters=t) - exact).norm().item() for t in (5, 50, 500)]
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.2 * errors[0]


# ---- gradients -------------------------------------------------------------------------

def _gradcheck(fn, u, lam):
    u = u.clone().requires_grad_()
    lam = lam.clone().requires_grad_()
    assert torch.autograd.gradcheck(fn, (u, lam), eps=1e-7, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("nonneg", [True, False])
def test_gradcheck_exact_code_and_threshold(nonneg):
    gen = torch.Generator().manual_seed(6)
    u = torch.randn(5, 12, dtype=D, generator=gen)
    lam = torch.rand(5, 1, dtype=D, generator=gen) * 0.3 + 0.05
    _gradcheck(lambda u, l: F.nelu(u, l, nonneg=nonneg), u, lam)
    _gradcheck(lambda u, l: F.sqrt_lasso_threshold(u, l, nonneg=nonneg), u, lam)
    _gradcheck(lambda u, l: F.nelu(u, l.mean(), nonneg=nonneg), u, lam)  # scalar lam


def test_gradcheck_near_lam_squared_k_one():
    u = torch.tensor([[5.0, 4.0, 3.0, 0.3, -0.2]], dtype=D)
    lam = torch.tensor([[1 / math.sqrt(3) * 0.98]], dtype=D)
    _gradcheck(F.nelu, u, lam)


@pytest.mark.parametrize("method", ["unrolled", "fixed_point"])
@pytest.mark.parametrize("nonneg", [True, False])
@pytest.mark.parametrize("lam_value", [0.2, 0.4])  # signed: every row in the z = u regime, then none
def test_gradcheck_iterative(method, nonneg, lam_value):
    gen = torch.Generator().manual_seed(7)
    u = torch.randn(3, 10, dtype=D, generator=gen)
    u[1] *= 8.0  # rows of different magnitudes (rescaled by different powers of two)
    lam = torch.full((3, 1), lam_value, dtype=D)
    _gradcheck(lambda u, l: F.nelu(u, l, nonneg=nonneg, method=method, iters=20), u, lam)
    _gradcheck(lambda u, l: F.nelu(u, l.mean(), nonneg=nonneg, method=method, iters=20), u, lam)  # scalar lam


@pytest.mark.parametrize("nonneg", [True, False])
def test_gradcheck_unrolled_with_a_step_tensor(nonneg):
    gen = torch.Generator().manual_seed(12)
    u = torch.randn(3, 10, dtype=D, generator=gen) * torch.tensor([[1.0], [8.0], [1e-3]], dtype=D)
    lam = torch.full((3, 1), 0.4, dtype=D, requires_grad=True)

    def fn(u: torch.Tensor, lam: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
        return F.nelu(u, lam, nonneg=nonneg, method="unrolled", iters=20, step=step)

    for step in (torch.tensor([[0.3], [2.0], [1e-4]], dtype=D), torch.tensor(0.05, dtype=D)):
        args = (u.clone().requires_grad_(), lam, step.requires_grad_())
        assert torch.autograd.gradcheck(fn, args, eps=1e-7, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("method", ["exact", "unrolled", "fixed_point"])
@pytest.mark.parametrize("nonneg", [True, False])
def test_gradients_never_nan_in_degenerate_cases(method, nonneg):
    rows = torch.tensor(
        [
            [0.0, 0.0, 0.0, 0.0],  # zero row
            [-1.0, -2.0, -0.5, -3.0],  # all negative
            [2.0, 0.0, 1.0, 0.0],  # z = u regime at lam = 0.5
            [1.0, 1.0, 1.0, 1.0],  # ties
            [3.0, 3.0, 0.0, 0.0],  # ties with zeros
        ],
        dtype=D,
    )
    for lam_value in (0.5, 1 / math.sqrt(2), 2.0):
        u = rows.clone().requires_grad_()
        lam = torch.tensor(lam_value, dtype=D, requires_grad=True)
        z = F.nelu(u, lam, nonneg=nonneg, method=method)
        (z * torch.arange(1.0, 5.0, dtype=D)).sum().backward()
        assert torch.isfinite(u.grad).all() and torch.isfinite(lam.grad).all(), (lam_value, u.grad, lam.grad)


# ---- extreme magnitudes ------------------------------------------------------------------

def _scale_rows(dtype: torch.dtype) -> torch.Tensor:
    """Rows of every kind at magnitude about 1, plus a zero row, in ``dtype``."""
    gen = torch.Generator().manual_seed(9)
    rows = [random_rows(kind, 3, 24, gen) for kind in ("dense", "sparse", "ties", "zeros", "negative")]
    return torch.cat(rows + [torch.zeros(1, 24, dtype=D)]).to(dtype)


SCALES = {
    torch.float32: [10.0**k for k in range(-30, 31, 5)],
    torch.float64: [10.0**k for k in range(-300, 301, 50)],
}


def _row_rel_err(a: torch.Tensor, b: torch.Tensor, ref: torch.Tensor) -> float:
    """Largest ``||a - b||_2 / ||ref||_2`` over the rows, in float64 (0 for zero rows of ``ref``)."""
    a, b, ref = a.double(), b.double(), ref.double()
    scale = ref.norm(dim=-1)
    diff = (a - b).norm(dim=-1)
    return float(torch.where(scale > 0, diff / torch.where(scale > 0, scale, 1.0), diff).max())


@pytest.mark.parametrize("method", F.METHODS)
@pytest.mark.parametrize("nonneg", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_positive_homogeneity_at_extreme_scales(dtype, nonneg, method):
    """nelu(c u) = c nelu(u) from 1e-30 to 1e30 (float32) and 1e-300 to 1e300 (float64).

    Before rows were rescaled, float32 gave z = 0 at 1e19 and relu(u) at 1e-25,
    and "unrolled" gave NaN, because the squares overflowed or underflowed.
    """
    u = _scale_rows(dtype)
    lam_rows = torch.tensor([[0.15], [0.3], [0.7]] * 5 + [[0.3]], dtype=dtype)
    # 0.15: lam^2 * 24 < 1, the signed rows without zeros are in the z = u regime; lam_rows: also rows outside it
    for lam in (0.15, lam_rows):
        z = F.nelu(u, lam, nonneg=nonneg, method=method)
        assert torch.isfinite(z).all()
        for c in SCALES[dtype]:
            z_c = F.nelu(u * c, lam, nonneg=nonneg, method=method)
            assert z_c.dtype == dtype and torch.isfinite(z_c).all(), c
            assert _row_rel_err(z_c.double() / c, z, u) < 1e-5, c
            assert torch.equal(z_c[-1], torch.zeros(24, dtype=dtype))  # the zero row stays zero
            if method == "exact":
                tau = F.sqrt_lasso_threshold(u, lam, nonneg=nonneg)
                tau_c = F.sqrt_lasso_threshold(u * c, lam, nonneg=nonneg)
                torch.testing.assert_close(tau_c.double() / c, tau.double(), rtol=1e-5, atol=0)


@pytest.mark.parametrize("method", F.METHODS)
@pytest.mark.parametrize("nonneg", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gradients_at_extreme_scales_are_the_rescaled_ones(dtype, nonneg, method):
    """No NaN, and the gradients of z(c u) are those at scale 1: the same in u, c times in lam."""
    u = _scale_rows(dtype)
    weights = torch.randn(u.shape, dtype=dtype, generator=torch.Generator().manual_seed(10))
    lam_rows = torch.tensor([[0.15], [0.3], [0.7]] * 5 + [[0.3]], dtype=dtype)
    # fewer iterations: unrolled float32 gradients lose accuracy as iterations accumulate
    iters = None if method == "exact" else 30

    def grads(c: float) -> tuple[torch.Tensor, torch.Tensor]:
        x = (u * c).requires_grad_()
        lam = lam_rows.clone().requires_grad_()
        lam_scalar = torch.tensor(0.3, dtype=dtype, requires_grad=True)
        loss = (F.nelu(x, lam, nonneg=nonneg, method=method, iters=iters) * weights).sum()
        loss = loss + (F.nelu(x, lam_scalar, nonneg=nonneg, method=method, iters=iters) * weights).sum()
        loss.backward()
        assert torch.isfinite(x.grad).all() and torch.isfinite(lam.grad).all(), c
        assert torch.isfinite(lam_scalar.grad), c
        assert torch.equal(x.grad[-1], torch.zeros(24, dtype=dtype))  # zero row: zero gradient
        return x.grad, torch.cat([lam.grad.flatten(), lam_scalar.grad.flatten()])

    def rel(a: torch.Tensor, b: torch.Tensor) -> float:
        return float((a.double() - b.double()).norm() / b.double().norm())

    tol = 1e-4 if dtype == torch.float32 else 1e-12
    g_u, g_lam = grads(1.0)
    for c in SCALES[dtype]:
        g_u_c, g_lam_c = grads(c)
        assert rel(g_u_c, g_u) < tol, c
        assert rel(g_lam_c.double() / c, g_lam) < tol, c


@pytest.mark.parametrize("method", F.METHODS)
@pytest.mark.parametrize("nonneg", [True, False])
def test_power_of_two_scales_are_exact(method, nonneg):
    """Rows are rescaled by powers of two: scaling u by 2**k scales z by 2**k bit for bit."""
    u = _scale_rows(torch.float32)
    z = F.nelu(u, 0.3, nonneg=nonneg, method=method)
    for k in (-100, -60, -1, 1, 60, 100):
        assert torch.equal(F.nelu(u * 2.0**k, 0.3, nonneg=nonneg, method=method), z * 2.0**k), k


@pytest.mark.parametrize("method", F.METHODS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_largest_and_subnormal_magnitudes(method, dtype):
    """Rows whose largest entry is near the largest float, or subnormal: finite and homogeneous."""
    info = torch.finfo(dtype)
    u = torch.tensor([[1.0, 0.5, -0.25, 0.125]], dtype=dtype)
    z = F.nelu(u, 0.3, method=method)
    big = F.nelu(u * (info.max / 2), 0.3, method=method)  # 2**(emax - 1): the scaling is exact
    torch.testing.assert_close(big / (info.max / 2), z, rtol=1e-6, atol=0)
    small = F.nelu(u * info.smallest_normal * 2.0**-10, 0.3, method=method)  # every entry subnormal
    assert torch.isfinite(small).all()
    assert _row_rel_err(small / (info.smallest_normal * 2.0**-10), z, u) < 1e-2  # subnormals keep few bits


@pytest.mark.parametrize("nonneg", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_exact_unscaled_path_agrees_with_the_rescaled_one(dtype, nonneg):
    """The exact method skips rescaling when every row norm is moderate; one extreme row forces it.

    Both paths must give the same codes (bit for bit: the scales are powers of
    two) and the same gradients; a row whose squares all underflow (norm 0)
    must not be mistaken for a zero row.
    """
    u = _scale_rows(dtype)
    tiny_row = u[:1] * (1e-25 if dtype == torch.float32 else 1e-170)  # ||row||_2 computes as 0
    assert torch.linalg.vector_norm(tiny_row) == 0 and tiny_row.abs().max() > 0
    weights = torch.randn(u.shape, dtype=dtype, generator=torch.Generator().manual_seed(13))

    def run(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = x.clone().requires_grad_()
        lam = torch.tensor(0.3, dtype=dtype, requires_grad=True)
        z = F.nelu(x, lam, nonneg=nonneg)
        (z[: len(u)] * weights).sum().backward()
        return z.detach(), x.grad, lam.grad

    z, g_u, g_lam = run(u)
    z_mixed, g_u_mixed, g_lam_mixed = run(torch.cat([u, tiny_row]))
    assert torch.equal(z_mixed[: len(u)], z)
    torch.testing.assert_close(g_u_mixed[: len(u)], g_u, rtol=1e-6, atol=0)
    torch.testing.assert_close(g_lam_mixed, g_lam, rtol=1e-6, atol=0)
    torch.testing.assert_close(z_mixed[-1:] / (tiny_row.abs().max()), z[:1] / u[:1].abs().max(), rtol=1e-5, atol=0)


def test_exact_skips_rescaling_at_ordinary_magnitudes(monkeypatch):
    """The hot path (moderate norms, zero rows included) does not pay for the rescaling."""

    def fail(u):
        raise AssertionError("rescaled a batch of ordinary magnitude")

    u = torch.cat([torch.randn(64, 32), torch.zeros(2, 32)]).requires_grad_()
    z_ref = F.nelu(u, 0.2)
    monkeypatch.setattr(F, "_row_scale", fail)
    z = F.nelu(u, 0.2)
    z.sum().backward()
    assert torch.equal(z, z_ref)
    with pytest.raises(AssertionError, match="rescaled"):
        F.nelu(u.detach() * 1e20, 0.2)


# ---- the z = u regime of "unrolled" ---------------------------------------------------------

@pytest.mark.parametrize("nonneg", [True, False])
def test_unrolled_in_z_equals_u_regime_is_exact_with_zero_lam_gradient(nonneg):
    """lam^2 nnz(u) <= 1 (and u >= 0 when nonneg): z = u, and dz/dlam = 0.

    The iterations only circle u there and the derivative of (u - z)/||u - z||
    grew like 1/||u - z||: the lam-gradient was up to 1e165 where it is 0.
    """
    u = torch.tensor(
        [
            [2.0, 0.0, 1.0, 0.0],  # lam^2 * 2 <= 1
            [1.0, 1.0, 1.0, 1.0],  # lam^2 * 4 < 1 (the gradient was 5e165 at lam = 0.3, 100 iterations)
            [3.0, 3.0, 0.0, 0.0],
            [2.0, 0.0, -1.0, 0.0],  # in the regime only when signed
            [0.0, 0.0, 0.0, 0.0],
        ],
        dtype=D,
    )
    weights = torch.arange(1.0, 5.0, dtype=D)
    regime = [True, True, True, not nonneg, True]
    for lam_value in (0.3, 0.45):  # not 0.5: at lam^2 * 4 = 1 exactly every z in a segment is optimal
        for iters in (10, 100, 101):
            x = u.clone().requires_grad_()
            lam = torch.tensor(lam_value, dtype=D, requires_grad=True)
            z = F.nelu(x, lam, nonneg=nonneg, method="unrolled", iters=iters)
            (z[regime] * weights).sum().backward()
            assert lam.grad.item() == 0.0, (lam_value, iters, lam.grad)
            exact = F.nelu(u, lam_value, nonneg=nonneg)
            assert torch.equal(z[regime], exact[regime])
            assert torch.equal(z[regime], u[regime].clamp_min(0) if nonneg else u[regime])
            # the exact method's Jacobian there: identity on the non-zero entries, 0 on the zeros
            assert torch.equal(x.grad[regime], (u[regime] != 0).to(D) * weights)


def test_unrolled_regime_rows_leave_the_other_rows_alone():
    """With one lam per row, regime rows contribute 0 to lam's gradient; the others as before."""
    gen = torch.Generator().manual_seed(11)
    u = torch.randn(4, 16, dtype=D, generator=gen)
    lam = torch.tensor([[0.2], [0.3], [0.2], [0.3]], dtype=D)  # signed: rows 0 and 2 in the regime
    weights = torch.randn(4, 16, dtype=D, generator=gen)

    def lam_grad(rows: list[int]) -> torch.Tensor:
        lam_sub = lam[rows].clone().requires_grad_()
        (F.nelu(u[rows], lam_sub, nonneg=False, method="unrolled") * weights[rows]).sum().backward()
        return lam_sub.grad

    together = lam_grad([0, 1, 2, 3])
    assert torch.equal(together[[0, 2]], torch.zeros(2, 1, dtype=D))
    assert (together[[1, 3]] != 0).all()
    torch.testing.assert_close(together[[1, 3]], lam_grad([1, 3]), rtol=1e-12, atol=0)


def test_float32_matches_float64():
    gen = torch.Generator().manual_seed(8)
    u = torch.randn(100, 256, dtype=D, generator=gen)
    z64 = F.nelu(u, 0.1)
    z32 = F.nelu(u.float(), 0.1)
    assert z32.dtype == torch.float32
    assert (z32.double() - z64).abs().max() < 1e-5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
def test_cuda_matches_cpu():  # pragma: no cover - CI has no GPU
    u = torch.randn(100, 64, dtype=D)
    torch.testing.assert_close(F.nelu(u.cuda(), 0.1).cpu(), F.nelu(u, 0.1))


def test_universal_lam():
    assert F.universal_lam(256) == pytest.approx(math.sqrt(2 * math.log(256) / 256))
    with pytest.raises(ValueError, match="m >= 2"):
        F.universal_lam(1)


def _weighted_sets(u: torch.Tensor, lam: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The scaled codes' ratios, weights and squares, as :func:`nelu.functional._weighted` forms them."""
    _, s_inv = F._row_scale(u)
    us = u * s_inv
    return us, lam.expand_as(us), us * us


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_weighted_training_set_is_the_sorts(dtype):
    """Training (with gradients) gets the sort's active set bit for bit, mostly without sorting."""
    gen = torch.Generator().manual_seed(21)
    u = torch.randn(600, 64, dtype=D, generator=gen)
    u[:100] = torch.round(u[:100] * 2) / 2  # ties, zeros
    u[100:200] -= 1.5  # sparse
    u[200:210] = 0.0
    u[210:220] *= 1e-30
    u = u.to(dtype)
    lam = (0.15 * (0.5 + torch.rand(64, dtype=D, generator=gen))).to(dtype)
    us, lam_rows, sq = _weighted_sets(u, lam)
    by_sort = F._weighted_active_by_sort(us, lam_rows, sq)
    proposed = F._weighted_active_by_steps(us, lam_rows, sq)
    certified = F._weighted_sort_agrees(us, lam_rows, sq, proposed).squeeze(-1)
    assert certified.float().mean() > 0.8  # the sort is the exception
    assert torch.equal(proposed[certified], by_sort[certified])
    assert torch.equal(F._weighted_active_certified(us, lam_rows, sq), by_sort)


def test_weighted_certificate_refuses_a_tie_with_the_threshold():
    # Active {2}: L = 0.25; x = 0.5 r with r**2 = ((-0.3)**2 + x**2) / 0.75 sits on the threshold.
    lam = torch.full((3,), 0.5, dtype=D)
    on_threshold = 0.5 * math.sqrt(0.09 / 0.5)
    u = torch.tensor([[2.0, -0.3, on_threshold], [2.0, -0.3, 0.1]], dtype=D)
    us, lam_rows, sq = _weighted_sets(u, lam)
    active = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]], dtype=D)
    assert F._weighted_sort_agrees(us, lam_rows, sq, active).squeeze(-1).tolist() == [False, True]
    # A set that is not the solution is never certified.
    assert not F._weighted_sort_agrees(us, lam_rows, sq, torch.ones_like(us)).any()
    assert not F._weighted_sort_agrees(us, lam_rows, sq, torch.zeros_like(us)).any()
