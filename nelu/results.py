"""The results the chapters show, as written by ``python -m nelu reproduce``.

A chapter never opens a results file itself: it calls a reader, which returns a small
frozen dataclass holding the numbers as the run wrote them. Every reader takes a results
folder (default :func:`results_dir`: ``results/`` of the checkout, or ``$NELU_RESULTS``),
or the file itself, so a live quick rerun into a temporary folder is read the same way.

* :func:`load_bsd68` (a :class:`BSD68Results`: per model and test ``sigma``, the per-image
  PSNR/SSIM, their means and spread, the sigma-matched ReLU oracle), :func:`load_synthetic`
  (a :class:`SyntheticResults`), :func:`provenance` (command, commit and date).

Example::

    from nelu.results import load_bsd68, provenance
    res = load_bsd68()                        # results/bsd68.json
    print(provenance(res.meta))               # command, commit and date of the run
    res.mean("nelu_sigma25", 75)              # mean PSNR over the 68 images at sigma = 75
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "results_dir",
    "provenance",
    "model_label",
    "fmt_sigma",
    "BSD68Results",
    "load_bsd68",
    "SyntheticResults",
    "load_synthetic",
]


def fmt_sigma(s: float) -> str:
    """A noise level as the results name it: ``25.0 -> '25'``, ``2.5 -> '2.5'``.

    >>> fmt_sigma(25.0), fmt_sigma(2.5)
    ('25', '2.5')
    """
    return f"{s:g}"


# ------------------------------------------------------------------------------ loading


def results_dir(path: str | os.PathLike | None = None) -> Path:
    """The results folder: ``path``, else ``$NELU_RESULTS``, else ``results/`` of the source tree.

    The source tree is the folder above the ``nelu`` package (an editable install,
    ``pip install -e .``), or the first parent of the working directory holding
    ``results/``. Raises ``FileNotFoundError`` when none exists.
    """
    if path is not None:
        return Path(path)
    env = os.environ.get("NELU_RESULTS")
    if env:
        return Path(env)
    candidates = [Path(__file__).resolve().parent.parent / "results"]
    cwd = Path.cwd().resolve()
    candidates += [p / "results" for p in (cwd, *cwd.parents)]
    for c in candidates:
        if c.is_dir():
            return c
    raise FileNotFoundError(
        "no results folder found: pass a path, set NELU_RESULTS, or run "
        "'python -m nelu reproduce all' in the repository"
    )


def _json(path: str | os.PathLike | None, name: str) -> tuple[dict, Path]:
    p = results_dir(path)
    file = p if p.suffix == ".json" else p / name
    if not file.is_file():
        raise FileNotFoundError(f"{file} does not exist (run 'python -m nelu reproduce' first)")
    return json.loads(file.read_text()), file


@dataclass(frozen=True)
class BSD68Results:
    """The BSD68 experiment: every model, every test ``sigma``, every image.

    Attributes:
        meta: run metadata (command, commit, date, settings, timings, image names).
        models: per model name, its description as written by the run (activation,
            training ``sigma`` or ``sigma_range``, role ``main``/``blind``/``oracle``,
            checkpoint, learned ``lam`` or mean threshold, history), in run order.
        sigmas: the test noise levels (0-255 scale), ascending.
        images: the test image names.
        per_image: ``{(model, sigma): {"psnr": array, "ssim": array}}``, one value per image.
        noisy_psnr: mean PSNR of the noisy input per ``sigma`` (the same noisy images for all models).
        folder: the results folder (checkpoint paths are relative to it).
    """

    meta: dict
    models: dict[str, dict]
    sigmas: tuple[float, ...]
    images: tuple[str, ...]
    per_image: dict[tuple[str, float], dict[str, np.ndarray]]
    noisy_psnr: dict[float, float]
    folder: Path

    # -- lookups
    def names(self, *, role: str | None = None, activation: str | None = None) -> list[str]:
        """Model names in run order, optionally of one role (``main``, ``blind``, ``oracle``) or activation."""
        return [
            n for n, d in self.models.items()
            if (role is None or d["role"] == role) and (activation is None or d["activation"] == activation)
        ]

    def evaluated(self, model: str) -> list[float]:
        """The test ``sigma`` values at which ``model`` was evaluated."""
        return [s for s in self.sigmas if (model, s) in self.per_image]

    def values(self, model: str, sigma: float, metric: str = "psnr") -> np.ndarray:
        """Per-image ``metric`` of ``model`` at ``sigma`` (KeyError if not evaluated there)."""
        try:
            return self.per_image[(model, float(sigma))][metric]
        except KeyError:
            raise KeyError(f"{model} was not evaluated at sigma={fmt_sigma(sigma)} ({metric})") from None

    def mean(self, model: str, sigma: float, metric: str = "psnr") -> float:
        """Mean ``metric`` over the images."""
        return float(self.values(model, sigma, metric).mean())

    def std(self, model: str, sigma: float, metric: str = "psnr") -> float:
        """Standard deviation of ``metric`` over the images (n - 1 in the denominator)."""
        v = self.values(model, sigma, metric)
        return float(v.std(ddof=1)) if v.size > 1 else 0.0

    def curve(self, model: str, metric: str = "psnr") -> np.ndarray:
        """Mean ``metric`` at every test ``sigma`` (NaN where not evaluated)."""
        return np.array([self.mean(model, s, metric) if (model, s) in self.per_image else np.nan
                         for s in self.sigmas])

    def train_sigma(self, model: str) -> float | None:
        """The training noise level, or None for a blind model."""
        s = self.models[model]["sigma"]
        return None if s is None else float(s)

    def train_range(self, model: str) -> tuple[float, float] | None:
        """The training range of a blind model, else None."""
        r = self.models[model].get("sigma_range")
        return None if r is None else (float(r[0]), float(r[1]))

    def checkpoint(self, model: str) -> Path:
        """Path of the model's checkpoint file."""
        return self.folder / self.models[model]["checkpoint"]

    def label(self, model: str) -> str:
        """A short human label: ``"NeLU, σ=25"``, ``"ReLU, blind 0-75"``."""
        return model_label(self.models[model])

    # -- the sigma-matched oracle
    def oracle_name(self, sigma: float) -> str:
        """The ReLU model trained at exactly ``sigma`` (the sigma-matched oracle)."""
        for n, d in self.models.items():
            if d["activation"] == "relu" and d["sigma"] is not None and float(d["sigma"]) == float(sigma):
                return n
        raise KeyError(f"no ReLU model trained at sigma={fmt_sigma(sigma)}")

    def oracle(self, sigma: float, metric: str = "psnr") -> float:
        """Mean ``metric`` of the sigma-matched ReLU oracle at ``sigma``."""
        return self.mean(self.oracle_name(sigma), sigma, metric)

    def oracle_curve(self, metric: str = "psnr") -> np.ndarray:
        """The oracle's mean ``metric`` at every test ``sigma``."""
        return np.array([self.oracle(s, metric) for s in self.sigmas])

    def gap(self, model: str, metric: str = "psnr") -> np.ndarray:
        """``model`` minus the sigma-matched oracle at every test ``sigma`` (dB for PSNR)."""
        return self.curve(model, metric) - self.oracle_curve(metric)

    def wins(self, a: str, b: str, sigma: float, metric: str = "psnr") -> float:
        """Fraction of the images on which ``a`` scores higher than ``b`` (a paired comparison)."""
        return float(np.mean(self.values(a, sigma, metric) > self.values(b, sigma, metric)))

    def tidy(self) -> list[dict[str, Any]]:
        """One row per (model, sigma): means, spread (std, min, max over images) and counts."""
        rows = []
        for (model, s), v in self.per_image.items():
            d = self.models[model]
            p, q = v["psnr"], v["ssim"]
            rows.append({
                "model": model, "label": self.label(model), "activation": d["activation"], "role": d["role"],
                "train_sigma": self.train_sigma(model), "test_sigma": s, "n_images": int(p.size),
                "psnr_mean": float(p.mean()), "psnr_std": float(p.std(ddof=1)) if p.size > 1 else 0.0,
                "psnr_min": float(p.min()), "psnr_max": float(p.max()),
                "ssim_mean": float(q.mean()), "ssim_std": float(q.std(ddof=1)) if q.size > 1 else 0.0,
            })
        return rows


def model_label(desc: dict) -> str:
    """Label of a model description (a ``models`` entry of ``bsd68.json``).

    >>> model_label({"activation": "nelu", "sigma": 25.0, "sigma_range": None})
    'NeLU, σ=25'
    >>> model_label({"activation": "relu", "sigma": None, "sigma_range": [0.0, 75.0]})
    'ReLU, blind 0-75'
    """
    act = {"relu": "ReLU", "nelu": "NeLU"}.get(desc["activation"], desc["activation"])
    if desc.get("sigma") is not None:
        return f"{act}, σ={fmt_sigma(float(desc['sigma']))}"
    lo, hi = desc["sigma_range"]
    return f"{act}, blind {fmt_sigma(lo)}-{fmt_sigma(hi)}"


def load_bsd68(path: str | os.PathLike | None = None) -> BSD68Results:
    """Read ``bsd68.json`` from a results folder (or the JSON file itself); see :func:`results_dir`."""
    data, file = _json(path, "bsd68.json")
    per_image: dict[tuple[str, float], dict[str, np.ndarray]] = {}
    noisy: dict[float, list[float]] = {}
    for row in data["summary"]:
        s = float(row["test_sigma"])
        per_image[(row["model"], s)] = {"psnr": np.asarray(row["psnr"], float), "ssim": np.asarray(row["ssim"], float)}
        noisy.setdefault(s, []).append(float(row["noisy_psnr_mean"]))
    sigmas = tuple(sorted(float(s) for s in data["meta"].get("test_sigmas", noisy)))
    return BSD68Results(
        meta=data["meta"],
        models=data["models"],
        sigmas=sigmas,
        images=tuple(data["meta"].get("images", ())),
        per_image=per_image,
        noisy_psnr={s: float(np.mean(v)) for s, v in sorted(noisy.items())},
        folder=file.parent,
    )


@dataclass(frozen=True)
class SyntheticResults:
    """The synthetic experiment: test MSE per entry of each model at each ``sigma``.

    Attributes:
        meta: run metadata; config: the :class:`~nelu.synthetic.SyntheticConfig` as a dict.
        sigmas: test noise levels (signal units), ascending.
        mse: ``{"noisy", "relu", "nelu", "oracle"}`` -> MSE per entry at each ``sigma``
            (``noisy`` is ``sigma**2``, the error of returning the input).
        learned: ``{"nelu_lam", "relu_threshold_mean"}`` of the models trained at ``train_sigma``.
        train_sigma: the training noise level of the ReLU and NeLU models.
    """

    meta: dict
    config: dict
    sigmas: np.ndarray
    mse: dict[str, np.ndarray]
    learned: dict[str, float]
    train_sigma: float

    def at(self, name: str, sigma: float) -> float:
        """MSE of ``name`` (``noisy``, ``relu``, ``nelu``, ``oracle``) at ``sigma``."""
        i = int(np.flatnonzero(np.isclose(self.sigmas, sigma))[0])
        return float(self.mse[name][i])


def load_synthetic(path: str | os.PathLike | None = None) -> SyntheticResults:
    """Read ``synthetic.json`` from a results folder (or the JSON file itself)."""
    data, _ = _json(path, "synthetic.json")
    rows = sorted(data["rows"], key=lambda r: r["sigma"])
    keys = {"noisy": "noisy_mse", "relu": "relu_mse", "nelu": "nelu_mse", "oracle": "oracle_relu_mse"}
    return SyntheticResults(
        meta=data["meta"],
        config=data["config"],
        sigmas=np.array([r["sigma"] for r in rows], float),
        mse={k: np.array([r[v] for r in rows], float) for k, v in keys.items()},
        learned={k: float(v) for k, v in data["learned"].items()},
        train_sigma=float(data["config"]["train_sigma"]),
    )


def provenance(meta: dict) -> str:
    """One line: the command, the git commit and the date of a run, from its ``meta``.

    >>> provenance({"command": "python -m nelu reproduce all", "git_commit": "0123456789abcdef",
    ...             "date_utc": "2024-06-01T12:00:00Z", "profile": "full"})
    'python -m nelu reproduce all (profile full), git commit 0123456789ab, 2024-06-01 12:00 UTC'
    """
    commit = meta.get("git_commit") or "unknown"
    raw = str(meta.get("date_utc", "unknown date"))
    try:
        date = datetime.strptime(raw, "%Y-%m-%dT%H:%M:%SZ").strftime("%Y-%m-%d %H:%M UTC")
    except ValueError:
        date = raw
    command = str(meta.get("command", "?"))
    profile = f" (profile {meta['profile']})" if meta.get("profile") and "--profile" not in command else ""
    return f"{command}{profile}, git commit {commit[:12]}, {date}"
