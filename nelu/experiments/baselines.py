"""``reproduce baselines``: BM3D and a DnCNN-style network on BSD68, with the evaluation's noisy images.

Measures, on the BSD68 images and with the *same* noisy images as the ReLU/NeLU
evaluation (:func:`nelu.evaluation.noisy_image`, seed 0):

* BM3D ``check``: told the true sigma, at the levels of the published BSD68 figures
  (:data:`nelu.baselines.PUBLISHED_BM3D_BSD68`), on every image of the profile;
* BM3D ``sweep``: told the true sigma and told a fixed sigma
  (:data:`nelu.baselines.FIXED_SIGMA`) whatever the noise, on a documented subset of
  images, across :data:`~nelu.experiments.common.TEST_SIGMAS`;
* the DnCNN-style network trained at sigma 25, tested across sigma;
* cost per image: denoising time of one 481x321 image (or the profile's crop) on one CPU
  thread, median over repeats, for BM3D, the DnCNN-style network and the ReLU/NeLU patch
  auto-encoders at their evaluation stride and at stride 1; plus the wall and CPU time of
  every BM3D call.

Profiles: ``full`` (the committed results in ``results/baselines``) and ``quick`` (the
same code on two centre crops of 64x64 pixels and a few training steps; seconds).
Writes ``baselines.json``, ``bm3d.csv``, ``dncnn.csv``, ``summary.csv`` and the checkpoint
``dncnn_sigma25.pt``.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from ..baselines import (
    BM3D_PROFILE,
    FIXED_SIGMA,
    PUBLISHED_BM3D_BSD68,
    DnCNNConfig,
    bm3d_denoise,
    bm3d_run,
    center_crop,
    load_dncnn,
    load_dncnn_checkpoint,
    require_bm3d,
    train_dncnn,
)
from ..data import cached_dataset, dataset_names
from ..evaluation import default_workers, evaluate_images, median_time, noisy_image
from ..metrics import psnr, ssim
from ..models import load_denoiser
from ..training import train_or_reuse
from .common import TEST_SIGMAS, Context, ExperimentError, git_commit, mean

__all__ = ["PROFILES", "run"]


#: Settings of the two profiles (``bm3d_*_images``: None = all 68, an int = the first N,
#: a tuple = those indices in load order; ``crop``: None or the side of a centre crop).
PROFILES: dict[str, dict] = {
    "full": {
        "crop": None,
        "check_images": None,
        "check_sigmas": tuple(PUBLISHED_BM3D_BSD68),
        # Three images spread over BSD68 (first, middle, last in file order): test001,
        # test035, test068. BM3D costs about 7 CPU-seconds per 481x321 image here, so the
        # 252 calls are about 15 min on 2 idle cores (the committed run's time is in baselines.json).
        "sweep_images": (0, 34, 67),
        "sweep_sigmas": TEST_SIGMAS,
        # 0.1-0.25 s per step on 2 idle threads: 1200 steps fit the ~5 minute budget (the
        # committed run took 11 min on 2 cores shared with other jobs).
        # Heavily undertrained by DnCNN standards (hundreds of thousands of patches x 50 epochs).
        "dncnn": dict(depth=8, channels=32, patch=32, batch_size=32, steps=1200, lr=2e-3, pool_size=40_000),
        "dncnn_images": None,
        "dncnn_sigmas": TEST_SIGMAS,
        "timing_repeats": 3,
        "workers": None,  # every core
        "threads": 2,
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
        "workers": 1,  # seconds of work: starting processes would cost more
        "threads": 1,
    },
}


# ----------------------------------------------------------------------------- timing


def _time_methods(probe: torch.Tensor, dncnn: nn.Module, checkpoints: Path, repeats: int, log) -> dict:
    """Seconds to denoise ``probe`` (median of ``repeats``) per method, on one CPU thread."""
    res: dict = {"image_shape": list(probe.shape), "threads": 1, "repeats": repeats}
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        res["dncnn_s"] = median_time(lambda: dncnn(probe), repeats)
        res["bm3d_s"] = median_time(lambda: bm3d_denoise(probe, 25.0), max(1, repeats - 1))
        for act in ("relu", "nelu"):
            path = checkpoints / f"{act}_sigma25.pt"
            if not path.is_file():
                res[f"{act}_note"] = f"{path} not found: not timed"
                continue
            den = load_denoiser(path)
            for stride in sorted({den.stride, 1}, reverse=True):
                d = load_denoiser(path, stride=stride)
                res[f"{act}_stride{stride}_s"] = median_time(lambda: d(probe), repeats)
    finally:
        torch.set_num_threads(old)
    if log:
        log("timing (1 thread, s/image): " + ", ".join(f"{k[:-2]} {v:.3f}" for k, v in res.items()
                                                          if k.endswith("_s")))
    return res


# -------------------------------------------------------------------------------- run


def _indices(spec, n_all: int) -> list[int]:
    if spec is None:
        return list(range(n_all))
    if isinstance(spec, int):
        return list(range(min(spec, n_all)))
    return [int(i) for i in spec]


def _stdev(v) -> float:
    return float(statistics.stdev(v)) if len(v) > 1 else 0.0


def _summarize(rows: list[dict], method: str, keys: tuple[str, ...]) -> list[dict]:
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in keys), []).append(r)
    out = []
    for key, rs in groups.items():
        ps, ss = [r["psnr"] for r in rs], [r["ssim"] for r in rs]
        out.append({"method": method, **dict(zip(keys, key)), "n_images": len(rs),
                    "noisy_psnr_mean": mean([r["noisy_psnr"] for r in rs]),
                    "psnr_mean": mean(ps), "psnr_std": _stdev(ps), "ssim_mean": mean(ss), "ssim_std": _stdev(ss),
                    "images": [r["image"] for r in rs]})
    return out


def run(ctx: Context) -> dict:
    """Run the baselines of ``ctx.profile``; write the results to ``ctx.out``; return the timings.

    ``ctx.options`` may set ``workers`` (processes for the BM3D calls and the DnCNN's
    evaluation, one thread each; None: every core) and ``threads`` (torch threads of the
    DnCNN's training); both default to ``ctx.workers``, then to the profile's. The numbers
    do not depend on ``workers``. The patch auto-encoders timed are those of
    ``ctx.checkpoint_dir`` (``relu_sigma25.pt``, ``nelu_sigma25.pt``).
    """
    profile, out, seed, fresh = ctx.profile, ctx.out, ctx.seed, ctx.fresh
    if profile not in PROFILES:
        raise ExperimentError(f"unknown profile {profile!r}; valid: {', '.join(PROFILES)}")
    prof = PROFILES[profile]
    workers = next((w for w in (ctx.options.get("workers"), ctx.workers, prof["workers"]) if w is not None), None)
    threads = prof["threads"] if ctx.options.get("threads") is None else ctx.options["threads"]
    checkpoints = ctx.checkpoint_dir
    if (workers is not None and workers < 1) or threads < 1:
        raise ExperimentError(f"--workers and --threads must be >= 1, got {workers}, {threads}")
    require_bm3d()
    log = ctx.log
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
    workers = default_workers(len(tasks), workers)
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
        psnr_mean = mean([r["psnr"] for r in rs])
        check.append({"sigma": s, "n_images": len(rs), "psnr_mean": psnr_mean, "ssim_mean": mean([r["ssim"] for r in rs]),
                      "published": PUBLISHED_BM3D_BSD68.get(s),
                      "difference": psnr_mean - PUBLISHED_BM3D_BSD68[s] if s in PUBLISHED_BM3D_BSD68 else None})
        log(f"bm3d check sigma {s:g}: {psnr_mean:.2f} dB on {len(rs)} images (published {PUBLISHED_BM3D_BSD68.get(s)})")
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
            "cpu_s_mean": mean([r["cpu_s"] for r in bm3d_rows])}
    log(f"bm3d: {len(bm3d_rows)} calls in {timings['bm3d_s']:.0f}s; per call median {cost['wall_s_median']:.2f}s "
        f"wall, {cost['cpu_s_median']:.2f}s CPU")

    # --- DnCNN-style network: train at sigma, test across sigma on the same noisy images.
    cfg = DnCNNConfig(sigma=FIXED_SIGMA, seed=seed, threads=threads, **prof["dncnn"])
    ck_path = out / f"dncnn_sigma{cfg.sigma:g}.pt"
    t = time.perf_counter()
    ck, reused = train_or_reuse(cfg, ck_path, fresh, load_dncnn_checkpoint, train_dncnn)
    timings["dncnn_train_s"] = time.perf_counter() - t
    dncnn = load_dncnn(ck_path)
    dn_idx = _indices(prof["dncnn_images"], len(images))  # None or a count: the first N images
    t = time.perf_counter()
    torch.set_num_threads(1)  # as in each worker: the numbers do not depend on the number of workers
    if crop is None:  # exactly the evaluation of the ReLU/NeLU models
        res = evaluate_images(dncnn, images[:len(dn_idx)], list(prof["dncnn_sigmas"]), seed=seed, workers=workers)
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
    probe = center_crop(noisy_image(images[0], 0, 25.0, seed), crop)
    t = time.perf_counter()
    timing = _time_methods(probe, dncnn, checkpoints, prof["timing_repeats"], log)
    timing["bm3d_run"] = cost
    timings["timing_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t_all

    bm3d = require_bm3d()
    meta = ctx.meta(
        git_commit=commit, profile=profile, seed=seed, eval_noise_seed=seed, workers=workers, threads=threads,
        bm3d=getattr(bm3d, "__version__", _pkg_version("bm3d")), bm4d=_pkg_version("bm4d"),
        crop=crop, fixed_sigma=FIXED_SIGMA, bm3d_profile=BM3D_PROFILE,
        check_images=[names[i] for i in check_idx], sweep_images=[names[i] for i in sweep_idx],
        dncnn_images=[names[i] for i in dn_idx], test_sigmas=list(prof["sweep_sigmas"]),
        timings=timings,
    )
    result = {
        "meta": meta,
        "bm3d": {"check": check, "sweep": sweep, "cost": cost},
        "dncnn": {"config": asdict(cfg), "checkpoint": ck_path.name, "reused_checkpoint": reused,
                  "train_time_s": ck["elapsed_s"], "steps": ck["step"], "history": ck["history"],
                  "summary": dn_summary},
        "timing": timing,
    }
    ctx.write_json("baselines.json", result)
    ctx.write_csv("bm3d.csv", [{k: r[k] for k in ("image", "index", "test_sigma", "assumed_sigma", "setting",
                                                      "noisy_psnr", "psnr", "ssim", "wall_s", "cpu_s")}
                                  for r in bm3d_rows])
    ctx.write_csv("dncnn.csv", dn_rows)
    summary_rows = ([{"method": f"bm3d_{r['setting']}", "test_sigma": r["test_sigma"],
                      "assumed_sigma": r["assumed_sigma"], "n_images": r["n_images"], "psnr_mean": r["psnr_mean"],
                      "ssim_mean": r["ssim_mean"], "subset": "sweep"} for r in sweep] +
                    [{"method": "bm3d_true", "test_sigma": r["sigma"], "assumed_sigma": r["sigma"],
                      "n_images": r["n_images"], "psnr_mean": r["psnr_mean"], "ssim_mean": r["ssim_mean"],
                      "subset": "check"} for r in check] +
                    [{"method": "dncnn", "test_sigma": r["test_sigma"], "assumed_sigma": "",
                      "n_images": r["n_images"], "psnr_mean": r["psnr_mean"], "ssim_mean": r["ssim_mean"],
                      "subset": "all"} for r in dn_summary])
    ctx.write_csv("summary.csv", summary_rows)
    log(f"wrote {out / 'baselines.json'}, bm3d.csv, dncnn.csv, summary.csv, {ck_path.name} "
        f"({timings['total_s']:.0f}s)")
    return timings


@torch.no_grad()
def _evaluate_cropped(den: nn.Module, images: list[torch.Tensor], sigmas: list[float], crop: int,
                      seed: int) -> dict:
    """:func:`evaluate_images` on centre crops: noise of the whole image (same seeds), then crop."""
    res: dict = {"sigmas": sigmas, "noisy_psnr": {s: [] for s in sigmas}, "psnr": {s: [] for s in sigmas},
                 "ssim": {s: [] for s in sigmas}}
    den.eval()
    for i, clean in enumerate(images):
        c = center_crop(clean, crop)
        for s in sigmas:
            y = center_crop(noisy_image(clean, i, s, seed), crop)
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
