"""``reproduce bsd68``: the patch auto-encoders of the book on BSD68.

Trains ReLU and NeLU at sigma 15, 25 and 50, both blind on [0, 75], and a sigma-matched
ReLU oracle at every other test level (Train400, validated on Set12), and evaluates them
on BSD68 at every level of :data:`~nelu.experiments.common.TEST_SIGMAS` (an oracle at
its own level only). Writes ``bsd68.json``, ``bsd68.csv`` (per image),
``bsd68_summary.csv`` and the checkpoints.
"""

from __future__ import annotations

import time

import torch

from ..data import cached_dataset, dataset_names
from ..evaluation import evaluate_images, median_time
from ..models import load_checkpoint, load_denoiser
from ..train import TrainConfig, train
from .common import BACKEND, TEST_SIGMAS, Context, fmt_sigma, mean, relative_path, std, timing_probe, train_all

__all__ = ["PROFILES", "TRAIN_SIGMAS", "BLIND_RANGE", "model_specs", "run"]

TRAIN_SIGMAS = (15.0, 25.0, 50.0)
BLIND_RANGE = (0.0, 75.0)

#: Training settings and test images (None: all 68) of each profile.
PROFILES: dict[str, dict] = {
    # m=256, lr 5e-3 and an initial NeLU lam of 0.05 (it settles near 0.03-0.04) won a pilot
    # (sigma 25, 10k steps, Set12 validation) against m=128, lr 2e-3 and lam = universal_lam(256).
    "full": {"train": dict(patch=8, m=256, steps=8000, batch_size=256, lr=5e-3, nelu_lam=0.05, pool_size=200_000,
                           train_images=None, val_images=12, val_every=2500, val_stride=4, eval_stride=4,
                           backend=BACKEND),
             "images": None},
    "quick": {"train": dict(patch=8, m=32, steps=40, batch_size=64, lr=5e-3, nelu_lam=0.05, pool_size=4000,
                            train_images=8, val_images=1, val_every=20, val_stride=4, eval_stride=4,
                            backend=BACKEND),
              "images": 2},
}


def model_specs() -> list[dict]:
    """Every BSD68 model: name, activation, training noise, role."""
    specs = []
    for s in TRAIN_SIGMAS:
        for act in ("relu", "nelu"):
            specs.append({"name": f"{act}_sigma{fmt_sigma(s)}", "activation": act, "sigma": s, "sigma_range": None,
                          "role": "main", "oracle": act == "relu"})
    for act in ("relu", "nelu"):
        lo, hi = BLIND_RANGE
        specs.append({"name": f"{act}_blind{fmt_sigma(lo)}-{fmt_sigma(hi)}", "activation": act, "sigma": None,
                      "sigma_range": [lo, hi], "role": "blind", "oracle": False})
    for s in TEST_SIGMAS:
        if s not in TRAIN_SIGMAS:
            specs.append({"name": f"relu_sigma{fmt_sigma(s)}", "activation": "relu", "sigma": s, "sigma_range": None,
                          "role": "oracle", "oracle": True})
    return specs


def run(ctx: Context) -> dict:
    profile, out, seed, threads, fresh, log = ctx.profile, ctx.out, ctx.seed, ctx.threads, ctx.fresh, ctx.log
    prof = PROFILES[profile]
    ckdir = ctx.checkpoint_dir
    t_all = time.perf_counter()
    images = cached_dataset("BSD68", prof["images"])
    names = dataset_names("BSD68", prof["images"])
    models, rows, summary = {}, [], []
    specs = model_specs()
    workers = ctx.workers_for(len(specs))
    timings = {"workers": workers, "train_s": {}, "eval_s": {}}
    jobs = [(TrainConfig(activation=spec["activation"], sigma=spec["sigma"],
                         sigma_range=tuple(spec["sigma_range"]) if spec["sigma_range"] else None,
                         seed=seed, threads=threads, progress=False, **prof["train"]),
             ckdir / f"{spec['name']}.pt", fresh, load_checkpoint, train) for spec in specs]
    log(f"bsd68: {len(jobs)} models on {workers} worker(s)")
    t = time.perf_counter()
    trained = train_all(jobs, workers)  # independent runs, in parallel; then evaluated one by one
    timings["train_wall_s"] = time.perf_counter() - t
    t_eval = time.perf_counter()
    for spec, job, (ck, reused, seconds) in zip(specs, jobs, trained):
        path = job[1]
        timings["train_s"][spec["name"]] = seconds
        hist = ck["history"][-1] if ck["history"] else {}
        models[spec["name"]] = {
            **spec,
            "checkpoint": relative_path(path, out),
            "reused_checkpoint": reused,
            "train_time_s": ck.get("elapsed_s"),
            "steps": ck["step"],
            "val_psnr_set12": hist.get("val_psnr"),
            "learned_lam": hist.get("lam"),
            "learned_threshold_mean": hist.get("threshold_mean"),
            "history": ck["history"],
        }
        log(f"bsd68: {spec['name']}: {'reused' if reused else 'trained'} in "
            f"{timings['train_s'][spec['name']]:.1f}s, Set12 val PSNR {hist.get('val_psnr')}")
        # Evaluate: every non-oracle-only model on all sigmas, an oracle at its own sigma only.
        sigmas = [spec["sigma"]] if spec["role"] == "oracle" else list(TEST_SIGMAS)
        den = load_denoiser(path)
        t = time.perf_counter()
        torch.set_num_threads(threads)
        res = evaluate_images(den, images, sigmas, seed=seed, workers=ctx.workers_for(len(images)))
        timings["eval_s"][spec["name"]] = time.perf_counter() - t
        for s in sigmas:
            for i, name in enumerate(names):
                rows.append({"model": spec["name"], "activation": spec["activation"], "role": spec["role"],
                             "train_sigma": "" if spec["sigma"] is None else spec["sigma"],
                             "train_range": "" if spec["sigma_range"] is None else "-".join(map(fmt_sigma, spec["sigma_range"])),
                             "test_sigma": s, "image": name, "noisy_psnr": res["noisy_psnr"][s][i],
                             "psnr": res["psnr"][s][i], "ssim": res["ssim"][s][i]})
            summary.append({"model": spec["name"], "activation": spec["activation"], "role": spec["role"],
                            "oracle": spec["oracle"] and s == spec["sigma"],
                            "train_sigma": spec["sigma"], "train_range": spec["sigma_range"], "test_sigma": s,
                            "n_images": len(names),
                            "noisy_psnr_mean": mean(res["noisy_psnr"][s]),
                            "psnr_mean": mean(res["psnr"][s]), "psnr_std": std(res["psnr"][s]),
                            "ssim_mean": mean(res["ssim"][s]), "ssim_std": std(res["ssim"][s]),
                            "psnr": res["psnr"][s], "ssim": res["ssim"][s]})
        log(f"bsd68: {spec['name']}: evaluated at {len(sigmas)} sigma(s) on {len(names)} images in "
            f"{timings['eval_s'][spec['name']]:.1f}s; PSNR " +
            ", ".join(f"{fmt_sigma(s)}:{mean(res['psnr'][s]):.2f}" for s in sigmas))
    timings["eval_wall_s"] = time.perf_counter() - t_eval
    # Speed of one image denoise (a 481x321 BSD68 image), at the evaluation stride and at stride 1.
    probe = next(im for im in images if tuple(im.shape) in ((481, 321), (321, 481)))
    torch.set_num_threads(threads)
    speed = {}
    for act in ("relu", "nelu"):
        path = ckdir / f"{act}_sigma25.pt"
        strides = (prof["train"]["eval_stride"], 1) if profile == "full" else (prof["train"]["eval_stride"],)
        for stride in strides:
            den, noisy = load_denoiser(path, stride=stride), timing_probe(probe)
            speed[f"{act}_stride{stride}_s"] = median_time(lambda: den(noisy), 3 if stride == 1 else 5)
    timings["denoise_one_481x321"] = {"image_shape": list(probe.shape), "threads": threads, **speed}
    timings["total_s"] = time.perf_counter() - t_all
    meta = ctx.meta(profile=profile, seed=seed, threads=threads, eval_noise_seed=seed,
                 test_sigmas=list(TEST_SIGMAS), train_settings=prof["train"], timings=timings,
                 images=names)
    ctx.write_json("bsd68.json", {"meta": meta, "models": models, "summary": summary})
    ctx.write_csv("bsd68.csv", rows)
    ctx.write_csv("bsd68_summary.csv",
               [{k: v for k, v in r.items() if k not in ("psnr", "ssim", "train_range")} |
                {"train_range": "" if r["train_range"] is None else "-".join(map(fmt_sigma, r["train_range"]))}
                for r in summary])
    log(f"bsd68: wrote {out / 'bsd68.json'}, bsd68.csv, bsd68_summary.csv ({timings['total_s']:.0f}s)")
    return timings
