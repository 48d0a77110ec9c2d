"""``reproduce noise``: the sigma-25 and blind BSD68 models under every noise model.

Evaluates the checkpoints of ``reproduce bsd68`` (trains nothing) under each noise model
of :func:`nelu.data.add_noise`, with the PSNR also measured on the left, middle and right
third of the columns (the ``varying`` noise grows linearly from 0.5 sigma at the left edge
to 1.5 sigma at the right). Writes ``noise.json`` and ``noise.csv``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from .. import data as nd
from ..data import cached_dataset, dataset_names
from ..evaluation import evaluate_images
from ..metrics import psnr
from ..models import load_checkpoint, load_denoiser
from .common import Context, ExperimentError, fmt_sigma, mean, relative_path, summary_stats

__all__ = ["PROFILES", "NOISE_MODELS", "NOISE_SIGMAS", "NOISE_BANDS", "run"]

#: The models evaluated (checkpoints of ``reproduce bsd68``) and the levels.
NOISE_MODELS = ("relu_sigma25", "nelu_sigma25", "relu_blind0-75", "nelu_blind0-75")
NOISE_SIGMAS = (5.0, 15.0, 25.0, 50.0, 75.0)
#: PSNR is also measured on this many vertical strips of the image.
NOISE_BANDS = 3

#: Test images of each profile (None: all 68 BSD68 images).
PROFILES: dict[str, dict] = {"full": dict(images=None), "quick": dict(images=2)}


@dataclass(frozen=True)
class ColumnBand:
    """The PSNR on vertical strip ``j`` of ``n`` of the image (a metric that pickles, for the workers)."""

    j: int
    n: int

    def __call__(self, clean: torch.Tensor, est: torch.Tensor) -> float:
        W = clean.shape[-1]
        a, b = round(W * self.j / self.n), round(W * (self.j + 1) / self.n)
        return psnr(clean[..., a:b], est[..., a:b])


def _column_bands(n: int) -> dict:
    """Metrics ``psnr_band1..n``: the PSNR on the n vertical strips (thirds for n = 3) of the image."""
    return {f"psnr_band{j + 1}": ColumnBand(j, n) for j in range(n)}


def run(ctx: Context) -> dict:
    """The sigma-25 and blind BSD68 models under every noise model; trains nothing."""
    profile, out, seed, threads, log = ctx.profile, ctx.out, ctx.seed, ctx.threads, ctx.log
    part = PROFILES[profile]
    ckdir = ctx.checkpoint_dir
    paths = {name: ckdir / f"{name}.pt" for name in NOISE_MODELS}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise ExperimentError(f"reproduce noise evaluates the checkpoints of 'reproduce bsd68': {', '.join(missing)} "
                         f"missing; run 'python -m nelu reproduce bsd68 --profile {profile}' first or pass "
                         "--checkpoints FOLDER (e.g. results/checkpoints)")
    t_all = time.perf_counter()
    images = cached_dataset("BSD68", part["images"])
    names = dataset_names("BSD68", part["images"])
    bands = _column_bands(NOISE_BANDS)
    metric_keys = ("psnr", *bands)  # no SSIM: it would cost a third of the time budget
    models, rows, summary = {}, [], []
    timings = {"workers": ctx.workers_for(len(images)), "eval_s": {}}
    for name, path in paths.items():
        ck = load_checkpoint(path)
        den = load_denoiser(path, ckpt=ck)
        cfg = ck["config"]
        role = "blind" if cfg.get("sigma_range") else "main"
        hist = ck["history"][-1] if ck.get("history") else {}
        models[name] = {"activation": cfg["activation"], "role": role, "train_sigma": cfg.get("sigma"),
                        "train_range": cfg.get("sigma_range"), "checkpoint": relative_path(path, out), "steps": ck.get("step"),
                        "learned_lam": hist.get("lam"), "learned_threshold_mean": hist.get("threshold_mean"),
                        "stride": den.stride, "train_config": cfg}
        for kind in nd.NOISE_KINDS:
            t = time.perf_counter()
            torch.set_num_threads(threads)
            res = evaluate_images(den, images, list(NOISE_SIGMAS), kind=kind, seed=seed, metrics=("psnr",),
                                  extra=bands, workers=timings["workers"])
            timings["eval_s"][f"{name}/{kind}"] = time.perf_counter() - t
            train_range = "" if cfg.get("sigma_range") is None else "-".join(map(fmt_sigma, cfg["sigma_range"]))
            for s in NOISE_SIGMAS:
                for i, im in enumerate(names):
                    rows.append({"model": name, "activation": cfg["activation"], "role": role,
                                 "train_sigma": "" if cfg.get("sigma") is None else cfg["sigma"],
                                 "train_range": train_range, "noise": kind, "test_sigma": s, "image": im,
                                 "noisy_psnr": res["noisy_psnr"][s][i],
                                 **{k: res[k][s][i] for k in metric_keys}})
                summary.append({"model": name, "activation": cfg["activation"], "role": role,
                                "train_sigma": cfg.get("sigma"), "train_range": cfg.get("sigma_range"),
                                "noise": kind, "test_sigma": s, "n_images": len(names),
                                **summary_stats(res, s, metric_keys), "psnr": res["psnr"][s]})
            log(f"noise: {name} under {kind} noise in {timings['eval_s'][f'{name}/{kind}']:.1f}s; PSNR " +
                ", ".join(f"{fmt_sigma(s)}:{mean(res['psnr'][s]):.2f}" for s in NOISE_SIGMAS))
    timings["total_s"] = time.perf_counter() - t_all
    meta = ctx.meta(profile=profile, seed=seed, threads=threads, eval_noise_seed=seed,
                 noise_kinds=list(nd.NOISE_KINDS), test_sigmas=list(NOISE_SIGMAS), checkpoints=relative_path(ckdir, out),
                 bands=f"psnr_band1..{NOISE_BANDS}: PSNR on {NOISE_BANDS} equal vertical strips, left to right "
                       "(the 'varying' noise std grows linearly from 0.5 sigma at the left edge to 1.5 sigma at "
                       "the right)", timings=timings, images=names)
    ctx.write_json("noise.json", {"meta": meta, "models": models, "summary": summary})
    ctx.write_csv("noise.csv", rows)
    log(f"noise: wrote {out / 'noise.json'} and noise.csv ({timings['total_s']:.0f}s)")
    return timings
