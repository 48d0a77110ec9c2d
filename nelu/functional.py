"""Thresholding maps and the Self-Normalizing ReLU (NeLU) as functions.

The last dimension of every input is the code dimension ``m``; any leading
dimensions are batch dimensions. Everything works in float32 and float64, on
CPU and CUDA.

The square-root lasso in the transform domain is

.. math::  \\min_z \\|u - z\\|_2 + \\lambda \\|z\\|_1 \\quad (z \\ge 0 \\text{ when nonneg}).

Its solution is a thresholding of ``u`` with the *self-normalizing* threshold
``tau = lam * ||u - z||_2``: ``z = relu(u - tau)`` (non-negative) or
``z = soft_threshold(u, tau)`` (signed). :func:`sqrt_lasso_threshold` finds
``tau`` exactly without iterations and :func:`nelu` returns ``z``.

Degenerate cases (all handled, all tested):

* ``u = 0``: ``tau = 0`` and ``z = 0``.
* all-negative rows (non-negative case): ``z = 0`` and ``tau = lam ||u||_2``.
* the ``z = u`` regime: when the inactive entries are all zero and
  ``lam**2 * k <= 1`` (``k`` = number of non-zero entries that are kept), the
  residual vanishes, ``tau = 0`` and ``z = u`` (``relu(u)`` in the non-negative
  case). ``tau`` is not differentiable there (it behaves like ``|.|`` in the
  zero entries); the gradient returned is the symmetric choice 0. The
  ``"unrolled"`` method returns ``z = u`` for these rows without iterating
  (``lam**2 * nnz(u) <= 1``, and ``u >= 0`` in the non-negative case): its
  iterates can only circle ``u``, and differentiating ``(u - z) / ||u - z||_2``
  near ``z = u`` gave lam-gradients up to ``1e165`` where the true one is 0.
  Its gradients there are the exact method's: 0 for ``lam``, 1 on the
  non-zero entries of ``u`` and 0 on its zeros.
* ``lam**2 * k`` close to 1: ``tau`` grows like ``(1 - lam**2 k)**-1/2``; the
  gradients stay finite whenever the residual is non-zero.
* ``lam**2 * k == 1`` exactly, with ``k`` tied largest entries: the minimizer
  is not unique (every threshold in a segment gives the same objective); the
  solver returns one of them, usually the sparsest.
* ties: entries equal to ``tau`` are inactive; the map is continuous there and
  the gradient is one of the one-sided derivatives.
* extreme magnitudes: the map is positively homogeneous,
  ``nelu(c u) = c nelu(u)`` for ``c > 0``, so every method (and
  :func:`sqrt_lasso_threshold`) solves each row for ``u / s``, with ``s`` the
  power of two that puts ``max|u| / s`` in ``[1, 2)``, and multiplies ``z``
  and ``tau`` by ``s``. Without this, squares overflowed or underflowed: in
  float32 ``nelu(1e19 * u)`` was 0 and ``nelu(1e-25 * u)`` was ``relu(u)``
  (in float64 near ``1e154`` and ``1e-170``), and ``"unrolled"`` gave NaN.
  Scaling by a power of two is exact, so at ordinary magnitudes the results
  are unchanged bit for bit, and ``nelu(2**k u) = 2**k nelu(u)`` exactly
  while no entry of either side is subnormal. The exact method (the hot
  path) skips the scaling when every row norm of the batch is in
  ``[2**-32, 2**32]`` (float32; ``[2**-256, 2**256]`` in float64), where the
  unscaled arithmetic neither overflows nor underflows beyond rounding; that
  test costs nothing but the norms the solver computes anyway. ``s`` is a
  constant for autograd: ``s nelu(u / s)`` equals ``nelu`` for every input
  near the current one, so its gradients are the true ones, and the
  backward passes run at the scale of ``u / s`` too (no intermediate
  gradient overflows). What remains is relative to ``max|u|``: entries below
  about ``1e-19 max|u|`` (``1e-154`` in float64; in float32 up to
  ``2**-27 max|u|`` for ``m = 256`` when the exact method skips the scaling)
  have subnormal or zero squares; their effect on ``z`` is below its
  rounding, but a ``tau`` made of them alone loses relative accuracy (down
  to ``tau = 0``, ``z = u``). Rows whose largest entry is subnormal keep
  only the bits the input has. ``tau`` overflows to inf only where its true
  value exceeds the largest float (``z = 0`` there, correctly). Zero rows
  give ``z = 0`` with zero gradients; rows with NaN or inf are not rescaled.

NaN in ``u`` propagates to the output of its row as NaN, as in ``torch.relu``.
"""

from __future__ import annotations

import functools
import math
from typing import Literal

import torch
from torch import Tensor

Method = Literal["exact", "unrolled", "fixed_point"]
METHODS: tuple[str, ...] = ("exact", "unrolled", "fixed_point")
Backend = Literal["torch", "numba"]
#: Implementations of the exact method: PyTorch operations (any device; the default) or one
#: compiled pass per row (:mod:`nelu.kernels`, CPU; equal to rounding; the experiments use it).
BACKENDS: tuple[str, ...] = ("torch", "numba")

#: Active-set refinements tried before the exact solver falls back to a sort.
ACTIVE_SET_STEPS = 6
#: Batches of at least this many entries iterate only on the rows whose active set still moves.
_COMPACT_MIN_ENTRIES = 2**17


def soft_threshold(u: Tensor, tau: Tensor | float) -> Tensor:
    """Soft thresholding ``sign(u) * max(|u| - tau, 0)``, the prox of ``tau ||.||_1``.

    Args:
        u: any shape.
        tau: non-negative threshold, broadcastable to ``u``.

    Example:
        >>> soft_threshold(torch.tensor([-2.0, 0.5, 3.0]), 1.0)
        tensor([-1.,  0.,  2.])
    """
    return torch.sign(u) * torch.relu(u.abs() - tau)


def shifted_relu(u: Tensor, tau: Tensor | float) -> Tensor:
    """``max(u - tau, 0)``: the prox of ``tau ||.||_1`` restricted to ``z >= 0``.

    Example:
        >>> shifted_relu(torch.tensor([-2.0, 0.5, 3.0]), 1.0)
        tensor([0., 0., 2.])
    """
    return torch.relu(u - tau)


def universal_lam(m: int) -> float:
    """The noise-free choice ``lam = sqrt(2 log m / m)`` for a code of length ``m``.

    With white noise of std ``sigma`` in the code, ``||u - z||_2 ~ sigma sqrt(m)``,
    so ``tau = lam ||u - z||_2 ~ sigma sqrt(2 log m)``: the universal threshold.

    Example:
        >>> round(universal_lam(256), 4)
        0.2081
    """
    if m < 2:
        raise ValueError(f"universal_lam needs m >= 2, got m={m}")
    return math.sqrt(2.0 * math.log(m) / m)


def _check_lam(lam: Tensor | float, u: Tensor) -> Tensor:
    """Validate ``lam`` and return it as a tensor of ``u``'s dtype and device."""
    if isinstance(lam, Tensor) and lam.dim() == 0 and lam.dtype == u.dtype and lam.device == u.device:
        value = lam.item()  # the usual learned scalar: one read, no conversion, nothing to broadcast
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"lam must be positive and finite, got {value!r}")
        return lam
    row_shape = u.shape[:-1] + (1,)
    if isinstance(lam, Tensor):
        lam_t = lam.to(dtype=u.dtype, device=u.device)
        try:
            shape = torch.broadcast_shapes(lam_t.shape, row_shape)
        except RuntimeError:
            shape = None
        if shape != row_shape:
            raise ValueError(
                f"lam must broadcast to u.shape[:-1] + (1,) = {tuple(row_shape)}, "
                f"got a tensor of shape {tuple(lam_t.shape)}"
            )
        if lam_t.numel() == 1:  # the usual learned scalar: one read instead of four reductions
            value = lam_t.item()
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"lam must be positive and finite, got {value!r}")
            return lam_t
        bad = ~torch.isfinite(lam_t) | (lam_t <= 0)
        if bool(bad.any()):
            raise ValueError(
                f"lam must be positive and finite, got {lam_t[bad].flatten()[0].item()!r}"
            )
        return lam_t
    if isinstance(lam, bool) or not isinstance(lam, (int, float)):
        raise ValueError(f"lam must be a positive number or tensor, got {lam!r}")
    if not math.isfinite(lam) or lam <= 0:
        raise ValueError(f"lam must be positive and finite, got {lam!r}")
    return torch.tensor(float(lam), dtype=u.dtype, device=u.device)


def _check_u(u: Tensor) -> None:
    if not isinstance(u, Tensor):
        raise ValueError(f"u must be a torch.Tensor, got {type(u).__name__}")
    if u.dim() == 0:
        raise ValueError("u must have at least one dimension (the code dimension)")
    if not u.is_floating_point():
        raise ValueError(f"u must be a floating-point tensor, got dtype {u.dtype}")


def _safe_sqrt(x: Tensor) -> Tensor:
    """``sqrt(max(x, 0))`` whose gradient at 0 is 0 instead of inf; NaN stays NaN."""
    zero = x <= 0
    return torch.where(zero, torch.zeros_like(x), torch.sqrt(torch.where(zero, torch.ones_like(x), x)))


def _row_scale(u: Tensor) -> tuple[Tensor, Tensor]:
    """Power of two ``s`` per row with ``max|u| / s`` in ``[1, 2)``, and ``1 / s``.

    The map is positively homogeneous, ``nelu(u) = s * nelu(u / s)``, so every
    method solves the problem for ``u / s``, whose squares and sums of squares
    neither overflow nor underflow, and multiplies by ``s`` at the end. ``s``
    is a power of two, so products with ``s`` and ``1 / s`` are exact: wherever
    no intermediate overflowed or underflowed before, the results are bit for
    bit those of the unscaled arithmetic. ``s`` is a constant for autograd
    (computed without gradient); the identity holds for every input near the
    current one with ``s`` fixed, so the gradients through it are the true
    ones. ``s`` is at least the smallest normal number (when ``max|u|`` is
    subnormal, ``max|u| / s < 1``), so that ``1 / s`` is finite. Rows that are
    zero or not finite (NaN or inf) get ``s = 1``: their values then follow
    the unscaled arithmetic, as before scaling.
    """
    with torch.no_grad():
        # max|u| from two fast reductions (vector_norm(ord=inf) is ~15x slower on CPU); NaN propagates.
        peak = torch.maximum(u.amax(-1, keepdim=True), u.amin(-1, keepdim=True).neg_())
        mantissa, _ = torch.frexp(peak)  # peak = mantissa * 2**e with mantissa in [0.5, 1)
        # peak / (2 mantissa) = 2**(e - 1) exactly, without forming 2**e (inf when e = 128 in float32).
        s = (peak / (2.0 * mantissa)).clamp_min_(torch.finfo(u.dtype).tiny)
        s = torch.where(torch.isfinite(peak) & (peak > 0), s, 1.0)
        return s, s.reciprocal()


@functools.cache
def _unscaled_norms(dtype: torch.dtype) -> tuple[float, float]:
    """Row norms ``[2**(-e/4), 2**(e/4)]`` (``2**e``: overflow threshold) safe without rescaling.

    Float32: ``[2**-32, 2**32]``, float64: ``[2**-256, 2**256]``. Squares stay
    far below overflow (``<= 2**(e/2)``, leaving the divisions by
    ``lam**2 (1 - lam**2 k)`` ample room), and the entries whose squares are
    subnormal are at most ``2**(1 - e/4) sqrt(m)`` times ``max|u|`` (float32,
    ``m = 256``: ``2**-27``), below the rounding error ``2**-24 max|u|`` of
    the largest entry. The exact method skips :func:`_row_scale` when every
    row is in this range.
    """
    e = round(math.log2(torch.finfo(dtype).max))  # 128 in float32, 1024 in float64
    return 2.0 ** (-e / 4), 2.0 ** (e / 4)


def _unscaled_is_safe(u: Tensor, norm: Tensor) -> bool:
    """Whether every row of ``u`` has its norm in :func:`_unscaled_norms` or is zero.

    ``norm`` is ``||u||_2`` per row. A norm of 0 may be a zero row or squares
    that all underflowed, so those rows (rare) are looked at; NaN and inf
    norms are not safe. The usual case costs one reduction (``aminmax``).
    """
    low, high = _unscaled_norms(u.dtype)
    if norm.numel() == 0:
        return True
    smallest, largest = (float(x) for x in torch.aminmax(norm))
    if smallest >= low and largest <= high:  # False when a norm is NaN
        return True
    inside = (norm >= low) & (norm <= high)
    zero = (norm == 0).squeeze(-1)
    return bool((inside.squeeze(-1) | zero).all()) and not bool(u[zero].any())


def _safe_norm(x: Tensor) -> Tensor:
    """Euclidean norm over the last dim, keepdim, with gradient 0 at ``x = 0``."""
    return _safe_sqrt((x * x).sum(-1, keepdim=True))


def _magnitudes(u: Tensor, nonneg: bool) -> Tensor:
    """The values the threshold is compared with: ``u`` (non-negative case) or ``|u|``."""
    return u if nonneg else u.abs()


def _above(a: Tensor, tau: Tensor, out: Tensor | None = None) -> Tensor:
    """Indicator ``a > tau`` as 0.0/1.0 in ``a``'s dtype, in ``out`` if given.

    A comparison written into a float tensor is one vectorized pass (into a bool tensor, or
    as ``sign(relu(a - tau))``, it costs two to five times as much at 256 x 256).
    """
    return torch.gt(a, tau, out=out) if out is not None else torch.gt(a, tau).to(a.dtype)


def _tau_on_active_set(a: Tensor, active: Tensor, lam: Tensor, k: Tensor | None = None,
                       scratch: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Closed-form root ``tau = lam sqrt(S / (1 - lam^2 k))`` for a given active set.

    ``active`` is a 0/1 indicator of the active entries, ``S`` the energy of the
    inactive entries and ``k`` the number of active ones (``active.sum(-1)``,
    passed in when the caller has it; ``scratch``, a free tensor like ``a``, saves an
    allocation). Returns ``(tau, c)`` with
    ``c = 1 - lam^2 k``, both of shape ``(..., 1)``. No gradient flows through
    it (the backward pass of :class:`_ExactNeLU` is analytic), so the square
    root needs no guard: its argument is a sum of squares over a positive number.
    """
    if k is None:
        k = active.sum(-1, keepdim=True)
    # a - a * active: a on the inactive entries and exactly 0 on the active ones, in one pass.
    # A non-contiguous a (channels-last codes) keeps the layout, and so the summation order, of old.
    inactive = torch.addcmul(a, a, active, value=-1, out=scratch) if scratch is not None else (1.0 - active).mul_(a)
    energy = inactive.square_().sum(-1, keepdim=True)
    c = 1.0 - lam * lam * k
    tau = energy.div_(c.clamp_min(torch.finfo(a.dtype).tiny)).sqrt_().mul_(lam)
    return tau, c


def _active_set_by_sort(a: Tensor, lam: Tensor) -> Tensor:
    """Exact active set of every row by sorting: O(m log m), no iterations.

    ``k*`` is the number of sorted values ``s_k > 0`` with
    ``lam^2 (S_k + k s_k^2) <= s_k^2`` (``S_k`` = energy below ``s_k``); this
    test is monotone in ``k`` (the root lies in ``[s_{k*+1}, s_{k*}]``), and
    tied values pass or fail together.
    """
    s, order = torch.sort(a, dim=-1, descending=True)
    sq = s * s
    # Energy strictly below position k, summed from the smallest values up (accurate).
    below = torch.flip(torch.cumsum(torch.flip(sq, [-1]), -1), [-1]) - sq
    k = torch.arange(1, a.shape[-1] + 1, dtype=a.dtype, device=a.device)
    passes = (s > 0) & (lam * lam * (below.clamp_min(0) + k * sq) <= sq)
    k_star = passes.sum(-1, keepdim=True)
    active_sorted = torch.arange(a.shape[-1], device=a.device) < k_star
    return torch.zeros_like(active_sorted).scatter(-1, order, active_sorted)


@torch.no_grad()
def _exact_threshold(a: Tensor, lam: Tensor, norm: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Exact root ``tau`` of every row and ``c = 1 - lam^2 k`` at its active set.

    Starts from ``tau = lam ||a||_2``, an upper bound of the root, and applies
    the closed form on the current active set ``{a > tau}``. Each step keeps
    ``tau`` between the root and its previous value, so the active set only
    grows and a step that leaves its size unchanged certifies the exact root.
    Rows still moving after :data:`ACTIVE_SET_STEPS` steps (rare) are solved
    by sorting (:func:`_active_set_by_sort`). The loop uses the identity
    ``S = sum(min(a, tau)^2) - k tau^2``, two cheap passes per step; the final
    ``tau`` is recomputed from the certified active set without cancellation.
    ``norm``, when given, is ``||a||_2`` per row (already computed by the caller).

    At the batch sizes of training (256 x 256) every operation costs its
    dispatch as much as its arithmetic, so the row-wise updates are fused
    (``addcmul``, in-place) and convergence is one ``torch.equal``.
    """
    tiny = torch.finfo(a.dtype).tiny
    lam2 = lam * lam
    one = torch.ones_like(lam2)
    tau = lam * (torch.linalg.vector_norm(a, dim=-1, keepdim=True) if norm is None else norm)
    # Two buffers like ``a`` serve every step: at 4096 x 256 a fresh 4 MB tensor costs more in
    # page faults than the pass that fills it.
    buffered = a.is_contiguous()  # a strided a keeps fresh tensors: their layout fixes the sums' order
    active = _above(a, tau, out=torch.empty_like(a) if buffered else None)
    scratch = torch.empty_like(a) if buffered else None
    k = active.sum(-1, keepdim=True)
    compact = buffered and a.dim() == 2 and a.numel() >= _COMPACT_MIN_ENTRIES
    work: Tensor | None = None  # indices of the rows still iterating (None: all of them)
    a_w, lam_w, lam2_w, one_w, buffer = a, lam, lam2, one, scratch
    k_old: Tensor | None = None  # k of the step before (None: no step made yet)
    for _ in range(ACTIVE_SET_STEPS):
        low_energy = torch.linalg.vector_norm(torch.minimum(a_w, tau, out=buffer), dim=-1, keepdim=True).square_()
        energy = low_energy.addcmul_(k, tau * tau, value=-1).clamp_min_(0)  # S = sum min(a, tau)^2 - k tau^2
        tau = energy.div_(one_w.addcmul(lam2_w, k, value=-1).clamp_min_(tiny)).sqrt_().mul_(lam_w)
        if work is None:
            active_w = _above(a_w, tau, out=active if buffered else None)
            active = active_w
        else:
            active_w = _above(a_w, tau, out=buffer)
            active[work] = active_w
        k_new = active_w.sum(-1, keepdim=True)
        if torch.equal(k_new, k):
            return _tau_on_active_set(a, active, lam, k_new if work is None else None, scratch)
        k_old, k = k, k_new
        if compact and 2 * int((moving := k != k_old).sum()) <= moving.numel():
            # Rows whose active set did not change are certified: iterate on the others only.
            keep = moving.squeeze(-1).nonzero().squeeze(-1)
            work = keep if work is None else work[keep]
            a_w, lam_w, lam2_w, one_w, tau, k = a_w[keep], lam_w[keep], lam2_w[keep], one_w[keep], tau[keep], k[keep]
            k_old, buffer = k_old[keep], scratch[: keep.numel()]
    moving = torch.ones_like(k, dtype=torch.bool) if k_old is None else k != k_old
    rows = moving.squeeze(-1).nonzero(as_tuple=True)
    if work is not None:
        rows = (work[rows[0]],)
    active[rows] = _active_set_by_sort(a[rows], lam[rows]).to(a.dtype)
    return _tau_on_active_set(a, active, lam, scratch=scratch)


class _ExactNeLU(torch.autograd.Function):
    """Exact square-root-lasso code with an analytic backward pass.

    With ``A`` the active set, ``c = 1 - lam^2 |A|`` and ``s_j`` the sign of the
    active entries, ``z_A = u_A - s_A tau`` and, for an inactive entry ``i``,
    ``d tau / d u_i = lam^2 u_i / (c tau)``; ``d tau / d lam = tau / (lam c)``.
    Only the selected active set enters these formulas, so no ``sqrt(0)`` or
    division by zero of an unselected candidate can turn a gradient into NaN.
    Where ``tau = 0`` (the ``z = u`` regime) the derivatives of ``tau`` are set to 0.

    The threshold is solved for ``u / s`` (:func:`_row_scale`), and the
    backward pass uses the scale-free ratio ``u_i / tau = (u_i / s) / (tau / s)``,
    so neither pass overflows or underflows at extreme magnitudes of ``u``.
    When every row norm lies in :func:`_unscaled_norms` (the usual case), the
    unscaled arithmetic is already safe and no scaling is applied: the hot
    path pays one test of the row norms, which the solver needs anyway.
    """

    @staticmethod
    def forward(ctx, u: Tensor, lam: Tensor, nonneg: bool, backend: str = "torch"):  # type: ignore[override]
        ctx.backend = backend
        if backend == "numba":
            return _numba_forward(ctx, u, lam, nonneg)
        lam_rows = lam.expand(u.shape[:-1] + (1,))
        norm = torch.linalg.vector_norm(u, dim=-1, keepdim=True)  # = ||u||, the solver's first bound
        if _unscaled_is_safe(u, norm):
            s, u_s = None, u
            tau_s, c = _exact_threshold(_magnitudes(u, nonneg), lam_rows, norm)
            tau = tau_s
        else:
            s, inv_s = _row_scale(u)
            u_s = u * inv_s
            tau_s, c = _exact_threshold(_magnitudes(u_s, nonneg), lam_rows)
            tau = tau_s * s
        # A NaN entry makes tau, and so its whole row of z, NaN (clamp and relu propagate NaN).
        z = (u - tau).clamp_min_(0) if nonneg else soft_threshold(u, tau)
        ctx.save_for_backward(u_s, z, lam, tau_s, c, s)
        ctx.nonneg = nonneg
        return z, tau

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_z: Tensor, grad_tau_out: Tensor):  # type: ignore[override]
        if ctx.backend == "numba":
            return _numba_backward(ctx, grad_z, grad_tau_out)
        u_s, z, lam, tau_s, c, s = ctx.saved_tensors
        sign_z = torch.sign(z)  # sign of the active entries, 0 elsewhere
        # Sensitivity of the loss to tau, through z (dz_A/dtau = -sign) and through tau itself:
        # (grad_z * sign_z).sum(-1) is what vecdot computes, and its buffer serves again below.
        product = grad_z * sign_z
        grad_tau = grad_tau_out - product.sum(-1, keepdim=True)
        lam_rows = lam.expand_as(tau_s)
        positive = tau_s > 0
        # Where tau = 0 the derivatives of tau are 0; when no row has tau = 0 (the usual case,
        # one test) the guards are skipped: where(True, x, .) is x, bit for bit.
        guarded = not bool(positive.all())
        if guarded:
            scale = torch.where(positive, grad_tau * lam_rows * lam_rows / torch.where(positive, c * tau_s, 1.0), 0.0)
        else:
            scale = grad_tau * lam_rows * lam_rows / (c * tau_s)
        active = sign_z if ctx.nonneg else sign_z.abs_()
        # grad_u = grad_z on the active set, scale * u / s (through tau) off it: t + (grad_z - t) * active
        # with t = u / s * scale, in the product's buffer when the layouts agree (the product
        # with 0/1 is exact, so addcmul_ adds the same numbers as a multiplication then an addition).
        if product.is_contiguous() and u_s.is_contiguous() and grad_z.is_contiguous():
            through_tau = torch.mul(u_s, scale, out=product)
            grad_u = through_tau.addcmul_(grad_z - through_tau, active)
        else:
            through_tau = u_s * scale
            grad_u = (grad_z - through_tau).mul_(active).add_(through_tau)
        grad_lam = None
        if ctx.needs_input_grad[1]:
            # d tau / d lam = s tau_s / (lam c); s last, so that no intermediate overflows first.
            if guarded:
                dtau_s_dlam = torch.where(positive, tau_s / (lam_rows * torch.where(positive, c, 1.0)), 0.0)
            else:
                dtau_s_dlam = tau_s / (lam_rows * c)
            grad_lam = grad_tau * dtau_s_dlam
            if s is not None:
                grad_lam = grad_lam * s
            grad_lam = grad_lam.sum_to_size(lam.shape)
        return grad_u, grad_lam, None, None


def _numba_forward(ctx, u: Tensor, lam: Tensor, nonneg: bool) -> tuple[Tensor, Tensor]:
    """:class:`_ExactNeLU`'s forward by :func:`nelu.kernels.exact_forward` (rows flattened)."""
    from . import kernels

    rows = u.shape[:-1] + (1,)
    u2 = u.detach().reshape(-1, u.shape[-1])
    lam_rows = lam.detach().expand(rows).reshape(-1)
    s = None
    if u.dtype == torch.float64:  # float32 rows need no rescaling in the kernel's float64 sums
        if not _unscaled_is_safe(u2, torch.linalg.vector_norm(u2, dim=-1, keepdim=True)):
            s, inv_s = _row_scale(u2)
            u2 = u2 * inv_s
    z_s, tau_s, c = kernels.exact_forward(u2, lam_rows, nonneg)
    z, tau = (z_s, tau_s) if s is None else (z_s * s, tau_s * s.squeeze(-1))
    ctx.save_for_backward(u2, z_s, lam, tau_s, c, s)
    ctx.nonneg, ctx.shape = nonneg, u.shape
    return z.reshape(u.shape), tau.reshape(rows)


def _numba_backward(ctx, grad_z: Tensor, grad_tau_out: Tensor) -> tuple[Tensor, Tensor | None, None, None]:
    from . import kernels

    u_s, z_s, lam, tau_s, c, s = ctx.saved_tensors
    m = ctx.shape[-1]
    lam_rows = lam.expand(ctx.shape[:-1] + (1,)).reshape(-1)
    grad_u, grad_lam_rows = kernels.exact_backward(u_s, z_s, grad_z.reshape(-1, m), grad_tau_out.reshape(-1),
                                                   tau_s, c, lam_rows)
    grad_lam = None
    if ctx.needs_input_grad[1]:
        if s is not None:  # d tau / d lam = s tau_s / (lam c)
            grad_lam_rows = grad_lam_rows * s.squeeze(-1)
        grad_lam = grad_lam_rows.reshape(ctx.shape[:-1] + (1,)).sum_to_size(lam.shape)
    return grad_u.reshape(ctx.shape), grad_lam, None, None


def check_backend(backend: object, device: str | torch.device = "cpu") -> None:
    """``ValueError`` unless ``backend`` is one of :data:`BACKENDS` usable on ``device``
    (``"numba"``: CPU only, numba installed).

    >>> check_backend("numba", "cuda")
    Traceback (most recent call last):
    ...
    ValueError: backend 'numba' runs on CPU, got device cuda; use backend 'torch'
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "numba":
        from . import kernels

        if torch.device(device).type != "cpu":
            raise ValueError(f"backend 'numba' runs on CPU, got device {device}; use backend 'torch'")
        if not kernels.available():
            raise ValueError("backend 'numba' needs numba: pip install numba (or use backend 'torch')")


def _check_backend(backend: str, u: Tensor) -> None:
    check_backend(backend, u.device)
    if backend == "numba" and u.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"backend 'numba' computes in float32 or float64, got {u.dtype}; use backend 'torch'")


def _exact(u: Tensor, lam: Tensor, nonneg: bool, backend: str = "torch") -> tuple[Tensor, Tensor]:
    return _ExactNeLU.apply(u, lam, nonneg, backend)


def sqrt_lasso_threshold(u: Tensor, lam: Tensor | float, *, nonneg: bool = True, backend: Backend = "torch") -> Tensor:
    """Exact threshold ``tau`` of ``min_z ||u - z||_2 + lam ||z||_1`` (``z >= 0`` if ``nonneg``).

    ``tau`` is the unique root of ``tau = lam * ||u - z(tau)||_2``; it is found
    without iterating to tolerance (a certified active set, sort as fallback)
    and is differentiable in ``u`` and ``lam``.

    Args:
        u: ``(..., m)`` codes.
        lam: positive scalar or tensor broadcastable to ``u.shape[:-1] + (1,)``.
        nonneg: solve with ``z >= 0`` (ReLU-like) or signed (soft-threshold-like).

    Returns:
        ``tau`` of shape ``u.shape[:-1] + (1,)``, on the scale of ``u``.

    Example:
        >>> u = torch.tensor([3.0, 1.0, -1.0])
        >>> sqrt_lasso_threshold(u, 0.5)   # active {3, 1}: tau = 0.5 * ||(tau, tau, -1)||_2
        tensor([0.7071])
    """
    _check_u(u)
    lam_t = _check_lam(lam, u)
    _check_backend(backend, u)
    return _exact(u, lam_t, nonneg, backend)[1]


def _threshold(u: Tensor, tau: Tensor, nonneg: bool) -> Tensor:
    return shifted_relu(u, tau) if nonneg else soft_threshold(u, tau)


class _Rescale(torch.autograd.Function):
    """``x * value_scale`` forward, ``grad * grad_scale`` backward (``None``: unchanged).

    The iterative methods run on ``u / s`` (:func:`_row_scale`) and return
    ``s`` times the result. Plain autograd would carry the factor ``s`` through
    every intermediate gradient of the loop, where it overflows or underflows
    at extreme ``s``. Instead, ``u / s`` and ``s * z`` pass the gradient
    through unchanged and ``lam`` receives ``s`` times its gradient: the
    backward pass runs at the scale of ``u / s`` and its results are still
    exact, as ``d(s f(u / s, lam)) / du = J_f(u / s)`` and
    ``d(s f(u / s, lam)) / dlam = s df / dlam``.
    """

    @staticmethod
    def forward(ctx, x: Tensor, value_scale: Tensor, grad_scale: Tensor | None):  # type: ignore[override]
        ctx.grad_scale = grad_scale
        ctx.shape = x.shape
        return x * value_scale

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        if ctx.grad_scale is not None:
            grad = grad * ctx.grad_scale
        return grad.sum_to_size(ctx.shape), None, None


def _zero_residual_rows(u: Tensor, lam: Tensor, nonneg: bool) -> tuple[Tensor, Tensor]:
    """Rows whose solution is ``z = u`` (zero residual), and the non-zero entries of ``u``.

    ``z = u`` is optimal iff ``lam * g`` lies in the unit ball for some
    ``g`` in the subdifferential of ``||.||_1`` at ``u``: iff
    ``lam**2 * nnz(u) <= 1``, and in the non-negative case ``u >= 0`` as well.
    Returns 0/1 indicators in ``u``'s dtype: one per row (rows with NaN or inf
    excluded) and one per entry (``u != 0``, or ``u > 0`` when ``nonneg``).
    """
    with torch.no_grad():
        kept = u > 0 if nonneg else u != 0
        rows = (lam * lam) * kept.sum(-1, keepdim=True) <= 1
        rows &= torch.isfinite(u).all(-1, keepdim=True)
        if nonneg:
            rows &= (u >= 0).all(-1, keepdim=True)
        return rows.to(u.dtype), kept.to(u.dtype)


def _unrolled(u: Tensor, lam: Tensor, nonneg: bool, iters: int, step: Tensor | float | None) -> Tensor:
    """Proximal gradient from ``z = 0`` with a fixed step ``mu`` per row.

    ``z <- prox_{mu lam ||.||_1}(z + mu (u - z) / ||u - z||_2)``. Each step
    moves ``z`` by at most ``mu``. The default ``mu = ||u||_2 / sqrt(iters)``
    shrinks the step (the final error) while the distance that ``iters`` steps
    can cover, ``sqrt(iters) ||u||_2``, grows; it keeps the map positively
    homogeneous.

    Iterates on ``u / s`` (:func:`_row_scale`; ``mu`` becomes ``mu / s``) and
    multiplies by ``s`` (through :class:`_Rescale`). Rows in the ``z = u`` regime
    (:func:`_zero_residual_rows`) return ``z = u`` directly: the iterates can
    only circle ``u`` at a distance of about ``mu``, and the derivative of
    ``(u - z) / ||u - z||_2`` grows like ``1 / ||u - z||_2``, which made the
    gradient with respect to ``lam`` huge (up to ``1e165``) where it is 0.
    Those rows enter the loop as zero rows (no work, zero gradients).
    """
    s, inv_s = _row_scale(u)
    u_s = _Rescale.apply(u, inv_s, None)
    direct, kept = _zero_residual_rows(u_s, lam.detach(), nonneg)
    lam = _Rescale.apply(lam.expand_as(s), 1.0, s)  # per row: s multiplies each row's gradient
    u_s_loop = u_s * (1.0 - direct)
    if step is None:
        mu = _safe_norm(u_s_loop) / math.sqrt(iters)
    else:
        mu = _Rescale.apply(step, inv_s, None) if isinstance(step, Tensor) else step * inv_s
    z = torch.zeros_like(u_s)
    for _ in range(iters):
        r = u_s_loop - z
        norm = _safe_norm(r)
        direction = torch.where(norm > 0, r / torch.where(norm > 0, norm, torch.ones_like(norm)), torch.zeros_like(r))
        z = _threshold(z + mu * direction, mu * lam, nonneg)
    return _Rescale.apply(z + u_s * kept * direct, s, None)


def _fixed_point(u: Tensor, lam: Tensor, nonneg: bool, iters: int) -> Tensor:
    """Iterate ``tau <- lam ||u - z(tau)||_2`` from ``tau = lam ||u||_2`` (decreases to the root).

    Iterates on ``u / s`` (:func:`_row_scale`) and multiplies the code by ``s``
    (through :class:`_Rescale`).
    """
    s, inv_s = _row_scale(u)
    u_s = _Rescale.apply(u, inv_s, None)
    lam = _Rescale.apply(lam.expand_as(s), 1.0, s)  # per row: s multiplies each row's gradient
    tau = lam * _safe_norm(u_s)
    for _ in range(iters):
        tau = lam * _safe_norm(u_s - _threshold(u_s, tau, nonneg))
    return _Rescale.apply(_threshold(u_s, tau, nonneg), s, None)


def nelu(
    u: Tensor,
    lam: Tensor | float,
    *,
    nonneg: bool = True,
    method: Method = "exact",
    iters: int | None = None,
    step: Tensor | float | None = None,
    backend: Backend = "torch",
) -> Tensor:
    """Self-Normalizing ReLU: the square-root-lasso code of ``u``.

    Solves ``min_z ||u - z||_2 + lam ||z||_1`` (with ``z >= 0`` when ``nonneg``)
    row by row over the last dimension.

    Args:
        u: ``(..., m)`` codes, float32 or float64, any device.
        lam: positive scalar or tensor broadcastable to ``u.shape[:-1] + (1,)``.
            It does not depend on the noise level (it is *pivotal*).
        nonneg: non-negative codes (ReLU-like) or signed codes.
        method: ``"exact"`` (closed form, default), ``"unrolled"`` (proximal
            gradient from ``z = 0`` with a fixed step; ``iters`` defaults to 100)
            or ``"fixed_point"`` (iterate the threshold; ``iters`` defaults to 50).
        iters: number of iterations of the iterative methods.
        step: step ``mu`` of ``"unrolled"``, a scalar or a tensor broadcastable
            to ``u.shape[:-1] + (1,)``; default ``||u||_2 / sqrt(iters)`` per row.
        backend: implementation of ``"exact"``: ``"torch"`` (PyTorch operations, any
            device; the committed results) or ``"numba"`` (:mod:`nelu.kernels`: one
            compiled pass per row, CPU only, equal to rounding and several times faster).

    Returns:
        ``z`` with the shape of ``u``. Gradients with respect to ``u`` and
        ``lam`` are finite in every degenerate case (see the module docstring).
        NaN in ``u`` gives NaN in its row, as ``torch.relu`` would. Every method
        works at any magnitude of ``u``: ``nelu(c u) = c nelu(u)`` to rounding,
        from the smallest to the largest float (each row is rescaled by a
        power of two; see the module docstring).

    Example:
        >>> nelu(torch.tensor([3.0, 1.0, -1.0]), 0.5)
        tensor([2.2929, 0.2929, 0.0000])
    """
    _check_u(u)
    lam_t = _check_lam(lam, u)
    if method == "exact":
        if iters is not None or step is not None:
            raise ValueError("iters and step apply to the iterative methods, not method='exact'")
        _check_backend(backend, u)
        return _exact(u, lam_t, nonneg, backend)[0]
    if backend != "torch":
        raise ValueError(f"backend applies to method='exact' only, got backend={backend!r} with method={method!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    n = (100 if method == "unrolled" else 50) if iters is None else iters
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"iters must be a positive integer, got {iters!r}")
    if method == "unrolled":
        return _unrolled(u, lam_t, nonneg, n, step)
    if step is not None:
        raise ValueError("step applies to method='unrolled' only")
    return _fixed_point(u, lam_t, nonneg, n)


# ------------------------------------------------------------------ weighted square-root lasso


def weighted_sqrt_lasso_residual(u: Tensor, lam: Tensor, *, nonneg: bool = True) -> Tensor:
    """The residual norm ``r = ||u - z||_2`` of the weighted square-root lasso (see :func:`weighted_nelu`).

    Shape ``(..., 1)``; unit ``i`` is thresholded at ``lam_i * r``.
    """
    return _weighted(u, lam, nonneg)[1]


def weighted_nelu(u: Tensor, lam: Tensor, *, nonneg: bool = True) -> Tensor:
    """Exact weighted square-root lasso: ``argmin_z ||u - z||_2 + sum_i lam_i |z_i|`` per row.

    One weight ``lam_i > 0`` per unit (``lam`` of shape ``(m,)``, or broadcastable to
    ``u``) and one shared residual norm ``r = ||u - z||_2``: ``z_i = relu(u_i - lam_i r)``
    (``z >= 0`` when ``nonneg``; soft thresholding of ``|u_i|`` with the sign restored
    otherwise). With ``L`` the sum of ``lam_i**2`` over the active units and ``S`` the
    energy of the inactive entries, ``r**2 = S / (1 - L)``. Unit ``i`` is active iff
    ``a_i / lam_i > r`` (``a = u``, or ``|u|`` when signed): sorting ``a_i / lam_i`` in
    decreasing order, the active units are the longest prefix whose last entry ``t_k``
    satisfies ``t_k**2 (1 - L_k) > S_k``. With all ``lam_i`` equal it is :func:`nelu`.

    The active set is found without gradient; ``r`` and ``z`` are closed forms of it,
    so autograd gives the exact derivatives wherever the active set is locally
    constant. Rows are rescaled by a power of two (positive homogeneity), so huge or
    tiny inputs neither overflow nor underflow; ``r = 0`` (every entry active with
    ``L < 1``) gives ``z = u`` (``relu(u)``) with finite gradients.

    >>> z = weighted_nelu(torch.tensor([[3.0, 1.0, -1.0]]), torch.tensor([0.5, 0.5, 0.5]))
    >>> torch.allclose(z, nelu(torch.tensor([[3.0, 1.0, -1.0]]), 0.5))
    True
    """
    _check_u(u)
    lam = torch.as_tensor(lam, dtype=u.dtype, device=u.device)
    if not bool(torch.isfinite(lam).all()) or bool((lam <= 0).any()):
        raise ValueError("every lam_i must be positive and finite")
    return _weighted(u, lam, nonneg)[0]


def _weighted_active_by_sort(a: Tensor, lam: Tensor, sq: Tensor) -> Tensor:
    """Active set (0/1) of every row of the weighted problem by sorting ``a_i / lam_i``.

    ``sq`` holds the squared entries (``u**2``; the inactive energy counts the negative
    entries too). The active units are the longest prefix of the sorted ratios whose last
    entry ``t_k`` satisfies ``t_k**2 (1 - L_k) > S_k``.
    """
    t = a / lam
    t_sorted, order = torch.sort(t, dim=-1, descending=True)
    lam2_sorted = torch.gather(lam * lam, -1, order)
    sq_sorted = torch.gather(sq, -1, order)
    below = sq_sorted.flip(-1).cumsum(-1).flip(-1) - sq_sorted  # energy after position k
    L = lam2_sorted.cumsum(-1)
    passes = (t_sorted > 0) & (t_sorted * t_sorted * (1 - L) > below)
    k = passes.cumprod(-1).sum(-1, keepdim=True)  # the longest passing prefix
    active_sorted = (torch.arange(a.shape[-1], device=a.device) < k).to(a.dtype)
    return torch.zeros_like(active_sorted).scatter(-1, order, active_sorted)


def _weighted_active_by_steps(a: Tensor, lam: Tensor, sq: Tensor) -> Tensor:
    """The same active set from ``r = ||u||`` down, as :func:`_exact_threshold` does for one ``lam``.

    With the active set frozen at ``r``, ``r' = sqrt(S / (1 - L))`` lies between the root
    and ``r`` (the residual energy ``sum_i min(a_i, lam_i r)**2`` over ``r**2`` does not
    increase with ``r``), so the active set only grows and an unchanged size certifies it.
    Rows still moving after :data:`ACTIVE_SET_STEPS` steps are sorted. Ties and values
    within rounding of their threshold may be classified differently from the sort
    (either choice is a solution to rounding), so only inference uses it.
    """
    eps = torch.finfo(a.dtype).eps
    lam2 = lam * lam
    r = sq.sum(-1, keepdim=True).sqrt_()
    # Two buffers like a serve every step (fresh tensors cost page faults at large batches); a
    # comparison written into a float tensor is one pass (into a bool one and copied, two).
    scratch, active = torch.empty_like(a), torch.empty_like(a)
    torch.gt(a, torch.mul(lam, r, out=scratch), out=active)
    k = active.sum(-1, keepdim=True)
    moving = torch.ones_like(k, dtype=torch.bool)
    for _ in range(ACTIVE_SET_STEPS):
        energy = torch.addcmul(sq, sq, active, value=-1, out=scratch).sum(-1, keepdim=True)
        r = energy.div_((1 - torch.mul(active, lam2, out=scratch).sum(-1, keepdim=True)).clamp_min_(eps)).sqrt_()
        torch.gt(a, torch.mul(lam, r, out=scratch), out=active)
        k_new = active.sum(-1, keepdim=True)
        moving = k_new != k
        k = k_new
        if not bool(moving.any()):
            return active
    rows = moving.squeeze(-1).nonzero(as_tuple=True)
    active[rows] = _weighted_active_by_sort(a[rows], lam[rows], sq[rows])
    return active


def _weighted_sort_agrees(a: Tensor, lam: Tensor, sq: Tensor, active: Tensor) -> Tensor:
    """Rows (``(..., 1)`` bool) where :func:`_weighted_active_by_sort` certainly returns ``active``.

    With ``t = a / lam`` (the sort's ratios, bit for bit), ``L`` the sum of ``lam_i**2``
    over ``active``, ``d = 1 - L`` and ``S`` the energy of the other entries, the sort
    keeps position ``j`` of the decreasing ``t`` iff ``t_j**2 (1 - L_j) > S_j``. In exact
    arithmetic that margin at an active position is at least ``t_j**2 d - S`` and grows
    with ``t_j`` (by ``d`` per unit of ``t_j**2``), and at the first inactive position it
    is ``t**2 d - S``. So the sort's answer is ``active`` when the smallest active ``t**2``
    exceeds ``S / d``, and the largest inactive one falls below it, each by more than
    the rounding of both computations, ``K (2 t**2 + E)`` with ``K = 4 (m + 8) eps``
    (``E = sum(sq)`` is at least 1: the row is rescaled), and ``d > 4 K``. Rows with a
    NaN, an infinite ratio or a smaller ``E`` are not certified.
    """
    eps = torch.finfo(a.dtype).eps
    bound = 4 * (a.shape[-1] + 8) * eps
    on = active > 0
    t = a / lam
    inf, zero = a.new_tensor(math.inf), a.new_zeros(())
    buffer = torch.where(on, t, inf)
    low = buffer.amin(-1, keepdim=True).clamp_min_(0).square_()  # smallest active t^2 (0 if t <= 0; inf: none)
    high = torch.where(on, -inf, t, out=buffer).amax(-1, keepdim=True)  # largest inactive t (-inf: none)
    high_sq = high.clamp_min(0).square_()
    S = torch.where(on, zero, sq, out=buffer).sum(-1, keepdim=True)
    d = 1 - torch.where(on, lam * lam, zero, out=buffer).sum(-1, keepdim=True)
    energy = sq.sum(-1, keepdim=True)
    ok = (energy >= 1) & (d > 4 * bound)
    ok &= (low * d - S > bound * (2 * low + energy)) | ~on.any(-1, keepdim=True)
    ok &= (high <= 0) | (S - high_sq * d > bound * (2 * high_sq + energy))
    return ok


def _weighted_active_certified(a: Tensor, lam: Tensor, sq: Tensor) -> Tensor:
    """:func:`_weighted_active_by_sort`'s active set, bit for bit, mostly without sorting.

    The certified steps (:func:`_weighted_active_by_steps`) propose a set; the rows
    that :func:`_weighted_sort_agrees` cannot certify (near-ties with the threshold, or
    a residual at the rounding level) are sorted.
    """
    active = _weighted_active_by_steps(a, lam, sq)
    doubtful = ~_weighted_sort_agrees(a, lam, sq, active).squeeze(-1)
    if bool(doubtful.any()):
        rows = doubtful.nonzero(as_tuple=True)
        active[rows] = _weighted_active_by_sort(a[rows], lam[rows], sq[rows])
    return active


def _weighted(u: Tensor, lam: Tensor, nonneg: bool) -> tuple[Tensor, Tensor]:
    s, s_inv = _row_scale(u)
    us = u * s_inv
    a = us if nonneg else us.abs()
    lam = lam.expand_as(us)
    training = torch.is_grad_enabled() and (u.requires_grad or lam.requires_grad)
    with torch.no_grad():
        sq = us * us
        # Training gets the sort's set bit for bit (its trajectories, and so the committed
        # checkpoints); without gradients the certified steps find the same set, to rounding.
        active = (_weighted_active_certified if training else _weighted_active_by_steps)(a, lam, sq)
    S = ((1 - active) * us * us).sum(-1, keepdim=True)
    c = (1 - (active * lam * lam).sum(-1, keepdim=True)).clamp_min(torch.finfo(u.dtype).eps)
    r = _safe_sqrt(S / c)
    z = active * (a - lam * r)
    if not nonneg:
        z = torch.sign(us) * z
    return z * s, r * s
