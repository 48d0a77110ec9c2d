"""``reproduce universal``: one model, never told sigma, for every noise level (the one-model study).

Every model here is trained blind, with a noise level per sample drawn in
:data:`SIGMA_RANGE`, and compared with the sigma-matched ReLU oracles of
``reproduce bsd68`` (their checkpoints, evaluated on the same noisy images).

* **Levers**, one at a time against a fixed baseline (paired NeLU, each sample's MSE
  weighted by ``(sigma / 25)**-1``): the loss weighting and how the levels are drawn, the
  code size ``m``, signed codes on unpaired atoms, the patch size, three times the steps,
  one ``lam_i`` per unit (weighted square-root lasso, ``wnelu``), the scale-free residual
  gate of :meth:`nelu.models.SparseAE.gate_value`, on :data:`LEVER_SIGMAS` and the
  profile's ``lever_images``.
* **The recommended model** (role ``recommended``) and ReLU trained with the same recipe
  (role ``same-recipe``), on every level of :data:`~nelu.experiments.common.TEST_SIGMAS`
  and the profile's ``images``.
* **An honest ceiling**: the sigma-matched ReLU of ``reproduce bsd68`` (role ``oracle``),
  and the same recipe warm-started from the oracle at :data:`WARM_SOURCE` (role
  ``oracle-warm``; from scratch, weak-noise training can stall); the ceiling at a level is
  the better of the two (:meth:`nelu.results.UniversalResults.oracle`).
* **The stride-1 check**: the recommended model and the oracles with every overlapping
  patch (:data:`DENSE_STRIDE`) instead of the stride of the rest, on the lever images and
  levels (models named ``<name>@stride1``).
* **The lambda question**: the recommended architecture trained at each fixed level of
  :data:`FIXED_SIGMAS` (role ``fixed``), to see how much its learned weights move with the
  training noise; and, for the recommended model, the number ``k`` of active units and
  ``sum_active lam_i**2`` (the ``lam**2 k`` of the threshold equation) on BSD68 patches at
  every test level (``code_stats``).

The runs are independent and go to ``ctx`` workers (the longest first); the numbers do not
depend on how many. Writes ``universal.json`` (metadata, models, learned weights,
summaries, timings), ``universal.csv`` (per model, level and image) and the checkpoints.
"""

from __future__ import annotations

import time

import torch

from ..data import cached_dataset, dataset_names
from ..evaluation import evaluate_images
from ..models import PatchDenoiser, load_checkpoint, load_denoiser
from ..train import TrainConfig, train
from .common import (BACKEND, TEST_SIGMAS, Context, ExperimentError, fmt_sigma, mean, relative_path, summary_stats,
                     train_all)

__all__ = ["PROFILES", "SIGMA_RANGE", "LEVER_SIGMAS", "BASELINE", "LEVERS", "RECOMMENDED", "FIXED_SIGMAS",
           "WARM_SOURCE", "DENSE_STRIDE", "model_specs", "train_config", "code_stats", "run"]

SIGMA_RANGE = (2.0, 75.0)
LEVER_SIGMAS = (5.0, 10.0, 25.0, 50.0, 75.0)
#: The fixed baseline every lever changes one thing of (a TrainConfig's fields).
BASELINE = dict(activation="nelu", loss_weight_power=1.0, gate=False)
#: name -> the change to the baseline.
LEVERS: dict[str, dict] = {
    "baseline": {},
    "no_weight": dict(loss_weight_power=0.0),
    "weight_1.25": dict(loss_weight_power=1.25),
    "weight_1.5": dict(loss_weight_power=1.5),
    "log_uniform": dict(loss_weight_power=0.0, sigma_sampling="log-uniform"),
    "m128": dict(m=128),
    "m512": dict(m=512),
    "m1024": dict(m=1024),
    "signed": dict(activation="snelu", nelu_lam=None),  # 256 unpaired atoms, lam from universal_lam(256)
    "patch6": dict(patch=6),
    "patch10": dict(patch=10),
    "steps_x3": dict(steps_factor=3),
    "wnelu": dict(activation="wnelu"),
    "gate": dict(gate=True),
}
#: The recommended model: per-unit weights, the residual gate and the 1.25 weighting.
RECOMMENDED = dict(activation="wnelu", gate=True, loss_weight_power=1.25)
#: Training levels of the fixed-sigma versions of the recommended architecture.
FIXED_SIGMAS = (15.0, 25.0, 50.0)
#: The oracle every warm-started oracle starts from (a checkpoint of ``reproduce bsd68``).
WARM_SOURCE = 25.0
#: Stride of the stride-1 check (the recommended model and the oracles, on the lever images and levels).
DENSE_STRIDE = 1

PROFILES: dict[str, dict] = {
    "full": {"train": dict(patch=8, m=256, steps=8000, batch_size=256, lr=5e-3, nelu_lam=0.05, pool_size=200_000,
                           train_images=None, val_images=12, val_every=4000, val_stride=4, eval_stride=4,
                           backend=BACKEND),
             "images": None, "lever_images": 20},
    "quick": {"train": dict(patch=8, m=32, steps=40, batch_size=64, lr=5e-3, nelu_lam=0.05, pool_size=4000,
                            train_images=8, val_images=1, val_every=20, val_stride=4, eval_stride=4,
                            backend=BACKEND),
              "images": 2, "lever_images": 1},
}


def model_specs() -> list[dict]:
    """Every model of the study: name, role and the TrainConfig fields that differ from the profile's.

    ``steps_factor`` multiplies the profile's steps; ``sigma`` trains at one fixed level;
    ``warm_from`` (role ``oracle-warm``) starts a sigma-matched ReLU from the ``reproduce
    bsd68`` oracle at that level, with that experiment's training settings.
    """
    specs = [{"name": f"lever_{k}", "role": "lever", "lever": k, **BASELINE, **v} for k, v in LEVERS.items()]
    specs.append({"name": "universal_nelu", "role": "recommended", "lever": None, **RECOMMENDED})
    specs.append({"name": "universal_relu", "role": "same-recipe", "lever": None, **RECOMMENDED, "activation": "relu"})
    for s in FIXED_SIGMAS:
        specs.append({"name": f"universal_nelu_sigma{fmt_sigma(s)}", "role": "fixed", "lever": None,
                      **RECOMMENDED, "loss_weight_power": 0.0, "sigma": s})
    for s in TEST_SIGMAS:
        if s != WARM_SOURCE:
            specs.append({"name": f"oracle_warm_sigma{fmt_sigma(s)}", "role": "oracle-warm", "lever": None,
                          "activation": "relu", "sigma": s, "warm_from": WARM_SOURCE})
    return specs


def train_config(spec: dict, profile: str, ctx: Context) -> TrainConfig:
    """The :class:`~nelu.train.TrainConfig` of one spec of :func:`model_specs` in ``profile``."""
    from .bsd68 import PROFILES as BSD68_PROFILES

    fields = {k: v for k, v in spec.items() if k not in ("name", "role", "lever")}
    if "warm_from" in fields:  # the oracle's own recipe, started from another oracle's weights
        source = ctx.checkpoint_dir / f"relu_sigma{fmt_sigma(fields.pop('warm_from'))}.pt"
        return TrainConfig(seed=ctx.seed, threads=ctx.threads, progress=False, sigma_range=None,
                           init_from=str(source), **BSD68_PROFILES[profile]["train"], **fields)
    train = dict(PROFILES[profile]["train"])
    train["steps"] *= fields.pop("steps_factor", 1)
    noise = {"sigma": fields.pop("sigma"), "sigma_range": None} if "sigma" in fields else \
        {"sigma": None, "sigma_range": SIGMA_RANGE}
    return TrainConfig(seed=ctx.seed, threads=ctx.threads, progress=False, **noise, **{**train, **fields})


def _cost(cfg: TrainConfig) -> float:
    """A rough relative training cost, to start the longest runs first."""
    return cfg.total_steps * cfg.m * cfg.patch**2 * (3.0 if cfg.activation == "wnelu" else 1.0)


@torch.no_grad()
def code_stats(ae, images: list[torch.Tensor], sigmas, *, patches: int = 20000, seed: int = 0) -> list[dict]:
    """Active units ``k`` and ``sum_active lam_i**2`` of a weighted-NeLU model's code, per noise level.

    On ``patches`` random patches of ``images`` (seeded) plus Gaussian noise at each level:
    the mean and 90th percentile of ``k`` and of ``sum_{active} lam_i**2`` (``lam**2 k``
    for one shared ``lam``), and the mean residual norm ``r`` over ``sigma sqrt(m)``.
    """
    from ..data import random_patches

    clean = random_patches(images, patches, int(round(ae.n ** 0.5)), torch.Generator().manual_seed(seed))
    act, out = ae.activation, []
    lam2 = act.lam.detach() ** 2
    for s in sigmas:
        noisy = clean + s / 255.0 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(seed + 1))
        u = ae.encoder(noisy - noisy.mean(-1, keepdim=True) if ae.remove_dc else noisy)
        active = act(u) > 0
        k = active.sum(-1).double()
        load = (active * lam2).sum(-1).double()
        out.append({"sigma": float(s), "k_mean": float(k.mean()), "k_p90": float(k.quantile(0.9)),
                    "lam2k_mean": float(load.mean()), "lam2k_p90": float(load.quantile(0.9)),
                    "lam2k_max": float(load.max())})
    return out


def _oracles(ctx: Context, sigmas) -> dict[float, object]:
    paths = {s: ctx.checkpoint_dir / f"relu_sigma{fmt_sigma(s)}.pt" for s in sigmas}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise ExperimentError(f"reproduce universal compares with the oracles of 'reproduce bsd68': "
                              f"{', '.join(missing)} missing; run 'python -m nelu reproduce bsd68 --profile "
                              f"{ctx.profile}' first or pass --checkpoints FOLDER (e.g. results/checkpoints)")
    return {s: load_denoiser(p) for s, p in paths.items()}


def run(ctx: Context) -> dict:
    profile, out, seed, threads, log = ctx.profile, ctx.out, ctx.seed, ctx.threads, ctx.log
    prof = PROFILES[profile]
    oracles = _oracles(ctx, TEST_SIGMAS)
    t_all = time.perf_counter()
    specs = model_specs()
    workers = ctx.workers_for(len(specs))
    timings: dict = {"workers": workers, "train_s": {}, "eval_s": {}}
    models, rows, summary = {}, [], []

    def evaluate(name: str, den, role: str, sigmas, limit) -> None:
        images, names = cached_dataset("BSD68", limit), dataset_names("BSD68", limit)
        t = time.perf_counter()
        torch.set_num_threads(threads)
        res = evaluate_images(den, images, list(sigmas), seed=seed, metrics=("psnr",),
                              workers=ctx.workers_for(len(images)))
        timings["eval_s"][name] = time.perf_counter() - t
        for s in sigmas:
            rows.extend({"model": name, "role": role, "test_sigma": s, "image": im, "noisy_psnr": res["noisy_psnr"][s][i],
                         "psnr": res["psnr"][s][i]} for i, im in enumerate(names))
            summary.append({"model": name, "role": role, "test_sigma": s, "n_images": len(names),
                            **summary_stats(res, s, ("psnr",))})
        log(f"universal: {name} on {len(names)} images: " + ", ".join(f"{fmt_sigma(s)}:{mean(res['psnr'][s]):.2f}"
                                                                      for s in sigmas))

    configs = [train_config(spec, profile, ctx) for spec in specs]
    paths = [ctx.checkpoint_dir / f"{spec['name']}.pt" for spec in specs]
    order = sorted(range(len(specs)), key=lambda i: -_cost(configs[i]))  # longest first: the workers end together
    log(f"universal: {len(specs)} models on {workers} worker(s)")
    t = time.perf_counter()
    done = train_all([(configs[i], paths[i], ctx.fresh, load_checkpoint, train) for i in order], workers)
    timings["train_wall_s"] = time.perf_counter() - t
    trained = dict(zip(order, done))
    dense: dict[float, dict[str, object]] = {s: {"oracle": oracles[s]} for s in LEVER_SIGMAS}
    for i, spec in enumerate(specs):
        ck, reused, seconds = trained[i]
        timings["train_s"][spec["name"]] = seconds
        den = load_denoiser(paths[i])
        learned = den.ae.activation.learned()
        if den.ae.gate:
            learned.update(gate_a=float(den.ae.gate_a.detach()), gate_b=float(den.ae.gate_b.detach()))
        models[spec["name"]] = {**spec, "checkpoint": relative_path(paths[i], out), "reused_checkpoint": reused,
                                "train_time_s": ck.get("elapsed_s"), "steps": ck["step"], "learned": learned,
                                "history": ck["history"], "train_config": ck["config"]}
        log(f"universal: {spec['name']}: {'reused' if reused else 'trained'} in {seconds:.1f}s")
        role = spec["role"]
        if role == "lever":
            evaluate(spec["name"], den, "lever", LEVER_SIGMAS, prof["lever_images"])
        elif role == "oracle-warm":
            s = float(spec["sigma"])
            evaluate(spec["name"], den, role, [s], prof["images"])
            if s in LEVER_SIGMAS:
                dense[s]["oracle_warm"] = den
                if prof["lever_images"] != prof["images"]:
                    evaluate(f"{spec['name']}_levers", den, f"{role}-levers", [s], prof["lever_images"])
        elif role != "fixed":  # the fixed-sigma models are there for their weights
            evaluate(spec["name"], den, role, TEST_SIGMAS, prof["images"])
        if role == "recommended":
            t = time.perf_counter()
            models[spec["name"]]["code_stats"] = code_stats(den.ae, cached_dataset("BSD68", prof["lever_images"]),
                                                            TEST_SIGMAS, seed=seed)
            timings["code_stats_s"] = time.perf_counter() - t
            recommended = (spec["name"], den)
    for s, den in oracles.items():  # the sigma-matched ceiling on the same noisy images
        evaluate(f"oracle_sigma{fmt_sigma(s)}", den, "oracle", [s], prof["images"])
        if s in LEVER_SIGMAS and prof["lever_images"] != prof["images"]:
            evaluate(f"oracle_sigma{fmt_sigma(s)}_levers", den, "oracle-levers", [s], prof["lever_images"])
    # The stride-1 check: every overlapping patch, for the recommended model and the oracles.
    def every_patch(den) -> PatchDenoiser:
        return PatchDenoiser(den.ae, den.patch, DENSE_STRIDE).eval()

    suffix = f"@stride{DENSE_STRIDE}"
    name, den = recommended
    evaluate(name + suffix, every_patch(den), "recommended" + suffix, LEVER_SIGMAS, prof["lever_images"])
    for s, dens in dense.items():
        for kind, den in dens.items():
            evaluate(f"{kind}_sigma{fmt_sigma(s)}_levers{suffix}", every_patch(den),
                     f"{kind.replace('_', '-')}-levers{suffix}", [s], prof["lever_images"])
    timings["total_s"] = time.perf_counter() - t_all
    meta = ctx.meta(profile=profile, seed=seed, threads=threads, eval_noise_seed=seed, sigma_range=list(SIGMA_RANGE),
                    test_sigmas=list(TEST_SIGMAS), lever_sigmas=list(LEVER_SIGMAS), train_settings=prof["train"],
                    baseline=BASELINE, recommended=RECOMMENDED, warm_source=WARM_SOURCE, dense_stride=DENSE_STRIDE,
                    images=dataset_names("BSD68", prof["images"]),
                    lever_images=dataset_names("BSD68", prof["lever_images"]), timings=timings)
    ctx.write_json("universal.json", {"meta": meta, "models": models, "summary": summary})
    ctx.write_csv("universal.csv", rows)
    log(f"universal: wrote {out / 'universal.json'} and universal.csv ({timings['total_s']:.0f}s)")
    return timings
