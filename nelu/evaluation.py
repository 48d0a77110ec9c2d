"""Measuring denoisers: seeded noisy images, PSNR/SSIM over images and noise levels, timing.

Every experiment evaluates on the same noisy images: image ``i`` (load order) at level
``s`` gets the noise of the generator seeded with :func:`noise_seed` ``(seed, i, s)``,
whatever the model and however often it runs (:func:`noisy_image`).

Images are independent, so :func:`evaluate_images` can spread them over ``workers``
processes (:func:`parallel_map`: single-threaded workers, kept for the next call);
every number is then bitwise the one a single-threaded run in this process gives.

>>> noise_seed(0, 3, 25.0) == noise_seed(0, 3, 25)
True
"""

from __future__ import annotations

import atexit
import concurrent.futures as cf
import copy
import math
import multiprocessing
import os
import statistics
import time
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures.process import BrokenProcessPool

import torch
from torch import nn
from torch.nn.utils import parametrize

from . import data as nd
from .metrics import psnr, ssim
from .models import Denoiser

__all__ = ["noise_seed", "noisy_image", "evaluate_images", "result_rows", "median_time", "cores", "default_workers",
           "parallel_map", "picklable"]


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


def cores() -> int:
    """The CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_workers(tasks: int, workers: int | None = None) -> int:
    """``workers`` (None: every core) capped by the number of ``tasks``, at least 1.

    >>> default_workers(1), default_workers(5, 2), default_workers(0, 4)
    (1, 2, 1)
    """
    return max(1, min(cores() if workers is None else workers, tasks))


def _single_threaded() -> None:
    torch.set_num_threads(1)


_POOLS: dict[int, cf.ProcessPoolExecutor] = {}


def _pool(workers: int) -> cf.ProcessPoolExecutor:
    """The pool of ``workers`` single-threaded processes, started once and kept for later calls."""
    if workers not in _POOLS:
        # spawn: no fork of a process holding torch's thread pools.
        _POOLS[workers] = cf.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                                 initializer=_single_threaded)
    return _POOLS[workers]


@atexit.register
def _shutdown_pools() -> None:
    while _POOLS:
        _POOLS.popitem()[1].shutdown(cancel_futures=True)


def parallel_map(fn: Callable, tasks: Sequence, workers: int = 1, each: Callable | None = None) -> list:
    """``[fn(t) for t in tasks]``, in order, on ``workers`` processes (here when ``workers <= 1``).

    The workers run one torch thread each, so a task computes bitwise what it computes
    here on one thread, whatever the number of workers. ``fn`` and the tasks must be
    picklable (``fn`` a module-level function); the processes (spawned, not forked: a
    script that calls this must guard its main code with ``if __name__ == "__main__":``)
    are kept for the next call with the same ``workers``. An exception of a task is raised
    here. ``each``, if given, is called with every result as it arrives, in order.

    >>> parallel_map(abs, [-2, 3], workers=1)
    [2, 3]
    """
    tasks, out = list(tasks), []
    results = (fn(t) for t in tasks) if workers <= 1 or len(tasks) <= 1 else None
    try:
        for r in results if results is not None else _pool(workers).map(fn, tasks):
            out.append(r)
            if each is not None:
                each(r)
        return out
    except BrokenProcessPool:
        _POOLS.pop(workers).shutdown(cancel_futures=True)  # a worker died: a fresh pool next time
        raise


def picklable(module: nn.Module) -> nn.Module:
    """``module``, or a copy of it with every parametrization replaced by its current value.

    Parametrized modules (:class:`nelu.nn.NeLU` keeps ``lam = exp(raw)``) cannot be
    pickled; the copy holds the same values as plain parameters, so it computes bitwise
    the same outputs.

    >>> from nelu.nn import NeLU
    >>> import pickle
    >>> layer = picklable(NeLU(0.2))
    >>> pickle.loads(pickle.dumps(layer)).lam.item() == NeLU(0.2).lam.item()
    True
    """
    if not any(parametrize.is_parametrized(m) for m in module.modules()):
        return module
    module = copy.deepcopy(module)
    for m in [m for m in module.modules() if parametrize.is_parametrized(m)]:
        # The copy shares the class torch made for the parametrization, whose properties the
        # removal deletes: give it a class of its own, so that the original keeps working.
        cls = type(m)
        m.__class__ = type(cls.__name__, cls.__bases__, dict(cls.__dict__))
        for name in list(m.parametrizations):
            parametrize.remove_parametrizations(m, name, leave_parametrized=True)
    return module


def _evaluate_one(task: tuple) -> dict:
    """The metrics of one image at every level (one task of :func:`evaluate_images`)."""
    denoiser, i, clean, sigmas, kind, seed, metrics, extra, device = task
    fns = {"psnr": psnr, "ssim": ssim}
    with torch.no_grad():
        noisy = torch.stack([noisy_image(clean, i, s, seed, kind=kind) for s in sigmas])[:, None]
        if isinstance(denoiser, Denoiser):
            est = denoiser(noisy.to(device), sigma=torch.tensor(sigmas, dtype=torch.float64)).cpu()
        else:
            est = denoiser(noisy.to(device)).cpu()
    out = {"noisy_psnr": [psnr(clean, noisy[j, 0]) for j in range(len(sigmas))]}
    for m in metrics:
        out[m] = [fns[m](clean, est[j, 0]) for j in range(len(sigmas))]
    for m, fn in extra.items():
        out[m] = [fn(clean, est[j, 0]) for j in range(len(sigmas))]
    return out


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
    workers: int | None = 1,
) -> dict:
    """PSNR/SSIM of ``denoiser`` on every image at every ``sigma`` (0-255 scale).

    The noisy version of image ``i`` at level ``s`` is :func:`noisy_image` ``(clean, i, s,
    seed, kind=kind)``: identical for every model and every run. All levels of one image
    are denoised in one batch ``(len(sigmas), 1, H, W)``; a :class:`nelu.models.Denoiser`
    is also given the levels (``sigma=``), which only sigma-aware denoisers (BM3D) use.

    ``extra`` maps more metric names to functions ``f(clean, estimate)`` of two
    ``(H, W)`` tensors (e.g. a PSNR on part of the image); their values are stored like
    the others.

    ``workers > 1`` (None: every core) spreads the images over that many single-threaded
    processes (:func:`parallel_map`; on CPU only, at most one per image): the denoiser
    (:func:`picklable` copies it), the images and the ``extra`` functions must then be
    picklable, and every number is bitwise what ``workers=1`` gives on one thread
    (``torch.set_num_threads(1)``).

    Returns ``{"sigmas": [...], "psnr": {sigma: [per image]}, "ssim": {...},
    "noisy_psnr": {...}}`` with float keys.
    """
    for s in sigmas:
        if not (math.isfinite(s) and 0 <= s <= nd.MAX_SIGMA):
            raise ValueError(f"sigma must be in [0, {nd.MAX_SIGMA:g}] (0-255 scale), got {s}")
    result: dict = {"sigmas": list(sigmas), "noisy_psnr": {s: [] for s in sigmas}}
    for m in metrics:
        result[m] = {s: [] for s in sigmas}
    unknown = set(metrics) - {"psnr", "ssim"}
    if unknown:
        raise ValueError(f"unknown metrics {sorted(unknown)}; valid: psnr, ssim")
    extra = dict(extra or {})
    if set(extra) & set(metrics) or "noisy_psnr" in extra:
        raise ValueError(f"extra metric names {sorted(extra)} clash with {metrics} or noisy_psnr")
    for m in extra:
        result[m] = {s: [] for s in sigmas}
    denoiser = denoiser.eval()
    workers = default_workers(len(images), workers) if torch.device(device).type == "cpu" else 1
    if workers > 1:
        denoiser = picklable(denoiser)
    tasks = [(denoiser, i, clean, list(sigmas), kind, seed, tuple(metrics), extra, device)
             for i, clean in enumerate(images)]
    for per_image in parallel_map(_evaluate_one, tasks, workers):
        for name, values in per_image.items():
            for s, v in zip(sigmas, values):
                result[name][s].append(v)
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
