"""The exact NeLU as one compiled pass per row (numba): the ``"numba"`` backend of :mod:`nelu.functional`.

The PyTorch implementation of the exact solver (:func:`nelu.functional.nelu`) makes
about twenty passes over the codes in the forward pass and six in the backward, each a
separate operation; at the batch sizes of training, launching an operation costs about
as much as its arithmetic. Here each row of codes is solved by one compiled loop that
keeps the row in the L1 cache: the same iteration (active-set refinements from the upper
bound ``tau = lam ||a||_2``, a sort for the rare rows that still move, the closed form on
the certified active set), each refinement one pass that counts the entries above
``tau`` and sums the energy of the others, which the closed form needs. The sums are
accumulated in float64 and reordered freely by the compiler (SIMD). The results agree
with the PyTorch backend to rounding, not bit for bit, so a model trained with one
backend is not bitwise the one trained with the other. Float32 outputs are the float64
results rounded once, so a different vector width (another CPU) changes them only when a
value falls within about ``1e-16`` of a float32 rounding boundary (a test compares a
1024 x 256 batch, forward and backward, compiled for the CPU at hand and for generic x86-64).

The kernels run on the calling thread (no numba thread pool: its OpenMP runtime beside
PyTorch's slowed every PyTorch operation of a training step by milliseconds), so the
output does not depend on the number of threads. The experiments train and evaluate one
thread per process, where this is the fastest choice.
Float32 rows need no rescaling (float64 squares of float32 numbers neither overflow nor
underflow); float64 rows of extreme magnitude are rescaled by the caller, as in the
PyTorch backend. A row with NaN or inf gives NaN in ``z``, ``tau`` and ``c``.

numba compiles the kernels at their first call (a few seconds) and caches them on disk.

>>> import torch
>>> z, tau, c = exact_forward(torch.tensor([[3.0, 1.0, -1.0]]), torch.tensor([0.5]), True)
>>> z, tau
(tensor([[2.2929, 0.2929, 0.0000]]), tensor([0.7071]))
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import Tensor

__all__ = ["available", "exact_forward", "exact_backward"]

#: Compiler freedoms: reassociate sums (SIMD) and contract to FMA; no assumption of finite values.
_FASTMATH = {"reassoc", "contract", "nsz", "arcp"}


@functools.cache
def available() -> bool:
    """Whether numba is installed (the ``"numba"`` backend needs it)."""
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


@functools.cache
def _kernels():
    """Compile (or load from numba's cache) the forward and backward kernels, once per process."""
    from numba import njit

    @njit(fastmath=_FASTMATH, cache=True)
    def _count_and_energy(a, tau):  # pragma: no cover - compiled
        """``k = #{a > tau}`` and the energy ``S = sum(a^2, a <= tau)`` of the others, in one pass."""
        k, energy = 0, 0.0
        for j in range(a.shape[0]):
            above = a[j] > tau
            k += above
            energy += 0.0 if above else a[j] * a[j]
        return k, energy

    @njit(fastmath=_FASTMATH, cache=True)
    def _solve_row(a, ss, lam, steps, tiny):  # pragma: no cover - compiled
        """(tau, c) of one row of magnitudes ``a`` (float64) whose sum of squares is ``ss``.

        Each step is one pass: the count and the inactive energy at the current ``tau``
        give the next ``tau`` by the closed form; a count that repeats certifies the set.
        """
        m = a.shape[0]
        lam2 = lam * lam
        if not np.isfinite(ss):
            return np.nan, np.nan
        k, energy = _count_and_energy(a, lam * np.sqrt(ss))
        for _ in range(steps):
            tau = lam * np.sqrt(energy / max(1.0 - lam2 * k, tiny))
            k_new, energy = _count_and_energy(a, tau)
            if k_new == k:  # certified: the closed form on this set is the root
                c = 1.0 - lam2 * k
                return lam * np.sqrt(energy / max(c, tiny)), c
            k = k_new
        # A row still moving: the active set is the top k* of a sort.
        s = -np.sort(-a)
        below, k_star = 0.0, 0  # energy strictly below position j, summed from the smallest up
        for j in range(m - 1, -1, -1):
            sq = s[j] * s[j]
            k_star += s[j] > 0 and lam2 * (below + (j + 1) * sq) <= sq
            below += sq
        k, energy = 0, 0.0
        for j in range(m):
            if k_star > 0 and a[j] >= s[k_star - 1]:
                k += 1
            else:
                energy += a[j] * a[j]
        c = 1.0 - lam2 * k
        return lam * np.sqrt(energy / max(c, tiny)), c

    @njit(fastmath=_FASTMATH, cache=True)
    def forward(u, lam, nonneg, steps, tiny, z, tau_out, c_out):  # pragma: no cover - compiled
        N, m = u.shape
        a = np.empty(m)  # the row's magnitudes in float64
        for i in range(N):
            row = u[i]
            ss = 0.0
            if nonneg:  # the branches outside the loops, so that each loop vectorizes
                for j in range(m):
                    a[j] = row[j]
                    ss += a[j] * a[j]
            else:
                for j in range(m):
                    a[j] = abs(row[j])
                    ss += a[j] * a[j]
            tau_out[i], c_out[i] = _solve_row(a, ss, np.float64(lam[i]), steps, tiny)
            t = tau_out[i]  # tau rounded to the output dtype: z = u - tau is computed there, as in PyTorch
            if np.isnan(t):  # a NaN or inf entry
                for j in range(m):
                    z[i, j] = np.nan
                continue
            if nonneg:
                for j in range(m):
                    z[i, j] = max(row[j] - t, 0)
            else:
                for j in range(m):
                    x = row[j]
                    z[i, j] = x - t if x > t else (x + t if x < -t else 0)

    @njit(fastmath=_FASTMATH, cache=True)
    def backward(u, z, grad_z, grad_tau_out, tau, c, lam, grad_u, grad_lam):  # pragma: no cover - compiled
        N, m = u.shape
        for i in range(N):
            through_z = 0.0  # d loss / d tau through z: z_A = u_A - sign(u_A) tau
            for j in range(m):
                if z[i, j] > 0:
                    through_z += grad_z[i, j]
                elif z[i, j] < 0:
                    through_z -= grad_z[i, j]
            grad_tau = grad_tau_out[i] - through_z
            t, ci, li = np.float64(tau[i]), np.float64(c[i]), np.float64(lam[i])
            positive = t > 0
            scale = grad_tau * li * li / (ci * t) if positive else 0.0
            for j in range(m):
                grad_u[i, j] = grad_z[i, j] if z[i, j] != 0 else u[i, j] * scale
            grad_lam[i] = grad_tau * t / (li * ci) if positive else 0.0

    return forward, backward


def exact_forward(u: Tensor, lam: Tensor, nonneg: bool, steps: int = 6) -> tuple[Tensor, Tensor, Tensor]:
    """``z``, ``tau`` and ``c = 1 - lam^2 k`` of every row of ``u``.

    Args:
        u: ``(N, m)`` CPU codes, float32 or float64 (made contiguous).
        lam: ``(N,)`` positive ``lam`` per row, ``u``'s dtype.
        nonneg: non-negative codes (``z = relu(u - tau)``) or signed (soft threshold).
        steps: active-set refinements before a row is solved by sorting.

    Returns ``z`` ``(N, m)`` and ``tau``, ``c`` ``(N,)``, all in ``u``'s dtype.
    """
    forward, _ = _kernels()
    u = u.contiguous()
    lam = lam.to(u.dtype).contiguous()
    z = torch.empty_like(u)
    tau, c = u.new_empty(u.shape[0]), u.new_empty(u.shape[0])
    forward(u.numpy(), lam.numpy(), nonneg, steps, float(torch.finfo(u.dtype).tiny), z.numpy(), tau.numpy(),
            c.numpy())
    return z, tau, c


def exact_backward(u: Tensor, z: Tensor, grad_z: Tensor, grad_tau: Tensor, tau: Tensor, c: Tensor,
                   lam: Tensor) -> tuple[Tensor, Tensor]:
    """Gradients of :func:`exact_forward`: ``grad_u`` ``(N, m)`` and ``grad_lam`` per row ``(N,)``.

    ``grad_z`` ``(N, m)`` and ``grad_tau`` ``(N,)`` are the gradients of the loss with
    respect to ``z`` and ``tau``. With ``A`` the entries where ``z != 0``:
    ``grad_u = grad_z`` on ``A`` and ``lam^2 u g / (c tau)`` off it, ``grad_lam = g tau /
    (lam c)``, where ``g = grad_tau - sum_A sign(z) grad_z``; both derivatives of ``tau``
    are 0 where ``tau = 0``.
    """
    _, backward = _kernels()
    grad_u = torch.empty_like(u)
    grad_lam = u.new_empty(u.shape[0])
    backward(u.contiguous().numpy(), z.numpy(), grad_z.contiguous().numpy(), grad_tau.contiguous().numpy(),
             tau.numpy(), c.numpy(), lam.to(u.dtype).contiguous().numpy(), grad_u.numpy(), grad_lam.numpy())
    return grad_u, grad_lam
