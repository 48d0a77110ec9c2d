"""nelu.reference: the cvxpy referees on problems with known answers."""

import warnings

import numpy as np
import pytest
import torch

from nelu.reference import lasso, sqrt_lasso, sqrt_lasso_objective


@pytest.fixture(autouse=True)
def _quiet_solver():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield


def test_lasso_known_answer():
    np.testing.assert_allclose(lasso([3.0, -2.0, 0.5], 1.0, nonneg=False), [2.0, -1.0, 0.0], atol=1e-9)
    np.testing.assert_allclose(lasso([3.0, -2.0, 0.5], 1.0, nonneg=True), [2.0, 0.0, 0.0], atol=1e-9)


def test_sqrt_lasso_known_answer():
    # u = (3, 1, -1), lam = 1/2: active set {3, 1}, tau = lam * sqrt(1 / (1 - 2 lam^2)) = 1/sqrt(2).
    tau = 1 / np.sqrt(2)
    np.testing.assert_allclose(sqrt_lasso([3.0, 1.0, -1.0], 0.5), [3 - tau, 1 - tau, 0.0], atol=1e-9)


def test_large_lam_gives_zero_code():
    """For lam >= 1, z = 0 is optimal (||u - z|| + ||z|| >= ||u||)."""
    u = np.random.default_rng(0).normal(size=(4, 10))
    np.testing.assert_allclose(sqrt_lasso(u, 1.2, nonneg=False), 0.0, atol=1e-9)


def test_batch_shape_torch_input_and_per_row_lam():
    u = torch.randn(2, 3, 5, dtype=torch.float64)
    lam = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    z = sqrt_lasso(u, lam)
    assert z.shape == (2, 3, 5) and z.dtype == np.float64
    for i, row in enumerate(u.reshape(6, 5)):
        np.testing.assert_allclose(z.reshape(6, 5)[i], sqrt_lasso(row, lam[i]), atol=1e-12)


def test_solution_beats_perturbations():
    """The referee's answer has a lower objective than nearby feasible points."""
    rng = np.random.default_rng(1)
    u = rng.normal(size=30)
    z = sqrt_lasso(u, 0.2)
    best = sqrt_lasso_objective(u, z, 0.2)
    for _ in range(50):
        other = np.maximum(z + 1e-3 * rng.normal(size=30), 0)
        assert sqrt_lasso_objective(u, other, 0.2) >= best - 1e-12


def test_scale_invariance_of_the_referee():
    rng = np.random.default_rng(2)
    u = rng.normal(size=20)
    z = sqrt_lasso(u, 0.15)
    np.testing.assert_allclose(sqrt_lasso(1e6 * u, 0.15), 1e6 * z, rtol=1e-7, atol=1e-6)
    np.testing.assert_allclose(sqrt_lasso(1e-6 * u, 0.15), 1e-6 * z, rtol=1e-7, atol=1e-18)


def test_zero_input():
    assert np.array_equal(sqrt_lasso(np.zeros(4), 0.3), np.zeros(4))
    assert np.array_equal(lasso(np.zeros(4), 0.3), np.zeros(4))


@pytest.mark.parametrize("lam", [0.0, -1.0, np.nan])
def test_bad_lam(lam):
    with pytest.raises(ValueError, match="lam"):
        sqrt_lasso(np.ones(3), lam)


@pytest.mark.parametrize("nonneg", [True, False])
def test_entry_just_below_the_threshold(nonneg):
    """An entry 3e-5 below lam: cvxpy puts it in the support, the polish must take it out."""
    u = np.array([2.0, -1.5, 0.7, 0.17746, -0.9, 0.05])
    lam = 0.17749
    expected = np.sign(u) * np.maximum(np.abs(u) - lam, 0)
    if nonneg:
        expected = np.maximum(u - lam, 0)
    np.testing.assert_allclose(lasso(u, lam, nonneg=nonneg), expected, atol=1e-9)
