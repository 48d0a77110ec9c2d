"""The one training engine: loop, schedule, atomic checkpoints, bit-identical resume, reuse.

Every model of the package trains through :func:`fit`: the patch auto-encoders
(:func:`nelu.train.train`), the convolutional ones (:func:`nelu.conv.train_conv`), the
DnCNN-style network (:func:`nelu.baselines.train_dncnn`) and the synthetic experiment
(:func:`nelu.synthetic.fit`). A caller builds the model, the optimizer and a ``batch``
function that draws ``(noisy, clean)`` from a :class:`torch.Generator`; :func:`fit` runs

* the loss ``mean((model(noisy) - clean)**2)`` (each sample weighted when ``batch`` gives
  weights) with a check that it is finite,
* the learning-rate schedule of :func:`lr_factor` (linear warm-up, then cosine),
* a history entry every ``log_every`` steps and at the end (mean training MSE since
  the last entry, learning rate, time, plus what ``describe`` adds, e.g. a validation
  PSNR or the learned ``lam``),
* and, with ``out``, an atomic checkpoint every ``checkpoint_every`` steps and at the end,
  holding the model, optimizer, schedule, generator, step, history and the running loss
  sums, so that a run resumed from it (``resume=``) ends bitwise identical to an
  uninterrupted one, history included.

:func:`open_run` takes the lock on a checkpoint and returns the run to resume;
:func:`train_or_reuse` returns a finished checkpoint whose config matches instead of
training again; :func:`strip_optimizer` shrinks a finished checkpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import Tensor, nn

from .files import FileSafetyError, lock, save_torch
from .models import CheckpointError

__all__ = [
    "ConfigError",
    "TrainingDiverged",
    "RUNTIME_FIELDS",
    "MAX_STEPS",
    "MAX_THREADS",
    "check_number",
    "check_backend",
    "check_device",
    "memory_limit_bytes",
    "torch_settings",
    "lr_factor",
    "config_matches",
    "check_replaceable",
    "open_run",
    "fit",
    "train_or_reuse",
    "strip_optimizer",
]

#: Config fields that do not change the numbers a run produces (free to differ on resume or reuse).
RUNTIME_FIELDS = ("device", "progress", "threads", "checkpoint_every")
#: Longest run accepted (steps), and most torch threads.
MAX_STEPS = 10**8
MAX_THREADS = 1024


class ConfigError(ValueError):
    """An invalid training configuration (unknown activation, negative sigma, ...)."""


class TrainingDiverged(ConfigError):
    """The loss or the weights became NaN or infinite (learning rate too high, ...); the last checkpoint is kept."""


# ----------------------------------------------------------------------------- checks


def check_number(name: str, value, lo: float = -math.inf, hi: float = math.inf, *, lo_open: bool = False) -> None:
    """Raise :class:`ConfigError` unless ``value`` is a finite real number in the range.

    >>> check_number("lr", float("inf"), 0, lo_open=True)
    Traceback (most recent call last):
    ...
    nelu.training.ConfigError: lr must be a finite number > 0, got inf
    """
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > lo if lo_open else value >= lo) and value <= hi
    if not ok:
        low = f"> {lo:g}" if lo_open else f">= {lo:g}"
        high = f" and <= {hi:g}" if math.isfinite(hi) else ""
        raise ConfigError(f"{name} must be a finite number {low}{high}, got {value!r}")


def check_backend(backend: object, device: str) -> None:
    """:func:`nelu.functional.check_backend` for a run's config: a ConfigError naming the problem."""
    from . import functional as F

    try:
        F.check_backend(backend, device)
    except (ValueError, RuntimeError) as exc:  # RuntimeError: torch cannot parse the device
        raise ConfigError(str(exc)) from None


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


def _check_finite_loss(loss: Tensor, step: int, out: Path | None) -> None:
    if not torch.isfinite(loss.detach()).all():
        kept = f" (the last good checkpoint, if any, is kept in {out})" if out else ""
        raise TrainingDiverged(f"training diverged at step {step + 1}: the loss is {float(loss.detach())}; "
                               f"lower the learning rate{kept}")


def _check_finite_weights(model: nn.Module, step: int, out: Path | None) -> None:
    for name, p in model.named_parameters():
        if not torch.isfinite(p.detach()).all():
            kept = f" (the last good checkpoint, if any, is kept in {out})" if out else ""
            raise TrainingDiverged(f"training diverged at step {step}: {name} is not finite; lower the learning "
                                   f"rate or the weight decay{kept}")


# ------------------------------------------------------------------------- settings


@contextlib.contextmanager
def torch_settings(threads: int) -> Iterator[None]:
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


def lr_factor(step: int, total: int, warmup: float, min_factor: float) -> float:
    """Learning-rate multiplier at ``step``: linear warm-up over ``warmup * total`` steps, then cosine.

    >>> [round(lr_factor(s, 10, 0.2, 0.0), 3) for s in (0, 1, 2, 9)]
    [0.5, 1.0, 1.0, 0.038]
    """
    w = int(warmup * total)
    if step < w:
        return (step + 1) / w
    progress = (step - w) / max(1, total - w)
    return min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


# ----------------------------------------------------------------------- checkpoints


def _plain(v):
    return list(v) if isinstance(v, tuple) else v


def _with_defaults(saved: dict, cfg) -> dict:
    """``saved`` with the fields it lacks (added to the config class after it was written) at their defaults."""
    defaults = {f.name: f.default for f in dataclasses.fields(cfg) if f.default is not dataclasses.MISSING}
    return {**{k: v for k, v in defaults.items() if k not in saved}, **saved}


def config_matches(saved: dict, cfg) -> bool:
    """Whether a checkpoint's config equals the dataclass ``cfg`` up to :data:`RUNTIME_FIELDS`.

    A field missing from ``saved`` (a checkpoint written before the field existed) counts
    as its default value.
    """
    if not isinstance(saved, dict):
        return False
    now, saved = dataclasses.asdict(cfg), _with_defaults(saved, cfg)
    return set(saved) == set(now) and all(
        _plain(saved[k]) == _plain(now[k]) for k in now if k not in RUNTIME_FIELDS)


def check_replaceable(out: Path, load: Callable[[Path], dict]) -> None:
    """Refuse (:class:`~nelu.files.FileSafetyError`) to replace ``out`` unless it is missing or ``load`` reads it."""
    if out.is_dir():
        raise FileSafetyError(f"{out} is a folder; give a checkpoint file path (.pt)")
    if out.exists():
        try:
            load(out)
        except CheckpointError:
            raise FileSafetyError(f"{out} exists and is not a checkpoint of this kind; refusing to overwrite it: "
                                  "choose another output path or remove the file yourself") from None


@contextlib.contextmanager
def open_run(out: str | Path, cfg, load: Callable[[Path], dict], resume: bool) -> Iterator[dict | None]:
    """Lock the checkpoint ``out`` for a run of ``cfg``; yield the checkpoint to resume, or None.

    Refuses (:class:`~nelu.files.FileSafetyError`) when another run holds ``out`` or
    when ``out`` is a file of another kind (``load`` raises
    :class:`~nelu.models.CheckpointError` for it). With ``resume`` and an existing
    ``out``, its config must match ``cfg`` up to :data:`RUNTIME_FIELDS`, and it must
    hold an optimizer state unless it is finished.
    """
    out = Path(out)
    with lock(out, "training run"):
        check_replaceable(out, load)
        ckpt = None
        if resume and out.exists():
            ckpt = load(out)
            saved, now = _with_defaults(dict(ckpt["config"]), cfg), dataclasses.asdict(cfg)
            diffs = [f"{k}: {saved.get(k)!r} in the checkpoint, {now[k]!r} now"
                     for k in now if k not in RUNTIME_FIELDS and _plain(saved.get(k)) != _plain(now[k])]
            if diffs:
                raise CheckpointError(f"cannot resume {out}: the config differs ({'; '.join(diffs)})")
            if ckpt.get("optimizer") is None and not ckpt.get("complete"):
                raise CheckpointError(f"cannot resume {out}: it holds no optimizer state")
        yield ckpt


def strip_optimizer(path: str | Path, load: Callable[[Path], dict]) -> None:
    """Drop the optimizer state of a *finished* checkpoint (smaller; still loadable, not resumable)."""
    ckpt = load(path)
    if not ckpt.get("complete"):
        raise CheckpointError(f"{path} is not a finished run; keep its optimizer state to resume it")
    ckpt["optimizer"] = None
    ckpt["scheduler"] = None
    save_torch(ckpt, path)


def train_or_reuse(cfg, path: Path, fresh: bool, load: Callable[[Path], dict],
                   train_fn: Callable[..., dict]) -> tuple[dict, bool]:
    """The finished checkpoint at ``path`` if its config matches ``cfg`` (unless ``fresh``), else train.

    Returns ``(checkpoint, reused)``; a newly trained checkpoint is stripped of its
    optimizer state (:func:`strip_optimizer`).
    """
    if not fresh and path.exists():
        try:
            ck = load(path)
            if ck.get("complete") and config_matches(ck["config"], cfg):
                return ck, True
        except CheckpointError:
            pass
    ck = train_fn(cfg, path, resume=False)
    strip_optimizer(path, load)
    return ck, False


# ------------------------------------------------------------------------------ loop


def fit(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: Callable[[torch.Generator], tuple[Tensor, ...]],
    generator: torch.Generator,
    *,
    steps: int,
    warmup: float = 0.05,
    min_lr_factor: float = 0.02,
    log_every: int = 0,
    describe: Callable[[], dict] | None = None,
    out: Path | None = None,
    header: dict | None = None,
    checkpoint_every: int = 0,
    resume: dict | None = None,
    stop_after: int | None = None,
    progress: bool = False,
    label: str = "",
    log: Callable[[str], None] | None = None,
) -> dict:
    """Train ``model`` for ``steps`` steps; return the final state (a checkpoint dict).

    Args:
        model, optimizer: built by the caller (seeded); the model is put in training mode.
        batch: ``batch(generator) -> (noisy, clean)`` or ``(noisy, clean, weight)``, on the
            model's device; ``weight`` (shape ``(B, 1)``) weights each sample's squared error.
        generator: the source of every batch; its state is checkpointed.
        steps: total number of steps; the learning rate follows :func:`lr_factor`
            ``(step, steps, warmup, min_lr_factor)``.
        log_every: a history entry every this many steps (0: only at the end).
        describe: called (model in eval mode) for each history entry; its dict is added.
        out, header, checkpoint_every: with ``out``, the state (plus ``header``, e.g. the
            format tag and config) is saved atomically every ``checkpoint_every`` steps
            (0: never) and at the end.
        resume: a checkpoint of this run (see :func:`open_run`) to continue from.
        stop_after: stop (after checkpointing) once this many steps are done in total:
            simulates an interruption, for tests.
        progress, label: a tqdm bar on stderr, with this label.
        log: called with one line per history entry.

    Returns:
        ``{**header, "model", "optimizer", "scheduler", "generator", "step", "total_steps",
        "history", "elapsed_s", "complete", "loss_sum", "loss_count", "torch_version"}``.

    Raises:
        TrainingDiverged: the loss or a weight became NaN or infinite; nothing more is saved.
    """
    sched = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, steps, warmup, min_lr_factor))
    step, history, elapsed, loss_sum, loss_count = 0, [], 0.0, 0.0, 0
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        sched.load_state_dict(resume["scheduler"])
        generator.set_state(resume["generator"])
        step, history, elapsed = int(resume["step"]), list(resume["history"]), float(resume["elapsed_s"])
        # The running sums of the entry in progress (absent in checkpoints written before 2026-12).
        loss_sum, loss_count = float(resume.get("loss_sum", 0.0)), int(resume.get("loss_count", 0))
    end = steps if stop_after is None else min(steps, stop_after)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=steps, initial=step, desc=label, dynamic_ncols=True, leave=False, file=sys.stderr)
    t0 = time.perf_counter()

    def state(complete: bool) -> dict:
        return {**(header or {}), "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": sched.state_dict(), "generator": generator.get_state(), "step": step,
                "total_steps": steps, "history": history, "elapsed_s": elapsed + (time.perf_counter() - t0),
                "complete": complete, "loss_sum": loss_sum, "loss_count": loss_count,
                "torch_version": str(torch.__version__)}

    model.train()
    while step < end:
        noisy, clean, *weight = batch(generator)
        error = (model(noisy) - clean) ** 2
        loss = torch.mean(weight[0] * error) if weight else torch.mean(error)
        _check_finite_loss(loss, step, out)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        sched.step()
        step += 1
        loss_sum += float(loss.detach())
        loss_count += 1
        if bar is not None:
            bar.update(1)
        if (log_every and step % log_every == 0) or step == steps:
            mse = loss_sum / max(loss_count, 1)
            entry = {"step": step, "train_mse": mse, "train_psnr": -10 * math.log10(max(mse, 1e-12))}
            if describe is not None:
                model.eval()
                entry.update(describe())
                model.train()
            entry.update(lr=sched.get_last_lr()[0], time_s=elapsed + time.perf_counter() - t0)
            history.append(entry)
            loss_sum, loss_count = 0.0, 0
            if log:
                log(f"  {label} step {step}/{steps} " + " ".join(
                    f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in entry.items()
                    if k not in ("step", "time_s", "lr")))
        if out is not None and checkpoint_every and step % checkpoint_every == 0 and step < end:
            _check_finite_weights(model, step, out)
            save_torch(state(False), out)
    if bar is not None:
        bar.close()
    _check_finite_weights(model, step, out)
    final = state(step >= steps)
    if out is not None:
        save_torch(final, out)
    return final
