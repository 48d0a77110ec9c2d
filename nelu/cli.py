"""Command line: ``python -m nelu {train,evaluate,reproduce} ...``.

* ``train``: fit one auto-encoder (see :class:`nelu.train.TrainConfig`) and write its checkpoint.
* ``evaluate``: PSNR/SSIM of a checkpoint on a data set at several noise levels;
  prints a table, optionally writes JSON and a CSV beside it.
* ``reproduce``: train and evaluate everything the book reports (profile
  ``full``) or the same pipeline on little data (profile ``quick``, under a minute,
  written to ``results/quick`` so it never overwrites the full results). Targets:
  ``synthetic``, ``bsd68`` (the patch auto-encoders), ``noise`` (the BSD68 models
  trained at sigma 25 and the blind ones under every noise model of
  :func:`nelu.data.add_noise`; trains nothing), ``conv`` (the convolutional
  auto-encoders of :mod:`nelu.conv`) and ``all``.

A user mistake (unknown data set or activation, a number out of range or not
finite, a missing, incompatible or unsafe checkpoint, an output that would
overwrite an input, an unwritable output, a data error, a diverged training run)
prints one line ``nelu: error: ...`` to stderr and exits with status 2. Anything
else is a bug: its traceback is printed, followed by a line saying so, and the
status is 1.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

from . import data as nd
from .files import FileSafetyError, check_distinct, write_csv, write_json
from .models import CheckpointError, load_checkpoint, load_denoiser
from .train import (
    MAX_THREADS,
    ConfigError,
    TrainConfig,
    cached_dataset,
    check_device,
    check_replaceable,
    config_matches,
    evaluate_images,
    strip_optimizer,
    train,
)

__all__ = ["main", "UsageError", "PROFILES"]

TEST_SIGMAS = (5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 40.0, 50.0, 60.0, 75.0)
TRAIN_SIGMAS = (15.0, 25.0, 50.0)
BLIND_RANGE = (0.0, 75.0)
#: ``reproduce noise``: the models evaluated (checkpoints of ``reproduce bsd68``) and the levels.
NOISE_MODELS = ("relu_sigma25", "nelu_sigma25", "relu_blind0-75", "nelu_blind0-75")
NOISE_SIGMAS = (5.0, 15.0, 25.0, 50.0, 75.0)
#: ``reproduce noise``: PSNR is also measured on the left, middle and right third of the columns
#: (the ``varying`` noise grows linearly from 0.5 sigma at the left edge to 1.5 sigma at the right).
NOISE_BANDS = 3
#: ``reproduce conv``: the convolutional auto-encoders (all trained at sigma 25) and the test levels.
CONV_ACTS = ("relu", "nelu", "nelu-global")
CONV_TRAIN_SIGMA = 25.0
CONV_SIGMAS = (5.0, 10.0, 15.0, 25.0, 40.0, 50.0, 75.0)
#: ``reproduce conv``: levels of the spatially varying noise test (on the ``global_images`` subset).
CONV_VARYING_SIGMAS = (25.0, 50.0)

#: Settings of ``reproduce noise`` and ``reproduce conv`` for a profile that lacks them (the quick ones;
#: the number of images falls back to the profile's ``bsd68_images``).
_QUICK_PARTS: dict[str, dict] = {
    "noise": dict(images=2),
    "conv": dict(train=dict(m=16, kernel=5, crop=24, steps=30, batch_size=4, lr=3e-3, nelu_lam=0.1,
                            pool_size=200, train_images=8),
                 images=2, global_images=1),
}

#: Settings of the two reproduction profiles. ``quick`` runs the same code on little data.
PROFILES: dict[str, dict] = {
    "full": {
        # m=256, lr 5e-3 and an initial NeLU lam of 0.05 (it settles near 0.03-0.04) won a pilot
        # (sigma 25, 10k steps, Set12 validation) against m=128, lr 2e-3 and lam = universal_lam(256).
        "train": dict(patch=8, m=256, steps=8000, batch_size=256, lr=5e-3, nelu_lam=0.05, pool_size=200_000,
                      train_images=None, val_images=12, val_every=2500, val_stride=4, eval_stride=4),
        "bsd68_images": None,
        "synthetic": dict(steps=6000, lr=1e-2, test_size=10000),  # 2000 steps at 3e-3 left low-sigma oracles near identity
        "noise": dict(images=None),
        # 64 filters of 7x7 on 40x40 crops; 1000 steps (a pilot: 600 -> 1500 steps gained 0.2-0.8 dB).
        # The per-image NeLU needs a sort of all ~10^7 coefficients of a test image: evaluated on a subset.
        "conv": dict(train=dict(m=64, kernel=7, crop=40, steps=1000, batch_size=8, lr=3e-3, nelu_lam=0.1,
                                pool_size=2000, train_images=None),
                     images=None, global_images=4),
        "out": "results",
    },
    "quick": {
        "train": dict(patch=8, m=32, steps=40, batch_size=64, lr=5e-3, nelu_lam=0.05, pool_size=4000,
                      train_images=8, val_images=1, val_every=20, val_stride=4, eval_stride=4),
        "bsd68_images": 2,
        "synthetic": dict(steps=40, test_size=500),
        **_QUICK_PARTS,
        "out": "results/quick",
    },
}


class UsageError(ValueError):
    """A mistake in the command line or its paths, reported as one line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage dump; main() prints it
        raise UsageError(f"{self.prog}: {message}")


def _fmt(s: float) -> str:
    return f"{s:g}"


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _check_writable_file(path: Path) -> None:
    """Create the parent folder and check a file can be written there (before long work)."""
    try:
        if path.is_dir():
            raise UsageError(f"output path {path} is a directory, expected a file")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".nelu-write-test.")
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise UsageError(f"cannot write to {path}: {exc.strerror or exc}") from exc


def _check_writable_dir(path: Path) -> None:
    _check_writable_file(path / ".probe")


def _sigma(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid sigma {text!r}") from None
    if not math.isfinite(v) or not 0 <= v <= nd.MAX_SIGMA:
        raise argparse.ArgumentTypeError(f"sigma must be in [0, {nd.MAX_SIGMA:g}] (0-255 scale), got {text}")
    return v


def _finite_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number {text!r}") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return v


def _seed(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid seed {text!r}") from None
    if not 0 <= v <= 2**32 - 1:
        raise argparse.ArgumentTypeError(f"seed must be in [0, 2**32 - 1], got {text}")
    return v


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _meta(argv: list[str] | None, **extra) -> dict:
    return {
        "command": "python -m nelu " + shlex.join(sys.argv[1:] if argv is None else argv),
        "git_commit": git_commit(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "cpu_count": os.cpu_count(),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **extra,
    }


def _mean(v: list[float]) -> float:
    return float(sum(v) / len(v)) if v else float("nan")


def _std(v: list[float]) -> float:
    if len(v) < 2:
        return 0.0
    mu = _mean(v)
    return float(math.sqrt(sum((x - mu) ** 2 for x in v) / (len(v) - 1)))


def dataset_names(name: str, limit: int | None = None) -> list[str]:
    """File names of a data set in :func:`nelu.data.load_dataset` order."""
    files = sorted(rel for rel in nd.registry() if rel.split("/", 1)[0] == name)
    return [f.split("/", 1)[1] for f in files[:limit]]


# ------------------------------------------------------------------------------ train


def _cmd_train(args, argv) -> int:
    cfg = TrainConfig(
        activation=args.activation,
        sigma=args.sigma,
        sigma_range=tuple(args.sigma_range) if args.sigma_range else None,
        epochs=args.epochs,
        steps=args.steps,
        patch=args.patch,
        m=args.m,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        seed=args.seed,
        device=args.device,
        threads=args.threads,
        pool_size=args.pool_size,
        train_images=args.train_images,
        val_images=args.val_images,
        val_every=args.val_every,
        nelu_lam=args.nelu_lam,
        progress=False if args.no_progress else None,
    ).validate()
    out = Path(args.out)
    _check_writable_file(out)
    check_replaceable(out, load_checkpoint)
    if out.is_file() and not (args.resume or args.overwrite):
        raise FileSafetyError(f"{out} exists; pass --resume to continue that run or --overwrite to replace it")
    t = time.perf_counter()
    ckpt = train(cfg, out, resume=args.resume, log=print)
    h = ckpt["history"][-1] if ckpt["history"] else {}
    val = h.get("val_psnr")
    print(f"wrote {out}: {ckpt['step']} steps, validation PSNR "
          f"{'n/a' if val is None else f'{val:.2f} dB'} on Set12 at sigma={_fmt(cfg.val_sigma)}, "
          f"{time.perf_counter() - t:.1f}s")
    return 0


# --------------------------------------------------------------------------- evaluate


def _eval_table(res: dict, sigmas) -> str:
    has_ssim = "ssim" in res
    lines = [f"{'sigma':>6} {'noisy PSNR':>11} {'PSNR':>8}" + (f" {'SSIM':>7}" if has_ssim else "")]
    for s in sigmas:
        line = f"{_fmt(s):>6} {_mean(res['noisy_psnr'][s]):>11.2f} {_mean(res['psnr'][s]):>8.2f}"
        if has_ssim:
            line += f" {_mean(res['ssim'][s]):>7.4f}"
        lines.append(line)
    return "\n".join(lines)


def _cmd_evaluate(args, argv) -> int:
    json_path = Path(args.json) if args.json else None
    if json_path is not None:
        if json_path.suffix.lower() != ".json":
            raise UsageError(f"--json {json_path} must end in .json (the per-image CSV is written beside it, "
                             "with the suffix .csv)")
        check_distinct([("--json", json_path), ("the CSV beside --json", json_path.with_suffix(".csv"))],
                       [("--checkpoint", args.checkpoint)])
        _check_writable_file(json_path)
        _check_writable_file(json_path.with_suffix(".csv"))
    ckpt = load_checkpoint(args.checkpoint)
    patch = int(ckpt["config"]["patch"])
    if args.stride is not None and not 1 <= args.stride <= patch:
        raise UsageError(f"--stride must be in [1, {patch}] (the checkpoint's patch size), got {args.stride}")
    den = load_denoiser(args.checkpoint, stride=args.stride, ckpt=ckpt)
    if not ckpt.get("complete"):
        print(f"note: {args.checkpoint} is an unfinished run (step {ckpt.get('step')} of "
              f"{ckpt.get('total_steps')}); resume it with 'python -m nelu train ... --resume'", file=sys.stderr)
    images = cached_dataset(args.dataset, args.limit)
    names = dataset_names(args.dataset, args.limit)
    torch.set_num_threads(args.threads)
    t = time.perf_counter()
    metrics = ("psnr",) if args.no_ssim else ("psnr", "ssim")
    res = evaluate_images(den, images, list(args.sigmas), kind=args.noise, seed=args.seed, metrics=metrics)
    elapsed = time.perf_counter() - t
    print(f"{args.checkpoint} on {args.dataset} ({len(images)} images, {args.noise} noise, stride {den.stride}):")
    print(_eval_table(res, args.sigmas))
    if json_path is not None:
        summary = [
            {"sigma": s, "noisy_psnr_mean": _mean(res["noisy_psnr"][s]), "psnr_mean": _mean(res["psnr"][s]),
             "psnr_std": _std(res["psnr"][s]),
             **({"ssim_mean": _mean(res["ssim"][s]), "ssim_std": _std(res["ssim"][s])} if "ssim" in res else {})}
            for s in args.sigmas
        ]
        per_image = [
            {"image": names[i], "sigma": s, "noisy_psnr": res["noisy_psnr"][s][i], "psnr": res["psnr"][s][i],
             **({"ssim": res["ssim"][s][i]} if "ssim" in res else {})}
            for s in args.sigmas for i in range(len(images))
        ]
        write_json(json_path, {
            "meta": _meta(argv, checkpoint=str(args.checkpoint), dataset=args.dataset, noise=args.noise,
                          noise_seed=args.seed, stride=den.stride, eval_time_s=elapsed,
                          train_config=ckpt["config"]),
            "summary": summary,
            "per_image": per_image,
        })
        write_csv(json_path.with_suffix(".csv"), per_image)
        print(f"wrote {json_path} and {json_path.with_suffix('.csv')}")
    return 0


# -------------------------------------------------------------------------- reproduce


def _model_specs() -> list[dict]:
    """Every BSD68 model: name, activation, training noise, role."""
    specs = []
    for s in TRAIN_SIGMAS:
        for act in ("relu", "nelu"):
            specs.append({"name": f"{act}_sigma{_fmt(s)}", "activation": act, "sigma": s, "sigma_range": None,
                          "role": "main", "oracle": act == "relu"})
    for act in ("relu", "nelu"):
        lo, hi = BLIND_RANGE
        specs.append({"name": f"{act}_blind{_fmt(lo)}-{_fmt(hi)}", "activation": act, "sigma": None,
                      "sigma_range": [lo, hi], "role": "blind", "oracle": False})
    for s in TEST_SIGMAS:
        if s not in TRAIN_SIGMAS:
            specs.append({"name": f"relu_sigma{_fmt(s)}", "activation": "relu", "sigma": s, "sigma_range": None,
                          "role": "oracle", "oracle": True})
    return specs


@torch.no_grad()
def _denoise_time(den, image: torch.Tensor, repeats: int = 5) -> float:
    den(image)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        den(image)
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def _train_or_reuse(cfg, path: Path, fresh: bool, load, train_fn, strip) -> tuple[dict, bool]:
    """The finished checkpoint at ``path`` if its config matches ``cfg`` (unless ``fresh``), else train.

    Returns ``(checkpoint, reused)``; a newly trained checkpoint is stripped of its optimizer state.
    """
    if not fresh and path.exists():
        try:
            ck = load(path)
            if ck.get("complete") and config_matches(ck["config"], cfg):
                return ck, True
        except CheckpointError:
            pass
    ck = train_fn(cfg, path, resume=False)
    strip(path)
    return ck, False


def _reproduce_bsd68(profile: str, out: Path, seed: int, threads: int, fresh: bool, argv, log) -> dict:
    prof = PROFILES[profile]
    ckdir = out / "checkpoints"
    t_all = time.perf_counter()
    images = cached_dataset("BSD68", prof["bsd68_images"])
    names = dataset_names("BSD68", prof["bsd68_images"])
    models, rows, summary = {}, [], []
    timings = {"train_s": {}, "eval_s": {}}
    for spec in _model_specs():
        cfg = TrainConfig(activation=spec["activation"], sigma=spec["sigma"],
                          sigma_range=tuple(spec["sigma_range"]) if spec["sigma_range"] else None,
                          seed=seed, threads=threads, progress=False, **prof["train"])
        path = ckdir / f"{spec['name']}.pt"
        t = time.perf_counter()
        ck, reused = _train_or_reuse(cfg, path, fresh, load_checkpoint, train, strip_optimizer)
        timings["train_s"][spec["name"]] = time.perf_counter() - t
        hist = ck["history"][-1] if ck["history"] else {}
        models[spec["name"]] = {
            **spec,
            "checkpoint": str(path.relative_to(out)),
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
        res = evaluate_images(den, images, sigmas, seed=seed)
        timings["eval_s"][spec["name"]] = time.perf_counter() - t
        for s in sigmas:
            for i, name in enumerate(names):
                rows.append({"model": spec["name"], "activation": spec["activation"], "role": spec["role"],
                             "train_sigma": "" if spec["sigma"] is None else spec["sigma"],
                             "train_range": "" if spec["sigma_range"] is None else "-".join(map(_fmt, spec["sigma_range"])),
                             "test_sigma": s, "image": name, "noisy_psnr": res["noisy_psnr"][s][i],
                             "psnr": res["psnr"][s][i], "ssim": res["ssim"][s][i]})
            summary.append({"model": spec["name"], "activation": spec["activation"], "role": spec["role"],
                            "oracle": spec["oracle"] and s == spec["sigma"],
                            "train_sigma": spec["sigma"], "train_range": spec["sigma_range"], "test_sigma": s,
                            "n_images": len(names),
                            "noisy_psnr_mean": _mean(res["noisy_psnr"][s]),
                            "psnr_mean": _mean(res["psnr"][s]), "psnr_std": _std(res["psnr"][s]),
                            "ssim_mean": _mean(res["ssim"][s]), "ssim_std": _std(res["ssim"][s]),
                            "psnr": res["psnr"][s], "ssim": res["ssim"][s]})
        log(f"bsd68: {spec['name']}: evaluated at {len(sigmas)} sigma(s) on {len(names)} images in "
            f"{timings['eval_s'][spec['name']]:.1f}s; PSNR " +
            ", ".join(f"{_fmt(s)}:{_mean(res['psnr'][s]):.2f}" for s in sigmas))
    # Speed of one image denoise (a 481x321 BSD68 image), at the evaluation stride and at stride 1.
    probe = next(im for im in images if tuple(im.shape) in ((481, 321), (321, 481)))
    torch.set_num_threads(threads)
    speed = {}
    for act in ("relu", "nelu"):
        path = ckdir / f"{act}_sigma25.pt"
        strides = (prof["train"]["eval_stride"], 1) if profile == "full" else (prof["train"]["eval_stride"],)
        for stride in strides:
            speed[f"{act}_stride{stride}_s"] = _denoise_time(load_denoiser(path, stride=stride),
                                                             add_noise_fixed(probe), 3 if stride == 1 else 5)
    timings["denoise_one_481x321"] = {"image_shape": list(probe.shape), "threads": threads, **speed}
    timings["total_s"] = time.perf_counter() - t_all
    meta = _meta(argv, profile=profile, seed=seed, threads=threads, eval_noise_seed=seed,
                 test_sigmas=list(TEST_SIGMAS), train_settings=prof["train"], timings=timings,
                 images=names)
    write_json(out / "bsd68.json", {"meta": meta, "models": models, "summary": summary})
    write_csv(out / "bsd68.csv", rows)
    write_csv(out / "bsd68_summary.csv",
               [{k: v for k, v in r.items() if k not in ("psnr", "ssim", "train_range")} |
                {"train_range": "" if r["train_range"] is None else "-".join(map(_fmt, r["train_range"]))}
                for r in summary])
    log(f"bsd68: wrote {out / 'bsd68.json'}, bsd68.csv, bsd68_summary.csv ({timings['total_s']:.0f}s)")
    return timings


def add_noise_fixed(image: torch.Tensor) -> torch.Tensor:
    return nd.add_noise(image, 25.0, generator=torch.Generator().manual_seed(0))


def _reproduce_synthetic(profile: str, out: Path, seed: int, threads: int, argv, log) -> dict:
    from .synthetic import SyntheticConfig, run_synthetic

    cfg = SyntheticConfig(seed=seed, threads=threads, **PROFILES[profile]["synthetic"])
    res = run_synthetic(cfg, log=log)
    meta = _meta(argv, profile=profile, seed=seed, threads=threads, timings=res["timings"])
    write_json(out / "synthetic.json", {"meta": meta, **res})
    write_csv(out / "synthetic.csv", res["rows"])
    log(f"synthetic: wrote {out / 'synthetic.json'} and synthetic.csv ({res['timings']['total_s']:.1f}s)")
    return res["timings"]


def _part(profile: str, key: str) -> dict:
    """The ``noise`` or ``conv`` settings of a profile (quick ones, with its image count, if it has none)."""
    prof = PROFILES[profile]
    if key in prof:
        return prof[key]
    part = dict(_QUICK_PARTS[key])
    if prof.get("bsd68_images") is not None:
        part["images"] = prof["bsd68_images"]
        if "global_images" in part:
            part["global_images"] = min(part["global_images"], prof["bsd68_images"])
    return part


def _column_bands(n: int) -> dict:
    """Metrics ``psnr_band1..n``: the PSNR on the n vertical strips (thirds for n = 3) of the image."""
    from .metrics import psnr

    def band(j: int):
        def f(clean: torch.Tensor, est: torch.Tensor) -> float:
            W = clean.shape[-1]
            a, b = round(W * j / n), round(W * (j + 1) / n)
            return psnr(clean[..., a:b], est[..., a:b])
        return f

    return {f"psnr_band{j + 1}": band(j) for j in range(n)}


def _summary_stats(res: dict, s: float, keys) -> dict:
    out = {"noisy_psnr_mean": _mean(res["noisy_psnr"][s])}
    for k in keys:
        out[f"{k}_mean"] = _mean(res[k][s])
        out[f"{k}_std"] = _std(res[k][s])
    return out


def _reproduce_noise(profile: str, out: Path, seed: int, threads: int, checkpoints: str | None, argv,
                     log) -> dict:
    """The sigma-25 and blind BSD68 models under every noise model; trains nothing."""
    part = _part(profile, "noise")
    ckdir = Path(checkpoints) if checkpoints is not None else out / "checkpoints"
    paths = {name: ckdir / f"{name}.pt" for name in NOISE_MODELS}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise UsageError(f"reproduce noise evaluates the checkpoints of 'reproduce bsd68': {', '.join(missing)} "
                         f"missing; run 'python -m nelu reproduce bsd68 --profile {profile}' first or pass "
                         "--checkpoints FOLDER (e.g. results/checkpoints)")
    t_all = time.perf_counter()
    images = cached_dataset("BSD68", part["images"])
    names = dataset_names("BSD68", part["images"])
    bands = _column_bands(NOISE_BANDS)
    metric_keys = ("psnr", *bands)  # no SSIM: it would cost a third of the time budget
    models, rows, summary = {}, [], []
    timings = {"eval_s": {}}
    for name, path in paths.items():
        ck = load_checkpoint(path)
        den = load_denoiser(path, ckpt=ck)
        cfg = ck["config"]
        role = "blind" if cfg.get("sigma_range") else "main"
        hist = ck["history"][-1] if ck.get("history") else {}
        models[name] = {"activation": cfg["activation"], "role": role, "train_sigma": cfg.get("sigma"),
                        "train_range": cfg.get("sigma_range"), "checkpoint": str(path), "steps": ck.get("step"),
                        "learned_lam": hist.get("lam"), "learned_threshold_mean": hist.get("threshold_mean"),
                        "stride": den.stride, "train_config": cfg}
        for kind in nd.NOISE_KINDS:
            t = time.perf_counter()
            torch.set_num_threads(threads)
            res = evaluate_images(den, images, list(NOISE_SIGMAS), kind=kind, seed=seed, metrics=("psnr",),
                                  extra=bands)
            timings["eval_s"][f"{name}/{kind}"] = time.perf_counter() - t
            train_range = "" if cfg.get("sigma_range") is None else "-".join(map(_fmt, cfg["sigma_range"]))
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
                                **_summary_stats(res, s, metric_keys), "psnr": res["psnr"][s]})
            log(f"noise: {name} under {kind} noise in {timings['eval_s'][f'{name}/{kind}']:.1f}s; PSNR " +
                ", ".join(f"{_fmt(s)}:{_mean(res['psnr'][s]):.2f}" for s in NOISE_SIGMAS))
    timings["total_s"] = time.perf_counter() - t_all
    meta = _meta(argv, profile=profile, seed=seed, threads=threads, eval_noise_seed=seed,
                 noise_kinds=list(nd.NOISE_KINDS), test_sigmas=list(NOISE_SIGMAS), checkpoints=str(ckdir),
                 bands=f"psnr_band1..{NOISE_BANDS}: PSNR on {NOISE_BANDS} equal vertical strips, left to right "
                       "(the 'varying' noise std grows linearly from 0.5 sigma at the left edge to 1.5 sigma at "
                       "the right)", timings=timings, images=names)
    write_json(out / "noise.json", {"meta": meta, "models": models, "summary": summary})
    write_csv(out / "noise.csv", rows)
    log(f"noise: wrote {out / 'noise.json'} and noise.csv ({timings['total_s']:.0f}s)")
    return timings


def _reproduce_conv(profile: str, out: Path, seed: int, threads: int, fresh: bool, argv, log) -> dict:
    """Train the convolutional auto-encoders of :mod:`nelu.conv` at sigma 25 and test them on BSD68."""
    from .conv import ConvConfig, load_conv_checkpoint, load_conv_denoiser, strip_conv_optimizer, train_conv

    part = _part(profile, "conv")
    ckdir = out / "checkpoints"
    t_all = time.perf_counter()
    models, rows, summary = {}, [], []
    timings = {"train_s": {}, "eval_s": {}}
    coeffs = {"relu": None, "nelu": "location", "nelu-global": "image"}
    probe = None
    for act in CONV_ACTS:
        name = f"conv_{act}_sigma{_fmt(CONV_TRAIN_SIGMA)}"
        cfg = ConvConfig(activation=act, sigma=CONV_TRAIN_SIGMA, seed=seed, threads=threads, progress=False,
                         **part["train"])
        path = ckdir / f"{name}.pt"
        t = time.perf_counter()
        ck, reused = _train_or_reuse(cfg, path, fresh, load_conv_checkpoint, train_conv, strip_conv_optimizer)
        timings["train_s"][name] = time.perf_counter() - t
        hist = ck["history"][-1] if ck["history"] else {}
        n_images = part["global_images"] if act == "nelu-global" else part["images"]
        n_test = len(dataset_names("BSD68", n_images))
        models[name] = {"activation": act, "coeffs": coeffs[act], "train_sigma": CONV_TRAIN_SIGMA,
                        "checkpoint": str(path.relative_to(out)), "reused_checkpoint": reused,
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
            res = evaluate_images(den, images, sigmas, kind=kind, seed=seed, metrics=("psnr",))
            for s in sigmas:
                for i, im in enumerate(names):
                    rows.append({"model": name, "activation": act, "coeffs": coeffs[act] or "",
                                 "train_sigma": CONV_TRAIN_SIGMA, "noise": kind, "test_sigma": s, "image": im,
                                 "noisy_psnr": res["noisy_psnr"][s][i], "psnr": res["psnr"][s][i]})
                summary.append({"model": name, "activation": act, "coeffs": coeffs[act],
                                "train_sigma": CONV_TRAIN_SIGMA, "noise": kind, "test_sigma": s,
                                "n_images": len(names), **_summary_stats(res, s, ("psnr",)),
                                "psnr": res["psnr"][s]})
            log(f"conv: {name}: {kind} noise on {len(names)} images; PSNR " +
                ", ".join(f"{_fmt(s)}:{_mean(res['psnr'][s]):.2f}" for s in sigmas))
        timings["eval_s"][name] = time.perf_counter() - t
        if probe is None:
            probe = next(im for im in cached_dataset("BSD68", part["images"]) if tuple(im.shape) in ((481, 321), (321, 481)))
        torch.set_num_threads(threads)
        timings.setdefault("denoise_one_481x321", {"image_shape": list(probe.shape), "threads": threads})
        timings["denoise_one_481x321"][f"{act}_s"] = _denoise_time(den, add_noise_fixed(probe), 3)
    timings["total_s"] = time.perf_counter() - t_all
    meta = _meta(argv, profile=profile, seed=seed, threads=threads, eval_noise_seed=seed,
                 test_sigmas=list(CONV_SIGMAS), varying_sigmas=list(CONV_VARYING_SIGMAS),
                 train_settings=part["train"], test_images=part["images"], global_images=part["global_images"],
                 timings=timings, images=dataset_names("BSD68", part["images"]))
    write_json(out / "conv.json", {"meta": meta, "models": models, "summary": summary})
    write_csv(out / "conv.csv", rows)
    log(f"conv: wrote {out / 'conv.json'} and conv.csv ({timings['total_s']:.0f}s)")
    return timings


def _cmd_reproduce(args, argv) -> int:
    prof = PROFILES[args.profile]
    out = Path(args.out if args.out is not None else prof["out"])
    _check_writable_dir(out)
    _check_writable_dir(out / "checkpoints")
    t = time.perf_counter()
    timings = {}

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t:7.1f}s] {msg}", flush=True)

    if args.which in ("synthetic", "all"):
        timings["synthetic"] = _reproduce_synthetic(args.profile, out, args.seed, args.threads, argv, log)
    if args.which in ("bsd68", "all"):
        timings["bsd68"] = _reproduce_bsd68(args.profile, out, args.seed, args.threads, args.fresh, argv, log)
    if args.which in ("noise", "all"):
        timings["noise"] = _reproduce_noise(args.profile, out, args.seed, args.threads, args.checkpoints, argv, log)
    if args.which in ("conv", "all"):
        timings["conv"] = _reproduce_conv(args.profile, out, args.seed, args.threads, args.fresh, argv, log)
    if args.which == "baselines":  # not in "all": BM3D alone costs ~7 CPU-s per image
        from . import baselines

        try:
            # Recorded as the equivalent 'python -m nelu.baselines' command.
            equivalent = ["--profile", args.profile, "--out", str(out / "baselines"), "--seed", str(args.seed)]
            res = baselines.run(args.profile, out / "baselines", seed=args.seed, fresh=args.fresh,
                                checkpoints=args.checkpoints or out / "checkpoints", argv=equivalent, log=log)
        except baselines.BaselineError as exc:
            raise UsageError(str(exc)) from None
        timings["baselines"] = res["meta"].get("timings", {})
    timings["total_s"] = time.perf_counter() - t
    write_json(out / f"reproduce_{args.which}.json",
                {"meta": _meta(argv, profile=args.profile, seed=args.seed, threads=args.threads), "timings": timings})
    log(f"reproduce {args.which} ({args.profile}) done in {timings['total_s']:.1f}s; results in {out}")
    return 0


# ------------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="nelu", description="Pivotal sparse auto-encoders with the Self-Normalizing ReLU.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser("train", help="train one patch auto-encoder on Train400")
    t.add_argument("--activation", required=True, choices=("relu", "nelu"))
    noise = t.add_mutually_exclusive_group(required=True)
    noise.add_argument("--sigma", type=_sigma, help="training noise level (0-255 scale)")
    noise.add_argument("--sigma-range", type=_sigma, nargs=2, metavar=("LO", "HI"),
                       help="blind training: a level per sample, uniform in [LO, HI]")
    t.add_argument("--epochs", type=_finite_float, default=1.0, help="passes over the patch pool (default 1)")
    t.add_argument("--steps", type=int, default=None, help="number of steps (overrides --epochs)")
    t.add_argument("--patch", type=int, default=8)
    t.add_argument("--m", type=int, default=256, help="code size")
    t.add_argument("--batch-size", type=int, default=256)
    t.add_argument("--lr", type=_finite_float, default=2e-3)
    t.add_argument("--weight-decay", type=_finite_float, default=0.0)
    t.add_argument("--seed", type=_seed, default=0)
    t.add_argument("--out", required=True, help="checkpoint path (.pt)")
    once = t.add_mutually_exclusive_group()
    once.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    once.add_argument("--overwrite", action="store_true", help="replace the checkpoint --out if it exists")
    t.add_argument("--device", default="cpu")
    t.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    t.add_argument("--pool-size", type=int, default=200_000, help="clean patches kept in memory")
    t.add_argument("--train-images", type=int, default=None, help="use the first N Train400 images")
    t.add_argument("--val-images", type=int, default=None, help="first N Set12 images for validation (0: none)")
    t.add_argument("--val-every", type=int, default=0, help="steps between validations (0: at the end)")
    t.add_argument("--nelu-lam", type=_finite_float, default=None,
                   help="initial NeLU lam (default universal_lam(m))")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.set_defaults(func=_cmd_train)

    e = sub.add_parser("evaluate", help="PSNR/SSIM of a checkpoint on a data set")
    e.add_argument("--checkpoint", required=True)
    e.add_argument("--dataset", required=True, choices=nd.DATASETS)
    e.add_argument("--sigmas", required=True, type=_sigma, nargs="+")
    e.add_argument("--noise", default="gaussian", choices=nd.NOISE_KINDS)
    e.add_argument("--json", default=None, help="write results here (and a CSV beside it)")
    e.add_argument("--limit", type=int, default=None, help="first N images only")
    e.add_argument("--stride", type=int, default=None, help="patch stride (default: the checkpoint's)")
    e.add_argument("--seed", type=_seed, default=0, help="noise seed")
    e.add_argument("--threads", type=int, default=1)
    e.add_argument("--no-ssim", action="store_true")
    e.set_defaults(func=_cmd_evaluate)

    r = sub.add_parser("reproduce", help="train and evaluate everything the book reports")
    r.add_argument("which", choices=("synthetic", "bsd68", "noise", "conv", "all", "baselines"),
                   help="'all' is every target but 'baselines' (BM3D and a CNN: ~45 min on 2 cores)")
    r.add_argument("--profile", choices=tuple(PROFILES), default="full")
    r.add_argument("--out", default=None, help="results folder (default results/, quick: results/quick/)")
    r.add_argument("--seed", type=_seed, default=0)
    r.add_argument("--threads", type=int, default=1)
    r.add_argument("--fresh", action="store_true", help="retrain even where a finished checkpoint matches")
    r.add_argument("--checkpoints", default=None,
                   help="noise, baselines: folder of the BSD68 checkpoints (default: OUT/checkpoints)")
    r.set_defaults(func=_cmd_reproduce)
    return p


def run_reporting_errors(prog: str, action, user_errors: tuple[type[BaseException], ...]) -> int:
    """Run ``action()`` and turn a user mistake into one line on stderr and exit status 2.

    ``user_errors`` (and ``OSError``, e.g. an unwritable output folder or a full disk,
    and ``MemoryError``) are user mistakes: one line, status 2. Ctrl-C gives status 130.
    Anything else is a bug: its traceback, then one line saying so, status 1.
    """
    try:
        return int(action())
    except user_errors as exc:
        print(f"{prog}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. the output folder became unwritable mid-run, or the disk is full
        where = f" {exc.filename}" if getattr(exc, "filename", None) else ""
        print(f"{prog}: error: cannot write or read{where}: {exc.strerror or _one_line(exc)}", file=sys.stderr)
        return 2
    except MemoryError:
        print(f"{prog}: error: out of memory; use a smaller model, batch, patch pool or fewer images",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception:
        traceback.print_exc()
        print(f"{prog}: internal error: this is a bug in nelu, not a mistake of yours; please report it with "
              "the traceback above", file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 for a user mistake)."""
    parser = build_parser()

    def action() -> int:
        args = parser.parse_args(argv)
        if not 1 <= getattr(args, "threads", 1) <= MAX_THREADS:
            raise UsageError(f"--threads must be in [1, {MAX_THREADS}], got {args.threads}")
        if getattr(args, "limit", None) is not None and args.limit < 1:
            raise UsageError(f"--limit must be >= 1, got {args.limit}")
        if getattr(args, "device", None) is not None:
            check_device(args.device)
        return args.func(args, argv)

    return run_reporting_errors("nelu", action,
                                (UsageError, ConfigError, CheckpointError, nd.DataError, FileSafetyError))


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
