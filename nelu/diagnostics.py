"""Measurements on trained auto-encoders, and the sparse codes the chapters test them on.

* :func:`code_statistics` (a :class:`CodeStats`): what the encoder and the activation do
  to noisy patches at each noise level: active fraction, mean threshold (from the
  activation's own ``thresholds(u)``), residual ``||u - z||`` against the noise energy.
* :func:`unit_statistics` (a :class:`UnitStats`): the same, unit by unit, at one level.
* :func:`best_lam`: the NeLU ``lam`` with the smallest patch error at each noise level, the
  transform held fixed (a pivotal activation only: ``activation.pivotal``).
* :func:`sparse_codes`: random non-negative ``k``-sparse codes, the test signals of the
  lasso chapters.

The activations are asked, never inspected: ``act.pivotal`` (True for NeLU, False for a
learned per-unit threshold), ``act.thresholds(u)`` (the threshold each row or unit gets) and
``act.learned()`` (``{"lam": ...}`` or ``{"threshold_mean": ...}``), see :mod:`nelu.nn`.

Example::

    from nelu.data import load_dataset, random_patches
    from nelu.models import load_denoiser
    ae = load_denoiser("results/checkpoints/nelu_sigma25.pt").ae
    clean = random_patches(load_dataset("BSD68"), 8000, 8, torch.Generator().manual_seed(0))
    code_statistics(ae, clean, [5, 25, 75]).active      # fraction of active units at each sigma
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from . import functional as F

__all__ = ["CodeStats", "code_statistics", "UnitStats", "unit_statistics", "best_lam", "sparse_codes"]


def sparse_codes(count: int, m: int, k: int, generator: torch.Generator, *, low: float = 2.0, high: float = 6.0,
                 dtype: torch.dtype = torch.float64) -> Tensor:
    """``count`` non-negative codes (rows) of length ``m`` with ``k`` non-zeros, uniform on ``[low, high]``.

    The support of each row is uniform among the ``k``-subsets of ``{0, ..., m-1}``; the two
    draws (support, then values) come from ``generator``, so a seeded generator gives the
    same codes on every machine.

    >>> x = sparse_codes(3, 10, 2, torch.Generator().manual_seed(0))
    >>> x.shape, (x > 0).sum(dim=1).tolist(), bool(((x == 0) | ((x >= 2) & (x <= 6))).all())
    (torch.Size([3, 10]), [2, 2, 2], True)
    """
    x = torch.zeros(count, m, dtype=dtype)
    support = torch.rand(count, m, generator=generator).argsort(dim=1)[:, :k]
    return x.scatter(1, support, low + (high - low) * torch.rand(count, k, generator=generator, dtype=dtype))


@dataclass(frozen=True)
class CodeStats:
    """What the encoder and the activation of an auto-encoder do to noisy patches.

    All arrays are indexed like ``sigmas`` (0-255 scale). With ``u = W (y - mean)``
    and ``z = a(u)`` the code:

    Attributes:
        active: mean fraction of non-zero entries of ``z``.
        threshold: mean of ``activation.thresholds(u)``, the threshold applied (NeLU:
            ``tau = lam ||u - z||`` per patch; ReLU: the learned ``b`` per unit).
        kappa: ``threshold`` in units of the noise std of a typical code entry,
            ``threshold / (sigma/255 * median_i ||(W C)_i||)`` (``C`` removes the mean).
        residual: root mean square of ``||u - z||`` over the patches.
        noise: root mean square of ``||W C v||``, the noise energy in the code domain.
        clean_residual: the same residual for the clean patches (``sigma = 0``): what the
            code discards of the signal alone.
        clean_negative_share: fraction of ``clean_residual**2`` that comes from entries ``u_i < 0``.
    """

    sigmas: np.ndarray
    active: np.ndarray
    threshold: np.ndarray
    kappa: np.ndarray
    residual: np.ndarray
    noise: np.ndarray
    clean_residual: float
    clean_negative_share: float

    @property
    def ratio(self) -> np.ndarray:
        """``residual / noise``: about constant (and below 1) when the residual is mostly noise."""
        return self.residual / self.noise

    @property
    def crossover(self) -> float:
        """The ``sigma`` at which the noise energy equals ``clean_residual`` (linear in sigma)."""
        return float(self.sigmas[0] * self.clean_residual / self.noise[0])


def _encode(ae, y: Tensor) -> Tensor:
    if ae.remove_dc:
        y = y - y.mean(-1, keepdim=True)
    return ae.encoder(y)


@torch.no_grad()
def code_statistics(ae, clean: Tensor, sigmas: Sequence[float], *, seed: int = 0) -> CodeStats:
    """Measure an auto-encoder's code on clean patches plus Gaussian noise at each ``sigma``.

    Args:
        ae: a :class:`~nelu.models.SparseAE` (``encoder``, ``activation``, ``remove_dc``),
            e.g. ``load_denoiser(path).ae``.
        clean: clean patches ``(N, n)`` with values in [0, 1].
        sigmas: noise levels, 0-255 scale (> 0).
        seed: of the unit noise, reused at every ``sigma``.
    """
    sig = np.asarray(sigmas, float)
    if (sig <= 0).any():
        raise ValueError("sigmas must be > 0")
    ae = ae.eval()
    n = clean.shape[-1]
    W = ae.encoder.weight
    clean = clean.to(W.dtype)
    C = torch.eye(n, dtype=W.dtype) - (1.0 / n if ae.remove_dc else 0.0)
    row_norm = float((W @ C).norm(dim=1).median())
    unit = torch.randn(clean.shape, generator=torch.Generator().manual_seed(seed), dtype=clean.dtype)
    ux = _encode(ae, clean)
    zx = ae.activation(ux)
    rx = (ux - zx).pow(2).sum(-1)
    neg = ux.clamp(max=0).pow(2).sum(-1)
    out = {k: [] for k in ("active", "threshold", "residual", "noise")}
    for s in sig:
        v = (s / 255.0) * unit
        u = _encode(ae, clean + v)
        z = ae.activation(u)
        out["active"].append(float((z > 0).double().mean()))
        out["threshold"].append(float(ae.activation.thresholds(u).double().mean()))
        out["residual"].append(float((u - z).pow(2).sum(-1).double().mean().sqrt()))
        out["noise"].append(float((v @ C.T @ W.T).pow(2).sum(-1).double().mean().sqrt()))
    arr = {k: np.array(v) for k, v in out.items()}
    return CodeStats(
        sigmas=sig,
        kappa=arr["threshold"] / (sig / 255.0 * row_norm),
        clean_residual=float(rx.double().mean().sqrt()),
        clean_negative_share=float(neg.double().sum() / rx.double().sum()),
        **arr,
    )


@dataclass(frozen=True)
class UnitStats:
    """Unit by unit: what each code entry of an auto-encoder sees and does at one noise level.

    Attributes (arrays of length ``m``):
        encoder_norm: ``||(W C)_i||``, the gain of unit ``i`` (``C`` removes the patch mean).
        decoder_norm: ``||D[:, i]||``, how much unit ``i`` contributes to the output.
        snr: ``E[(W C x)_i^2] / E[(W C v)_i^2]``: the unit's signal energy over its noise energy.
        active: fraction of the patches on which unit ``i`` is non-zero.
        residual_share: unit ``i``'s share of ``E ||u - z||^2`` (sums to 1).
    """

    encoder_norm: np.ndarray
    decoder_norm: np.ndarray
    snr: np.ndarray
    active: np.ndarray
    residual_share: np.ndarray


@torch.no_grad()
def unit_statistics(ae, clean: Tensor, sigma: float, *, seed: int = 0) -> UnitStats:
    """Per-unit statistics of an auto-encoder on clean patches ``(N, n)`` plus noise of level
    ``sigma`` (0-255 scale, > 0); see :class:`UnitStats`."""
    if not sigma > 0:
        raise ValueError("sigma must be > 0")
    ae = ae.eval()
    W, D = ae.encoder.weight, ae.decoder.weight
    clean = clean.to(W.dtype)
    n = clean.shape[-1]
    C = torch.eye(n, dtype=W.dtype) - (1.0 / n if ae.remove_dc else 0.0)
    WC = W @ C
    v = (sigma / 255.0) * torch.randn(clean.shape, generator=torch.Generator().manual_seed(seed), dtype=clean.dtype)
    u = _encode(ae, clean + v)
    z = ae.activation(u)
    r2 = (u - z).double().pow(2).sum(0)
    signal = _encode(ae, clean).double().pow(2).mean(0)
    noise = WC.double().pow(2).sum(1) * (sigma / 255.0) ** 2
    return UnitStats(
        encoder_norm=WC.norm(dim=1).double().numpy(),
        decoder_norm=D.norm(dim=0).double().numpy(),
        snr=(signal / noise).numpy(),
        active=(z > 0).double().mean(0).numpy(),
        residual_share=(r2 / r2.sum()).numpy(),
    )


@torch.no_grad()
def best_lam(ae, clean: Tensor, sigmas: Sequence[float], lams: Sequence[float] | Tensor, *,
             seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """For a NeLU auto-encoder with its transform fixed: the ``lam`` of ``lams`` with the
    smallest mean squared patch error at each ``sigma`` (0-255 scale).

    The encoder, decoder and DC handling are the model's; only ``lam`` changes.
    Returns ``(best lam per sigma, mse of shape (len(sigmas), len(lams)))``.
    """
    act = ae.activation
    if not act.pivotal:
        raise ValueError(f"best_lam needs a NeLU auto-encoder, not one with {type(act).__name__} "
                         f"(learned {act.learned()})")
    clean = clean.to(ae.encoder.weight.dtype)
    grid = np.asarray(lams.tolist() if isinstance(lams, Tensor) else lams, float)
    unit = torch.randn(clean.shape, generator=torch.Generator().manual_seed(seed), dtype=clean.dtype)
    mse = np.zeros((len(sigmas), len(grid)))
    for i, s in enumerate(sigmas):
        y = clean + (float(s) / 255.0) * unit
        dc = y.mean(-1, keepdim=True) if ae.remove_dc else torch.zeros_like(y[..., :1])
        u = ae.encoder(y - dc)
        for j, lam in enumerate(grid):
            est = ae.decoder(F.nelu(u, float(lam), nonneg=act.nonneg)) + dc
            mse[i, j] = float((est - clean).pow(2).mean())
    return grid[mse.argmin(axis=1)], mse
