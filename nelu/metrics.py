"""Image quality metrics (PSNR, SSIM), computed by scikit-image.

Images are (H, W) tensors or arrays with values in [0, 1] (``data_range=1``).
The estimate is clipped to [0, 1] before measuring, as a displayed or saved
8-bit image would be (noisy images are not clipped by :func:`nelu.data.add_noise`,
so without this a noisy input could score against values no image can take).
The clean image is not changed. No rounding to 8 bits is done.

Example::

    >>> clean = torch.full((64, 64), 0.5)
    >>> round(psnr(clean, clean + 0.1), 2)   # 10 log10(1 / 0.1**2)
    20.0
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

__all__ = ["psnr", "ssim", "psnr_batch", "ssim_batch"]

ImageLike = torch.Tensor | np.ndarray


def _pair(clean: ImageLike, estimate: ImageLike) -> tuple[np.ndarray, np.ndarray]:
    """Both images as float64 (H, W) arrays, leading singleton axes dropped, estimate clipped."""
    arrays = []
    for name, img in (("clean", clean), ("estimate", estimate)):
        if isinstance(img, torch.Tensor):
            img = img.detach().cpu().double().numpy()
        a = np.asarray(img, dtype=np.float64)
        while a.ndim > 2 and a.shape[0] == 1:
            a = a[0]
        if a.ndim != 2:
            raise ValueError(f"{name} must be an (H, W) image, got shape {a.shape}")
        arrays.append(a)
    if arrays[0].shape != arrays[1].shape:
        raise ValueError(f"clean {arrays[0].shape} and estimate {arrays[1].shape} differ in shape")
    return arrays[0], np.clip(arrays[1], 0.0, 1.0)


def psnr(clean: ImageLike, estimate: ImageLike) -> float:
    """PSNR in dB of ``estimate`` (clipped to [0, 1]) against ``clean``, peak 1.

    ``10 log10(1 / MSE)``, by ``skimage.metrics.peak_signal_noise_ratio``; ``inf`` when equal.

    >>> psnr(np.zeros((8, 8)), np.full((8, 8), 0.01))
    40.0
    """
    c, e = _pair(clean, estimate)
    with np.errstate(divide="ignore"):
        return float(peak_signal_noise_ratio(c, e, data_range=1.0))


def ssim(clean: ImageLike, estimate: ImageLike) -> float:
    """SSIM of ``estimate`` (clipped to [0, 1]) against ``clean``, in [-1, 1], 1 when equal.

    ``skimage.metrics.structural_similarity`` with the settings of Wang et al. (2004)
    used by the denoising literature: 11x11 Gaussian window of std 1.5, population
    covariances, K1 = 0.01, K2 = 0.03, ``data_range=1``.

    >>> ssim(np.eye(16), np.eye(16))
    1.0
    """
    c, e = _pair(clean, estimate)
    return float(
        structural_similarity(
            c, e, data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
        )
    )


def _batch(metric, clean, estimate) -> list[float]:
    if len(clean) != len(estimate):
        raise ValueError(f"clean has {len(clean)} images, estimate {len(estimate)}")
    return [metric(c, e) for c, e in zip(clean, estimate)]


def psnr_batch(
    clean: torch.Tensor | Sequence[ImageLike], estimate: torch.Tensor | Sequence[ImageLike]
) -> list[float]:
    """PSNR of each pair: (B, 1, H, W) tensors, or lists of (H, W) images of any sizes.

    >>> psnr_batch(torch.zeros(2, 1, 8, 8), torch.full((2, 1, 8, 8), 0.1, dtype=torch.float64))
    [20.0, 20.0]
    """
    return _batch(psnr, clean, estimate)


def ssim_batch(
    clean: torch.Tensor | Sequence[ImageLike], estimate: torch.Tensor | Sequence[ImageLike]
) -> list[float]:
    """SSIM of each pair: (B, 1, H, W) tensors, or lists of (H, W) images of any sizes.

    >>> ssim_batch([torch.eye(16)], [torch.eye(16)])
    [1.0]
    """
    return _batch(ssim, clean, estimate)
