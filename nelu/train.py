"""Training of the patch auto-encoders: :class:`TrainConfig` and :func:`train`.

:func:`train` fits a :class:`~nelu.models.SparseAE` to denoise ``patch`` x ``patch``
patches of Train400 with the engine :func:`nelu.training.fit`:

* a pool of ``pool_size`` clean patches is drawn once (vectorized, seeded) and
  kept in memory; each step draws ``batch_size`` of them (with replacement) and
  adds fresh Gaussian noise, at a fixed ``sigma`` or, for blind training, a
  ``sigma`` drawn per sample uniformly from ``sigma_range`` (0-255 scale);
* loss: mean squared error against the clean patch; AdamW; linear warm-up then
  cosine decay of the learning rate (:func:`nelu.training.lr_factor`);
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

import dataclasses
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from . import data as nd
from . import training
from .evaluation import noise_seed
from .metrics import psnr
from .models import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    PatchDenoiser,
    build_model,
    check_model_config,
    load_checkpoint,
)
from .training import (
    MAX_STEPS,
    MAX_THREADS,
    ConfigError,
    check_backend,
    check_device,
    check_number,
    fit,
    memory_limit_bytes,
    open_run,
    torch_settings,
)

__all__ = ["ConfigError", "TrainConfig", "train", "strip_optimizer", "VAL_NOISE_SEED", "MAX_THREADS"]

#: Seed of the validation noise: the same for every model, independent of ``seed``.
VAL_NOISE_SEED = 20240601
#: How blind training draws a noise level per sample in ``sigma_range``.
SIGMA_SAMPLINGS = ("uniform", "log-uniform")


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
    gate: bool = False  # a scale-free residual gate (nelu.models.SparseAE.gate_value)
    sigma_sampling: str = "uniform"  # blind training: "uniform" or "log-uniform" levels in sigma_range
    loss_weight_power: float = 0.0  # blind training: each sample's MSE weighted by (sigma / 25)**-p
    init_from: str | None = None  # warm start: the weights of this checkpoint (same architecture)
    backend: str = "torch"  # the exact NeLU's implementation: "torch" or "numba" (CPU; equal to rounding)
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
            check_number("sigma (0-255 scale)", self.sigma, 0, nd.MAX_SIGMA)
        if self.sigma_range is not None:
            if len(self.sigma_range) != 2:
                raise ConfigError(f"sigma_range must be (lo, hi), got {self.sigma_range!r}")
            lo, hi = self.sigma_range
            check_number("sigma range lo (0-255 scale)", lo, 0, nd.MAX_SIGMA)
            check_number("sigma range hi (0-255 scale)", hi, 0, nd.MAX_SIGMA)
            if lo > hi:
                raise ConfigError(f"sigma range must satisfy lo <= hi, got {lo}, {hi}")
        check_number("epochs", self.epochs, 0, lo_open=True)
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
        check_number("lr", self.lr, 0, 10.0, lo_open=True)
        check_number("weight_decay", self.weight_decay, 0, 10.0)
        check_number("warmup (a fraction)", self.warmup, 0, 1)
        if self.warmup >= 1:
            raise ConfigError(f"warmup is a fraction in [0, 1), got {self.warmup}")
        check_number("min_lr_factor", self.min_lr_factor, 0, 1)
        check_number("loss_weight_power", self.loss_weight_power, 0, 4)
        if self.sigma_sampling not in SIGMA_SAMPLINGS:
            raise ConfigError(f"sigma_sampling must be one of {', '.join(SIGMA_SAMPLINGS)}, got {self.sigma_sampling!r}")
        if self.sigma_sampling == "log-uniform" and self.sigma_range is not None and self.sigma_range[0] <= 0:
            raise ConfigError("log-uniform sigma sampling needs a sigma range with lo > 0")
        if not isinstance(self.gate, bool):
            raise ConfigError(f"gate must be true or false, got {self.gate!r}")
        if self.init_from is not None and not isinstance(self.init_from, str):
            raise ConfigError(f"init_from must be a checkpoint path (a string), got {self.init_from!r}")
        check_backend(self.backend, self.device)
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


def _validation_set(cfg: TrainConfig) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    if cfg.val_images == 0:
        return [], []
    clean = nd.cached_dataset("Set12", cfg.val_images)
    noisy = [
        nd.add_noise(im, cfg.val_sigma, generator=torch.Generator().manual_seed(noise_seed(VAL_NOISE_SEED, i, cfg.val_sigma)))
        for i, im in enumerate(clean)
    ]
    return clean, noisy


_ARCHITECTURE = ("activation", "patch", "m", "remove_dc", "gate")


def _warm_start(model: nn.Module, cfg: TrainConfig) -> None:
    """Load the weights of ``cfg.init_from`` into ``model`` (:class:`ConfigError` if it cannot)."""
    try:
        init = load_checkpoint(cfg.init_from)
    except ValueError as exc:
        raise ConfigError(f"init_from: {exc}") from None
    theirs = init["config"]
    differ = [f"{k} {theirs.get(k)!r} (this run: {getattr(cfg, k)!r})" for k in _ARCHITECTURE
              if theirs.get(k, getattr(TrainConfig, k, None)) != getattr(cfg, k)]
    if differ:
        raise ConfigError(f"init_from {cfg.init_from} has another architecture: " + ", ".join(differ))
    model.load_state_dict(init["model"])


@torch.no_grad()
def _validate(model: nn.Module, cfg: TrainConfig, clean, noisy, device) -> float | None:
    if not clean:
        return None
    den = PatchDenoiser(model, cfg.patch, cfg.val_stride)
    values = [psnr(c, den(y.to(device)).cpu()) for c, y in zip(clean, noisy)]
    return float(sum(values) / len(values))


# ------------------------------------------------------------------------------ train


def train(
    config: TrainConfig,
    out: str | Path,
    resume: bool = False,
    *,
    stop_after: int | None = None,
    log=None,
) -> dict:
    """Train the auto-encoder described by ``config`` with :func:`nelu.training.fit`; write ``out``.

    Args:
        config: the run (validated here; :class:`ConfigError` if invalid).
        out: checkpoint path (``.pt``); written atomically, also during training. Another
            run on the same path, or an existing file that is not a checkpoint, is refused.
        resume: continue from ``out`` if it exists (its config must match, up to
            :data:`~nelu.training.RUNTIME_FIELDS`); a finished run is returned as is.
        stop_after: stop (after checkpointing) once this many steps are done in
            total: simulates an interruption, for tests.
        log: callable taking a line of text (default: none).

    Returns:
        The checkpoint dict (config, history, ``complete``, timings...).
    """
    cfg = config.validate()
    if cfg.init_from is not None and Path(cfg.init_from).resolve() == Path(out).resolve():
        raise ConfigError(f"init_from and the output are the same file ({out}): the run would overwrite the "
                          "weights it starts from; write to another path")
    with open_run(out, cfg, load_checkpoint, resume) as ckpt:
        if ckpt is not None and ckpt.get("complete"):
            return ckpt
        device = torch.device(cfg.device)
        with torch_settings(cfg.threads):
            model = build_model(asdict(cfg))
            if cfg.init_from is not None and ckpt is None:
                _warm_start(model, cfg)
            model = model.to(device)
            decay, no_decay = [], []
            for name, p in model.named_parameters():
                (decay if name.startswith(("encoder", "decoder")) else no_decay).append(p)
            opt = torch.optim.AdamW(
                [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
                lr=cfg.lr,
            )
            images = nd.cached_dataset("Train400", cfg.train_images)
            pool = nd.random_patches(images, cfg.pool_size, cfg.patch, torch.Generator().manual_seed(cfg.seed))
            pool = pool.to(device)
            val_clean, val_noisy = _validation_set(cfg)
            n = cfg.patch**2
            lo, hi = (cfg.sigma, cfg.sigma) if cfg.sigma is not None else cfg.sigma_range

            def batch(gen: torch.Generator) -> tuple[torch.Tensor, ...]:
                idx = torch.randint(cfg.pool_size, (cfg.batch_size,), generator=gen).to(device)
                clean = pool[idx]
                u = torch.rand(cfg.batch_size, 1, generator=gen)
                if cfg.sigma_sampling == "log-uniform":
                    level = torch.exp(math.log(lo) + (math.log(hi) - math.log(lo)) * u)
                else:  # a level per sample (blind) or the fixed one
                    level = lo + (hi - lo) * u
                noisy = clean + (level.to(device) / 255.0) * torch.randn(cfg.batch_size, n, generator=gen).to(device)
                if cfg.loss_weight_power:
                    return noisy, clean, (level.to(device) / 25.0) ** -cfg.loss_weight_power
                return noisy, clean

            def describe() -> dict:
                return {"val_psnr": _validate(model, cfg, val_clean, val_noisy, device),
                        **model.activation.learned()}

            return fit(model, opt, batch, torch.Generator().manual_seed(cfg.seed + 1_000_003),
                       steps=cfg.total_steps, warmup=cfg.warmup, min_lr_factor=cfg.min_lr_factor,
                       log_every=cfg.val_every, describe=describe, out=Path(out),
                       header={"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "config": asdict(cfg)},
                       checkpoint_every=cfg.checkpoint_every, resume=ckpt, stop_after=stop_after,
                       progress=sys.stderr.isatty() if cfg.progress is None else cfg.progress,
                       label=f"{cfg.activation} sigma={cfg.sigma or cfg.sigma_range}", log=log)


def strip_optimizer(path: str | Path) -> None:
    """Drop the optimizer state of a *finished* checkpoint (3x smaller; still loadable, not resumable)."""
    training.strip_optimizer(path, load_checkpoint)
