"""Measuring denoisers: seeded noisy images, PSNR/SSIM over images and noise levels, timing.

Every experiment evaluates on the same noisy images: image ``i`` (load order) at level
``s`` gets the noise of the generator seeded with :func:`noise_seed` ``(seed, i, s)``,
whatever the model and however often it runs (:func:`noisy_image`).

>>> noise_seed(0, 3, 25.0) == noise_seed(0, 3, 25)
True
"""

from __future__ import annotations

import math
import statistics
import time
import zlib
from collections.abc import Callable

import torch
from torch import nn

from . import data as nd
from .metrics import psnr, ssim
from .models import Denoiser

__all__ = ["noise_seed", "noisy_image", "evaluate_images", "result_rows", "median_time"]


def noise_seed(seed: int, image: int, sigma: float) -> int:
    """Seed of the evaluation noise of image ``image`` at level ``sigma`` (stable across runs)."""
    return zlib.crc32(f"{seed}/{image}/{float(sigma):.6g}".encode())


def noisy_image(clean: torch.Tensor, index: int, sigma: float, seed: int = 0, *, kind: str = "gaussian") -> torch.Tensor:
    """The evaluation's noisy version of image ``index`` (load order) at level ``sigma``.

    Exactly what :func:`evaluate_images` feeds a denoiser: noise of the model ``kind``
    (:func:`nelu.data.add_noise`) from the generator seeded with
    ``noise_seed(seed, index, sigma)``.

    >>> y = noisy_image(torch.zeros(4, 4), 0, 25.0)
    >>> y.shape, y.dtype
    (torch.Size([4, 4]), torch.float32)
    """
    gen = torch.Generator().manual_seed(noise_seed(seed, index, sigma))
    return nd.add_noise(clean, sigma, kind=kind, generator=gen)


@torch.no_grad()
def evaluate_images(
    denoiser: nn.Module,
    images: list[torch.Tensor],
    sigmas: list[float],
    *,
    kind: str = "gaussian",
    seed: int = 0,
    metrics: tuple[str, ...] = ("psnr", "ssim"),
    device: str | torch.device = "cpu",
    extra: dict | None = None,
) -> dict:
    """PSNR/SSIM of ``denoiser`` on every image at every ``sigma`` (0-255 scale).

    The noisy version of image ``i`` at level ``s`` is :func:`noisy_image` ``(clean, i, s,
    seed, kind=kind)``: identical for every model and every run. All levels of one image
    are denoised in one batch ``(len(sigmas), 1, H, W)``; a :class:`nelu.models.Denoiser`
    is also given the levels (``sigma=``), which only sigma-aware denoisers (BM3D) use.

    ``extra`` maps more metric names to functions ``f(clean, estimate)`` of two
    ``(H, W)`` tensors (e.g. a PSNR on part of the image); their values are stored like
    the others.

    Returns ``{"sigmas": [...], "psnr": {sigma: [per image]}, "ssim": {...},
    "noisy_psnr": {...}}`` with float keys.
    """
    for s in sigmas:
        if not (math.isfinite(s) and 0 <= s <= nd.MAX_SIGMA):
            raise ValueError(f"sigma must be in [0, {nd.MAX_SIGMA:g}] (0-255 scale), got {s}")
    result: dict = {"sigmas": list(sigmas), "noisy_psnr": {s: [] for s in sigmas}}
    for m in metrics:
        result[m] = {s: [] for s in sigmas}
    fns = {"psnr": psnr, "ssim": ssim}
    extra = dict(extra or {})
    if set(extra) & set(metrics) or "noisy_psnr" in extra:
        raise ValueError(f"extra metric names {sorted(extra)} clash with {metrics} or noisy_psnr")
    for m in extra:
        result[m] = {s: [] for s in sigmas}
    denoiser = denoiser.eval()
    for i, clean in enumerate(images):
        noisy = torch.stack([noisy_image(clean, i, s, seed, kind=kind) for s in sigmas])[:, None]
        if isinstance(denoiser, Denoiser):
            est = denoiser(noisy.to(device), sigma=torch.tensor(sigmas, dtype=torch.float64)).cpu()
        else:
            est = denoiser(noisy.to(device)).cpu()
        for j, s in enumerate(sigmas):
            result["noisy_psnr"][s].append(psnr(clean, noisy[j, 0]))
            for m in metrics:
                result[m][s].append(fns[m](clean, est[j, 0]))
            for m, fn in extra.items():
                result[m][s].append(fn(clean, est[j, 0]))
    return result


def result_rows(res: dict, names: list[str]) -> tuple[list[dict], list[dict]]:
    """:func:`evaluate_images` results as rows: ``(summary per sigma, one row per image and sigma)``.

    Summary rows hold the means over images and the sample standard deviations.
    """
    def avg(v):
        return float(sum(v) / len(v)) if v else float("nan")

    def sd(v):
        return float(statistics.stdev(v)) if len(v) > 1 else 0.0

    keys = [k for k in ("psnr", "ssim") if k in res]
    summary = [{"sigma": s, "noisy_psnr_mean": avg(res["noisy_psnr"][s]),
                **{f"{k}_{stat}": f(res[k][s]) for k in keys for stat, f in (("mean", avg), ("std", sd))}}
               for s in res["sigmas"]]
    per_image = [{"image": name, "sigma": s, "noisy_psnr": res["noisy_psnr"][s][i], **{k: res[k][s][i] for k in keys}}
                 for s in res["sigmas"] for i, name in enumerate(names)]
    return summary, per_image


@torch.no_grad()
def median_time(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median wall-clock seconds of ``fn()`` over ``repeats`` calls, after ``warmup`` calls.

    >>> median_time(lambda: sum(range(100)), 3) < 1.0
    True
    """
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(max(1, repeats)):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)
