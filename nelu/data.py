"""Image data, patches and noise models for the denoising experiments.

Three sets of 8-bit grayscale PNG images, copied byte for byte from the DnCNN
repository (see ``data/README.md``):

* ``Train400``: 400 images of 180x180, training;
* ``Set12``: 12 images of 256x256 or 512x512, validation;
* ``BSD68``: 68 images of 481x321 or 321x481, test.

Every file is listed, with its SHA-256 and public URL, in ``data/registry.txt``.
:func:`fetch` returns a verified local copy, downloading it with pooch when it
is missing. Images are float32 tensors in [0, 1] (pixel / 255); noise levels
``sigma`` are on the 0-255 scale, so the noise std on an image is ``sigma / 255``.

Example::

    g = torch.Generator().manual_seed(0)
    clean = load_dataset("Set12", limit=1)[0]         # (256, 256) float32 in [0, 1]
    noisy = add_noise(clean, 25.0, generator=g)       # noise std 25/255, not clipped
    patches = image_to_patches(noisy[None, None], 8)  # (1, 249*249, 64)
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
from pathlib import Path

import numpy as np
import pooch
import torch
import torch.nn.functional as TF
from PIL import Image

__all__ = [
    "DATASETS",
    "NOISE_KINDS",
    "cached_dataset",
    "clear_dataset_cache",
    "dataset_names",
    "MAX_SIGMA",
    "REGISTRY_PATH",
    "DataError",
    "registry",
    "data_dir",
    "fetch",
    "load_image",
    "load_dataset",
    "image_to_patches",
    "patches_to_image",
    "random_patches",
    "noise_std_map",
    "add_noise",
]

DATASETS = ("Train400", "Set12", "BSD68")
NOISE_KINDS = ("gaussian", "laplace", "uniform", "poisson-gaussian", "varying")
#: Largest noise level accepted (0-255 scale): four times the whole pixel range. Beyond it every
#: denoiser only sees noise, and squares of the values overflow float32 in the metrics.
MAX_SIGMA = 1000.0
#: Image modes :func:`load_image` accepts: 8-bit grayscale, as every registered image is.
IMAGE_MODES = ("L",)
REGISTRY_PATH = Path(__file__).resolve().parent.parent / "data" / "registry.txt"
_FIX = (
    "delete it and rerun to download it again, or set NELU_DATA to a folder "
    "holding the verified data (see data/README.md)"
)
_VERIFIED: set[tuple[str, int, int, str]] = set()  # (path, size, mtime_ns, sha256)


class DataError(ValueError):
    """A data file is unknown, missing and not downloadable, corrupt or unreadable."""


# ----------------------------------------------------------------------------- files


@functools.cache
def registry() -> dict[str, tuple[str, str]]:
    """Map each relative path to ``(sha256, url)``, read once from ``data/registry.txt``.

    Lines are ``relative/path sha256 url``; blank lines and ``#`` comments are skipped.
    The dict is shared by the process (tests patch URLs with ``monkeypatch.setitem``).

    >>> registry()["Set12/01.png"][1].endswith("/testsets/Set12/01.png")
    True
    """
    entries = {}
    for line in REGISTRY_PATH.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            rel, sha, url = line.split()
            entries[rel] = (sha.lower(), url)
    return entries


def data_dir() -> Path:
    """Folder holding the images: ``$NELU_DATA`` if set, else ``<repo>/data``.

    >>> data_dir()  # doctest: +SKIP
    PosixPath('/work/shared/data')
    """
    env = os.environ.get("NELU_DATA")
    return Path(env).expanduser() if env else REGISTRY_PATH.parent


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _verify(path: Path, rel: str, sha: str) -> None:
    """Check the SHA-256 of ``path``; cached per process on (path, size, mtime)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, sha)
    if key in _VERIFIED:
        return
    actual = _sha256(path)
    if actual != sha:
        raise DataError(
            f"{path} is corrupt: its SHA-256 is {actual}, the registry expects {sha} "
            f"for {rel}; {_FIX}"
        )
    _VERIFIED.add(key)


def fetch(relpath: str) -> Path:
    """Return the verified local file ``data_dir() / relpath``, downloading it if absent.

    ``relpath`` is a registry key such as ``"BSD68/test001.png"``. A present file is
    hashed (once per process while its size and mtime are unchanged); a missing one is
    downloaded with pooch into a temporary file, checked and only then moved in
    place, so a failed or corrupt download leaves no file behind. Every failure
    raises :class:`DataError` naming the file and the fix.

    >>> fetch("Set12/01.png").name  # doctest: +SKIP
    '01.png'
    """
    if relpath not in registry():
        raise DataError(f"{relpath!r} is not in the data registry {REGISTRY_PATH}")
    sha, url = registry()[relpath]
    path = data_dir() / relpath
    if not path.is_file():
        try:
            pooch.retrieve(
                url,
                known_hash=f"sha256:{sha}",
                path=path.parent,
                fname=path.name,
                downloader=pooch.HTTPDownloader(progressbar=False, timeout=60),
            )
        except Exception as exc:  # network, HTTP status, checksum, permissions
            # pooch wrote to a temporary file that it has removed: nothing is left behind.
            raise DataError(
                f"could not download {relpath} from {url} to {path}: "
                f"{type(exc).__name__}: {exc}. Check the internet connection and rerun, "
                "or set NELU_DATA to a folder holding the verified data (see data/README.md)"
            ) from exc
    _verify(path, relpath, sha)
    return path


def load_image(path: str | Path) -> torch.Tensor:
    """Read an 8-bit grayscale image as a float32 tensor (H, W) in [0, 1] (pixel / 255).

    Any other mode (RGB, 16-bit, palette, ...) is refused with a :class:`DataError`
    rather than converted: a silent conversion changes the pixel values (a 16-bit
    image clipped to 8 bits turns white).

    >>> load_image(fetch("Set12/01.png")).shape  # doctest: +SKIP
    torch.Size([256, 256])
    """
    try:
        with Image.open(path) as im:
            if im.mode not in IMAGE_MODES:
                raise DataError(f"the image {path} has mode {im.mode!r}; the data sets are 8-bit grayscale "
                                f"(mode 'L'): convert it, or {_FIX}")
            pixels = np.asarray(im, dtype=np.float32)
    except (OSError, SyntaxError, ValueError) as exc:  # PIL.UnidentifiedImageError is OSError
        if isinstance(exc, DataError):
            raise
        raise DataError(f"cannot read the image {path}: {exc}; {_FIX}") from exc
    return torch.from_numpy(pixels / 255.0)


def load_dataset(name: str, *, limit: int | None = None) -> list[torch.Tensor]:
    """Load a data set as a list of float32 tensors (H, W) in [0, 1], files sorted by name.

    ``name`` is one of :data:`DATASETS`; ``limit`` keeps only the first ``limit`` files.
    Files are fetched (and downloaded if missing) and verified first.

    >>> [im.shape for im in load_dataset("Set12", limit=2)]  # doctest: +SKIP
    [torch.Size([256, 256]), torch.Size([256, 256])]
    """
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; valid names are {', '.join(DATASETS)}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ValueError(f"limit must be a non-negative int or None, got {limit!r}")
    files = sorted(rel for rel in registry() if rel.split("/", 1)[0] == name)
    return [load_image(fetch(rel)) for rel in files[:limit]]


@functools.lru_cache(maxsize=8)
def _cached(name: str, limit: int | None) -> tuple[torch.Tensor, ...]:
    return tuple(load_dataset(name, limit=limit))


def cached_dataset(name: str, limit: int | None = None) -> list[torch.Tensor]:
    """:func:`load_dataset`, cached per process (the tensors are shared: never modify them).

    :func:`clear_dataset_cache` empties the cache (after ``NELU_DATA`` changes, say).
    """
    return list(_cached(name, limit))


def clear_dataset_cache() -> None:
    """Forget the images :func:`cached_dataset` holds."""
    _cached.cache_clear()


def dataset_names(name: str, limit: int | None = None) -> list[str]:
    """File names of a data set in :func:`load_dataset` order.

    >>> dataset_names("Set12", 2)
    ['01.png', '02.png']
    """
    files = sorted(rel for rel in registry() if rel.split("/", 1)[0] == name)
    return [f.split("/", 1)[1] for f in files[:limit]]


# --------------------------------------------------------------------------- patches


def _positions(n: int, patch: int, stride: int) -> torch.Tensor:
    """Top/left corners along an axis of length n: 0, s, 2s, ... plus n - patch if missed."""
    pos = torch.arange(0, n - patch + 1, stride)
    if pos[-1] != n - patch:
        pos = torch.cat([pos, torch.tensor([n - patch])])
    return pos


def _check_patch_args(size: tuple[int, int], patch: int, stride: int) -> None:
    if not 1 <= patch <= min(size):
        raise ValueError(
            f"patch must be in [1, {min(size)}] for images of size {size}, got {patch}"
        )
    if not 1 <= stride <= patch:
        raise ValueError(
            f"stride must be in [1, patch={patch}] so every pixel is covered, got {stride}"
        )


def image_to_patches(images: torch.Tensor, patch: int, stride: int = 1) -> torch.Tensor:
    """All ``patch`` x ``patch`` patches with step ``stride``: (B, 1, H, W) -> (B, L, patch**2).

    Top-left corners are ``0, stride, 2*stride, ...`` along each axis, plus the last
    position ``H - patch`` (``W - patch``) when the step misses it, so every pixel is
    covered without padding. Patches are ordered row-major over corners, pixels
    row-major inside a patch (as ``torch.nn.functional.unfold``, which is used when the
    corners form a regular grid; otherwise the same patches are gathered by index).

    >>> image_to_patches(torch.zeros(2, 1, 10, 9), 4, stride=3).shape  # corners 0,3,6 x 0,3,5
    torch.Size([2, 9, 16])
    """
    if images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(f"images must have shape (B, 1, H, W), got {tuple(images.shape)}")
    B, _, H, W = images.shape
    _check_patch_args((H, W), patch, stride)
    rows, cols = _positions(H, patch, stride), _positions(W, patch, stride)
    if (H - patch) % stride == 0 and (W - patch) % stride == 0:
        return TF.unfold(images, patch, stride=stride).transpose(1, 2).contiguous()
    offsets = torch.arange(patch)
    r = (rows[:, None] + offsets).to(images.device)  # (nR, p) pixel rows of each patch row
    c = (cols[:, None] + offsets).to(images.device)  # (nC, p)
    blocks = images[:, 0][:, r][..., c]  # (B, nR, p, nC, p)
    return blocks.permute(0, 1, 3, 2, 4).reshape(B, len(rows) * len(cols), patch * patch)


def patches_to_image(
    patches: torch.Tensor, size: tuple[int, int], patch: int, stride: int = 1
) -> torch.Tensor:
    """Inverse of :func:`image_to_patches`: (B, L, patch**2) -> (B, 1, H, W), ``size = (H, W)``.

    Each pixel is the average of the patch values covering it, so
    ``patches_to_image(image_to_patches(x, p, s), x.shape[-2:], p, s)`` equals ``x``
    up to float rounding.

    >>> x = torch.rand(1, 1, 10, 9)
    >>> torch.allclose(patches_to_image(image_to_patches(x, 4, 3), (10, 9), 4, 3), x)
    True
    """
    H, W = size
    _check_patch_args((H, W), patch, stride)
    rows, cols = _positions(H, patch, stride), _positions(W, patch, stride)
    nR, nC = len(rows), len(cols)
    if patches.ndim != 3 or patches.shape[1:] != (nR * nC, patch * patch):
        raise ValueError(
            f"patches must have shape (B, {nR * nC}, {patch * patch}) for size {size}, "
            f"patch {patch}, stride {stride}; got {tuple(patches.shape)}"
        )
    B = patches.shape[0]
    offsets = torch.arange(patch)
    r, c = (rows[:, None] + offsets).flatten(), (cols[:, None] + offsets).flatten()
    # Pixel (i, j) is covered count_r[i] * count_c[j] times.
    counts = torch.outer(torch.bincount(r, minlength=H), torch.bincount(c, minlength=W))
    counts = counts.to(device=patches.device, dtype=patches.dtype)
    if (H - patch) % stride == 0 and (W - patch) % stride == 0:
        sums = TF.fold(patches.transpose(1, 2), (H, W), patch, stride=stride)
    else:  # scatter-add columns then rows (index_add_ sums repeated indices)
        blocks = patches.reshape(B, nR, nC, patch, patch).permute(0, 1, 3, 2, 4)
        blocks = blocks.reshape(B, nR, patch, nC * patch)
        cols_summed = patches.new_zeros(B, nR, patch, W).index_add_(3, c.to(patches.device), blocks)
        sums = patches.new_zeros(B, H, W).index_add_(
            1, r.to(patches.device), cols_summed.reshape(B, nR * patch, W)
        )[:, None]
    return sums / counts


def random_patches(
    images: list[torch.Tensor], n: int, patch: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Draw ``n`` patches at random: an image uniformly, then a position uniformly in it.

    ``images`` are (H, W) tensors (sizes may differ, each at least ``patch``). Returns
    (n, patch**2), pixels row-major. Vectorized: the images are concatenated once and
    the patches gathered by index arithmetic. Deterministic given ``generator``.

    >>> g = torch.Generator().manual_seed(0)
    >>> random_patches([torch.rand(180, 180)] * 3, 1000, 8, g).shape
    torch.Size([1000, 64])
    """
    if n < 0 or len(images) == 0:
        raise ValueError(f"need n >= 0 and at least one image, got n={n}, {len(images)} images")
    shapes = torch.tensor([im.shape[-2:] for im in images])  # (N, 2)
    if any(im.ndim != 2 for im in images) or patch < 1 or (shapes < patch).any():
        raise ValueError(f"images must be 2-D and at least patch={patch} pixels on each side")
    flat = torch.cat([im.reshape(-1) for im in images])
    starts = torch.cumsum(shapes.prod(1), 0) - shapes.prod(1)  # flat offset of each image
    u = torch.rand(n, 3, generator=generator, dtype=torch.float64)
    k = (u[:, 0] * len(images)).long().clamp_max(len(images) - 1)
    H, W = shapes[k, 0], shapes[k, 1]
    top = (u[:, 1] * (H - patch + 1)).long().clamp_max(H - patch)
    left = (u[:, 2] * (W - patch + 1)).long().clamp_max(W - patch)
    offsets = torch.arange(patch)
    index = (
        (starts[k] + top * W + left)[:, None, None]
        + offsets[None, :, None] * W[:, None, None]
        + offsets[None, None, :]
    )  # (n, p, p)
    return flat[index.reshape(n, patch * patch).to(flat.device)]


# ----------------------------------------------------------------------------- noise


def _sigma_tensor(x: torch.Tensor, sigma: float | torch.Tensor, kind: str) -> torch.Tensor:
    if kind not in NOISE_KINDS:
        raise ValueError(f"kind must be one of {NOISE_KINDS}, got kind={kind!r}")
    if not torch.is_floating_point(x):
        raise ValueError(f"x must be a floating-point tensor, got dtype {x.dtype}")
    s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    if not torch.isfinite(s).all() or (s < 0).any() or (s > MAX_SIGMA).any():
        raise ValueError(f"sigma must be in [0, {MAX_SIGMA:g}] (0-255 scale), got sigma={sigma}")
    try:
        shape = torch.broadcast_shapes(s.shape, x.shape)
    except RuntimeError:
        shape = None
    if shape != x.shape:
        raise ValueError(
            f"sigma of shape {tuple(s.shape)} does not broadcast to x of shape {tuple(x.shape)}"
        )
    if kind == "varying" and x.ndim == 0:
        raise ValueError("kind='varying' needs x with at least one (width) dimension")
    return s / 255.0


def _ramp(width: int, like: torch.Tensor) -> torch.Tensor:
    """0.5 -> 1.5 linearly over the last axis (mean exactly 1); 1.0 when width == 1."""
    if width == 1:
        return torch.ones(1, dtype=like.dtype, device=like.device)
    return torch.linspace(0.5, 1.5, width, dtype=like.dtype, device=like.device)


def noise_std_map(
    x: torch.Tensor, sigma: float | torch.Tensor, *, kind: str = "gaussian"
) -> torch.Tensor:
    """Per-pixel std (image scale, [0, 1]) of :func:`add_noise`'s noise; same shape as x.

    * gaussian, laplace, uniform: ``sigma / 255`` everywhere;
    * poisson-gaussian: ``sqrt(a * x + b**2)`` with ``a = s**2``, ``b**2 = s**2 / 2``,
      ``s = sigma / 255``, i.e. ``s * sqrt(x + 1/2)``, which is ``s`` at mid-grey 0.5;
    * varying: ``sigma / 255`` times a ramp from 0.5 (first column) to 1.5 (last
      column) along the last axis, mean ``sigma / 255``.

    >>> noise_std_map(torch.zeros(1, 3), 25.5, kind="varying")
    tensor([[0.0500, 0.1000, 0.1500]])
    """
    s = _sigma_tensor(x, sigma, kind)
    if kind == "poisson-gaussian":
        return s * torch.sqrt(x.clamp_min(0) + 0.5)
    if kind == "varying":
        s = s * _ramp(x.shape[-1], x)
    return s.expand(x.shape).clone()


def add_noise(
    x: torch.Tensor,
    sigma: float | torch.Tensor,
    *,
    kind: str = "gaussian",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Return ``x`` plus zero-mean noise of level ``sigma`` (0-255 scale); x in [0, 1], any shape.

    ``sigma`` is a float or a tensor broadcastable to ``x`` (per-image levels for a
    batch (B, 1, H, W) as shape (B, 1, 1, 1)). With ``s = sigma / 255``:

    * ``gaussian``: N(0, s**2);
    * ``laplace``: Laplace with scale ``s / sqrt(2)`` (std s);
    * ``uniform``: U(-sqrt(3) s, sqrt(3) s) (std s);
    * ``poisson-gaussian``: ``y = a * Poisson(x / a) + N(0, b**2)`` with ``a = s**2`` and
      ``b**2 = s**2 / 2``, so Var(y | x) = ``s**2 (x + 1/2)``: half Poisson, half Gaussian
      at mid-grey 0.5, where the std is s. Needs ``x >= 0``;
    * ``varying``: Gaussian with std ``s`` times a linear ramp from 0.5 at the first
      column to 1.5 at the last (last axis), mean level s (see :func:`noise_std_map`).

    The result is not clipped to [0, 1]: clipping would bias the noise and change its
    distribution, so the noise model (and the std the denoiser is told) stays exact.
    Deterministic given ``generator``.

    >>> g = torch.Generator().manual_seed(0)
    >>> y = add_noise(torch.full((1000, 1000), 0.5), 25.0, generator=g)
    >>> round(float((y - 0.5).std() * 255), 1)
    25.0
    """
    std = noise_std_map(x, sigma, kind=kind)
    opts = dict(generator=generator, dtype=x.dtype, device=x.device)
    if kind in ("gaussian", "varying"):
        unit = torch.randn(x.shape, **opts)
    elif kind == "laplace":  # difference of two Exp(1) is Laplace(1), std sqrt(2)
        e = torch.empty((2, *x.shape), dtype=x.dtype, device=x.device)
        e.exponential_(generator=generator)
        unit = (e[0] - e[1]) / math.sqrt(2.0)
    elif kind == "uniform":
        unit = (2.0 * torch.rand(x.shape, **opts) - 1.0) * math.sqrt(3.0)
    else:  # poisson-gaussian
        if (x < 0).any():
            raise ValueError("kind='poisson-gaussian' needs x >= 0 (Poisson intensities)")
        a = (_sigma_tensor(x, sigma, kind) ** 2).expand(x.shape)  # Poisson gain (image units)
        counts = torch.poisson(torch.where(a > 0, x / a, 0.0), generator=generator)
        shot = torch.where(a > 0, a * counts - x, 0.0)  # sigma 0: no noise at all
        return x + shot + torch.sqrt(a / 2) * torch.randn(x.shape, **opts)
    return x + std * unit
