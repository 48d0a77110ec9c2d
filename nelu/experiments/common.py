"""What every experiment shares: the run context, provenance, summaries and checkpoint reuse.

An experiment is a module of :mod:`nelu.experiments` with a ``PROFILES`` dict
(``"full"``: the committed results; ``"quick"``: the same code on little data) and a
function ``run(ctx: Context) -> dict`` that writes its results through ``ctx`` and
returns its timings.
"""

from __future__ import annotations

import math
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..data import add_noise
from ..evaluation import default_workers, parallel_map
from ..files import write_csv, write_json
from ..training import train_or_reuse

__all__ = ["TEST_SIGMAS", "BACKEND", "OUT", "ExperimentError", "Context", "git_commit", "fmt_sigma", "mean", "std",
           "summary_stats", "timing_probe", "relative_path", "train_all"]

#: The noise levels (0-255 scale) every BSD68 result is reported at.
TEST_SIGMAS = (5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 40.0, 50.0, 60.0, 75.0)
#: The exact NeLU's implementation in every experiment (:func:`nelu.functional.nelu`): the compiled
#: one, equal to the PyTorch backend to rounding; recorded in every checkpoint's config.
BACKEND = "numba"
#: Default results folder of each profile (quick never overwrites full).
OUT = {"full": "results", "quick": "results/quick"}


class ExperimentError(ValueError):
    """A run cannot start or continue for a reason the user can fix (missing inputs, ...)."""


def git_commit() -> str | None:
    """The commit of the package's repository (None outside a git checkout)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


@dataclass
class Context:
    """One ``reproduce`` run: where results go, the shared settings, provenance and logging.

    ``argv`` is the command line recorded in every results file (``python -m nelu ...``);
    ``checkpoints`` is the folder of the BSD68 checkpoints that other experiments read
    (default ``out/checkpoints``). ``workers``: processes for the work that splits into
    independent jobs (training runs, images to evaluate, BM3D calls), each on one thread;
    None: the profile's choice (:meth:`workers_for`). The numbers do not depend on it.
    """

    profile: str
    out: Path
    seed: int = 0
    threads: int = 1
    fresh: bool = False
    checkpoints: Path | None = None
    workers: int | None = None
    argv: list[str] | None = None
    log: Callable[[str], None] = field(default=lambda msg: None)
    program: str = "python -m nelu"
    options: dict = field(default_factory=dict)  # experiment-specific settings (e.g. baselines' workers)

    def workers_for(self, jobs: int) -> int:
        """Processes for ``jobs`` independent jobs: ``workers``, else every core in the full profile and
        one in the quick one (seconds of work, less than starting processes costs); at most ``jobs``.

        >>> Context("quick", Path("out")).workers_for(8), Context("full", Path("out"), workers=3).workers_for(2)
        (1, 2)
        """
        return default_workers(jobs, self.workers if self.workers is not None or self.profile != "quick" else 1)

    @property
    def checkpoint_dir(self) -> Path:
        return Path(self.checkpoints) if self.checkpoints is not None else self.out / "checkpoints"

    def meta(self, **extra) -> dict:
        """Provenance of a results file: command, commit, versions, machine, date, plus ``extra``."""
        argv = sys.argv[1:] if self.argv is None else self.argv
        return {
            "command": f"{self.program} " + shlex.join(argv),
            "git_commit": git_commit(),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
            "cpu_count": os.cpu_count(),
            "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **extra,
        }

    def write_json(self, name: str, obj) -> Path:
        """Write ``out/name`` atomically; returns its path."""
        write_json(self.out / name, obj)
        return self.out / name

    def write_csv(self, name: str, rows: list[dict]) -> Path:
        write_csv(self.out / name, rows)
        return self.out / name


def relative_path(path: Path, out: Path) -> str:
    """``path`` relative to the results folder ``out`` when inside it (results stay portable)."""
    try:
        return str(Path(path).relative_to(out))
    except ValueError:
        return str(path)


def fmt_sigma(s: float) -> str:
    """``25.0 -> '25'``, ``2.5 -> '2.5'``."""
    return f"{s:g}"


def mean(v: list[float]) -> float:
    return float(sum(v) / len(v)) if v else float("nan")


def std(v: list[float]) -> float:
    """Sample standard deviation (0 for fewer than two values)."""
    if len(v) < 2:
        return 0.0
    mu = mean(v)
    return float(math.sqrt(sum((x - mu) ** 2 for x in v) / (len(v) - 1)))


def summary_stats(res: dict, s: float, keys) -> dict:
    """Means (and standard deviations) over images of :func:`nelu.evaluation.evaluate_images` results."""
    out = {"noisy_psnr_mean": mean(res["noisy_psnr"][s])}
    for k in keys:
        out[f"{k}_mean"] = mean(res[k][s])
        out[f"{k}_std"] = std(res[k][s])
    return out


def timing_probe(image: torch.Tensor) -> torch.Tensor:
    """The noisy image (sigma 25, seed 0) that the experiments time their denoisers on."""
    return add_noise(image, 25.0, generator=torch.Generator().manual_seed(0))


def _train_job(job: tuple) -> tuple[dict, bool, float]:
    t = time.perf_counter()
    ck, reused = train_or_reuse(*job)
    return ck, reused, time.perf_counter() - t


def train_all(jobs: list[tuple], workers: int) -> list[tuple[dict, bool, float]]:
    """:func:`nelu.training.train_or_reuse` ``(cfg, path, fresh, load, train_fn)`` for every job.

    The runs are independent: they go to ``workers`` processes, each on the thread count of
    its config, so every checkpoint is bitwise the one a run in this process writes. Returns
    ``(checkpoint, reused, seconds)`` per job, in order (``seconds``: the wall time of that
    job in its process).
    """
    return parallel_map(_train_job, jobs, workers)
