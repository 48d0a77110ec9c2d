"""Sparse auto-encoders and the patch-based image denoiser built on them.

:class:`SparseAE` is a single-hidden-layer auto-encoder ``x_hat = D act(W y)``:
one step of transform-domain (square-root) lasso coding with a separate
decoder. ``act`` is either

* ``"relu"``: :class:`nelu.nn.ShiftedReLU`, ``relu(u - b)`` with a learned
  per-unit threshold ``b`` (a ReLU with a bias, the non-negative lasso code), or
* ``"nelu"``: :class:`nelu.nn.NeLU`, the self-normalizing threshold
  ``tau = lam ||u - z||_2`` with one learned pivotal ``lam``;
* ``"wnelu"``: :class:`nelu.nn.WeightedNeLU`, one learned ``lam_i`` per unit;
* ``"snelu"``: the signed NeLU (soft threshold, the square-root lasso without the sign
  constraint), one learned ``lam``, on unpaired atoms.

Patch DC (mean) handling, explicit: with ``remove_dc=True`` the mean of each
input patch is subtracted before encoding and added back after decoding, so the
code only carries the zero-mean texture (the DC of a noisy patch is already a
good estimate: averaging ``n`` pixels divides the noise variance by ``n``).

Initialization: ``W = [V; -V]`` where the ``m/2`` rows of ``V`` are stacked
random orthonormal bases of the zero-mean subspace of ``R^n`` (when
``remove_dc``; of ``R^n`` otherwise) and ``D = [P, -P]`` with ``P`` the
pseudo-inverse of ``V``, so with a zero threshold
``D relu(W y) = P (relu(Vy) - relu(-Vy)) = P V y = y`` (on the zero-mean
subspace): the network starts as the identity and learns to threshold. Paired
``+v / -v`` atoms let non-negative codes represent signed coefficients. A signed
activation (``"snelu"``) needs no pairs: ``W = V`` with ``m`` rows and ``D = pinv(V)``.

:class:`PatchDenoiser` turns an auto-encoder into an image denoiser: all
overlapping patches (stride ``stride``) are extracted, denoised in chunks and
averaged back. :func:`load_denoiser` rebuilds one from a training checkpoint.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from torch import Tensor, nn

from . import functional as F
from .data import image_to_patches, patches_to_image
from .files import UnsafeFileError, load_torch
from .nn import NeLU, ShiftedReLU, WeightedNeLU

__all__ = [
    "Denoiser",
    "ACTIVATIONS",
    "CheckpointError",
    "SparseAE",
    "PatchDenoiser",
    "make_activation",
    "default_nelu_lam",
    "build_model",
    "load_denoiser",
    "load_checkpoint",
    "read_checkpoint",
    "check_model_config",
    "MAX_PATCH",
    "MAX_CODE",
]

ACTIVATIONS = ("relu", "nelu", "wnelu", "snelu")
CHECKPOINT_FORMAT = "nelu-checkpoint"
CHECKPOINT_VERSION = 1
#: Largest patch side and code size a model may have: a patch of 32 x 32 and a code of 65536 already
#: need about 1.6 GB for the weights and their AdamW state; larger ones exhaust memory before training.
MAX_PATCH = 32
MAX_CODE = 65536


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable or incompatible with this code."""


def default_nelu_lam(m: int) -> float:
    """Initial NeLU ``lam``: ``universal_lam(m) = sqrt(2 log m / m)`` (0.208 for m = 256).

    ``lam`` is then learned; in the experiments it moves by tens of percent at most.
    """
    return F.universal_lam(m)


def make_activation(name: str, m: int, *, lam: float | None = None, threshold: float = 0.0,
                    backend: F.Backend = "torch") -> nn.Module:
    """The activation ``name`` (``"relu"`` or ``"nelu"``) for a code of length ``m``.

    * ``"relu"``: :class:`~nelu.nn.ShiftedReLU` with per-unit thresholds, initial ``threshold``;
    * ``"nelu"``: :class:`~nelu.nn.NeLU` (exact solver, non-negative codes), one
      learned ``lam``, initial ``lam`` or :func:`default_nelu_lam`;
    * ``"wnelu"``: :class:`~nelu.nn.WeightedNeLU`, one learned ``lam_i`` per unit, all
      starting at that value;
    * ``"snelu"``: :class:`~nelu.nn.NeLU` with signed codes (``nonneg=False``, a soft
      threshold). Its initial ``lam`` must exceed ``1/sqrt(m)``: below it a dense code is
      ``z = u`` with a zero ``lam``-gradient, and ``lam`` never moves (the default does).

    ``backend`` is the implementation of the exact NeLU (``"nelu"``, ``"snelu"``; see
    :func:`nelu.functional.nelu`).

    >>> act = make_activation("nelu", 256)
    >>> type(act).__name__, round(act.learned()["lam"], 4), act.nonneg
    ('ParametrizedNeLU', 0.2081, True)
    """
    if name == "relu":
        return ShiftedReLU(m, threshold=threshold)
    if name == "nelu":
        return NeLU(lam=default_nelu_lam(m) if lam is None else lam, learnable=True, nonneg=True, backend=backend)
    if name == "wnelu":
        return WeightedNeLU(m, lam=default_nelu_lam(m) if lam is None else lam, nonneg=True)
    if name == "snelu":
        return NeLU(lam=default_nelu_lam(m) if lam is None else lam, learnable=True, nonneg=False, backend=backend)
    raise ValueError(f"unknown activation {name!r}; valid: {', '.join(ACTIVATIONS)}")


def _paired_init(n: int, m: int, remove_dc: bool, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """``(W, D)`` with ``W = [V; -V]`` and ``D = [P, -P]``, ``P = pinv(V)`` (see module doc)."""
    half = m // 2
    dim = n - 1 if remove_dc and n > 1 else n
    # Orthonormal basis of the subspace the codes act on (zero-mean vectors when remove_dc).
    if dim < n:
        basis = torch.linalg.qr(torch.eye(n, dtype=torch.float64) - 1.0 / n)[0][:, :dim]  # (n, dim)
        # The first n-1 columns of Q span the zero-mean subspace (the centering matrix has rank n-1).
    else:
        basis = torch.eye(n, dtype=torch.float64)
    blocks = []
    while sum(b.shape[0] for b in blocks) < max(half, 1):
        q = torch.linalg.qr(torch.randn(dim, dim, generator=generator, dtype=torch.float64))[0]
        blocks.append(q)
    V = (torch.cat(blocks)[: max(half, 1)] @ basis.T)  # (half, n), unit rows
    P = torch.linalg.pinv(V)  # (n, half)
    W = torch.cat([V, -V])
    D = torch.cat([P, -P], dim=1)
    if m % 2:  # odd m: one extra random unit row, zero decoder column
        extra = torch.randn(1, n, generator=generator, dtype=torch.float64)
        W = torch.cat([W, extra / extra.norm()])
        D = torch.cat([D, torch.zeros(n, 1, dtype=torch.float64)], dim=1)
    return W.float(), D.float()


class Denoiser(nn.Module):
    """The image-denoiser contract every denoiser of the package follows (the shape of deepinv's).

    ``denoiser(images, sigma=None)``: ``images`` is ``(H, W)`` or ``(B, 1, H, W)``, values about
    [0, 1]; ``sigma`` is the noise level on the 0-255 scale, a number or one per image (shape
    ``(B,)``). Models that set their own threshold (NeLU) or were trained at one level ignore
    it; models that need it (``needs_sigma``, e.g. BM3D) refuse to run without it. The output
    has the input's shape and is not clipped. Images smaller than ``min_size`` on a side are
    refused.

    Subclasses implement :meth:`denoise` on a batch ``(B, 1, H, W)`` with ``sigma`` None or a
    float64 tensor ``(B,)``.

    >>> class Halve(Denoiser):
    ...     def denoise(self, x, sigma):
    ...         return x / 2
    >>> Halve()(torch.ones(3, 4)).shape, Halve()(torch.ones(2, 1, 3, 4), sigma=25).shape
    (torch.Size([3, 4]), torch.Size([2, 1, 3, 4]))
    """

    #: Whether :meth:`forward` needs ``sigma``.
    needs_sigma: bool = False
    #: Smallest image side accepted.
    min_size: int = 1

    def forward(self, images: Tensor, sigma: float | Tensor | None = None) -> Tensor:
        squeeze = images.ndim == 2
        x = images[None, None] if squeeze else images
        if x.ndim != 4 or x.shape[1] != 1:
            raise ValueError(f"images must be (H, W) or (B, 1, H, W), got {tuple(images.shape)}")
        if min(x.shape[-2:]) < self.min_size:
            raise ValueError(f"images must be at least {self.min_size} pixels on each side, got {tuple(images.shape)}")
        if sigma is None and self.needs_sigma:
            raise ValueError(f"{type(self).__name__} needs the noise level: call it with sigma= (0-255 scale)")
        levels = None
        if sigma is not None:
            levels = torch.as_tensor(sigma, dtype=torch.float64).flatten()
            if levels.numel() == 1:
                levels = levels.expand(x.shape[0])
            if levels.numel() != x.shape[0] or not torch.isfinite(levels).all() or (levels < 0).any():
                raise ValueError(f"sigma must be one finite level >= 0 or one per image, got {sigma!r}")
        out = self.denoise(x, levels)
        return out[0, 0] if squeeze else out

    def denoise(self, x: Tensor, sigma: Tensor | None) -> Tensor:
        """Denoise a batch ``(B, 1, H, W)``; ``sigma``: None or levels ``(B,)`` (0-255 scale)."""
        raise NotImplementedError


class SparseAE(nn.Module):
    """Single-hidden-layer sparse auto-encoder ``x_hat = D act(W (y - mean)) + mean``.

    Args:
        n: signal (patch) dimension.
        m: code dimension (``m > n``: overcomplete).
        activation: a ``nelu.nn`` module acting on the last dimension
            (:func:`make_activation`), or its name ``"relu"`` / ``"nelu"``.
        remove_dc: subtract each input's mean before encoding and add it back
            after decoding (the ``mean`` above; 0 when False).
        generator: for the random orthonormal initialization.

    Shape: ``(..., n) -> (..., n)``.

    >>> ae = SparseAE(64, 256, "nelu")
    >>> ae(torch.rand(10, 64)).shape
    torch.Size([10, 64])
    """

    def __init__(
        self,
        n: int,
        m: int,
        activation: nn.Module | str,
        remove_dc: bool = True,
        generator: torch.Generator | None = None,
        gate: bool = False,
    ) -> None:
        super().__init__()
        if n < 1 or m < 2:
            raise ValueError(f"need n >= 1 and m >= 2, got n={n}, m={m}")
        self.n, self.m, self.remove_dc, self.gate = n, m, remove_dc, gate
        if gate:  # g = sigmoid(a log rho + b); starts nearly closed (g = 0.05 at rho = 1)
            self.gate_a = nn.Parameter(torch.tensor(1.0))
            self.gate_b = nn.Parameter(torch.tensor(-3.0))
        self.encoder = nn.Linear(n, m, bias=False)
        self.decoder = nn.Linear(m, n, bias=False)
        self.activation = make_activation(activation, m) if isinstance(activation, str) else activation
        if getattr(self.activation, "nonneg", True):
            W, D = _paired_init(n, m, remove_dc, generator)
        else:  # signed codes: m unpaired atoms, the first halves of a paired init of 2m
            W, D = _paired_init(n, 2 * m, remove_dc, generator)
            W, D = W[:m].contiguous(), D[:, :m].contiguous()
        with torch.no_grad():
            self.encoder.weight.copy_(W)
            self.decoder.weight.copy_(D)

    def code(self, y: Tensor) -> Tensor:
        """The sparse code ``act(W (y - mean))``."""
        if self.remove_dc:
            y = y - y.mean(-1, keepdim=True)
        return self.activation(self.encoder(y))

    def forward(self, y: Tensor) -> Tensor:
        if not self.gate:
            if self.remove_dc:
                dc = y.mean(-1, keepdim=True)
                return self.decoder(self.activation(self.encoder(y - dc))) + dc
            return self.decoder(self.activation(self.encoder(y)))
        dc = y.mean(-1, keepdim=True) if self.remove_dc else torch.zeros_like(y[..., :1])
        yc = y - dc
        xz = self.decoder(self.activation(self.encoder(yc)))
        res = yc - xz
        return xz + self.gate_value(xz, res) * res + dc

    def gate_value(self, estimate: Tensor, residual: Tensor) -> Tensor:
        """The residual gate ``g = sigmoid(a log rho + b)``, ``rho = ||estimate|| / ||residual||`` per row.

        ``rho`` is a patch signal-to-noise ratio that needs no noise level and does not
        change when the patch is scaled, so the gated model stays pivotal: a patch the
        code explains well (high ``rho``) gets its residual back, a noisy one does not.
        """
        num = (estimate.square().sum(-1, keepdim=True) + 1e-12).sqrt()
        den = (residual.square().sum(-1, keepdim=True) + 1e-12).sqrt()
        return torch.sigmoid(self.gate_a * torch.log(num / den) + self.gate_b)

    def extra_repr(self) -> str:
        return f"n={self.n}, m={self.m}, remove_dc={self.remove_dc}" + (", gate=True" if self.gate else "")


class PatchDenoiser(Denoiser):
    """Image denoiser: denoise every ``patch`` x ``patch`` patch with ``ae`` and average overlaps.

    Args:
        ae: maps ``(N, patch**2)`` patches to denoised patches.
        patch: patch side.
        stride: step between patch corners (1 = all patches; larger is faster).
            The last row/column of patches is always included, so every pixel is covered.
        chunk: patches per auto-encoder call, bounding the memory. 1024 keeps a
            chunk's codes and the exact NeLU's two buffers (1 MB each) in cache: on one
            CPU thread a 481 x 321 image at stride 4 took 46 / 90 / 364 ms (ReLU, NeLU,
            the weighted NeLU of the one-model study) against 63 / 93 / 609 ms at 4096
            (65536 was 3.5x slower still). Every row is denoised on its own, so the
            output is the same bit for bit whatever the chunk.

    A :class:`Denoiser`: input ``(H, W)`` or ``(B, 1, H, W)`` noisy images (values about
    [0, 1]), at least ``patch`` pixels on a side; output the same shape, not clipped.
    ``sigma`` is ignored: a NeLU model sets its threshold from the data, a ReLU one has the
    thresholds it learned.
    """

    def __init__(self, ae: nn.Module, patch: int, stride: int = 1, chunk: int = 1024) -> None:
        super().__init__()
        if not 1 <= stride <= patch:
            raise ValueError(f"stride must be in [1, patch={patch}], got {stride}")
        self.ae, self.patch, self.stride, self.chunk = ae, patch, stride, chunk
        self.min_size = patch

    def denoise(self, x: Tensor, sigma: Tensor | None = None) -> Tensor:
        B, _, H, W = x.shape
        patches = image_to_patches(x, self.patch, self.stride)  # (B, L, n)
        flat = patches.reshape(-1, patches.shape[-1])
        out = torch.cat([self.ae(c) for c in torch.split(flat, self.chunk)]) if flat.shape[0] else flat
        return patches_to_image(out.reshape(patches.shape), (H, W), self.patch, self.stride)

    def extra_repr(self) -> str:
        return f"patch={self.patch}, stride={self.stride}"


def _int_in(config: dict, key: str, lo: int, hi: int, default=None) -> int:
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"{key} must be an integer in [{lo}, {hi}], got {value!r}")
    return value


def _positive_float(config: dict, key: str) -> None:
    value = config.get(key)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 < value < float("inf")):
        raise ValueError(f"{key} must be a finite number > 0, got {value!r}")


def check_model_config(config: object) -> dict:
    """Check the model fields of a patch auto-encoder config before anything is allocated.

    Checks the type and range of ``activation``, ``patch`` (1 to :data:`MAX_PATCH`), ``m``
    (2 to :data:`MAX_CODE`), ``eval_stride`` (1 to ``patch``), ``nelu_lam`` and ``seed``.
    Raises ``ValueError`` naming the field; returns ``config``.

    >>> check_model_config({"activation": "nelu", "patch": 8, "m": 256})["m"]
    256
    >>> check_model_config({"activation": "nelu", "patch": 200, "m": 256})
    Traceback (most recent call last):
    ...
    ValueError: patch must be an integer in [1, 32], got 200
    """
    if not isinstance(config, dict):
        raise ValueError(f"the config must be a dict, got {type(config).__name__}")
    if config.get("activation") not in ACTIVATIONS:
        raise ValueError(f"unknown activation {config.get('activation')!r}; valid: {', '.join(ACTIVATIONS)}")
    patch = _int_in(config, "patch", 1, MAX_PATCH)
    _int_in(config, "m", 2, MAX_CODE)
    _int_in(config, "eval_stride", 1, patch, default=min(2, patch))
    _int_in(config, "seed", 0, 2**32 - 1, default=0)
    _positive_float(config, "nelu_lam")
    if config.get("backend", "torch") not in F.BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(F.BACKENDS)}, got {config.get('backend')!r}")
    threshold = config.get("relu_threshold", 0.0)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not abs(threshold) < float("inf"):
        raise ValueError(f"relu_threshold must be a finite number, got {threshold!r}")
    return config


def build_model(config: dict) -> SparseAE:
    """A fresh :class:`SparseAE` for a training config (a dict with activation, patch, m, ...)."""
    check_model_config(config)
    gen = torch.Generator().manual_seed(int(config.get("seed", 0)))
    m = int(config["m"])
    act = make_activation(config["activation"], m, lam=config.get("nelu_lam"),
                          threshold=float(config.get("relu_threshold", 0.0)), backend=config.get("backend", "torch"))
    return SparseAE(int(config["patch"]) ** 2, m, act, remove_dc=bool(config.get("remove_dc", True)), generator=gen,
                    gate=bool(config.get("gate", False)))


def read_checkpoint(path: str | Path, fmt: str, version: int, what: str) -> dict:
    """Load a checkpoint dict and check its format tag, version and ``config``/``model`` entries.

    Every failure raises :class:`CheckpointError` naming the file; ``what`` names
    the kind in the message (``"nelu"``, ``"convolutional nelu"``, ...).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        ckpt = load_torch(path)  # weights_only: nothing in the file can run code
    except UnsafeFileError as exc:
        raise CheckpointError(f"refusing checkpoint {exc}") from None
    except pickle.UnpicklingError:  # not a file torch.save wrote (or a foreign pickle)
        raise CheckpointError(f"cannot read checkpoint {path}: it is not a file written by torch.save") from None
    except Exception as exc:  # truncated, not a torch file, ...
        raise CheckpointError(f"cannot read checkpoint {path}: {type(exc).__name__}: {_first_line(exc)}") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != fmt:
        raise CheckpointError(f"{path} is not a {what} checkpoint (no format tag {fmt!r})")
    if ckpt.get("version") != version:
        raise CheckpointError(f"{path} has checkpoint version {ckpt.get('version')!r}; this code reads version {version}")
    for key in ("config", "model"):
        if not isinstance(ckpt.get(key), dict):
            raise CheckpointError(f"{path} lacks a {key!r} dict")
    return ckpt


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


def load_checkpoint(path: str | Path) -> dict:
    """Read and check a checkpoint written by :func:`nelu.train.train`; raises :class:`CheckpointError`."""
    ckpt = read_checkpoint(path, CHECKPOINT_FORMAT, CHECKPOINT_VERSION, "nelu")
    try:
        check_model_config(ckpt["config"])
    except ValueError as exc:
        raise CheckpointError(f"{path}: invalid model config: {exc}") from None
    return ckpt


def load_denoiser(path: str | Path, *, stride: int | None = None, ckpt: dict | None = None) -> PatchDenoiser:
    """Rebuild the :class:`PatchDenoiser` saved in a training checkpoint, in eval mode.

    ``stride`` overrides the evaluation stride stored in the config (``1 <= stride <= patch``).
    Raises :class:`CheckpointError` (a ``ValueError``) for a missing or incompatible file
    and ``ValueError`` for a stride out of range.
    """
    ckpt = load_checkpoint(path) if ckpt is None else ckpt
    cfg = ckpt["config"]
    patch = int(cfg["patch"])
    stride = int(cfg.get("eval_stride", min(2, patch)) if stride is None else stride)
    if not 1 <= stride <= patch:
        raise ValueError(f"stride must be in [1, patch={patch}] for {path}, got {stride}")
    try:
        ae = build_model(cfg)
        ae.load_state_dict(ckpt["model"])
    except (KeyError, RuntimeError, ValueError, TypeError) as exc:
        raise CheckpointError(f"checkpoint {path} does not match the model it describes: {_first_line(exc)}") from exc
    return PatchDenoiser(ae, patch, stride).eval()
