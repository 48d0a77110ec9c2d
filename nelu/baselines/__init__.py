"""Baselines a practitioner would reach for: BM3D and a small DnCNN-style network.

* **BM3D** {Dabov et al. 2007}: :func:`bm3d_denoise` wraps the ``bm3d`` package
  (profile ``'np'``, both stages, one thread per call, so results are deterministic);
  :func:`bm3d_run` runs many calls on the evaluation's noisy images in worker processes
  (every core by default).
* **DnCNN-style network** {Zhang et al. 2017}: :class:`SmallDnCNN`, ``depth`` 3x3
  convolutions with ``channels`` channels, batch normalization and ReLU in between,
  *residual learning* (the network predicts the noise; the output is ``y - net(y)``),
  trained at one sigma on random Train400 patches with fresh noise per batch
  (:func:`train_dncnn`: MSE, Adam, warm-up + cosine schedule of
  :func:`nelu.training.lr_factor`; the checkpoint is written atomically and reused when its
  config matches).

The experiment that measures them on BSD68 is :mod:`nelu.experiments.baselines`
(``python -m nelu.baselines`` or ``python -m nelu reproduce baselines``).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import data as nd
from ..data import cached_dataset
from ..evaluation import default_workers, noisy_image, parallel_map
from ..metrics import psnr, ssim
from ..models import CheckpointError, Denoiser, read_checkpoint
from ..training import fit, open_run, torch_settings

__all__ = [
    "PUBLISHED_BM3D_BSD68",
    "FIXED_SIGMA",
    "DnCNNConfig",
    "SmallDnCNN",
    "BM3D",
    "BaselineError",
    "center_crop",
    "require_bm3d",
    "bm3d_denoise",
    "bm3d_run",
    "train_dncnn",
    "load_dncnn",
    "load_dncnn_checkpoint",
]

#: Published mean PSNR (dB) of BM3D on BSD68, by sigma (Zhang et al. 2017, Table II).
PUBLISHED_BM3D_BSD68 = {15.0: 31.07, 25.0: 28.57, 50.0: 25.62}
#: The noise level a "fixed-sigma" BM3D is told, whatever the true level.
FIXED_SIGMA = 25.0
#: BM3D settings profile of the ``bm3d`` package (its default, "normal profile").
BM3D_PROFILE = "np"
DNCNN_FORMAT = "nelu-dncnn-checkpoint"
DNCNN_VERSION = 1


class BaselineError(ValueError):
    """A user mistake: bad option, unwritable output, missing optional package."""


@dataclass
class DnCNNConfig:
    """Architecture and training of the DnCNN-style network."""

    depth: int = 8  # convolution layers
    channels: int = 32
    batch_norm: bool = True
    sigma: float = 25.0  # training noise level (0-255 scale)
    patch: int = 32  # training patch side (receptive field: 2 * depth + 1)
    batch_size: int = 32
    steps: int = 300
    lr: float = 2e-3
    warmup: float = 0.05
    min_lr_factor: float = 0.02
    pool_size: int = 20_000  # clean Train400 patches drawn once
    train_images: int | None = None  # first N Train400 images (None: all 400)
    augment: bool = True  # one of the 8 flips/rotations per batch
    seed: int = 0
    threads: int = 2

    def validate(self) -> "DnCNNConfig":
        limits = {"depth": (2, 64), "channels": (1, 512), "patch": (1, 512), "batch_size": (1, 4096),
                  "steps": (1, 10**8), "pool_size": (1, 10**7), "threads": (1, 1024), "seed": (0, 2**32 - 1)}
        for name, (lo, hi) in limits.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                raise BaselineError(f"DnCNN {name} must be an integer in [{lo}, {hi}], got {value!r}")
        for name, value, lo, hi in (("sigma", self.sigma, 0, nd.MAX_SIGMA), ("lr", self.lr, 0, 10),
                                    ("warmup", self.warmup, 0, 1), ("min_lr_factor", self.min_lr_factor, 0, 1)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi \
                    or not math.isfinite(value):
                raise BaselineError(f"DnCNN {name} must be a finite number in [{lo}, {hi:g}], got {value!r}")
        if not self.lr > 0 or self.warmup >= 1:
            raise BaselineError(f"need lr > 0 and warmup < 1, got {self.lr}, {self.warmup}")
        if self.pool_size * self.patch**2 * 4 > 8 * 2**30:
            raise BaselineError("the DnCNN patch pool would exceed 8 GiB: lower pool_size or patch")
        return self


# ------------------------------------------------------------------------------ BM3D


class BM3D(Denoiser):
    """BM3D as a :class:`nelu.models.Denoiser`: it must be told the noise level.

    ``BM3D()(noisy, sigma=25.0)`` runs :func:`bm3d_denoise` on each image of the batch
    with its level (one level, or one per image); without ``sigma`` it refuses to run.
    """

    needs_sigma = True

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor | None) -> torch.Tensor:
        out = [torch.from_numpy(bm3d_denoise(x[i, 0], float(sigma[i]))) for i in range(x.shape[0])]
        return torch.stack(out)[:, None].to(dtype=x.dtype, device=x.device)


def center_crop(image: torch.Tensor, crop: int | None) -> torch.Tensor:
    """Centre crop of side ``crop`` (the whole image when None)."""
    if crop is None:
        return image
    H, W = image.shape[-2:]
    top, left = (H - crop) // 2, (W - crop) // 2
    return image[..., top:top + crop, left:left + crop]


def require_bm3d():
    try:
        import bm3d
    except ImportError as exc:
        raise BaselineError(
            f"the bm3d package is needed for the BM3D baseline ({exc}); install it with "
            "'pip install bm3d==4.0.3' or 'pip install -e .[baselines]'"
        ) from None
    return bm3d


def bm3d_denoise(noisy: torch.Tensor | np.ndarray, sigma: float) -> np.ndarray:
    """BM3D estimate (float64 (H, W) array) of a noisy image in [0, 1] with noise ``sigma`` (0-255).

    The ``bm3d`` package's default profile ``'np'``, both stages (hard thresholding,
    then Wiener filtering), on one thread (its multi-threaded aggregation is not
    bitwise reproducible).
    """
    bm3d = require_bm3d()
    profile = bm3d.BM3DProfile()
    profile.num_threads = 1
    z = noisy.detach().cpu().double().numpy() if isinstance(noisy, torch.Tensor) else np.asarray(noisy, np.float64)
    return np.asarray(bm3d.bm3d(z, sigma / 255.0, profile=profile), dtype=np.float64)


def _bm3d_task(task: tuple) -> dict:
    """One BM3D call of a run: image ``index`` at noise ``sigma``, told ``assumed``."""
    index, sigma, assumed, crop, seed = task
    clean_full = cached_dataset("BSD68")[index]
    noisy = center_crop(noisy_image(clean_full, index, sigma, seed), crop)
    clean = center_crop(clean_full, crop)
    t, c = time.perf_counter(), time.process_time()
    est = bm3d_denoise(noisy, assumed)
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    return {"index": index, "test_sigma": sigma, "assumed_sigma": assumed, "noisy_psnr": psnr(clean, noisy),
            "psnr": psnr(clean, est), "ssim": ssim(clean, est), "wall_s": wall, "cpu_s": cpu}


def bm3d_run(tasks: list[tuple], workers: int | None = None, log=None) -> list[dict]:
    """Run BM3D tasks ``(index, sigma, assumed_sigma, crop, seed)``, in order, on ``workers`` processes.

    ``workers``: None for every core (capped by the number of tasks); each call runs on one
    thread (:func:`nelu.evaluation.parallel_map`), so the results do not depend on it.
    """
    require_bm3d()
    done, t0 = [0], time.perf_counter()

    def note(r: dict) -> None:
        done[0] += 1
        if log and (done[0] % 20 == 0 or done[0] == len(tasks)):
            log(f"bm3d: {done[0]}/{len(tasks)} calls, {time.perf_counter() - t0:.0f}s")

    return parallel_map(_bm3d_task, tasks, default_workers(len(tasks), workers), each=note)


# ------------------------------------------------------------------------------ DnCNN


class SmallDnCNN(Denoiser):
    """DnCNN-style denoiser with residual learning: ``y - net(y)``.

    ``net``: conv 3x3 (1 -> C) + ReLU, then ``depth - 2`` times conv 3x3 (C -> C)
    [+ batch norm] + ReLU, then conv 3x3 (C -> 1); zero padding, so the output has
    the input's size. A :class:`nelu.models.Denoiser`: input ``(H, W)`` or ``(B, 1, H, W)``,
    values about [0, 1]; ``sigma`` is ignored (the network was trained at one level).

    >>> SmallDnCNN(depth=4, channels=8)(torch.rand(2, 1, 20, 30)).shape
    torch.Size([2, 1, 20, 30])
    """

    def __init__(self, depth: int = 8, channels: int = 32, batch_norm: bool = True) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(1, channels, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(depth - 2):
            layers.append(nn.Conv2d(channels, channels, 3, padding=1, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(channels))
            layers.append(nn.ReLU(inplace=True))
        layers.append(nn.Conv2d(channels, 1, 3, padding=1))
        self.net = nn.Sequential(*layers)
        self.depth, self.channels, self.batch_norm = depth, channels, batch_norm

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor | None = None) -> torch.Tensor:
        return x - self.net(x)

    def extra_repr(self) -> str:
        return f"depth={self.depth}, channels={self.channels}, batch_norm={self.batch_norm}"


def load_dncnn_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint written by :func:`train_dncnn` and check its config (before allocating)."""
    ck = read_checkpoint(path, DNCNN_FORMAT, DNCNN_VERSION, "DnCNN")
    try:
        DnCNNConfig(**ck["config"]).validate()
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: invalid DnCNN config: {' '.join(str(exc).split())}") from None
    return ck


def train_dncnn(cfg: DnCNNConfig, out: str | Path, resume: bool = False, *, stop_after: int | None = None,
                log=None) -> dict:
    """Train :class:`SmallDnCNN` at ``cfg.sigma`` on Train400 patches with :func:`nelu.training.fit`.

    Deterministic given ``cfg.seed`` (initialization, the patch pool, batches, flips and
    noise all come from seeded generators; deterministic algorithms on). The checkpoint
    ``out`` is written at the end; ``resume`` returns it if it is finished. For reuse
    across runs see :func:`nelu.training.train_or_reuse`.
    """
    cfg.validate()
    with open_run(out, cfg, load_dncnn_checkpoint, resume) as ckpt:
        if ckpt is not None and ckpt.get("complete"):
            return ckpt
        with torch_settings(cfg.threads):
            torch.manual_seed(cfg.seed)  # initialization of the conv layers
            model = SmallDnCNN(cfg.depth, cfg.channels, cfg.batch_norm)
            opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
            images = cached_dataset("Train400", cfg.train_images)
            pool = nd.random_patches(images, cfg.pool_size, cfg.patch, torch.Generator().manual_seed(cfg.seed))
            pool = pool.reshape(-1, 1, cfg.patch, cfg.patch)

            def batch(gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
                clean = pool[torch.randint(cfg.pool_size, (cfg.batch_size,), generator=gen)]
                if cfg.augment:  # one of the 8 flips/rotations per batch
                    k = torch.randint(8, (1,), generator=gen).item() // 2
                    flip = torch.randint(2, (1,), generator=gen).item()
                    clean = torch.rot90(clean, k, dims=(2, 3))
                    clean = clean.flip(3) if flip else clean
                return clean + cfg.sigma / 255.0 * torch.randn(clean.shape, generator=gen), clean

            return fit(model, opt, batch, torch.Generator().manual_seed(cfg.seed + 1_000_003), steps=cfg.steps,
                       warmup=cfg.warmup, min_lr_factor=cfg.min_lr_factor, log_every=max(1, cfg.steps // 10),
                       out=Path(out), header={"format": DNCNN_FORMAT, "version": DNCNN_VERSION,
                                              "config": asdict(cfg)},
                       stop_after=stop_after, label="dncnn", log=log)


def load_dncnn(path: str | Path) -> SmallDnCNN:
    """The :class:`SmallDnCNN` of a checkpoint written by :func:`train_dncnn`, in eval mode."""
    ck = load_dncnn_checkpoint(path)
    try:
        cfg = DnCNNConfig(**ck["config"])
        model = SmallDnCNN(cfg.depth, cfg.channels, bool(cfg.batch_norm))
        model.load_state_dict(ck["model"])
    except (TypeError, ValueError, RuntimeError, KeyError) as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"checkpoint {path} does not match the DnCNN it describes: {msg}") from None
    return model.eval()
