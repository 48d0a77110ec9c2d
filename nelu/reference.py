"""Referee solvers: the transform-domain lasso and square-root lasso with cvxpy.

These are slow, independent solvers (an interior-point method through cvxpy
and Clarabel, one problem per row) that the tests and the book use to check
every closed form and every fast implementation in :mod:`nelu.functional`.

Both problems are solved on ``u / ||u||_2`` and the solution is scaled back:
the square-root lasso is positively homogeneous in ``u`` and the lasso is with
``lam / ||u||_2``. This is exact algebra on the *problem*, and it keeps the
solver's absolute tolerances meaningful for inputs of any scale (1e-6 to 1e6).

An interior-point solution is accurate only to about the square root of its
duality gap (the objective grows quadratically away from the minimizer), about
1e-6 at the tightest gaps Clarabel reaches. Both solvers therefore *polish*
cvxpy's answer: keeping the support and signs cvxpy found, they run Newton's
method on the objective, which is smooth on that support, and keep the
polished point only if it satisfies the optimality conditions of the full
problem. The polish knows nothing of the closed forms being checked.

Requires the optional dependency ``cvxpy`` (``pip install nelu[reference]``).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

#: Clarabel's tolerances: tight, yet loose enough that it terminates cleanly;
#: the Newton polish takes the answer the rest of the way.
SOLVER_OPTIONS = {"tol_gap_abs": 1e-10, "tol_gap_rel": 1e-10, "tol_feas": 1e-10, "max_iter": 500}


def _cvxpy():
    try:
        import cvxpy
    except ImportError as err:  # pragma: no cover - exercised only without cvxpy
        raise ImportError("nelu.reference needs cvxpy: pip install 'nelu[reference]'") from err
    return cvxpy


@lru_cache(maxsize=64)
def _problem(m: int, kind: str, nonneg: bool):
    """A parametrized cvxpy problem (compiled once per size) and its parameters."""
    cp = _cvxpy()
    u = cp.Parameter(m)
    lam = cp.Parameter(nonneg=True)
    z = cp.Variable(m, nonneg=nonneg)
    fit = cp.norm(u - z, 2) if kind == "sqrt_lasso" else 0.5 * cp.sum_squares(u - z)
    problem = cp.Problem(cp.Minimize(fit + lam * cp.norm(z, 1)))
    return problem, u, lam, z


def _as_rows(u) -> tuple[np.ndarray, tuple[int, ...]]:
    arr = np.asarray(u.detach().cpu().numpy() if hasattr(u, "detach") else u, dtype=np.float64)
    if arr.ndim == 0:
        raise ValueError("u must have at least one dimension (the code dimension)")
    return arr.reshape(-1, arr.shape[-1]), arr.shape


def _lam_rows(lam, n_rows: int) -> np.ndarray:
    lam_arr = np.asarray(lam.detach().cpu().numpy() if hasattr(lam, "detach") else lam, dtype=np.float64)
    lam_rows = np.broadcast_to(lam_arr.reshape(-1) if lam_arr.size > 1 else lam_arr.reshape(()), (n_rows,))
    if not np.all(np.isfinite(lam_rows)) or np.any(lam_rows <= 0):
        raise ValueError(f"lam must be positive and finite, got {lam!r}")
    return lam_rows


def _solve(u, lam, nonneg: bool, kind: str) -> np.ndarray:
    cp = _cvxpy()
    rows, shape = _as_rows(u)
    lams = _lam_rows(lam, rows.shape[0])
    problem, u_par, lam_par, z = _problem(rows.shape[1], kind, nonneg)
    out = np.zeros_like(rows)
    for i, (row, lam_i) in enumerate(zip(rows, lams)):
        scale = np.linalg.norm(row)
        if scale == 0:
            continue
        u_par.value = row / scale
        # sqrt lasso: homogeneous of degree 1; lasso: lam scales with 1/scale.
        lam_par.value = lam_i if kind == "sqrt_lasso" else lam_i / scale
        problem.solve(solver=cp.CLARABEL, **SOLVER_OPTIONS)
        if problem.status not in ("optimal", "optimal_inaccurate") or z.value is None:
            raise RuntimeError(f"cvxpy failed on row {i}: status {problem.status}")
        z_row = np.asarray(z.value, dtype=np.float64)
        z_row = _polish(u_par.value, z_row, lam_par.value, nonneg, kind)
        out[i] = z_row * scale
    return out.reshape(shape)


def _newton_on_support(u, z_s, support, sign, lam, kind):
    """Newton's method on the objective restricted to a fixed support and signs."""
    u_off = u[~support]
    for _ in range(50):
        r_s = u[support] - z_s
        if kind == "sqrt_lasso":
            norm = np.sqrt(r_s @ r_s + u_off @ u_off)
            grad = -r_s / norm + lam * sign
            hess = (np.eye(z_s.size) - np.outer(r_s, r_s) / norm**2) / norm
        else:
            grad = -r_s + lam * sign
            hess = np.eye(z_s.size)
        step = np.linalg.solve(hess, grad)
        z_s = z_s - step
        if np.linalg.norm(step) < 1e-15:
            break
    return z_s


def _polish(u: np.ndarray, z: np.ndarray, lam: float, nonneg: bool, kind: str, support_tol: float = 1e-7) -> np.ndarray:
    """Newton's method on the objective restricted to a support and signs (``||u||_2 = 1``).

    On a fixed support with fixed signs ``s`` both objectives are smooth:
    ``1/2 ||u - z||^2 + lam s^T z`` (lasso) and ``||u - z||_2 + lam s^T z``
    (square-root lasso, smooth while the residual is not zero). Starts from
    cvxpy's support; an entry whose polished value changes sign leaves the
    support and an inactive entry that violates optimality joins it (cvxpy is
    only accurate to about sqrt(tolerance) for an entry near the threshold).
    Returns the polished ``z`` once it keeps its signs and meets the optimality
    conditions of the full problem to 1e-9; otherwise cvxpy's ``z`` unchanged.
    """
    support = (z > support_tol) if nonneg else (np.abs(z) > support_tol)
    sign_all = np.sign(z)
    for _ in range(8):
        u_off = u[~support]
        if not support.any() or (kind == "sqrt_lasso" and float(u_off @ u_off) < 1e-20):
            return z  # nothing to polish, or the objective is not smooth (zero residual)
        sign = sign_all[support]
        z_s = _newton_on_support(u, z[support].copy(), support, sign, lam, kind)
        polished = np.zeros_like(z)
        polished[support] = z_s
        g = u - polished  # normalized residual: the (sub)gradient of the fit term
        if kind == "sqrt_lasso":
            g = g / np.linalg.norm(g)
        flipped = support.copy()
        flipped[support] = np.sign(z_s) != sign
        off = np.where(support, 0.0, g if nonneg else np.abs(g))
        violating = ~support & (off - lam > 1e-9)
        if not flipped.any() and not violating.any():
            kkt_active = np.abs(g[support] - lam * sign).max()
            return polished if kkt_active < 1e-9 else z
        support = (support & ~flipped) | violating
        sign_all = np.where(violating, np.sign(g), sign_all)
    return z


def lasso(u, lam, *, nonneg: bool = True) -> np.ndarray:
    """Solve ``min_z 1/2 ||u - z||_2^2 + lam ||z||_1`` (``z >= 0`` if ``nonneg``) with cvxpy.

    Args:
        u: ``(m,)`` or ``(..., m)`` array or tensor; each row is one problem.
        lam: positive scalar, or one value per row.

    Returns:
        float64 numpy array of ``z`` with the shape of ``u``.

    Example:
        >>> lasso([3.0, -2.0, 0.5], 1.0, nonneg=False).round(6)
        array([ 2., -1.,  0.])
    """
    return _solve(u, lam, nonneg, "lasso")


def sqrt_lasso(u, lam, *, nonneg: bool = True) -> np.ndarray:
    """Solve ``min_z ||u - z||_2 + lam ||z||_1`` (``z >= 0`` if ``nonneg``) with cvxpy.

    Args:
        u: ``(m,)`` or ``(..., m)`` array or tensor; each row is one problem.
        lam: positive scalar, or one value per row.

    Returns:
        float64 numpy array of ``z`` with the shape of ``u``.

    Example:
        >>> sqrt_lasso([3.0, 1.0, -1.0], 0.5).round(4)
        array([2.2929, 0.2929, 0.    ])
    """
    return _solve(u, lam, nonneg, "sqrt_lasso")


def weighted_sqrt_lasso(u, lam, *, nonneg: bool = True) -> np.ndarray:
    """Solve ``min_z ||u - z||_2 + sum_i lam_i |z_i|`` (``z >= 0`` if ``nonneg``) with cvxpy.

    Args:
        u: ``(m,)`` or ``(..., m)``; each row is one problem.
        lam: ``(m,)`` positive weights, shared by the rows.

    Returns:
        float64 numpy array of ``z`` with the shape of ``u`` (interior-point accuracy, about
        1e-6 relative; no polish).

    Example:
        >>> weighted_sqrt_lasso([3.0, 1.0, -1.0], [0.5, 0.5, 0.5]).round(4)
        array([2.2929, 0.2929, 0.    ])
    """
    cp = _cvxpy()
    rows, shape = _as_rows(u)
    w = np.asarray(lam.detach().cpu().numpy() if hasattr(lam, "detach") else lam, dtype=np.float64).reshape(-1)
    if w.shape != (rows.shape[1],) or not np.all(np.isfinite(w)) or np.any(w <= 0):
        raise ValueError(f"lam must hold {rows.shape[1]} positive finite weights, got {lam!r}")
    u_par = cp.Parameter(rows.shape[1])
    z = cp.Variable(rows.shape[1], nonneg=nonneg)
    problem = cp.Problem(cp.Minimize(cp.norm(u_par - z, 2) + w @ cp.abs(z)))
    out = np.zeros_like(rows)
    for i, row in enumerate(rows):
        scale = np.linalg.norm(row)
        if scale == 0:
            continue
        u_par.value = row / scale
        problem.solve(solver=cp.CLARABEL, **SOLVER_OPTIONS)
        if problem.status not in ("optimal", "optimal_inaccurate") or z.value is None:
            raise RuntimeError(f"cvxpy failed on row {i}: status {problem.status}")
        out[i] = np.asarray(z.value, dtype=np.float64) * scale
    return out.reshape(shape)


def sqrt_lasso_objective(u, z, lam) -> np.ndarray:
    """``||u - z||_2 + lam ||z||_1`` per row (float64), to compare candidate solutions."""
    u_rows, shape = _as_rows(u)
    z_rows, _ = _as_rows(z)
    lams = _lam_rows(lam, u_rows.shape[0])
    value = np.linalg.norm(u_rows - z_rows, axis=1) + lams * np.abs(z_rows).sum(axis=1)
    return value.reshape(shape[:-1])
