"""Activation layers: NeLU and the two lasso baselines with a learned bias.

All three act on the last dimension (the code), like :class:`torch.nn.ReLU`
acts elementwise, so they drop into any ``nn.Sequential``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from . import functional as F


class _Positive(nn.Module):
    """Parametrization ``lam = exp(clamp(raw, -20, 20))``: ``lam`` stays in ``[2e-9, 5e8]``.

    The clamp keeps ``exp`` from underflowing to 0 in float32 after a wild step.
    """

    def forward(self, raw: Tensor) -> Tensor:
        return torch.exp(raw.clamp(-20.0, 20.0))

    def right_inverse(self, lam: Tensor) -> Tensor:
        if bool((lam <= 0).any()) or not bool(torch.isfinite(lam).all()):
            raise ValueError(f"lam must be positive and finite, got {lam}")
        return torch.log(lam)


class NeLU(nn.Module):
    """Self-Normalizing ReLU: the square-root-lasso code of its input.

    ``NeLU()(u)`` returns ``argmin_z ||u - z||_2 + lam ||z||_1`` (``z >= 0`` if
    ``nonneg``) over the last dimension of ``u``. The threshold it applies is
    ``lam * ||u - z||_2``: it follows the energy of the input, so one ``lam``
    serves every noise level.

    Args:
        lam: initial ``lam > 0`` (a scalar, or a tensor broadcastable to
            ``u.shape[:-1] + (1,)``). Kept positive by the parametrization
            ``lam = exp(raw)`` (``raw`` clamped to ``[-20, 20]``).
        learnable: whether ``lam`` is a trained parameter.
        nonneg: non-negative (ReLU-like) or signed codes.
        method: ``"exact"``, ``"unrolled"`` or ``"fixed_point"`` (see
            :func:`nelu.functional.nelu`).
        iters: iterations of the iterative methods.
        backend: implementation of ``"exact"``: ``"torch"`` or ``"numba"`` (CPU; see
            :func:`nelu.functional.nelu`). An attribute: set it on a built model to switch.

    Shape: input ``(..., m)``, output the same.

    Example:
        >>> layer = NeLU(lam=0.5)
        >>> layer(torch.tensor([[3.0, 1.0, -1.0]]))
        tensor([[2.2929, 0.2929, 0.0000]], grad_fn=<...>)
    """

    def __init__(
        self,
        lam: float | Tensor = 0.1,
        learnable: bool = True,
        nonneg: bool = True,
        method: F.Method = "exact",
        iters: int | None = None,
        backend: F.Backend = "torch",
    ) -> None:
        super().__init__()
        if method not in F.METHODS:
            raise ValueError(f"method must be one of {F.METHODS}, got {method!r}")
        F.check_backend(backend)
        lam_t = torch.as_tensor(lam, dtype=torch.get_default_dtype()).clone()
        if bool((lam_t <= 0).any()) or not bool(torch.isfinite(lam_t).all()):
            raise ValueError(f"lam must be positive and finite, got {lam!r}")
        if learnable:
            self.lam = nn.Parameter(lam_t)
        else:
            self.register_buffer("lam", lam_t)
        parametrize.register_parametrization(self, "lam", _Positive(), unsafe=True)
        self.nonneg = nonneg
        self.method = method
        self.iters = iters
        self.backend = backend

    def forward(self, u: Tensor) -> Tensor:
        return F.nelu(u, self.lam, nonneg=self.nonneg, method=self.method, iters=self.iters, backend=self.backend)

    pivotal = True  #: the threshold follows the noise by itself (no per-noise-level bias)

    def thresholds(self, u: Tensor) -> Tensor:
        """The threshold ``tau = lam ||u - z||_2`` this layer applies to each row of ``u``: shape ``(..., 1)``."""
        return F.sqrt_lasso_threshold(u, self.lam, nonneg=self.nonneg, backend=self.backend)

    def learned(self) -> dict:
        """What training learns, for logs and results: ``{"lam": value}`` (a list if ``lam`` is a vector).

        >>> NeLU(lam=0.25).learned()
        {'lam': 0.25}
        """
        lam = self.lam.detach()
        return {"lam": float(lam) if lam.numel() == 1 else lam.tolist()}

    def extra_repr(self) -> str:
        lam = self.lam.detach()
        lam_txt = f"{lam.item():.4g}" if lam.numel() == 1 else f"tensor{tuple(lam.shape)}"
        backend = f", backend={self.backend!r}" if self.backend != "torch" else ""
        return f"lam={lam_txt}, nonneg={self.nonneg}, method={self.method!r}" + backend


class WeightedNeLU(nn.Module):
    """Weighted square-root lasso layer: one learned ``lam_i > 0`` per unit, one shared residual norm.

    ``z_i = relu(u_i - lam_i r)`` with ``r = ||u - z||_2`` (:func:`nelu.functional.weighted_nelu`):
    still pivotal (scaling ``u`` scales ``r`` and ``z``), but units that carry signal can
    learn small weights and units that mostly see noise large ones. ``lam = exp(raw)``.

    >>> layer = WeightedNeLU(4, lam=0.2)
    >>> layer(torch.tensor([[3.0, 1.0, -1.0, 0.0]])).shape
    torch.Size([1, 4])
    """

    pivotal = True

    def __init__(self, num_features: int, lam: float = 0.05, nonneg: bool = True) -> None:
        super().__init__()
        if num_features < 1:
            raise ValueError(f"num_features must be a positive integer, got {num_features}")
        if not (math.isfinite(lam) and lam > 0):
            raise ValueError(f"lam must be positive and finite, got {lam}")
        self.raw = nn.Parameter(torch.full((num_features,), math.log(lam)))
        self.nonneg = nonneg

    @property
    def lam(self) -> Tensor:
        """The weights ``lam_i = exp(raw_i)`` (``raw`` clamped to [-20, 20]: finite and > 0)."""
        return torch.exp(self.raw.clamp(-20.0, 20.0))

    def forward(self, u: Tensor) -> Tensor:
        return F.weighted_nelu(u, self.lam, nonneg=self.nonneg)

    def thresholds(self, u: Tensor) -> Tensor:
        """The threshold ``lam_i r`` of each unit of each row: shape of ``u``."""
        return self.lam * F.weighted_sqrt_lasso_residual(u, self.lam, nonneg=self.nonneg)

    def learned(self) -> dict:
        """Summary of the learned weights: ``lam_median``, ``lam_mean``, ``lam_min``, ``lam_max``."""
        lam = self.lam.detach()
        return {"lam_median": float(lam.median()), "lam_mean": float(lam.mean()), "lam_min": float(lam.min()),
                "lam_max": float(lam.max())}

    def extra_repr(self) -> str:
        return f"num_features={self.raw.numel()}, nonneg={self.nonneg}"


class _Thresholding(nn.Module):
    """A per-unit learned threshold ``b`` (shape ``(m,)``) applied to the last dimension."""

    def __init__(self, num_features: int, threshold: float = 0.0) -> None:
        super().__init__()
        if num_features < 1:
            raise ValueError(f"num_features must be a positive integer, got {num_features}")
        if not math.isfinite(threshold):
            raise ValueError(f"threshold must be finite, got {threshold}")
        self.threshold = nn.Parameter(torch.full((num_features,), float(threshold)))

    pivotal = False  #: a fixed learned threshold per unit, whatever the noise level

    def thresholds(self, u: Tensor) -> Tensor:
        """The threshold of each unit, broadcast to the shape of ``u``."""
        return self.threshold.expand_as(u)

    def learned(self) -> dict:
        """What training learns, for logs and results: ``{"threshold_mean": mean of the thresholds}``.

        >>> ShiftedReLU(4, threshold=0.5).learned()
        {'threshold_mean': 0.5}
        """
        return {"threshold_mean": float(self.threshold.detach().mean())}

    def extra_repr(self) -> str:
        return f"num_features={self.threshold.numel()}"


class ShiftedReLU(_Thresholding):
    """``relu(u - b)`` with a learned per-unit threshold ``b``: the non-negative lasso code.

    Equivalent to ``ReLU(W y + bias)`` with ``bias = -b``.

    Example:
        >>> ShiftedReLU(3, threshold=1.0)(torch.tensor([-2.0, 0.5, 3.0]))
        tensor([0., 0., 2.], grad_fn=<ReluBackward0>)
    """

    def forward(self, u: Tensor) -> Tensor:
        return F.shifted_relu(u, self.threshold)


class SoftThreshold(_Thresholding):
    """``sign(u) max(|u| - b, 0)`` with a learned per-unit threshold ``b``: the lasso code.

    Example:
        >>> SoftThreshold(3, threshold=1.0)(torch.tensor([-2.0, 0.5, 3.0]))
        tensor([-1.,  0.,  2.], grad_fn=<MulBackward0>)
    """

    def forward(self, u: Tensor) -> Tensor:
        return F.soft_threshold(u, self.threshold)
