"""Command line: ``python -m nelu {train,evaluate,reproduce} ...``.

* ``train``: fit one auto-encoder (see :class:`nelu.train.TrainConfig`) and write its checkpoint.
* ``evaluate``: PSNR/SSIM of a checkpoint on a data set at several noise levels;
  prints a table, optionally writes JSON and a CSV beside it.
* ``reproduce NAME``: run an experiment of :mod:`nelu.experiments` (``synthetic``,
  ``bsd68``, ``noise``, ``conv``, ``baselines``, or ``all`` but the baselines) with the
  profile ``full`` (the committed results) or ``quick`` (the same code on little data,
  written to ``results/quick`` so it never overwrites the full results).

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
import sys
import time
import traceback
from pathlib import Path

import torch

from . import data as nd
from .baselines import BaselineError
from .data import cached_dataset, dataset_names
from .evaluation import evaluate_images, result_rows
from .experiments import ALL, EXPERIMENTS, get
from .experiments.common import OUT, Context, ExperimentError, fmt_sigma, mean
from .files import FileSafetyError, check_distinct, check_writable, write_csv, write_json
from .models import CheckpointError, load_checkpoint, load_denoiser
from .train import TrainConfig, train
from .training import MAX_THREADS, ConfigError, check_device, check_replaceable

__all__ = ["main", "build_parser", "run_reporting_errors", "UsageError"]


class UsageError(ValueError):
    """A mistake in the command line or its paths, reported as one line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage dump; main() prints it
        raise UsageError(f"{self.prog}: {message}")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _number(kind: type, name: str, lo: float = -math.inf, hi: float = math.inf):
    """An argparse type: a finite ``kind`` (int or float) in ``[lo, hi]``."""

    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid {name} {text!r}") from None
        if not (math.isfinite(v) and lo <= v <= hi):
            bounds = f" in [{lo:g}, {hi:g}]" if math.isfinite(lo) or math.isfinite(hi) else ""
            raise argparse.ArgumentTypeError(f"{name} must be a finite number{bounds}, got {text}")
        return v

    return parse


_sigma = _number(float, "sigma (0-255 scale)", 0, nd.MAX_SIGMA)
_finite_float = _number(float, "number")
_seed = _number(int, "seed", 0, 2**32 - 1)
_threads = _number(int, "--threads", 1, MAX_THREADS)


# ------------------------------------------------------------------------------ commands


#: ``train`` options that are :class:`~nelu.train.TrainConfig` fields of the same name.
_TRAIN_FIELDS = ("activation", "sigma", "epochs", "steps", "patch", "m", "batch_size", "lr", "weight_decay", "seed",
                 "device", "threads", "pool_size", "train_images", "val_images", "val_every", "nelu_lam", "backend")


def _cmd_train(args, argv) -> int:
    cfg = TrainConfig(**{f: getattr(args, f) for f in _TRAIN_FIELDS},
                      sigma_range=tuple(args.sigma_range) if args.sigma_range else None,
                      progress=False if args.no_progress else None).validate()
    out = Path(args.out)
    check_writable(out)
    check_replaceable(out, load_checkpoint)
    if out.is_file() and not (args.resume or args.overwrite):
        raise FileSafetyError(f"{out} exists; pass --resume to continue that run or --overwrite to replace it")
    t = time.perf_counter()
    ckpt = train(cfg, out, resume=args.resume, log=print)
    h = ckpt["history"][-1] if ckpt["history"] else {}
    val = h.get("val_psnr")
    print(f"wrote {out}: {ckpt['step']} steps, validation PSNR "
          f"{'n/a' if val is None else f'{val:.2f} dB'} on Set12 at sigma={fmt_sigma(cfg.val_sigma)}, "
          f"{time.perf_counter() - t:.1f}s")
    return 0


def _eval_table(res: dict, sigmas) -> str:
    has_ssim = "ssim" in res
    lines = [f"{'sigma':>6} {'noisy PSNR':>11} {'PSNR':>8}" + (f" {'SSIM':>7}" if has_ssim else "")]
    for s in sigmas:
        line = f"{fmt_sigma(s):>6} {mean(res['noisy_psnr'][s]):>11.2f} {mean(res['psnr'][s]):>8.2f}"
        if has_ssim:
            line += f" {mean(res['ssim'][s]):>7.4f}"
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
        check_writable(json_path)
        check_writable(json_path.with_suffix(".csv"))
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
        summary, per_image = result_rows(res, names)
        write_json(json_path, {
            "meta": Context(profile="", out=json_path.parent, argv=argv).meta(
                checkpoint=str(args.checkpoint), dataset=args.dataset, noise=args.noise, noise_seed=args.seed,
                stride=den.stride, eval_time_s=elapsed, train_config=ckpt["config"]),
            "summary": summary,
            "per_image": per_image,
        })
        write_csv(json_path.with_suffix(".csv"), per_image)
        print(f"wrote {json_path} and {json_path.with_suffix('.csv')}")
    return 0


def _cmd_reproduce(args, argv) -> int:
    names = list(ALL) if args.which == "all" else [args.which]
    out = Path(args.out if args.out is not None else OUT[args.profile])
    check_writable(out, folder=True)
    check_writable(out / "checkpoints", folder=True)
    t = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t:7.1f}s] {msg}", flush=True)

    timings, checkpoints = {}, (Path(args.checkpoints) if args.checkpoints else None)
    for name in names:
        ctx = Context(profile=args.profile, out=out, seed=args.seed, threads=args.threads, fresh=args.fresh,
                      checkpoints=checkpoints, argv=argv, log=log, workers=args.workers)
        if name == "baselines":  # recorded as the equivalent 'python -m nelu.baselines' command
            equivalent = ["--profile", args.profile, "--out", str(out / "baselines"), "--seed", str(args.seed)]
            ctx = Context(profile=args.profile, out=out / "baselines", seed=args.seed, fresh=args.fresh,
                          checkpoints=checkpoints or out / "checkpoints", argv=equivalent, log=log,
                          program="python -m nelu.baselines", workers=args.workers)
        timings[name] = get(name).run(ctx)
    timings["total_s"] = time.perf_counter() - t
    ctx = Context(profile=args.profile, out=out, argv=argv)
    write_json(out / f"reproduce_{args.which}.json",
               {"meta": ctx.meta(profile=args.profile, seed=args.seed, threads=args.threads), "timings": timings})
    log(f"reproduce {args.which} ({args.profile}) done in {timings['total_s']:.1f}s; results in {out}")
    return 0


# ------------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="nelu", description="Pivotal sparse auto-encoders with the Self-Normalizing ReLU.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    d = TrainConfig()  # the defaults
    t = sub.add_parser("train", help="train one patch auto-encoder on Train400")
    t.add_argument("--activation", required=True, choices=("relu", "nelu"))
    noise = t.add_mutually_exclusive_group(required=True)
    noise.add_argument("--sigma", type=_sigma, help="training noise level (0-255 scale)")
    noise.add_argument("--sigma-range", type=_sigma, nargs=2, metavar=("LO", "HI"),
                       help="blind training: a level per sample, uniform in [LO, HI]")
    t.add_argument("--epochs", type=_finite_float, default=d.epochs, help="passes over the patch pool")
    t.add_argument("--steps", type=int, default=d.steps, help="number of steps (overrides --epochs)")
    t.add_argument("--patch", type=int, default=d.patch)
    t.add_argument("--m", type=int, default=d.m, help="code size")
    t.add_argument("--batch-size", type=int, default=d.batch_size)
    t.add_argument("--lr", type=_finite_float, default=d.lr)
    t.add_argument("--weight-decay", type=_finite_float, default=d.weight_decay)
    t.add_argument("--seed", type=_seed, default=d.seed)
    t.add_argument("--out", required=True, help="checkpoint path (.pt)")
    once = t.add_mutually_exclusive_group()
    once.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    once.add_argument("--overwrite", action="store_true", help="replace the checkpoint --out if it exists")
    t.add_argument("--device", default=d.device)
    t.add_argument("--threads", type=_threads, default=d.threads, help="torch CPU threads")
    t.add_argument("--backend", choices=("torch", "numba"), default=d.backend, help="exact NeLU: torch or numba (CPU)")
    t.add_argument("--pool-size", type=int, default=d.pool_size, help="clean patches kept in memory")
    t.add_argument("--train-images", type=int, default=d.train_images, help="use the first N Train400 images")
    t.add_argument("--val-images", type=int, default=d.val_images, help="first N Set12 images for validation (0: none)")
    t.add_argument("--val-every", type=int, default=d.val_every, help="steps between validations (0: at the end)")
    t.add_argument("--nelu-lam", type=_finite_float, default=d.nelu_lam, help="initial NeLU lam (default: universal)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.set_defaults(func=_cmd_train)

    e = sub.add_parser("evaluate", help="PSNR/SSIM of a checkpoint on a data set")
    e.add_argument("--checkpoint", required=True)
    e.add_argument("--dataset", required=True, choices=nd.DATASETS)
    e.add_argument("--sigmas", required=True, type=_sigma, nargs="+")
    e.add_argument("--noise", default="gaussian", choices=nd.NOISE_KINDS)
    e.add_argument("--json", default=None, help="write results here (and a CSV beside it)")
    e.add_argument("--limit", type=_number(int, "--limit", 1, 10**6), default=None, help="first N images only")
    e.add_argument("--stride", type=int, default=None, help="patch stride (default: the checkpoint's)")
    e.add_argument("--seed", type=_seed, default=0, help="noise seed")
    e.add_argument("--threads", type=_threads, default=1)
    e.add_argument("--no-ssim", action="store_true")
    e.set_defaults(func=_cmd_evaluate)

    r = sub.add_parser("reproduce", help="train and evaluate everything the book reports")
    r.add_argument("which", choices=(*EXPERIMENTS, "all"),
                   help="'all' is every target but 'baselines' (BM3D and a CNN: the longest target)")
    r.add_argument("--profile", choices=tuple(OUT), default="full")
    r.add_argument("--out", default=None, help="results folder (default results/, quick: results/quick/)")
    r.add_argument("--seed", type=_seed, default=0)
    r.add_argument("--threads", type=_threads, default=1)
    r.add_argument("--workers", type=_number(int, "--workers", 1, MAX_THREADS), help="processes (default: full all cores, quick 1)")
    r.add_argument("--fresh", action="store_true", help="retrain even where a finished checkpoint matches")
    r.add_argument("--checkpoints", default=None,
                   help="noise, baselines: folder of the BSD68 checkpoints (default: OUT/checkpoints)")
    r.set_defaults(func=_cmd_reproduce)
    return p


#: Exceptions that are user mistakes (one line, status 2), besides ``OSError`` and ``MemoryError``.
USER_ERRORS: tuple[type[BaseException], ...] = (
    UsageError, ConfigError, CheckpointError, nd.DataError, FileSafetyError, ExperimentError, BaselineError)


def run_reporting_errors(prog: str, action, user_errors: tuple[type[BaseException], ...] = USER_ERRORS) -> int:
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
        if getattr(args, "device", None) is not None:
            check_device(args.device)
        return args.func(args, argv)

    return run_reporting_errors("nelu", action)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
