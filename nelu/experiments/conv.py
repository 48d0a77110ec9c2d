"""``reproduce conv``: the convolutional auto-encoders of :mod:`nelu.conv` on BSD68.

ReLU, per-location NeLU and per-image NeLU, all trained at sigma 25, tested under
Gaussian noise at :data:`CONV_SIGMAS` and under spatially varying noise at
:data:`CONV_VARYING_SIGMAS`. Writes ``conv.json``, ``conv.csv`` and the checkpoints.
"""

from __future__ import annotations

import time

import torch

from ..conv import (
    ConvConfig,
    load_conv_checkpoint,
    load_conv_denoiser,
    train_conv,
)
from ..data import cached_dataset, dataset_names
from ..evaluation import evaluate_images, median_time
from .common import BACKEND, Context, fmt_sigma, mean, relative_path, summary_stats, timing_probe, train_all

__all__ = ["PROFILES", "CONV_ACTS", "CONV_TRAIN_SIGMA", "CONV_SIGMAS", "CONV_VARYING_SIGMAS", "run"]

CONV_ACTS = ("relu", "nelu", "nelu-global")
CONV_TRAIN_SIGMA = 25.0
CONV_SIGMAS = (5.0, 10.0, 15.0, 25.0, 40.0, 50.0, 75.0)
#: Levels of the spatially varying noise test (on the ``global_images`` images).
CONV_VARYING_SIGMAS = (25.0, 50.0)

#: Training settings, test images (None: all 68), and the images of the per-image NeLU and of
#: the varying-noise test (``global_images``; once a subset, when the per-image threshold sorted
#: all ~10^7 coefficients of a test image; now all, :func:`nelu.conv.image_threshold`).
PROFILES: dict[str, dict] = {
    # 64 filters of 7x7 on 40x40 crops; 1000 steps (a pilot: 600 -> 1500 steps gained 0.2-0.8 dB).
    "full": dict(train=dict(m=64, kernel=7, crop=40, steps=1000, batch_size=8, lr=3e-3, nelu_lam=0.1,
                            pool_size=2000, train_images=None, backend=BACKEND),
                 images=None, global_images=None),
    "quick": dict(train=dict(m=16, kernel=5, crop=24, steps=30, batch_size=4, lr=3e-3, nelu_lam=0.1,
                             pool_size=200, train_images=8, backend=BACKEND),
                  images=2, global_images=1),
}


def run(ctx: Context) -> dict:
    """Train the convolutional auto-encoders of :mod:`nelu.conv` at sigma 25 and test them on BSD68."""
    profile, out, seed, threads, fresh, log = ctx.profile, ctx.out, ctx.seed, ctx.threads, ctx.fresh, ctx.log
    part = PROFILES[profile]
    ckdir = ctx.checkpoint_dir
    t_all = time.perf_counter()
    models, rows, summary = {}, [], []
    workers = ctx.workers_for(len(CONV_ACTS))
    timings = {"workers": workers, "train_s": {}, "eval_s": {}}
    coeffs = {"relu": None, "nelu": "location", "nelu-global": "image"}
    probe = None
    model_names = {act: f"conv_{act}_sigma{fmt_sigma(CONV_TRAIN_SIGMA)}" for act in CONV_ACTS}
    jobs = [(ConvConfig(activation=act, sigma=CONV_TRAIN_SIGMA, seed=seed, threads=threads, progress=False,
                        **part["train"]), ckdir / f"{model_names[act]}.pt", fresh, load_conv_checkpoint, train_conv)
            for act in CONV_ACTS]
    log(f"conv: {len(jobs)} models on {workers} worker(s)")
    t = time.perf_counter()
    trained = dict(zip(CONV_ACTS, train_all(jobs, workers)))  # independent runs, in parallel
    timings["train_wall_s"] = time.perf_counter() - t
    t_eval = time.perf_counter()
    for act, job in zip(CONV_ACTS, jobs):
        name, path = model_names[act], job[1]
        ck, reused, timings["train_s"][name] = trained[act]
        hist = ck["history"][-1] if ck["history"] else {}
        n_images = part["global_images"] if act == "nelu-global" else part["images"]
        n_test = len(dataset_names("BSD68", n_images))
        models[name] = {"activation": act, "coeffs": coeffs[act], "train_sigma": CONV_TRAIN_SIGMA,
                        "checkpoint": relative_path(path, out), "reused_checkpoint": reused,
                        "train_time_s": ck.get("elapsed_s"), "steps": ck["step"],
                        "learned_lam": hist.get("lam"), "learned_threshold_mean": hist.get("threshold_mean"),
                        "history": ck["history"], "test_images": n_test,
                        "varying_test_images": len(dataset_names("BSD68", part["global_images"]))}
        log(f"conv: {name}: {'reused' if reused else 'trained'} in {timings['train_s'][name]:.1f}s, "
            f"train PSNR {hist.get('train_psnr', float('nan')):.2f}")
        den = load_conv_denoiser(path)
        tests = [("gaussian", list(CONV_SIGMAS), n_images),
                 ("varying", list(CONV_VARYING_SIGMAS), part["global_images"])]
        t = time.perf_counter()
        for kind, sigmas, limit in tests:
            images = cached_dataset("BSD68", limit)
            names = dataset_names("BSD68", limit)
            torch.set_num_threads(threads)
            res = evaluate_images(den, images, sigmas, kind=kind, seed=seed, metrics=("psnr",),
                                  workers=ctx.workers_for(len(images)))
            for s in sigmas:
                for i, im in enumerate(names):
                    rows.append({"model": name, "activation": act, "coeffs": coeffs[act] or "",
                                 "train_sigma": CONV_TRAIN_SIGMA, "noise": kind, "test_sigma": s, "image": im,
                                 "noisy_psnr": res["noisy_psnr"][s][i], "psnr": res["psnr"][s][i]})
                summary.append({"model": name, "activation": act, "coeffs": coeffs[act],
                                "train_sigma": CONV_TRAIN_SIGMA, "noise": kind, "test_sigma": s,
                                "n_images": len(names), **summary_stats(res, s, ("psnr",)),
                                "psnr": res["psnr"][s]})
            log(f"conv: {name}: {kind} noise on {len(names)} images; PSNR " +
                ", ".join(f"{fmt_sigma(s)}:{mean(res['psnr'][s]):.2f}" for s in sigmas))
        timings["eval_s"][name] = time.perf_counter() - t
        if probe is None:
            probe = next(im for im in cached_dataset("BSD68", part["images"]) if tuple(im.shape) in ((481, 321), (321, 481)))
        torch.set_num_threads(threads)
        timings.setdefault("denoise_one_481x321", {"image_shape": list(probe.shape), "threads": threads})
        noisy = timing_probe(probe)
        timings["denoise_one_481x321"][f"{act}_s"] = median_time(lambda: den(noisy), 3)
    timings["eval_wall_s"] = time.perf_counter() - t_eval
    timings["total_s"] = time.perf_counter() - t_all
    meta = ctx.meta(profile=profile, seed=seed, threads=threads, eval_noise_seed=seed,
                 test_sigmas=list(CONV_SIGMAS), varying_sigmas=list(CONV_VARYING_SIGMAS),
                 train_settings=part["train"], test_images=part["images"],
                 global_images=len(dataset_names("BSD68", part["global_images"])),
                 timings=timings, images=dataset_names("BSD68", part["images"]))
    ctx.write_json("conv.json", {"meta": meta, "models": models, "summary": summary})
    ctx.write_csv("conv.csv", rows)
    log(f"conv: wrote {out / 'conv.json'} and conv.csv ({timings['total_s']:.0f}s)")
    return timings
