"""Baselines a practitioner would reach for: BM3D and a small DnCNN-style network.

``python -m nelu.baselines [--profile quick|full] [--out DIR]`` measures, on the
BSD68 images and with the *same* noisy images as the ReLU/NeLU evaluation
(:func:`nelu.train.evaluate_images`: image ``i`` at level ``s`` gets the noise of
the generator seeded with :func:`nelu.train.noise_seed` ``(seed, i, s)``, seed 0):

* **BM3D** {Dabov et al. 2007}, the ``bm3d`` package (profile ``'np'``, one thread
  per call, so results are deterministic; calls run in ``--workers`` processes):

  - ``check``: told the true sigma, at the levels of the published BSD68 figures
    (:data:`PUBLISHED_BM3D_BSD68`), on every image of the profile;
  - ``sweep``: told the true sigma and told a fixed sigma (:data:`FIXED_SIGMA`)
    whatever the noise, on a documented subset of images, across
    :data:`nelu.cli.TEST_SIGMAS`.

* **DnCNN-style network** {Zhang et al. 2017}: ``depth`` 3x3 convolutions with
  ``channels`` channels, batch normalization and ReLU in between, *residual learning*
  (the network predicts the noise; the output is ``y - net(y)``), trained at one sigma
  on random Train400 patches with fresh noise per batch (MSE, Adam, warm-up + cosine
  schedule of :func:`nelu.train.lr_factor`), then tested across sigma with
  :func:`nelu.train.evaluate_images`. The checkpoint is written atomically
  (:func:`nelu.train.save_atomic`) and reused when its config matches.

* **cost per image**: denoising time of one 481x321 image (or the profile's crop) on
  one CPU thread, median over repeats, for BM3D, the DnCNN-style network and the
  ReLU/NeLU patch auto-encoders of ``--checkpoints`` (``relu_sigma25.pt``,
  ``nelu_sigma25.pt``) at their evaluation stride and at stride 1; plus the wall and
  CPU time of every BM3D call of the run.

Profiles: ``full`` (the committed results in ``results/baselines``) and ``quick`` (the
same code on two centre crops of 64x64 pixels and a few training steps; seconds).
Writes ``baselines.json`` (metadata, settings, summaries, timings), ``bm3d.csv`` and
``dncnn.csv`` (one row per image, noise level and setting), ``summary.csv`` and the
checkpoint ``dncnn_sigma25.pt``.

A user mistake (bad option, unwritable output, missing ``bm3d`` package, data error)
prints one line ``nelu.baselines: error: ...`` to stderr and exits with status 2.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import math
import multiprocessing
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import data as nd
from .cli import TEST_SIGMAS, dataset_names, git_commit
from .files import FileSafetyError, lock, write_csv, write_json
from .metrics import psnr, ssim
from .models import CheckpointError, load_denoiser, read_checkpoint
from .train import (
    cached_dataset,
    check_finite_loss,
    check_finite_weights,
    check_replaceable,
    evaluate_images,
    lr_factor,
    noise_seed,
    save_atomic,
    torch_settings,
)

__all__ = [
    "PUBLISHED_BM3D_BSD68",
    "FIXED_SIGMA",
    "PROFILES",
    "DnCNNConfig",
    "SmallDnCNN",
    "BaselineError",
    "noisy_image",
    "bm3d_denoise",
    "bm3d_run",
    "train_dncnn",
    "load_dncnn",
    "run",
    "main",
]

#: Published mean PSNR (dB) of BM3D on BSD68, by sigma (Zhang et al. 2017, Table II).
PUBLISHED_BM3D_BSD68 = {15.0: 31.07, 25.0: 28.57, 50.0: 25.62}
#: The noise level a "fixed-sigma" BM3D is told, whatever the true level.
FIXED_SIGMA = 25.0
#: BM3D settings profile of the ``bm3d`` package (its default, "normal profile").
BM3D_PROFILE = "np"
DNCNN_FORMAT = "nelu-dncnn-checkpoint"
DNCNN_VERSION = 1
REPO = Path(__file__).resolve().parent.parent


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


#: Settings of the two profiles (``bm3d_*_images``: None = all 68, an int = the first N,
#: a tuple = those indices in load order; ``crop``: None or the side of a centre crop).
PROFILES: dict[str, dict] = {
    "full": {
        "crop": None,
        "check_images": None,
        "check_sigmas": tuple(PUBLISHED_BM3D_BSD68),
        # Three images spread over BSD68 (first, middle, last in file order): test001,
        # test035, test068. BM3D costs about 7 CPU-seconds per 481x321 image here, so the
        # 252 calls are about 15 min on 2 idle cores (47 min for the committed run, on 2 shared ones).
        "sweep_images": (0, 34, 67),
        "sweep_sigmas": TEST_SIGMAS,
        # 0.1-0.25 s per step on 2 idle threads: 1200 steps fit the ~5 minute budget (the
        # committed run took 11 min on 2 cores shared with other jobs).
        # Heavily undertrained by DnCNN standards (hundreds of thousands of patches x 50 epochs).
        "dncnn": dict(depth=8, channels=32, patch=32, batch_size=32, steps=1200, lr=2e-3, pool_size=40_000),
        "dncnn_images": None,
        "dncnn_sigmas": TEST_SIGMAS,
        "timing_repeats": 3,
        "workers": 2,
        "threads": 2,
        "out": "results/baselines",
    },
    "quick": {
        "crop": 64,
        "check_images": 2,
        "check_sigmas": tuple(PUBLISHED_BM3D_BSD68),
        "sweep_images": (0,),
        "sweep_sigmas": (5.0, 25.0, 75.0),
        "dncnn": dict(depth=4, channels=8, patch=24, batch_size=8, steps=20, lr=2e-3, pool_size=500,
                      train_images=8),
        "dncnn_images": 2,
        "dncnn_sigmas": TEST_SIGMAS,
        "timing_repeats": 2,
        "workers": 1,
        "threads": 1,
        "out": "results/quick/baselines",
    },
}


# ------------------------------------------------------------------------------ noise


def noisy_image(clean: torch.Tensor, index: int, sigma: float, seed: int = 0) -> torch.Tensor:
    """The evaluation's noisy version of image ``index`` (load order) at level ``sigma``.

    Exactly what :func:`nelu.train.evaluate_images` feeds a denoiser: Gaussian noise of
    std ``sigma / 255`` from the generator seeded with ``noise_seed(seed, index, sigma)``.

    >>> y = noisy_image(torch.zeros(4, 4), 0, 25.0)
    >>> y.shape, y.dtype
    (torch.Size([4, 4]), torch.float32)
    """
    gen = torch.Generator().manual_seed(noise_seed(seed, index, sigma))
    return nd.add_noise(clean, sigma, generator=gen)


def _crop(image: torch.Tensor, crop: int | None) -> torch.Tensor:
    """Centre crop of side ``crop`` (the whole image when None)."""
    if crop is None:
        return image
    H, W = image.shape[-2:]
    top, left = (H - crop) // 2, (W - crop) // 2
    return image[..., top:top + crop, left:left + crop]


# ------------------------------------------------------------------------------- BM3D


def _bm3d_module():
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
    bm3d = _bm3d_module()
    profile = bm3d.BM3DProfile()
    profile.num_threads = 1
    z = noisy.detach().cpu().double().numpy() if isinstance(noisy, torch.Tensor) else np.asarray(noisy, np.float64)
    return np.asarray(bm3d.bm3d(z, sigma / 255.0, profile=profile), dtype=np.float64)


def _bm3d_task(task: tuple) -> dict:
    """One BM3D call of a run: image ``index`` at noise ``sigma``, told ``assumed``."""
    index, sigma, assumed, crop, seed = task
    clean_full = cached_dataset("BSD68")[index]
    noisy = _crop(noisy_image(clean_full, index, sigma, seed), crop)
    clean = _crop(clean_full, crop)
    t, c = time.perf_counter(), time.process_time()
    est = bm3d_denoise(noisy, assumed)
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    return {"index": index, "test_sigma": sigma, "assumed_sigma": assumed, "noisy_psnr": psnr(clean, noisy),
            "psnr": psnr(clean, est), "ssim": ssim(clean, est), "wall_s": wall, "cpu_s": cpu}


def _worker_init() -> None:
    torch.set_num_threads(1)


def bm3d_run(tasks: list[tuple], workers: int = 1, log=None) -> list[dict]:
    """Run BM3D tasks ``(index, sigma, assumed_sigma, crop, seed)``, in order; ``workers`` processes."""
    _bm3d_module()
    out: list[dict] = []
    t0 = time.perf_counter()

    def note(r: dict) -> None:
        out.append(r)
        if log and (len(out) % 20 == 0 or len(out) == len(tasks)):
            log(f"bm3d: {len(out)}/{len(tasks)} calls, {time.perf_counter() - t0:.0f}s")

    if workers <= 1:
        for task in tasks:
            note(_bm3d_task(task))
        return out
    ctx = multiprocessing.get_context("spawn")  # no fork of a process holding torch's thread pools
    with cf.ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init) as pool:
        for r in pool.map(_bm3d_task, tasks, chunksize=1):
            note(r)
    return out


# ------------------------------------------------------------------------------ DnCNN


class SmallDnCNN(nn.Module):
    """DnCNN-style denoiser with residual learning: ``y - net(y)``.

    ``net``: conv 3x3 (1 -> C) + ReLU, then ``depth - 2`` times conv 3x3 (C -> C)
    [+ batch norm] + ReLU, then conv 3x3 (C -> 1); zero padding, so the output has
    the input's size. Input ``(H, W)`` or ``(B, 1, H, W)``, values about [0, 1].

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

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        squeeze = y.ndim == 2
        x = y[None, None] if squeeze else y
        if x.ndim != 4 or x.shape[1] != 1:
            raise ValueError(f"images must be (H, W) or (B, 1, H, W), got {tuple(y.shape)}")
        out = x - self.net(x)
        return out[0, 0] if squeeze else out

    def extra_repr(self) -> str:
        return f"depth={self.depth}, channels={self.channels}, batch_norm={self.batch_norm}"


def _config_matches(saved: dict, cfg: DnCNNConfig) -> bool:
    now = asdict(cfg)
    return set(saved) == set(now) and all(saved[k] == now[k] for k in now if k != "threads")


def train_dncnn(cfg: DnCNNConfig, out: str | Path, *, reuse: bool = True, log=None) -> dict:
    """Train :class:`SmallDnCNN` at ``cfg.sigma`` on Train400 patches; write the checkpoint ``out``.

    Deterministic given ``cfg.seed`` (initialization, the patch pool, batches, flips and
    noise all come from seeded generators; deterministic algorithms on). With ``reuse``,
    a finished checkpoint whose config matches (up to ``threads``) is returned as is.
    """
    cfg.validate()
    out = Path(out)
    with lock(out, "DnCNN training run"):
        return _train_dncnn_locked(cfg, out, reuse, log)


def _train_dncnn_locked(cfg: DnCNNConfig, out: Path, reuse: bool, log) -> dict:
    check_replaceable(out, lambda p: read_checkpoint(p, DNCNN_FORMAT, DNCNN_VERSION, "DnCNN"))
    if reuse and out.is_file():
        try:
            ck = read_checkpoint(out, DNCNN_FORMAT, DNCNN_VERSION, "DnCNN")
            if ck.get("complete") and _config_matches(ck["config"], cfg):
                ck["reused"] = True
                return ck
        except CheckpointError:  # unreadable or from other code: retrain
            pass
    with torch_settings(cfg.threads):
        torch.manual_seed(cfg.seed)  # initialization of the conv layers
        model = SmallDnCNN(cfg.depth, cfg.channels, cfg.batch_norm)
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: lr_factor(s, cfg.steps, cfg.warmup, cfg.min_lr_factor))
        images = cached_dataset("Train400", cfg.train_images)
        pool = nd.random_patches(images, cfg.pool_size, cfg.patch, torch.Generator().manual_seed(cfg.seed))
        pool = pool.reshape(-1, 1, cfg.patch, cfg.patch)
        gen = torch.Generator().manual_seed(cfg.seed + 1_000_003)
        history, t0, loss_sum, count = [], time.perf_counter(), 0.0, 0
        model.train()
        for step in range(1, cfg.steps + 1):
            clean = pool[torch.randint(cfg.pool_size, (cfg.batch_size,), generator=gen)]
            if cfg.augment:
                k, flip = torch.randint(8, (1,), generator=gen).item() // 2, torch.randint(2, (1,), generator=gen).item()
                clean = torch.rot90(clean, k, dims=(2, 3))
                clean = clean.flip(3) if flip else clean
            noisy = clean + cfg.sigma / 255.0 * torch.randn(clean.shape, generator=gen)
            loss = torch.mean((model(noisy) - clean) ** 2)
            check_finite_loss(loss, step - 1, out)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum, count = loss_sum + float(loss.detach()), count + 1
            if step % max(1, cfg.steps // 10) == 0 or step == cfg.steps:
                mse = loss_sum / count
                history.append({"step": step, "train_mse": mse, "train_psnr": -10 * math.log10(max(mse, 1e-12)),
                                "lr": sched.get_last_lr()[0], "time_s": time.perf_counter() - t0})
                loss_sum, count = 0.0, 0
                if log:
                    log(f"dncnn: step {step}/{cfg.steps}, train PSNR {history[-1]['train_psnr']:.2f} dB, "
                        f"{history[-1]['time_s']:.0f}s")
        model.eval()
        check_finite_weights(model, cfg.steps, out)
        ck = {"format": DNCNN_FORMAT, "version": DNCNN_VERSION, "config": asdict(cfg), "model": model.state_dict(),
              "step": cfg.steps, "history": history, "elapsed_s": time.perf_counter() - t0, "complete": True,
              "torch_version": str(torch.__version__)}
    save_atomic(ck, out)
    ck["reused"] = False
    return ck


def load_dncnn(path: str | Path) -> SmallDnCNN:
    """The :class:`SmallDnCNN` of a checkpoint written by :func:`train_dncnn`, in eval mode."""
    ck = read_checkpoint(path, DNCNN_FORMAT, DNCNN_VERSION, "DnCNN")
    try:  # before anything is allocated
        cfg = DnCNNConfig(**ck["config"]).validate()
        model = SmallDnCNN(cfg.depth, cfg.channels, bool(cfg.batch_norm))
        model.load_state_dict(ck["model"])
    except (TypeError, ValueError, RuntimeError, KeyError) as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"checkpoint {path} does not match the DnCNN it describes: {msg}") from None
    return model.eval()


# ----------------------------------------------------------------------------- timing


@torch.no_grad()
def _median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _time_methods(probe: torch.Tensor, dncnn: nn.Module, checkpoints: Path, repeats: int, log) -> dict:
    """Seconds to denoise ``probe`` (median of ``repeats``) per method, on one CPU thread."""
    res: dict = {"image_shape": list(probe.shape), "threads": 1, "repeats": repeats}
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        res["dncnn_s"] = _median_time(lambda: dncnn(probe), repeats)
        res["bm3d_s"] = _median_time(lambda: bm3d_denoise(probe, 25.0), max(1, repeats - 1))
        for act in ("relu", "nelu"):
            path = checkpoints / f"{act}_sigma25.pt"
            if not path.is_file():
                res[f"{act}_note"] = f"{path} not found: not timed"
                continue
            den = load_denoiser(path)
            for stride in sorted({den.stride, 1}, reverse=True):
                d = load_denoiser(path, stride=stride)
                res[f"{act}_stride{stride}_s"] = _median_time(lambda: d(probe), repeats)
    finally:
        torch.set_num_threads(old)
    if log:
        log("timing (1 thread, s/image): " + ", ".join(f"{k[:-2]} {v:.3f}" for k, v in res.items()
                                                          if k.endswith("_s")))
    return res


# -------------------------------------------------------------------------------- run


def _mean(v) -> float:
    return float(sum(v) / len(v)) if v else float("nan")


def _std(v) -> float:
    return float(statistics.stdev(v)) if len(v) > 1 else 0.0


def _indices(spec, n_all: int) -> list[int]:
    if spec is None:
        return list(range(n_all))
    if isinstance(spec, int):
        return list(range(min(spec, n_all)))
    return [int(i) for i in spec]


def _summarize(rows: list[dict], method: str, keys: tuple[str, ...]) -> list[dict]:
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in keys), []).append(r)
    out = []
    for key, rs in groups.items():
        ps, ss = [r["psnr"] for r in rs], [r["ssim"] for r in rs]
        out.append({"method": method, **dict(zip(keys, key)), "n_images": len(rs),
                    "noisy_psnr_mean": _mean([r["noisy_psnr"] for r in rs]),
                    "psnr_mean": _mean(ps), "psnr_std": _std(ps), "ssim_mean": _mean(ss), "ssim_std": _std(ss),
                    "images": [r["image"] for r in rs]})
    return out


def run(profile: str = "full", out: str | Path | None = None, *, workers: int | None = None,
        threads: int | None = None, seed: int = 0, checkpoints: str | Path | None = None,
        fresh: bool = False, argv: list[str] | None = None, log=None) -> dict:
    """Run the baselines of ``profile``; write the results to ``out``; return the JSON dict."""
    if profile not in PROFILES:
        raise BaselineError(f"unknown profile {profile!r}; valid: {', '.join(PROFILES)}")
    prof = PROFILES[profile]
    out = Path(out if out is not None else REPO / prof["out"])
    workers = prof["workers"] if workers is None else workers
    threads = prof["threads"] if threads is None else threads
    checkpoints = Path(checkpoints) if checkpoints is not None else REPO / "results" / "checkpoints"
    if workers < 1 or threads < 1:
        raise BaselineError(f"--workers and --threads must be >= 1, got {workers}, {threads}")
    _bm3d_module()
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=out, prefix=".probe.")
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise BaselineError(f"cannot write to {out}: {exc.strerror or exc}") from None
    log = log or (lambda msg: None)
    t_all = time.perf_counter()
    commit = git_commit()  # at the start: the code that runs, even if HEAD moves meanwhile
    crop = prof["crop"]
    names = dataset_names("BSD68")
    images = cached_dataset("BSD68")
    timings: dict = {}

    # --- BM3D: the published check (true sigma, all images) and the sweep (true vs fixed).
    check_idx = _indices(prof["check_images"], len(images))
    sweep_idx = _indices(prof["sweep_images"], len(images))
    tasks = [(i, s, s, crop, seed) for s in prof["check_sigmas"] for i in check_idx]
    done = {(t[0], t[1], t[2]) for t in tasks}
    for i in sweep_idx:
        for s in prof["sweep_sigmas"]:
            for a in (s, FIXED_SIGMA):
                if (i, s, a) not in done:
                    tasks.append((i, s, a, crop, seed))
                    done.add((i, s, a))
    log(f"bm3d: {len(tasks)} calls on {workers} worker(s), crop {crop}")
    t = time.perf_counter()
    bm3d_rows = bm3d_run(tasks, workers, log)
    timings["bm3d_s"] = time.perf_counter() - t
    for r in bm3d_rows:
        r["image"] = names[r["index"]]
        r["setting"] = "true" if r["assumed_sigma"] == r["test_sigma"] else "fixed"
    check = []
    for s in prof["check_sigmas"]:
        rs = [r for r in bm3d_rows if r["test_sigma"] == s and r["setting"] == "true" and r["index"] in check_idx]
        mean = _mean([r["psnr"] for r in rs])
        check.append({"sigma": s, "n_images": len(rs), "psnr_mean": mean, "ssim_mean": _mean([r["ssim"] for r in rs]),
                      "published": PUBLISHED_BM3D_BSD68.get(s),
                      "difference": mean - PUBLISHED_BM3D_BSD68[s] if s in PUBLISHED_BM3D_BSD68 else None})
        log(f"bm3d check sigma {s:g}: {mean:.2f} dB on {len(rs)} images (published {PUBLISHED_BM3D_BSD68.get(s)})")
    sweep_rows = [r for r in bm3d_rows if r["index"] in sweep_idx and r["test_sigma"] in prof["sweep_sigmas"]]
    sweep = []
    for setting in ("true", "fixed"):
        for s in prof["sweep_sigmas"]:
            rs = [r for r in sweep_rows if r["test_sigma"] == s and
                  (r["assumed_sigma"] == (s if setting == "true" else FIXED_SIGMA))]
            sweep += [{**x, "setting": setting, "assumed_sigma": s if setting == "true" else FIXED_SIGMA}
                      for x in _summarize(rs, "bm3d", ("test_sigma",))]
    cost = {"calls": len(bm3d_rows), "workers": workers,
            "wall_s_median": statistics.median(r["wall_s"] for r in bm3d_rows),
            "cpu_s_median": statistics.median(r["cpu_s"] for r in bm3d_rows),
            "cpu_s_mean": _mean([r["cpu_s"] for r in bm3d_rows])}
    log(f"bm3d: {len(bm3d_rows)} calls in {timings['bm3d_s']:.0f}s; per call median {cost['wall_s_median']:.2f}s "
        f"wall, {cost['cpu_s_median']:.2f}s CPU")

    # --- DnCNN-style network: train at sigma, test across sigma on the same noisy images.
    cfg = DnCNNConfig(sigma=FIXED_SIGMA, seed=seed, threads=threads, **prof["dncnn"])
    ck_path = out / f"dncnn_sigma{cfg.sigma:g}.pt"
    t = time.perf_counter()
    ck = train_dncnn(cfg, ck_path, reuse=not fresh, log=log)
    timings["dncnn_train_s"] = time.perf_counter() - t
    dncnn = load_dncnn(ck_path)
    dn_idx = _indices(prof["dncnn_images"], len(images))  # None or a count: the first N images
    t = time.perf_counter()
    torch.set_num_threads(threads)
    if crop is None:  # exactly the evaluation of the ReLU/NeLU models
        res = evaluate_images(dncnn, images[:len(dn_idx)], list(prof["dncnn_sigmas"]), seed=seed)
    else:
        res = _evaluate_cropped(dncnn, images[:len(dn_idx)], list(prof["dncnn_sigmas"]), crop, seed)
    timings["dncnn_eval_s"] = time.perf_counter() - t
    dn_rows = [{"image": names[i], "index": i, "test_sigma": s, "noisy_psnr": res["noisy_psnr"][s][i],
                "psnr": res["psnr"][s][i], "ssim": res["ssim"][s][i]}
               for s in prof["dncnn_sigmas"] for i in range(len(dn_idx))]
    dn_summary = _summarize(dn_rows, "dncnn", ("test_sigma",))
    log("dncnn: PSNR " + ", ".join(f"{r['test_sigma']:g}:{r['psnr_mean']:.2f}" for r in dn_summary) +
        f" ({timings['dncnn_eval_s']:.0f}s)")

    # --- Cost per image, one thread, on the first image (481x321; or its crop).
    probe = _crop(noisy_image(images[0], 0, 25.0, seed), crop)
    t = time.perf_counter()
    timing = _time_methods(probe, dncnn, checkpoints, prof["timing_repeats"], log)
    timing["bm3d_run"] = cost
    timings["timing_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t_all

    bm3d = _bm3d_module()
    meta = {
        "command": "python -m nelu.baselines " + shlex.join(sys.argv[1:] if argv is None else argv),
        "git_commit": commit, "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "profile": profile, "seed": seed, "eval_noise_seed": seed, "workers": workers, "threads": threads,
        "torch": torch.__version__, "bm3d": getattr(bm3d, "__version__", _pkg_version("bm3d")),
        "bm4d": _pkg_version("bm4d"), "python": platform.python_version(),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(), "cpu_count": os.cpu_count(),
        "crop": crop, "fixed_sigma": FIXED_SIGMA, "bm3d_profile": BM3D_PROFILE,
        "check_images": [names[i] for i in check_idx], "sweep_images": [names[i] for i in sweep_idx],
        "dncnn_images": [names[i] for i in dn_idx], "test_sigmas": list(prof["sweep_sigmas"]),
        "timings": timings,
    }
    result = {
        "meta": meta,
        "bm3d": {"check": check, "sweep": sweep, "cost": cost},
        "dncnn": {"config": asdict(cfg), "checkpoint": ck_path.name, "reused_checkpoint": ck.get("reused", False),
                  "train_time_s": ck["elapsed_s"], "steps": ck["step"], "history": ck["history"],
                  "summary": dn_summary},
        "timing": timing,
    }
    write_json(out / "baselines.json", result)
    write_csv(out / "bm3d.csv", [{k: r[k] for k in ("image", "index", "test_sigma", "assumed_sigma", "setting",
                                                      "noisy_psnr", "psnr", "ssim", "wall_s", "cpu_s")}
                                  for r in bm3d_rows])
    write_csv(out / "dncnn.csv", dn_rows)
    summary_rows = ([{"method": f"bm3d_{r['setting']}", "test_sigma": r["test_sigma"],
                      "assumed_sigma": r["assumed_sigma"], "n_images": r["n_images"], "psnr_mean": r["psnr_mean"],
                      "ssim_mean": r["ssim_mean"], "subset": "sweep"} for r in sweep] +
                    [{"method": "bm3d_true", "test_sigma": r["sigma"], "assumed_sigma": r["sigma"],
                      "n_images": r["n_images"], "psnr_mean": r["psnr_mean"], "ssim_mean": r["ssim_mean"],
                      "subset": "check"} for r in check] +
                    [{"method": "dncnn", "test_sigma": r["test_sigma"], "assumed_sigma": "",
                      "n_images": r["n_images"], "psnr_mean": r["psnr_mean"], "ssim_mean": r["ssim_mean"],
                      "subset": "all"} for r in dn_summary])
    write_csv(out / "summary.csv", summary_rows)
    log(f"wrote {out / 'baselines.json'}, bm3d.csv, dncnn.csv, summary.csv, {ck_path.name} "
        f"({timings['total_s']:.0f}s)")
    return result


@torch.no_grad()
def _evaluate_cropped(den: nn.Module, images: list[torch.Tensor], sigmas: list[float], crop: int,
                      seed: int) -> dict:
    """:func:`evaluate_images` on centre crops: noise of the whole image (same seeds), then crop."""
    res: dict = {"sigmas": sigmas, "noisy_psnr": {s: [] for s in sigmas}, "psnr": {s: [] for s in sigmas},
                 "ssim": {s: [] for s in sigmas}}
    den.eval()
    for i, clean in enumerate(images):
        c = _crop(clean, crop)
        for s in sigmas:
            y = _crop(noisy_image(clean, i, s, seed), crop)
            est = den(y)
            res["noisy_psnr"][s].append(psnr(c, y))
            res["psnr"][s].append(psnr(c, est))
            res["ssim"][s].append(ssim(c, est))
    return res


def _pkg_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


# ------------------------------------------------------------------------------- main


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        raise BaselineError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="nelu.baselines", description="BM3D and a small DnCNN-style network on BSD68, "
                "on the noisy images of the ReLU/NeLU evaluation.")
    p.add_argument("--profile", choices=tuple(PROFILES), default="full",
                   help="full: the committed results (about 25 min on 2 idle cores); quick: crops, seconds")
    p.add_argument("--out", default=None, help="results folder (default results/baselines, "
                   "quick: results/quick/baselines)")
    p.add_argument("--workers", type=int, default=None, help="BM3D processes (default: full 2, quick 1)")
    p.add_argument("--threads", type=int, default=None, help="torch threads for the DnCNN (default: full 2, quick 1)")
    p.add_argument("--seed", type=int, default=0, help="noise seed (0: the noise of the committed evaluation)")
    p.add_argument("--checkpoints", default=None,
                   help="folder with relu_sigma25.pt and nelu_sigma25.pt to time (default results/checkpoints)")
    p.add_argument("--fresh", action="store_true", help="retrain the DnCNN even if a matching checkpoint exists")
    return p


def main(argv: list[str] | None = None) -> int:
    """Command line; returns the exit status (2 for a user mistake, one line on stderr)."""
    t0 = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:7.1f}s] {msg}", flush=True)

    def action() -> int:
        args = build_parser().parse_args(argv)
        run(args.profile, args.out, workers=args.workers, threads=args.threads, seed=args.seed,
            checkpoints=args.checkpoints, fresh=args.fresh, argv=argv, log=log)
        return 0

    from .cli import run_reporting_errors

    return run_reporting_errors("nelu.baselines", action,
                                (BaselineError, CheckpointError, nd.DataError, FileSafetyError))


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
