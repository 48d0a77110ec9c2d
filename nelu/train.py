"""Training and evaluation of the patch auto-encoders.

:func:`train` fits a :class:`~nelu.models.SparseAE` to denoise ``patch`` x ``patch``
patches of Train400:

* a pool of ``pool_size`` clean patches is drawn once (vectorized, seeded) and
  kept in memory; each step draws ``batch_size`` of them (with replacement) and
  adds fresh Gaussian noise, at a fixed ``sigma`` or, for blind training, a
  ``sigma`` drawn per sample uniformly from ``sigma_range`` (0-255 scale);
* loss: mean squared error against the clean patch; AdamW; linear warm-up then
  cosine decay of the learning rate (:func:`lr_factor`);
* validation: mean PSNR on Set12 at the training ``sigma`` (or the midpoint of
  ``sigma_range``), with noise from a fixed seed, logged in ``history``;
* checkpoints, written atomically (temporary file in the same folder, fsync,
  ``os.replace``) every ``checkpoint_every`` steps and at the end, hold the
  model, optimizer, schedule, the training generator's state, the step counter,
  the config and the history. ``train(config, out, resume=True)`` continues
  from ``out``; the result is bitwise identical to an uninterrupted run.

All randomness comes from explicit :class:`torch.Generator` objects derived
from ``seed``: the model initialization, the clean-patch pool, the batches and
their noise, and (fixed, seed-independent) the validation noise.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from . import data as nd
from .files import FileSafetyError, lock, save_torch
from .evaluation import noise_seed
from .metrics import psnr
from .models import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    CheckpointError,
    PatchDenoiser,
    build_model,
    check_model_config,
    load_checkpoint,
)

__all__ = [
    "ConfigError",
    "TrainConfig",
    "train",
    "lr_factor",
    "save_atomic",
    "torch_settings",
]

#: Seed of the validation noise: the same for every model, independent of ``seed``.
VAL_NOISE_SEED = 20240601

#: Config fields that do not change the numbers a run produces (free to differ on resume).
RUNTIME_FIELDS = ("device", "progress", "threads", "checkpoint_every")
#: Longest run accepted (steps), and most torch threads.
MAX_STEPS = 10**8
MAX_THREADS = 1024


class ConfigError(ValueError):
    """An invalid training configuration (unknown activation, negative sigma, ...)."""


class TrainingDiverged(ConfigError):
    """The loss became NaN or infinite (learning rate too high, ...); the last checkpoint is kept."""


def _finite(name: str, value, lo: float = -math.inf, hi: float = math.inf, *, lo_open: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > lo if lo_open else value >= lo) and value <= hi
    if not ok:
        low = f"> {lo:g}" if lo_open else f">= {lo:g}"
        high = f" and <= {hi:g}" if math.isfinite(hi) else ""
        raise ConfigError(f"{name} must be a finite number {low}{high}, got {value!r}")


def check_device(name: str) -> str:
    """``name`` if it is a usable torch device (cpu, cuda[:N] with CUDA present, mps); else ConfigError."""
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"invalid device {name!r}: {' '.join(str(exc).split())}") from None
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"device {name!r} cannot train or evaluate; use cpu, cuda or mps")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ConfigError(f"device {name!r} requested but there are {torch.cuda.device_count()} CUDA devices")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {name!r} requested but MPS is not available")
    return name


def memory_limit_bytes() -> int | None:
    """Physical memory of this machine in bytes (None where it cannot be read)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return None


@dataclass
class TrainConfig:
    """Everything that defines a training run.

    Noise: exactly one of ``sigma`` (fixed level) and ``sigma_range`` (blind: a level
    per sample, uniform in ``[lo, hi]``), on the 0-255 scale. Length: ``steps`` if
    given, else ``epochs`` passes over the pool (``epochs * pool_size / batch_size``
    steps, rounded up).
    """

    activation: str = "nelu"
    sigma: float | None = 25.0
    sigma_range: tuple[float, float] | None = None
    epochs: float = 1.0
    steps: int | None = None
    patch: int = 8
    m: int = 256
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 0.0
    warmup: float = 0.05  # fraction of the steps
    min_lr_factor: float = 0.02  # cosine decays to lr * min_lr_factor
    seed: int = 0
    device: str = "cpu"
    threads: int = 1
    pool_size: int = 200_000
    train_images: int | None = None  # use the first N Train400 images (None: all 400)
    val_images: int | None = None  # first N Set12 images (None: all 12; 0: no validation)
    val_every: int = 0  # steps between validations (0: only at the end)
    val_stride: int = 4
    eval_stride: int = 4  # stride stored for load_denoiser
    remove_dc: bool = True
    nelu_lam: float | None = None  # initial NeLU lam (None: universal_lam(m))
    relu_threshold: float = 0.0  # initial ReLU threshold
    checkpoint_every: int = 1000
    progress: bool | None = None  # None: a bar only when stderr is a terminal

    def __post_init__(self) -> None:
        if self.sigma_range is not None:
            self.sigma_range = tuple(float(s) for s in self.sigma_range)  # type: ignore[assignment]

    def validate(self) -> "TrainConfig":
        """Raise :class:`ConfigError` naming the first invalid field; return self.

        Checks types, finiteness and ranges of every field, then that the run fits in
        this machine's memory, before anything is allocated.
        """
        try:
            check_model_config(asdict(self))
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if (self.sigma is None) == (self.sigma_range is None):
            raise ConfigError("give exactly one of sigma and sigma_range")
        if self.sigma is not None:
            _finite("sigma (0-255 scale)", self.sigma, 0, nd.MAX_SIGMA)
        if self.sigma_range is not None:
            if len(self.sigma_range) != 2:
                raise ConfigError(f"sigma_range must be (lo, hi), got {self.sigma_range!r}")
            lo, hi = self.sigma_range
            _finite("sigma range lo (0-255 scale)", lo, 0, nd.MAX_SIGMA)
            _finite("sigma range hi (0-255 scale)", hi, 0, nd.MAX_SIGMA)
            if lo > hi:
                raise ConfigError(f"sigma range must satisfy lo <= hi, got {lo}, {hi}")
        _finite("epochs", self.epochs, 0, lo_open=True)
        _ints = {"steps": (1, MAX_STEPS), "batch_size": (1, 2**20), "pool_size": (1, 10**9),
                 "threads": (1, MAX_THREADS), "val_stride": (1, self.patch), "checkpoint_every": (1, MAX_STEPS),
                 "val_every": (0, MAX_STEPS), "train_images": (1, 10**6), "val_images": (0, 10**6)}
        for name, (lo_i, hi_i) in _ints.items():
            value = getattr(self, name)
            if value is None and name in ("steps", "train_images", "val_images"):
                continue
            if isinstance(value, bool) or not isinstance(value, int) or not lo_i <= value <= hi_i:
                raise ConfigError(f"{name} must be an integer in [{lo_i}, {hi_i}], got {value!r}")
        if self.total_steps > MAX_STEPS:
            raise ConfigError(f"the run would take {self.total_steps} steps; at most {MAX_STEPS} are allowed")
        _finite("lr", self.lr, 0, 10.0, lo_open=True)
        _finite("weight_decay", self.weight_decay, 0, 10.0)
        _finite("warmup (a fraction)", self.warmup, 0, 1)
        if self.warmup >= 1:
            raise ConfigError(f"warmup is a fraction in [0, 1), got {self.warmup}")
        _finite("min_lr_factor", self.min_lr_factor, 0, 1)
        check_device(self.device)
        need, have = self.memory_bytes(), memory_limit_bytes()
        if have is not None and need > 0.75 * have:
            raise ConfigError(f"this run needs about {need / 2**30:.1f} GiB of memory (pool_size x patch^2 "
                              f"patches, m x patch^2 weights, batch_size x m codes), more than 75% of the "
                              f"{have / 2**30:.1f} GiB here: lower pool_size, m, patch or batch_size")
        return self

    def memory_bytes(self) -> int:
        """Rough peak memory of a run in bytes: patch pool, weights with AdamW state, codes."""
        n = self.patch**2
        pool = self.pool_size * n * 4
        weights = 2 * self.m * n * (4 * 4 + 3 * 8)  # float32 weights, grads, 2 moments; float64 init
        codes = self.batch_size * self.m * 4 * 16  # the activation's temporaries, forward and backward
        return pool + weights + codes

    @property
    def total_steps(self) -> int:
        if self.steps is not None:
            return int(self.steps)
        steps = self.epochs * self.pool_size / self.batch_size
        return max(1, math.ceil(steps)) if math.isfinite(steps) else MAX_STEPS + 1

    @property
    def val_sigma(self) -> float:
        """The validation noise level: ``sigma`` or the midpoint of ``sigma_range``."""
        if self.sigma is not None:
            return float(self.sigma)
        return 0.5 * (self.sigma_range[0] + self.sigma_range[1])

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        if not isinstance(d, dict):
            raise ConfigError(f"a config must be a dict, got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ConfigError(f"unknown config fields {sorted(unknown)}")
        return cls(**d)


# ----------------------------------------------------------------------------- helpers


def lr_factor(step: int, total: int, warmup: float, min_factor: float) -> float:
    """Learning-rate multiplier at ``step``: linear warm-up over ``warmup * total`` steps, then cosine."""
    w = int(warmup * total)
    if step < w:
        return (step + 1) / w
    progress = (step - w) / max(1, total - w)
    return min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def save_atomic(obj, path: str | Path) -> None:
    """``torch.save`` atomically: :func:`nelu.files.save_torch` (kept here for old imports)."""
    save_torch(obj, path)


@contextlib.contextmanager
def torch_settings(threads: int):
    """Deterministic algorithms and a fixed thread count for the duration, restored after."""
    old_threads = torch.get_num_threads()
    old_det = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(old_det)
        torch.set_num_threads(old_threads)


def _validation_set(cfg: TrainConfig) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    if cfg.val_images == 0:
        return [], []
    clean = nd.cached_dataset("Set12", cfg.val_images)
    noisy = [
        nd.add_noise(im, cfg.val_sigma, generator=torch.Generator().manual_seed(noise_seed(VAL_NOISE_SEED, i, cfg.val_sigma)))
        for i, im in enumerate(clean)
    ]
    return clean, noisy


@torch.no_grad()
def _validate(model: nn.Module, cfg: TrainConfig, clean, noisy, device) -> float | None:
    if not clean:
        return None
    den = PatchDenoiser(model, cfg.patch, cfg.val_stride)
    values = [psnr(c, den(y.to(device)).cpu()) for c, y in zip(clean, noisy)]
    return float(sum(values) / len(values))


# ------------------------------------------------------------------------------ train


def _check_resumable(ckpt: dict, cfg: TrainConfig, out: Path) -> None:
    saved = dict(ckpt["config"])
    now = asdict(cfg)
    diffs = [
        f"{k}: {saved.get(k)!r} in the checkpoint, {now[k]!r} now"
        for k in now
        if k not in RUNTIME_FIELDS and _norm(saved.get(k)) != _norm(now[k])
    ]
    if diffs:
        raise CheckpointError(f"cannot resume {out}: the config differs ({'; '.join(diffs)})")
    if ckpt.get("optimizer") is None and not ckpt.get("complete"):
        raise CheckpointError(f"cannot resume {out}: it holds no optimizer state")


def _norm(v):
    return list(v) if isinstance(v, tuple) else v


def config_matches(saved: dict, cfg: TrainConfig) -> bool:
    """Whether a checkpoint's config equals ``cfg`` up to :data:`RUNTIME_FIELDS`."""
    now = asdict(cfg)
    return set(saved) == set(now) and all(
        _norm(saved[k]) == _norm(now[k]) for k in now if k not in RUNTIME_FIELDS
    )


def train(
    config: TrainConfig,
    out: str | Path,
    resume: bool = False,
    *,
    stop_after: int | None = None,
    log=None,
) -> dict:
    """Train the auto-encoder described by ``config``; write the checkpoint ``out``.

    Args:
        config: the run (validated here; :class:`ConfigError` if invalid).
        out: checkpoint path (``.pt``); written atomically, also during training.
        resume: continue from ``out`` if it exists (its config must match, up to
            :data:`RUNTIME_FIELDS`); a finished run is returned as is.
        stop_after: stop (after checkpointing) once this many steps are done in
            total: simulates an interruption, for tests.
        log: callable taking a line of text (default: none).

    Returns:
        The checkpoint dict (config, history, ``complete``, timings...).
    """
    cfg = config.validate()
    out = Path(out)
    with lock(out, "training run"):
        return _train_locked(cfg, out, resume, stop_after, log)


def check_replaceable(out: Path, load) -> None:
    """Refuse to write a checkpoint over an existing file that is not a checkpoint of this kind.

    ``load`` reads a checkpoint of the kind about to be written (raising
    :class:`~nelu.models.CheckpointError` otherwise); a missing ``out`` is fine.
    """
    if out.is_dir():
        raise FileSafetyError(f"{out} is a folder; give a checkpoint file path (.pt)")
    if out.exists():
        try:
            load(out)
        except CheckpointError:
            raise FileSafetyError(f"{out} exists and is not a checkpoint of this kind; refusing to overwrite it: "
                                  "choose another output path or remove the file yourself") from None


def _train_locked(cfg: TrainConfig, out: Path, resume: bool, stop_after: int | None, log) -> dict:
    device = torch.device(cfg.device)
    check_replaceable(out, load_checkpoint)
    ckpt = None
    if resume and out.exists():
        ckpt = load_checkpoint(out)
        _check_resumable(ckpt, cfg, out)
        if ckpt.get("complete"):
            return ckpt
    total = cfg.total_steps
    with torch_settings(cfg.threads):
        model = build_model(asdict(cfg)).to(device)
        decay, no_decay = [], []
        for name, p in model.named_parameters():
            (decay if name.startswith(("encoder", "decoder")) else no_decay).append(p)
        opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=cfg.lr,
        )
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: lr_factor(s, total, cfg.warmup, cfg.min_lr_factor)
        )
        images = nd.cached_dataset("Train400", cfg.train_images)
        pool_gen = torch.Generator().manual_seed(cfg.seed)
        pool = nd.random_patches(images, cfg.pool_size, cfg.patch, pool_gen).to(device)
        gen = torch.Generator().manual_seed(cfg.seed + 1_000_003)
        step, history, elapsed = 0, [], 0.0
        loss_sum, loss_count = 0.0, 0
        if ckpt is not None:
            model.load_state_dict(ckpt["model"])
            opt.load_state_dict(ckpt["optimizer"])
            sched.load_state_dict(ckpt["scheduler"])
            gen.set_state(ckpt["generator"])
            step, history, elapsed = int(ckpt["step"]), list(ckpt["history"]), float(ckpt["elapsed_s"])
            # The running sums of the history entry in progress (absent in checkpoints before 2026-12).
            loss_sum, loss_count = float(ckpt.get("loss_sum", 0.0)), int(ckpt.get("loss_count", 0))
        val_clean, val_noisy = _validation_set(cfg)
        n = cfg.patch**2
        lo, hi = (cfg.sigma, cfg.sigma) if cfg.sigma is not None else cfg.sigma_range
        progress = sys.stderr.isatty() if cfg.progress is None else cfg.progress
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=total, initial=step, desc=f"{cfg.activation} sigma={cfg.sigma or cfg.sigma_range}",
                       dynamic_ncols=True, leave=False)
        end = total if stop_after is None else min(total, stop_after)
        t0 = time.perf_counter()

        def state(complete: bool) -> dict:
            return {
                "format": CHECKPOINT_FORMAT,
                "version": CHECKPOINT_VERSION,
                "config": asdict(cfg),
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "generator": gen.get_state(),
                "torch_rng": torch.get_rng_state(),
                "step": step,
                "total_steps": total,
                "history": history,
                "elapsed_s": elapsed + (time.perf_counter() - t0),
                "complete": complete,
                "loss_sum": loss_sum,
                "loss_count": loss_count,
                "torch_version": str(torch.__version__),
            }

        model.train()
        while step < end:
            idx = torch.randint(cfg.pool_size, (cfg.batch_size,), generator=gen).to(device)
            clean = pool[idx]
            u = torch.rand(cfg.batch_size, 1, generator=gen)
            sig = (lo + (hi - lo) * u).to(device) / 255.0
            noisy = clean + sig * torch.randn(cfg.batch_size, n, generator=gen).to(device)
            loss = torch.mean((model(noisy) - clean) ** 2)
            check_finite_loss(loss, step, out)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            loss_sum += float(loss.detach())
            loss_count += 1
            if bar is not None:
                bar.update(1)
            validate_now = (cfg.val_every and step % cfg.val_every == 0) or step == total
            if validate_now:
                model.eval()
                val = _validate(model, cfg, val_clean, val_noisy, device)
                model.train()
                entry = {
                    "step": step,
                    "train_mse": loss_sum / max(loss_count, 1),
                    "train_psnr": -10 * math.log10(max(loss_sum / max(loss_count, 1), 1e-12)),
                    "val_psnr": val,
                    "lr": sched.get_last_lr()[0],
                    "time_s": elapsed + time.perf_counter() - t0,
                }
                act = model.activation
                if hasattr(act, "lam"):
                    entry["lam"] = float(act.lam.detach())
                else:
                    entry["threshold_mean"] = float(act.threshold.detach().mean())
                history.append(entry)
                loss_sum, loss_count = 0.0, 0
                if bar is not None:
                    bar.set_postfix(val_psnr=f"{val:.2f}" if val is not None else "-")
                if log:
                    log(f"  step {step}/{total} train_psnr {entry['train_psnr']:.2f} val_psnr {val}")
            if step % cfg.checkpoint_every == 0 and step < end:
                check_finite_weights(model, step, out)
                save_atomic(state(False), out)
        if bar is not None:
            bar.close()
        check_finite_weights(model, step, out)
        final = state(step >= total)
        save_atomic(final, out)
        return final


def check_finite_loss(loss: torch.Tensor, step: int, out: Path) -> None:
    """Raise :class:`TrainingDiverged` if ``loss`` is NaN or infinite (before the update is applied)."""
    if not torch.isfinite(loss.detach()).all():
        raise TrainingDiverged(f"training diverged at step {step + 1}: the loss is {float(loss.detach())}; "
                               f"lower the learning rate (the last good checkpoint, if any, is kept in {out})")


def check_finite_weights(model: nn.Module, step: int, out: Path) -> None:
    """Raise :class:`TrainingDiverged` if a parameter holds NaN or inf (checked before every save)."""
    for name, p in model.named_parameters():
        if not torch.isfinite(p.detach()).all():
            raise TrainingDiverged(f"training diverged at step {step}: {name} is not finite; lower the learning "
                                   f"rate or the weight decay (the last good checkpoint, if any, is kept in {out})")


def strip_optimizer(path: str | Path) -> None:
    """Drop the optimizer state of a *finished* checkpoint (3x smaller; still loadable, not resumable)."""
    ckpt = load_checkpoint(path)
    if not ckpt.get("complete"):
        raise CheckpointError(f"{path} is not a finished run; keep its optimizer state to resume it")
    ckpt["optimizer"] = None
    ckpt["scheduler"] = None
    save_atomic(ckpt, path)
