"""A convolutional sparse auto-encoder with NeLU (the paper leaves it as future work).

The model is one convolution, one activation and one transposed convolution,

.. math::  \\hat x = D^\\top\\!\\ast \\operatorname{act}(W \\ast y) + \\operatorname{low}(y),

with ``m`` filters of ``kernel`` x ``kernel`` pixels, stride 1:

* ``W * y`` (``conv2d``) gives, at every location ``p``, the code vector
  ``u_p = W P_p y`` in ``R^m`` of the patch ``P_p y`` whose top-left corner is
  ``p``: exactly what :class:`nelu.models.SparseAE` computes for that patch;
* ``act`` thresholds the codes (see below);
* the transposed convolution puts ``D z_p`` back at the patch's place and *sums*
  the overlapping patch estimates (a patch auto-encoder averages them: the
  factor ``1 / kernel**2`` is part of the learned decoder);
* DC (mean) handling mirrors ``SparseAE(remove_dc=True)`` exactly: the encoder
  filters are projected onto zero-mean filters, so ``u_p`` is the code of the
  zero-mean patch ``P_p y - mean(P_p y)``, and ``low(y)`` adds back the average,
  over the patches covering a pixel, of their means (a box filter applied twice);
* the image is reflect-padded by ``kernel - 1`` pixels first, so every pixel is
  covered by ``kernel**2`` patches, and the result is cropped back to ``H x W``.

So the convolutional model *is* the patch model evaluated at stride 1, trained end
to end on whole images (the training sees the patch averaging) instead of on
isolated patches.

Over which coefficients is the NeLU residual norm taken?
--------------------------------------------------------
NeLU solves ``min_z ||u - z||_2 + lam ||z||_1`` and thresholds at ``tau = lam ||u - z||_2``.
With a convolutional code ``U`` of shape ``(m, H', W')`` the norm can be taken over

* ``coeffs="location"`` (activation ``"nelu"``): the ``m`` channels at each location,
  ``tau_p = lam ||u_p - z_p||_2``. NeLU then acts on the channel dimension of each
  pixel's code vector, which is the transform-domain code of the patch at ``p``:
  this is the square-root lasso of the patch model, one per patch, with the same
  pivotal ``lam`` for every patch and every image size. Its threshold follows the
  *local* residual energy: if the noise level changes across the image, each patch
  gets its own threshold. Implemented as :func:`nelu.functional.nelu` on a
  channels-last view (the last dimension is the code dimension).
* ``coeffs="image"`` (activation ``"nelu-global"``): all ``m H' W'`` coefficients of
  one image, one threshold per image, ``tau = lam_eff ||U - Z||_F``. The pivotal
  ``lam`` of a square-root lasso of ``N`` coefficients scales like
  ``sqrt(2 log N / N)``, so a ``lam`` learned on small training crops would be far
  too large on a full test image; the layer therefore uses
  ``lam_eff = lam / sqrt(H' W')``, which makes ``tau = lam * RMS_p ||u_p - z_p||``:
  the same ``lam`` scale as the per-location variant, with the residual energy
  averaged over the image. It estimates the noise from many more coefficients
  (less variance) but cannot follow a noise level that varies across the image. Its
  exact threshold over the ~10^7 coefficients of a test image is found in O(N)
  (:func:`image_threshold`: a few passes and the sort of a small window).

Per-window variants (the residual over a ``w x w`` block of locations) sit between
the two; they are not implemented.

The ReLU baseline (activation ``"relu"``) is ``relu(u_p - b)`` with a learned threshold
per channel (:class:`nelu.nn.ShiftedReLU` on the channel dimension), i.e. a ReLU with a
per-channel bias.

:func:`train_conv` trains the model on random crops of Train400 with the machinery
of :mod:`nelu.train` (seeded generators, warm-up + cosine schedule, atomic
checkpoints, bitwise-exact resume); :func:`load_conv_denoiser` rebuilds a trained
model, which maps ``(B, 1, H, W)`` or ``(H, W)`` noisy images to denoised ones and so
can be measured with :func:`nelu.evaluation.evaluate_images`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as TF
from torch import Tensor, nn

from . import data as nd
from . import functional as F
from .models import CheckpointError, Denoiser, _paired_init, make_activation, read_checkpoint
from .nn import NeLU
from .training import (ConfigError, check_backend, check_device, check_number, fit, open_run, strip_optimizer,
                       torch_settings)

__all__ = [
    "CONV_ACTIVATIONS",
    "ChannelsLast",
    "GlobalNeLU",
    "image_threshold",
    "ConvAE",
    "ConvConfig",
    "train_conv",
    "load_conv_checkpoint",
    "load_conv_denoiser",
    "make_conv_activation",
]

#: Activations of the convolutional auto-encoder: ReLU with a per-channel bias, NeLU per
#: location (norm over the channels at each location), NeLU per image (norm over all codes).
CONV_ACTIVATIONS = ("relu", "nelu", "nelu-global")
CONV_CHECKPOINT_FORMAT = "nelu-conv-checkpoint"
CONV_CHECKPOINT_VERSION = 1


class ChannelsLast(nn.Module):
    """Apply ``act`` (which acts on the last dimension) to the channels of ``(B, C, H, W)`` codes.

    The code is viewed as ``(B, H, W, C)``: each location's channel vector is one row.
    (:class:`ConvAE` keeps its codes channels-last, ``(B, L, m)``, and needs no wrapper.)

    >>> layer = ChannelsLast(NeLU(lam=0.3))
    >>> u = torch.randn(2, 8, 5, 4)
    >>> z = layer(u)
    >>> torch.allclose(z, F.nelu(u.permute(0, 2, 3, 1), 0.3).permute(0, 3, 1, 2), atol=1e-6)
    True
    """

    def __init__(self, act: nn.Module) -> None:
        super().__init__()
        self.act = act

    def forward(self, u: Tensor) -> Tensor:
        return self.act(u.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    def learned(self) -> dict:
        return self.act.learned()


#: How far below the second active-set iterate the first guess of a lower bound of the root
#: goes, in units of the last step (the bracket then widens fourfold per failed check).
_BRACKET_FACTOR = 2.0
#: Entries per block of the passes of :func:`image_threshold` (a float64 buffer stays in cache).
_BLOCK = 1 << 16


class _Passes:
    """Passes over one long row ``a`` in blocks, summed in float64 without a float64 copy of ``a``."""

    def __init__(self, a: Tensor) -> None:
        self.blocks = a.reshape(-1).split(_BLOCK)
        self.buf = torch.empty(min(_BLOCK, a.numel()), dtype=torch.float64)

    def energy(self, t: float = math.inf) -> tuple[float, int]:
        """``(sum_i min(a_i, t)**2, #{a_i > t})``: the residual energy at threshold ``t``, and the count above."""
        energy, count = 0.0, 0
        for block in self.blocks:
            buf = self.buf[: len(block)]
            buf.copy_(block).clamp_(max=t)
            energy += float(torch.linalg.vector_norm(buf)) ** 2
            count += int(torch.count_nonzero(block > t)) if t < math.inf else 0
        return energy, count

    def inside(self, lo: float, hi: float) -> Tensor:
        """The entries in ``(lo, hi]``, in float64."""
        return torch.cat([b[(b > lo) & (b <= hi)] for b in self.blocks]).double()


@torch.no_grad()
def image_threshold(u: Tensor, lam: float, *, nonneg: bool = True) -> Tensor:
    """Exact square-root-lasso threshold of each row of ``u`` in O(N), for very long rows.

    The threshold of :func:`nelu.functional.sqrt_lasso_threshold` over the ``N`` entries of
    each row of ``u`` (``(B, N)``), for the ``N ~ 10^7`` coefficients of the code of a whole
    image, without sorting them. With ``a = u`` (``|u|`` when not ``nonneg``), the root of
    ``tau**2 = lam**2 E(tau)``, ``E(t) = sum_i min(a_i, t)**2`` the residual energy at
    threshold ``t``, is where ``E(t) / t**2`` (non-increasing) crosses ``1 / lam**2``. It is
    found with sums in float64 (over 10^7 entries, float32 sums lose digits) by

    1. two active-set steps from ``t0 = lam ||a||_2``, as in the exact solver of
       :mod:`nelu.functional`: ``t0 >= t1 >= t2 >= tau``, one pass each;
    2. a bracket ``[lo, hi]`` certified by the sign of ``lam**2 E(t) - t**2``: ``hi = t1``
       (``t0`` if rounding put ``t1`` below the root), ``lo = t2 - 2 (t1 - t2)``, widened
       fourfold until certified (at worst ``lo = 0``: every positive entry below ``hi``);
    3. a sort of the entries inside the bracket only, and on them the monotone test of the
       exact solver's sort, with the count above ``hi`` and the energy below ``lo`` added.

    So five passes over the row and the sort of a small window (2-4·10^4 of the 10^7
    coefficients of a BSD68 image at every noise level we tried), where the exact solver of
    :mod:`nelu.functional` sorts the whole row when its few active-set steps do not settle
    (on such rows they do not). Returns ``tau`` of shape
    ``(B, 1)`` in ``u``'s dtype. Rows that are not finite, or whose squares overflow or
    underflow in float64, go to :func:`nelu.functional.sqrt_lasso_threshold` (its sort and
    its row scaling). No gradient: :class:`GlobalNeLU` trains through
    :func:`nelu.functional.nelu`.

    >>> u = torch.randn(1, 100_000, generator=torch.Generator().manual_seed(0))
    >>> tau = image_threshold(u, 0.002)
    >>> bool(torch.allclose(tau, F.sqrt_lasso_threshold(u.double(), 0.002).float()))
    True
    """
    if u.dim() != 2 or not u.is_floating_point():
        raise ValueError(f"u must be a floating-point (B, N) tensor, got {tuple(u.shape)} {u.dtype}")
    if not (isinstance(lam, (int, float)) and not isinstance(lam, bool) and math.isfinite(lam) and lam > 0):
        raise ValueError(f"lam must be a positive finite number, got {lam!r}")
    return torch.cat([_row_threshold(row, float(lam), nonneg) for row in u]).reshape(-1, 1).to(u.dtype)


def _row_threshold(row: Tensor, lam: float, nonneg: bool) -> Tensor:
    a = (row if nonneg else row.abs()).contiguous()
    passes, lam2 = _Passes(a), lam * lam
    total, _ = passes.energy()
    if total == 0 and not bool(a.any()):
        return torch.zeros(1, dtype=torch.float64)
    if not 1e-290 < total < 1e290:  # not finite, or squares that overflow or underflow
        return F.sqrt_lasso_threshold(row[None], lam, nonneg=nonneg).reshape(1).double()

    def step(t: float) -> tuple[float, float, int]:
        """One active-set step from ``t``: ``(next t, E(t), #{a > t})``."""
        resid, k = passes.energy(t)
        return lam * math.sqrt(max(resid - k * t * t, 0.0) / max(1.0 - lam2 * k, 1e-300)), resid, k

    t0 = lam * math.sqrt(total)
    t1, *_ = step(t0)
    t2, resid, k_hi = step(t1)
    hi = t1
    if not lam2 * resid <= hi * hi:  # rounding put t1 below the root: t0 is an upper bound by construction
        hi, k_hi = t0, passes.energy(t0)[1]
    width = _BRACKET_FACTOR * max(hi - t2, 1e-12 * hi)
    while True:
        lo = max(t2 - width, 0.0)
        resid_lo, k_lo = passes.energy(lo)
        if lo == 0.0 or lam2 * resid_lo >= lo * lo:
            break
        width *= 4.0
    energy_lo = max(resid_lo - k_lo * lo * lo, 0.0)  # sum of a_i**2 over a_i <= lo
    s = torch.sort(passes.inside(lo, hi), descending=True).values
    sq = s * s
    below = torch.flip(torch.cumsum(torch.flip(sq, [0]), 0), [0]) - sq + energy_lo  # energy below each entry
    k = k_hi + torch.arange(1, len(s) + 1, dtype=torch.float64)
    count = int(((s > 0) & (lam2 * (below.clamp_min(0) + k * sq) <= sq)).sum())
    energy = energy_lo + float(sq[count:].sum())  # of the inactive entries
    c = 1.0 - lam2 * (k_hi + count)
    return torch.tensor([lam * math.sqrt(energy / max(c, 1e-300)) if energy > 0 else 0.0], dtype=torch.float64)


class GlobalNeLU(nn.Module):
    """NeLU with one threshold per image: the square-root lasso over all its code coefficients.

    Input: channels-last codes ``(B, ..., m)``, one image per batch entry, ``L`` locations
    each (the product of the middle dimensions). ``tau = (lam / sqrt(L)) ||U - Z||_F``,
    i.e. ``lam`` times the root-mean-square over locations of the per-location residual
    norm, so ``lam`` has the scale of the per-location NeLU and does not depend on the
    image size (module docstring).

    With gradients (training, on crops) the code goes through :func:`nelu.functional.nelu`
    (its analytic backward; the committed checkpoints were trained so, bit for bit);
    without (evaluation of whole images, ``~10^7`` coefficients) the threshold comes from
    :func:`image_threshold`, in O(N) instead of a sort. Both are exact (to rounding).

    >>> g = GlobalNeLU(0.2)
    >>> u = torch.randn(1, 30, 8)
    >>> torch.allclose(g(3 * u), 3 * g(u), atol=1e-5)  # positively homogeneous: pivotal
    True
    """

    per_location = False

    def __init__(self, lam: float = 0.1, learnable: bool = True, backend: F.Backend = "torch") -> None:
        super().__init__()
        self.inner = NeLU(lam=lam, learnable=learnable, nonneg=True, backend=backend)

    @property
    def lam(self) -> Tensor:
        return self.inner.lam

    def forward(self, u: Tensor) -> Tensor:
        B, m = u.shape[0], u.shape[-1]
        lam = self.inner.lam / math.sqrt(u[0].numel() // m)
        if torch.is_grad_enabled() and (u.requires_grad or lam.requires_grad):
            return F.nelu(u.reshape(B, -1), lam, backend=self.inner.backend).reshape(u.shape)
        tau = image_threshold(u.reshape(B, -1), float(lam)).reshape((B,) + (1,) * (u.dim() - 1))
        return (u - tau).clamp_min_(0)

    def learned(self) -> dict:
        return self.inner.learned()

    def extra_repr(self) -> str:
        return f"lam={float(self.lam.detach()):.4g}, coeffs='image'"


def make_conv_activation(name: str, m: int, *, lam: float = 0.1, threshold: float = 0.0,
                         backend: F.Backend = "torch") -> nn.Module:
    """The activation ``name`` (one of :data:`CONV_ACTIVATIONS`) for channels-last codes ``(B, L, m)``.

    ``"relu"``: :class:`nelu.nn.ShiftedReLU` (a threshold per channel); ``"nelu"``:
    :class:`nelu.nn.NeLU` on the last (channel) dimension, i.e. per location;
    ``"nelu-global"``: :class:`GlobalNeLU`. ``backend``: the exact NeLU's implementation
    (:func:`nelu.functional.nelu`).

    >>> make_conv_activation("relu", 4)
    ShiftedReLU(num_features=4)
    """
    if name == "relu":
        return make_activation("relu", m, threshold=threshold)
    if name == "nelu":
        return make_activation("nelu", m, lam=lam, backend=backend)
    if name == "nelu-global":
        return GlobalNeLU(lam, backend=backend)
    raise ValueError(f"unknown activation {name!r}; valid: {', '.join(CONV_ACTIVATIONS)}")


class ConvAE(Denoiser):
    """Convolutional sparse auto-encoder ``x_hat = ConvT(act(Conv(y))) + low(y)`` (module docstring).

    Args:
        m: number of filters (channels of the code).
        kernel: filter side (odd).
        activation: a module acting on channels-last codes ``(B, L, m)``
            (:func:`make_conv_activation`) or its name.
        remove_dc: zero-mean encoder filters and the low-pass path ``low(y)``.
        generator: for the initialization, that of :class:`nelu.models.SparseAE`
            (``W = [V; -V]``, ``D = [P, -P]``), the decoder scaled by ``1 / kernel**2``.
        chunk: locations per block when running without gradients (bounded memory,
            codes kept in cache) for per-location activations.

    Parameters: ``encoder`` and ``decoder``, both ``(m, 1, k, k)``: the weights of
    ``conv2d`` and of ``conv_transpose2d``. The computation uses the equivalent
    ``unfold`` -> matrix products -> ``fold`` form, which gives the code channels-last
    (one row per location) and is several times faster than ``conv_transpose2d`` on CPU.

    A :class:`nelu.models.Denoiser`: input ``(B, 1, H, W)`` or ``(H, W)`` with ``H, W >= kernel``;
    output the same shape; ``sigma`` is ignored. Without gradients a batch is processed one
    image at a time.

    >>> ae = ConvAE(16, 5, "nelu")
    >>> ae(torch.rand(2, 1, 12, 9)).shape
    torch.Size([2, 1, 12, 9])
    """

    def __init__(
        self,
        m: int = 64,
        kernel: int = 7,
        activation: nn.Module | str = "nelu",
        remove_dc: bool = True,
        generator: torch.Generator | None = None,
        chunk: int = 4096,
    ) -> None:
        super().__init__()
        if kernel < 1 or kernel % 2 == 0 or m < 2:
            raise ValueError(f"need an odd kernel >= 1 and m >= 2, got kernel={kernel}, m={m}")
        self.m, self.kernel, self.remove_dc, self.chunk = m, kernel, remove_dc, chunk
        self.min_size = kernel
        n = kernel * kernel
        W, D = _paired_init(n, m, remove_dc, generator)  # (m, n), (n, m)
        self.encoder = nn.Parameter(W.reshape(m, 1, kernel, kernel).clone())
        self.decoder = nn.Parameter((D.T / n).reshape(m, 1, kernel, kernel).clone())
        self.activation = make_conv_activation(activation, m) if isinstance(activation, str) else activation

    def filters(self) -> Tensor:
        """Encoder filters as used: zero-mean when ``remove_dc``; ``(m, 1, k, k)``."""
        w = self.encoder
        return w - w.mean(dim=(2, 3), keepdim=True) if self.remove_dc else w

    def _pad(self, y: Tensor) -> Tensor:
        p = self.kernel - 1
        return TF.pad(y, (p, p, p, p), mode="reflect") if p else y

    def code(self, y: Tensor) -> Tensor:
        """The pre-activation code ``u = W * pad(y)`` (``conv2d``), ``(B, m, H + k - 1, W + k - 1)``."""
        return TF.conv2d(self._pad(y), self.filters())

    def low(self, y: Tensor) -> Tensor:
        """Average over the covering patches of their means (0 without ``remove_dc``): a box filter twice."""
        if not self.remove_dc:
            return torch.zeros_like(y)
        k = self.kernel
        return TF.avg_pool2d(TF.avg_pool2d(self._pad(y), k, stride=1), k, stride=1)

    def _forward(self, y: Tensor) -> Tensor:
        k, p, (H, W) = self.kernel, self.kernel - 1, y.shape[-2:]
        yp = self._pad(y)
        cols = TF.unfold(yp, k)  # (B, n, L): the patch at each of the L locations, one per column
        enc = self.filters().reshape(self.m, -1).T  # (n, m)
        dec = self.decoder.reshape(self.m, -1)  # (m, n)
        if torch.is_grad_enabled() or not getattr(self.activation, "per_location", True):
            out = (self.activation(cols.transpose(1, 2) @ enc) @ dec).transpose(1, 2)  # codes (B, L, m)
        else:  # one image (B = 1), blocks of locations (the codes stay in cache)
            out = torch.empty_like(cols)
            for a in range(0, cols.shape[2], self.chunk):
                u = cols[0, :, a : a + self.chunk].T @ enc  # (chunk, m)
                out[0, :, a : a + self.chunk] = dec.T @ self.activation(u).T
        x = TF.fold(out, yp.shape[-2:], k)[..., p : p + H, p : p + W]
        return x + self.low(y)

    def denoise(self, x: Tensor, sigma: Tensor | None = None) -> Tensor:
        if torch.is_grad_enabled() or x.shape[0] == 1:
            return self._forward(x)
        return torch.cat([self._forward(x[i : i + 1]) for i in range(x.shape[0])])

    def extra_repr(self) -> str:
        return f"m={self.m}, kernel={self.kernel}, remove_dc={self.remove_dc}"


# ------------------------------------------------------------------------------ train


@dataclass
class ConvConfig:
    """A training run of :class:`ConvAE` on random ``crop`` x ``crop`` crops of Train400.

    Each step draws ``batch_size`` crops from a pool of ``pool_size`` (drawn once,
    seeded) and adds Gaussian noise of level ``sigma`` (0-255 scale); loss: MSE;
    AdamW with linear warm-up then cosine decay (:func:`nelu.training.lr_factor`).
    """

    activation: str = "nelu"
    sigma: float = 25.0
    m: int = 64
    kernel: int = 7
    crop: int = 40
    steps: int = 600
    batch_size: int = 8
    lr: float = 3e-3
    warmup: float = 0.05
    min_lr_factor: float = 0.02
    seed: int = 0
    pool_size: int = 2000
    train_images: int | None = None
    nelu_lam: float = 0.1
    relu_threshold: float = 0.0
    remove_dc: bool = True
    device: str = "cpu"
    threads: int = 1
    checkpoint_every: int = 200
    progress: bool | None = False
    backend: str = "torch"  # the exact NeLU's implementation: "torch" or "numba" (CPU)

    def validate(self) -> "ConvConfig":
        """Raise :class:`nelu.train.ConfigError` naming the first invalid field; return self."""
        if self.activation not in CONV_ACTIVATIONS:
            raise ConfigError(f"unknown activation {self.activation!r}; valid: {', '.join(CONV_ACTIVATIONS)}")
        check_number("sigma (0-255 scale)", self.sigma, 0, nd.MAX_SIGMA)
        limits = {"m": (2, 4096), "kernel": (1, 63), "crop": (self.kernel, 1024), "steps": (1, 10**8),
                  "batch_size": (1, 2**16), "pool_size": (1, 10**7), "threads": (1, 1024),
                  "checkpoint_every": (1, 10**8), "seed": (0, 2**32 - 1)}
        for name, (lo, hi) in limits.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                raise ConfigError(f"{name} must be an integer in [{lo}, {hi}], got {value!r}")
        if self.kernel % 2 == 0:
            raise ConfigError(f"kernel must be odd, got {self.kernel}")
        if self.train_images is not None and (isinstance(self.train_images, bool) or
                                              not isinstance(self.train_images, int) or self.train_images < 1):
            raise ConfigError(f"train_images must be an integer >= 1 or None, got {self.train_images!r}")
        check_number("lr", self.lr, 0, 10.0, lo_open=True)
        check_number("nelu_lam", self.nelu_lam, 0, lo_open=True)
        check_number("relu_threshold", self.relu_threshold)
        check_number("warmup (a fraction)", self.warmup, 0, 1)
        if self.warmup >= 1:
            raise ConfigError(f"warmup is a fraction in [0, 1), got {self.warmup}")
        check_number("min_lr_factor", self.min_lr_factor, 0, 1)
        check_backend(self.backend, self.device)
        check_device(self.device)
        pool_gib = self.pool_size * self.crop**2 * 4 / 2**30
        codes_gib = self.batch_size * self.m * (self.crop + self.kernel) ** 2 * 4 * 16 / 2**30
        if pool_gib + codes_gib > 16:
            raise ConfigError(f"this run needs about {pool_gib + codes_gib:.0f} GiB (crop pool and codes); the "
                              "limit is 16 GiB: lower pool_size, crop, batch_size or m")
        return self


def build_conv_model(config: dict) -> ConvAE:
    """A fresh :class:`ConvAE` for a :class:`ConvConfig` (as a dict); seeded initialization."""
    gen = torch.Generator().manual_seed(int(config.get("seed", 0)))
    m = int(config["m"])
    act = make_conv_activation(config["activation"], m, lam=float(config.get("nelu_lam", 0.1)),
                               threshold=float(config.get("relu_threshold", 0.0)),
                               backend=config.get("backend", "torch"))
    return ConvAE(m, int(config["kernel"]), act, remove_dc=bool(config.get("remove_dc", True)), generator=gen)


def train_conv(
    config: ConvConfig,
    out: str | Path,
    resume: bool = False,
    *,
    stop_after: int | None = None,
    log=None,
) -> dict:
    """Train :class:`ConvAE` as ``config`` says; write the checkpoint ``out`` atomically.

    Same contract as :func:`nelu.train.train`: ``resume=True`` continues from ``out``
    (the config must match up to the runtime fields) and gives a result bitwise
    identical to an uninterrupted run; ``stop_after`` simulates an interruption.
    Returns the checkpoint dict.
    """
    cfg = config.validate()
    with open_run(out, cfg, load_conv_checkpoint, resume) as ckpt:
        if ckpt is not None and ckpt.get("complete"):
            return ckpt
        device = torch.device(cfg.device)
        with torch_settings(cfg.threads):
            model = build_conv_model(asdict(cfg)).to(device)
            opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
            images = nd.cached_dataset("Train400", cfg.train_images)
            pool = nd.random_patches(images, cfg.pool_size, cfg.crop, torch.Generator().manual_seed(cfg.seed))
            pool = pool.reshape(cfg.pool_size, 1, cfg.crop, cfg.crop).to(device)

            def batch(gen: torch.Generator) -> tuple[Tensor, Tensor]:
                idx = torch.randint(cfg.pool_size, (cfg.batch_size,), generator=gen).to(device)
                clean = pool[idx]
                noise = torch.randn(clean.shape, generator=gen).to(device)
                return clean + (cfg.sigma / 255.0) * noise, clean

            return fit(model, opt, batch, torch.Generator().manual_seed(cfg.seed + 1_000_003), steps=cfg.steps,
                       warmup=cfg.warmup, min_lr_factor=cfg.min_lr_factor, log_every=max(1, cfg.steps // 4),
                       describe=model.activation.learned, out=Path(out),
                       header={"format": CONV_CHECKPOINT_FORMAT, "version": CONV_CHECKPOINT_VERSION,
                               "config": asdict(cfg)},
                       checkpoint_every=cfg.checkpoint_every, resume=ckpt, stop_after=stop_after,
                       progress=bool(cfg.progress), label=f"conv {cfg.activation}", log=log)


def load_conv_checkpoint(path: str | Path) -> dict:
    """Read and check a checkpoint written by :func:`train_conv`; raises :class:`nelu.models.CheckpointError`."""
    ckpt = read_checkpoint(path, CONV_CHECKPOINT_FORMAT, CONV_CHECKPOINT_VERSION, "convolutional nelu")
    try:  # before anything is allocated; the device it was trained on need not exist here
        ConvConfig(**{**ckpt["config"], "device": "cpu"}).validate()
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: invalid config: {' '.join(str(exc).split())}") from None
    return ckpt


def load_conv_denoiser(path: str | Path, *, ckpt: dict | None = None) -> ConvAE:
    """Rebuild the trained :class:`ConvAE` of a checkpoint, in eval mode."""
    ckpt = load_conv_checkpoint(path) if ckpt is None else ckpt
    try:
        model = build_conv_model(ckpt["config"])
        model.load_state_dict(ckpt["model"])
    except (KeyError, RuntimeError, ValueError, TypeError) as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"checkpoint {path} does not match the model it describes: {msg}") from exc
    return model.eval()


def strip_conv_optimizer(path: str | Path) -> None:
    """Drop the optimizer state of a finished conv checkpoint (smaller; loadable, not resumable)."""
    strip_optimizer(path, load_conv_checkpoint)
