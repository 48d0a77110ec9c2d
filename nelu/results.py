"""Typed readers of the results files that ``python -m nelu reproduce`` (and ``nelu.bench``) write.

A chapter never opens a results file itself: it calls one reader, which returns a small
frozen dataclass holding the numbers as the run wrote them. Every reader takes a results
folder (default :func:`results_dir`: ``results/`` of the checkout, or ``$NELU_RESULTS``),
or the file itself, so a live quick rerun into a temporary folder is read the same way.

=======================================  ===========================================================
reader                                   file(s), and what it returns
=======================================  ===========================================================
:func:`load_bsd68`                       ``bsd68.json`` (+ ``bsd68.csv``, ``bsd68_summary.csv``):
                                         a :class:`BSD68Results`
:func:`load_synthetic`                   ``synthetic.json`` (+ ``synthetic.csv``): a :class:`SyntheticResults`
:func:`load_noise`                       ``noise.json`` (+ ``noise.csv``): a :class:`NoiseResults`
:func:`load_conv`                        ``conv.json`` (+ ``conv.csv``): a :class:`ConvResults`
:func:`load_baselines`                   ``baselines/baselines.json``, ``bm3d.csv``, ``dncnn.csv``,
                                         ``summary.csv``: a :class:`BaselinesResults`
:func:`load_reproduce`                   ``reproduce_<target>.json``: a :class:`ReproduceRun` (timings)
:func:`load_bench`                       ``bench.json`` (``python -m nelu.bench --json``): a :class:`BenchResults`
:func:`load_universal`                   ``universal.json`` (the one-model study): a :class:`UniversalResults`
:func:`read_rows`                        any results CSV: :class:`Rows`, its cells typed
=======================================  ===========================================================

Two words for the same kind of number: a *reported* value (``reported(...)``) is a summary
number exactly as the run wrote it (``psnr_mean``, ``noisy_psnr_mean``, ...); ``mean(...)`` of
:class:`BSD68Results` is recomputed from the per-image values.

Example::

    from nelu.results import load_bsd68, provenance
    res = load_bsd68()                        # results/bsd68.json
    print(provenance(res.meta))               # command, commit and date of the run
    res.mean("nelu_sigma25", 75)              # mean PSNR over the 68 images at sigma = 75
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "results_dir",
    "provenance",
    "model_label",
    "fmt_sigma",
    "Rows",
    "read_rows",
    "BSD68Results",
    "load_bsd68",
    "SyntheticResults",
    "load_synthetic",
    "NoiseResults",
    "load_noise",
    "ConvResults",
    "load_conv",
    "BM3DCheck",
    "DnCNNRun",
    "BaselinesResults",
    "load_baselines",
    "ReproduceRun",
    "load_reproduce",
    "BenchRow",
    "BenchResults",
    "load_bench",
    "UniversalResults",
    "load_universal",
]


def fmt_sigma(s: float) -> str:
    """A noise level as the results name it: ``25.0 -> '25'``, ``2.5 -> '2.5'``.

    >>> fmt_sigma(25.0), fmt_sigma(2.5)
    ('25', '2.5')
    """
    return f"{s:g}"


# ------------------------------------------------------------------------------ where


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


def _file(path: str | os.PathLike | None, name: str, *, subfolder: str | None = None) -> Path:
    """The file ``name`` of a results folder (or ``path`` itself when it names a file).

    With ``subfolder``, ``folder/subfolder/name`` is used when ``folder/name`` does not exist
    (``results/baselines/baselines.json`` from ``results/``).
    """
    p = results_dir(path)
    if p.suffix in (".json", ".csv"):
        file = p
    else:
        file = p / name
        if subfolder is not None and not file.is_file() and (p / subfolder / name).is_file():
            file = p / subfolder / name
    if not file.is_file():
        raise FileNotFoundError(f"{file} does not exist (run 'python -m nelu reproduce' first)")
    return file


def _json(path: str | os.PathLike | None, name: str, **kw) -> tuple[dict, Path]:
    file = _file(path, name, **kw)
    return json.loads(file.read_text()), file


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


# --------------------------------------------------------------------------- CSV rows

_INT = re.compile(r"[+-]?\d+")


def _cell(text: str) -> Any:
    """A CSV cell as the value it was written from: int, float, bool, None (empty) or str."""
    if text == "":
        return None
    if text in ("True", "False"):
        return text == "True"
    if _INT.fullmatch(text):
        return int(text)
    try:
        return float(text)
    except ValueError:
        return text


@dataclass(frozen=True)
class Rows:
    """The rows of a results CSV file, each a dict with typed cells.

    Integers are ``int``, other numbers ``float``, ``True``/``False`` ``bool``, empty cells
    ``None``, the rest (image names, settings) ``str``.

    >>> rows = Rows(Path("x.csv"), ("model", "test_sigma", "psnr"),
    ...             ({"model": "a", "test_sigma": 5.0, "psnr": 30.0}, {"model": "b", "test_sigma": 5.0, "psnr": 31.0}))
    >>> len(rows), rows.where(model="b")[0]["psnr"], rows.column("psnr").tolist()
    (2, 31.0, [30.0, 31.0])
    """

    file: Path
    columns: tuple[str, ...]
    rows: tuple[dict[str, Any], ...]

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self):
        return iter(self.rows)

    def where(self, **match) -> list[dict[str, Any]]:
        """The rows whose cells equal ``match`` (``where(model="nelu_sigma25", test_sigma=25.0)``)."""
        unknown = set(match) - set(self.columns)
        if unknown:
            raise KeyError(f"{self.file.name} has no column {sorted(unknown)}; columns: {list(self.columns)}")
        return [r for r in self.rows if all(r[k] == v for k, v in match.items())]

    def column(self, name: str, **match) -> np.ndarray:
        """The column ``name`` of the rows matching ``match``, as a float array."""
        if name not in self.columns:
            raise KeyError(f"{self.file.name} has no column {name!r}; columns: {list(self.columns)}")
        return np.array([np.nan if r[name] is None else r[name] for r in self.where(**match)], float)


def read_rows(path: str | os.PathLike | None, name: str | None = None) -> Rows:
    """Read a results CSV file: ``path`` itself, or the file ``name`` of the results folder ``path``
    (``read_rows(None, "bsd68.csv")`` is ``results/bsd68.csv``)."""
    file = _file(path, name) if name is not None else Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"{file} does not exist (run 'python -m nelu reproduce' first)")
    with open(file, newline="") as fh:
        reader = csv.DictReader(fh)
        rows = tuple({k: _cell(v) for k, v in r.items()} for r in reader)
        columns = tuple(reader.fieldnames or ())
    return Rows(file, columns, rows)


def _rows_beside(file: Path, name: str) -> Rows:
    return read_rows(file.parent / name)


# ------------------------------------------------------------------------------ BSD68


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


@dataclass(frozen=True)
class BSD68Results:
    """The BSD68 experiment (``bsd68.json``): every model, every test ``sigma``, every image.

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
        summary: ``{(model, sigma): {...}}``, the scalar numbers of each summary row as written
            (``n_images``, ``noisy_psnr_mean``, ``psnr_mean``, ``psnr_std``, ``ssim_mean``, ``ssim_std``).

    The per-image CSV ``bsd68.csv`` and ``bsd68_summary.csv`` beside the JSON file are
    :attr:`rows` and :attr:`summary_rows` (read on first use).
    """

    meta: dict
    models: dict[str, dict]
    sigmas: tuple[float, ...]
    images: tuple[str, ...]
    per_image: dict[tuple[str, float], dict[str, np.ndarray]]
    noisy_psnr: dict[float, float]
    folder: Path
    summary: dict[tuple[str, float], dict[str, Any]] = field(default_factory=dict)

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
        """Mean ``metric`` over the images, recomputed from the per-image values."""
        return float(self.values(model, sigma, metric).mean())

    def reported(self, model: str, sigma: float, key: str = "psnr_mean") -> float:
        """A summary number of ``model`` at ``sigma`` exactly as the run wrote it (``psnr_mean``,
        ``noisy_psnr_mean``, ``ssim_mean``, ...)."""
        try:
            return self.summary[(model, float(sigma))][key]
        except KeyError:
            raise KeyError(f"no {key!r} of {model} at sigma={fmt_sigma(sigma)} in bsd68.json") from None

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

    # -- the CSV files beside bsd68.json
    @cached_property
    def rows(self) -> Rows:
        """``bsd68.csv``: one row per (model, test sigma, image), with ``noisy_psnr``, ``psnr``, ``ssim``."""
        return read_rows(self.folder / "bsd68.csv")

    @cached_property
    def summary_rows(self) -> Rows:
        """``bsd68_summary.csv``: one row per (model, test sigma), the numbers of :attr:`summary`."""
        return read_rows(self.folder / "bsd68_summary.csv")


def load_bsd68(path: str | os.PathLike | None = None) -> BSD68Results:
    """Read ``bsd68.json`` from a results folder (or the JSON file itself); see :func:`results_dir`."""
    data, file = _json(path, "bsd68.json")
    per_image: dict[tuple[str, float], dict[str, np.ndarray]] = {}
    summary: dict[tuple[str, float], dict[str, Any]] = {}
    noisy: dict[float, list[float]] = {}
    for row in data["summary"]:
        s = float(row["test_sigma"])
        per_image[(row["model"], s)] = {"psnr": np.asarray(row["psnr"], float), "ssim": np.asarray(row["ssim"], float)}
        summary[(row["model"], s)] = {k: v for k, v in row.items() if k not in ("psnr", "ssim")}
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
        summary=summary,
    )


# -------------------------------------------------------------------------- synthetic


@dataclass(frozen=True)
class SyntheticResults:
    """The synthetic experiment (``synthetic.json``): test MSE per entry of each model at each ``sigma``.

    Attributes:
        meta: run metadata; config: the :class:`~nelu.synthetic.SyntheticConfig` as a dict.
        sigmas: test noise levels (signal units), ascending.
        mse: ``{"noisy", "relu", "nelu", "oracle"}`` -> MSE per entry at each ``sigma``
            (``noisy`` is ``sigma**2``, the error of returning the input).
        learned: ``{"nelu_lam", "relu_threshold_mean"}`` of the models trained at ``train_sigma``.
        train_sigma: the training noise level of the ReLU and NeLU models.
        folder: the folder of the file (``synthetic.csv`` beside it is :attr:`rows`).
    """

    meta: dict
    config: dict
    sigmas: np.ndarray
    mse: dict[str, np.ndarray]
    learned: dict[str, float]
    train_sigma: float
    folder: Path | None = None

    def at(self, name: str, sigma: float) -> float:
        """MSE of ``name`` (``noisy``, ``relu``, ``nelu``, ``oracle``) at ``sigma``."""
        i = int(np.flatnonzero(np.isclose(self.sigmas, sigma))[0])
        return float(self.mse[name][i])

    @cached_property
    def rows(self) -> Rows:
        """``synthetic.csv``: one row per ``sigma`` with the four MSEs."""
        if self.folder is None:
            raise FileNotFoundError("these results were not read from a folder")
        return read_rows(self.folder / "synthetic.csv")


def load_synthetic(path: str | os.PathLike | None = None) -> SyntheticResults:
    """Read ``synthetic.json`` from a results folder (or the JSON file itself)."""
    data, file = _json(path, "synthetic.json")
    rows = sorted(data["rows"], key=lambda r: r["sigma"])
    keys = {"noisy": "noisy_mse", "relu": "relu_mse", "nelu": "nelu_mse", "oracle": "oracle_relu_mse"}
    return SyntheticResults(
        meta=data["meta"],
        config=data["config"],
        sigmas=np.array([r["sigma"] for r in rows], float),
        mse={k: np.array([r[v] for r in rows], float) for k, v in keys.items()},
        learned={k: float(v) for k, v in data["learned"].items()},
        train_sigma=float(data["config"]["train_sigma"]),
        folder=file.parent,
    )


# ------------------------------------------------------------- noise models, conv AEs


@dataclass(frozen=True)
class _ByNoise:
    """Results keyed by ``(model, noise, test sigma)``: the ``summary`` of ``noise.json``/``conv.json``."""

    meta: dict
    models: dict[str, dict]
    sigmas: tuple[float, ...]
    images: tuple[str, ...]
    summary: dict[tuple[str, str, float], dict[str, Any]]
    folder: Path

    def _row(self, model: str, noise: str, sigma: float) -> dict[str, Any]:
        try:
            return self.summary[(model, noise, float(sigma))]
        except KeyError:
            raise KeyError(f"no result of {model} under {noise} noise at sigma={fmt_sigma(sigma)}") from None

    def values(self, model: str, noise: str, sigma: float) -> np.ndarray:
        """Per-image PSNR of ``model`` under ``noise`` of level ``sigma``."""
        return self._row(model, noise, sigma)["psnr"]

    def reported(self, model: str, noise: str, sigma: float, key: str = "psnr_mean") -> float:
        """A summary number (``psnr_mean``, ``noisy_psnr_mean``, ``n_images``, ...) exactly as written."""
        return self._row(model, noise, sigma)[key]


def _by_noise(data: dict) -> dict[tuple[str, str, float], dict[str, Any]]:
    return {(r["model"], r["noise"], float(r["test_sigma"])): {**r, "psnr": np.asarray(r["psnr"], float)}
            for r in data["summary"]}


@dataclass(frozen=True)
class NoiseResults(_ByNoise):
    """The noise-model experiment (``noise.json``): the sigma-25 and blind BSD68 models under
    every noise model.

    Attributes:
        meta: run metadata (``noise_kinds``, ``test_sigmas``, ``bands``, ``timings``, ``images``).
        models: per model, its description (activation, role, training sigma or range, learned value).
        kinds: the noise models (``gaussian`` first), in run order.
        sigmas: the test noise levels, ascending; images: the test image names.
        summary: ``{(model, noise, sigma): row}`` with ``psnr`` (per image, an array),
            ``psnr_mean``, ``noisy_psnr_mean``, ``psnr_band1_mean``, ...
        folder: the folder of the file (``noise.csv`` beside it is :attr:`rows`).
    """

    kinds: tuple[str, ...] = ()

    @cached_property
    def rows(self) -> Rows:
        """``noise.csv``: one row per (model, noise, test sigma, image)."""
        return read_rows(self.folder / "noise.csv")


def load_noise(path: str | os.PathLike | None = None) -> NoiseResults:
    """Read ``noise.json`` from a results folder (or the JSON file itself)."""
    data, file = _json(path, "noise.json")
    meta = data["meta"]
    return NoiseResults(meta=meta, models=data["models"], sigmas=tuple(sorted(map(float, meta["test_sigmas"]))),
                        images=tuple(meta.get("images", ())), summary=_by_noise(data), folder=file.parent,
                        kinds=tuple(meta["noise_kinds"]))


@dataclass(frozen=True)
class ConvResults(_ByNoise):
    """The convolutional experiment (``conv.json``): three convolutional auto-encoders trained at
    sigma 25, tested under Gaussian noise (``sigmas``) and varying noise (``varying_sigmas``).

    Attributes:
        meta: run metadata (``train_settings``, ``timings``, ``images``, ``global_images``).
        models: per model, its description (activation, ``coeffs``, checkpoint, training time,
            learned ``lam`` or mean threshold, history, number of test images).
        sigmas, varying_sigmas: the test noise levels of the Gaussian and the varying noise.
        global_images: the number of images the per-image NeLU (and the varying noise) was tested on.
        summary: ``{(model, noise, sigma): row}`` with ``psnr`` (an array), ``psnr_mean``, ``n_images``.
        folder: the folder of the file (checkpoint paths are relative to it; ``conv.csv`` is :attr:`rows`).
    """

    varying_sigmas: tuple[float, ...] = ()
    global_images: int = 0

    def checkpoint(self, model: str) -> Path:
        """Path of the model's checkpoint file."""
        return self.folder / self.models[model]["checkpoint"]

    @cached_property
    def rows(self) -> Rows:
        """``conv.csv``: one row per (model, noise, test sigma, image)."""
        return read_rows(self.folder / "conv.csv")


def load_conv(path: str | os.PathLike | None = None) -> ConvResults:
    """Read ``conv.json`` from a results folder (or the JSON file itself)."""
    data, file = _json(path, "conv.json")
    meta = data["meta"]
    return ConvResults(meta=meta, models=data["models"], sigmas=tuple(sorted(map(float, meta["test_sigmas"]))),
                       images=tuple(meta.get("images", ())), summary=_by_noise(data), folder=file.parent,
                       varying_sigmas=tuple(sorted(map(float, meta["varying_sigmas"]))),
                       global_images=int(meta["global_images"]))


# ---------------------------------------------------------------------------- baselines


@dataclass(frozen=True)
class BM3DCheck:
    """BM3D told the true ``sigma``, on every check image, against the published mean PSNR."""

    sigma: float
    n_images: int
    psnr_mean: float
    ssim_mean: float
    published: float | None
    difference: float | None


@dataclass(frozen=True)
class DnCNNRun:
    """The DnCNN-style network of the baselines run: its config, training and test summary."""

    config: dict
    checkpoint: Path
    steps: int
    train_time_s: float
    reused_checkpoint: bool
    history: list[dict]
    summary: list[dict]

    def curve(self, key: str = "psnr_mean") -> dict[float, float]:
        """``{test sigma: key}`` of the test summary (as written)."""
        return {float(r["test_sigma"]): r[key] for r in self.summary}


@dataclass(frozen=True)
class BaselinesResults:
    """The baselines run (``baselines/baselines.json`` and the three CSV files beside it).

    Attributes:
        meta: run metadata (versions of bm3d, ``test_sigmas``, ``sweep_images``, timings, ...).
        check: BM3D told the true sigma against its published numbers, one :class:`BM3DCheck` per level.
        sweep: BM3D on the sweep images, told the true sigma (``setting`` ``"true"``) or sigma 25
            (``"fixed"``): summary rows (``test_sigma``, ``psnr_mean``, ``noisy_psnr_mean``, ...).
        cost: BM3D's cost per call (calls, workers, median wall and CPU seconds).
        dncnn: the DnCNN-style network, a :class:`DnCNNRun`.
        timing: seconds per image on one thread (``bm3d_s``, ``dncnn_s``, ``relu_stride4_s``, ...).
        bm3d_rows: ``bm3d.csv``, one row per BM3D call (image, sigma, assumed sigma, PSNR, ...).
        dncnn_rows: ``dncnn.csv``, one row per (test sigma, image).
        summary_rows: ``summary.csv``, one row per (method, sigma, subset).
        folder: the folder of the files.
    """

    meta: dict
    check: tuple[BM3DCheck, ...]
    sweep: tuple[dict, ...]
    cost: dict
    dncnn: DnCNNRun
    timing: dict
    bm3d_rows: Rows
    dncnn_rows: Rows
    summary_rows: Rows
    folder: Path

    @property
    def sigmas(self) -> tuple[float, ...]:
        """The test noise levels of the sweep and the DnCNN-style network."""
        return tuple(map(float, self.meta["test_sigmas"]))

    def check_curve(self) -> dict[float, float]:
        """``{sigma: mean PSNR}`` of BM3D told the true sigma, at the published levels."""
        return {c.sigma: c.psnr_mean for c in self.check}

    def sweep_curve(self, setting: str, key: str = "psnr_mean") -> dict[float, float]:
        """``{test sigma: key}`` of BM3D on the sweep images, told the true sigma
        (``setting="true"``) or the fixed one (``"fixed"``)."""
        if setting not in {r["setting"] for r in self.sweep}:
            raise KeyError(f"no BM3D sweep setting {setting!r}; valid: true, fixed")
        return {float(r["test_sigma"]): r[key] for r in self.sweep if r["setting"] == setting}


def load_baselines(path: str | os.PathLike | None = None) -> BaselinesResults:
    """Read ``baselines.json`` and its CSV files from a results folder (``results/`` or
    ``results/baselines/``, or the JSON file itself)."""
    data, file = _json(path, "baselines.json", subfolder="baselines")
    dn = data["dncnn"]
    return BaselinesResults(
        meta=data["meta"],
        check=tuple(BM3DCheck(sigma=float(c["sigma"]), n_images=int(c["n_images"]), psnr_mean=c["psnr_mean"],
                              ssim_mean=c["ssim_mean"], published=c["published"], difference=c["difference"])
                    for c in data["bm3d"]["check"]),
        sweep=tuple(data["bm3d"]["sweep"]),
        cost=data["bm3d"]["cost"],
        dncnn=DnCNNRun(config=dn["config"], checkpoint=file.parent / dn["checkpoint"], steps=dn["steps"],
                       train_time_s=dn["train_time_s"], reused_checkpoint=dn["reused_checkpoint"],
                       history=dn["history"], summary=dn["summary"]),
        timing=data["timing"],
        bm3d_rows=_rows_beside(file, "bm3d.csv"),
        dncnn_rows=_rows_beside(file, "dncnn.csv"),
        summary_rows=_rows_beside(file, "summary.csv"),
        folder=file.parent,
    )


# ------------------------------------------------------------------ timings, benchmark


@dataclass(frozen=True)
class ReproduceRun:
    """One ``python -m nelu reproduce <target>`` run (``reproduce_<target>.json``): its timings.

    Attributes:
        target: ``all`` or one experiment (``bsd68``, ``conv``, ...).
        meta: run metadata (command, commit, date, profile, machine).
        timings: per experiment, its timings dict (each with ``total_s``).
        total_s: the wall time of the whole run.
    """

    target: str
    meta: dict
    timings: dict[str, dict]
    total_s: float

    @property
    def experiments(self) -> list[str]:
        """The experiments the run ran, in order."""
        return list(self.timings)

    def seconds(self, experiment: str) -> float:
        """The wall time of one experiment of the run."""
        return float(self.timings[experiment]["total_s"])


def load_reproduce(path: str | os.PathLike | None = None, target: str = "all") -> ReproduceRun:
    """Read ``reproduce_<target>.json`` from a results folder (or the file itself)."""
    data, file = _json(path, f"reproduce_{target}.json")
    timings = {k: v for k, v in data["timings"].items() if k != "total_s"}
    name = file.stem.removeprefix("reproduce_")
    return ReproduceRun(target=name, meta=data["meta"], timings=timings, total_s=float(data["timings"]["total_s"]))


@dataclass(frozen=True)
class BenchRow:
    """One activation of the benchmark: median times (ms) and the largest error against cvxpy."""

    method: str
    forward_ms: float
    forward_backward_ms: float | None
    max_error_vs_cvxpy: float | None


@dataclass(frozen=True)
class BenchResults:
    """``python -m nelu.bench --json bench.json``: the timings of the README's benchmark.

    Attributes:
        batch, m, lam, repeats, torch, threads, cpu: the setting.
        activations: one :class:`BenchRow` per method (ReLU, exact and unrolled NeLU, the two cvxpy).
        train_step_ms: ``{"ReLU": ms, "NeLU exact": ms}`` of one auto-encoder training step (with AdamW).
        speedup_exact_vs_cvxpy, train_step_ratio_nelu_over_relu: the ratios the README quotes
            (``speedup_exact_vs_cvxpy`` against the polished referee).
        train_step_no_optimizer_ms: the same step without the AdamW update.
        speedup_exact_vs_cvxpy_compiled: against cvxpy compiled once and re-solved (the fair figure).
        trained: the rows on the codes of the committed sigma = 25 models (``activations``,
            ``train_step_ms`` with ``with_optimizer`` / ``without_optimizer``), or None.
        end_to_end: ``train_loop_s``, ``train_ratio``, ``eval_s``, ``eval_ratio`` (medians over
            ``rounds`` interleaved rounds, each round in ``train_rounds_s`` / ``eval_rounds_s``; files
            written before 2026-12-01 have one round and no ``rounds``) and the config, or None.
        cuda: the GPU rows, or None when no GPU was present.
        notes: what was skipped and why.
        train_step_ratio_numba_over_relu, speedup_numba_vs_cvxpy_compiled: the same ratios with the
            exact NeLU's numba backend (rows ``"NeLU numba"``; ``end_to_end`` then has ``train_ratios``
            and ``eval_ratios`` per backend), or None (files from before 2026-12-01, or no numba).
    """

    batch: int
    m: int
    lam: float
    repeats: int
    torch: str
    threads: int
    cpu: str
    activations: tuple[BenchRow, ...]
    train_step_ms: dict[str, float]
    speedup_exact_vs_cvxpy: float
    train_step_ratio_nelu_over_relu: float
    train_step_no_optimizer_ms: dict[str, float] | None = None
    speedup_exact_vs_cvxpy_compiled: float | None = None
    trained: dict | None = None
    end_to_end: dict | None = None
    cuda: dict | None = None
    notes: tuple[str, ...] = ()
    train_step_ratio_numba_over_relu: float | None = None
    speedup_numba_vs_cvxpy_compiled: float | None = None

    def row(self, method: str) -> BenchRow:
        """The row of ``method`` (``"NeLU exact"``, ...)."""
        for r in self.activations:
            if r.method == method:
                return r
        raise KeyError(f"no method {method!r} in the benchmark; methods: {[r.method for r in self.activations]}")


def load_bench(path: str | os.PathLike | None = None) -> BenchResults:
    """Read ``bench.json`` from a results folder (or the file itself)."""
    data, _ = _json(path, "bench.json")
    optional = ("train_step_no_optimizer_ms", "speedup_exact_vs_cvxpy_compiled", "trained", "end_to_end", "cuda",
                "train_step_ratio_numba_over_relu", "speedup_numba_vs_cvxpy_compiled")
    return BenchResults(
        **{k: data[k] for k in ("batch", "m", "lam", "repeats", "torch", "threads", "cpu", "train_step_ms",
                                "speedup_exact_vs_cvxpy", "train_step_ratio_nelu_over_relu")},
        **{k: data.get(k) for k in optional},
        notes=tuple(data.get("notes", ())),
        activations=tuple(BenchRow(**r) for r in data["activations"]),
    )


# ------------------------------------------------------------------------- universal


@dataclass(frozen=True)
class UniversalResults:
    """The one-model study (``universal.json``, written by ``python -m nelu reproduce universal``).

    Attributes:
        meta: run metadata (command, commit, settings, baseline and recommended recipes, timings).
        models: per model name, its description: ``role`` (``lever``, ``recommended``,
            ``same-recipe``, ``fixed``), the TrainConfig (``train_config``), the learned
            weights (``learned``), training time, history; ``code_stats`` for the recommended one;
            the warm-started oracles (role ``oracle-warm``).
        summary: ``{(model, sigma): row}``, the scalar numbers of each summary row as written
            (``n_images``, ``noisy_psnr_mean``, ``psnr_mean``, ``psnr_std``). The oracles are the
            models ``oracle_sigma<s>`` and ``oracle_warm_sigma<s>`` (all images), with ``_levers``
            (the lever images) and ``_levers@stride1`` (the stride-1 check); the recommended
            model at stride 1 is ``<name>@stride1``. Read them with :meth:`oracle`.
        folder: the results folder (checkpoint paths are relative to it).
    """

    meta: dict
    models: dict[str, dict]
    summary: dict[tuple[str, float], dict[str, Any]]
    folder: Path

    def names(self, *, role: str | None = None) -> list[str]:
        """Model names in run order, optionally of one ``role``."""
        return [n for n, d in self.models.items() if role is None or d["role"] == role]

    def sigmas(self, model: str) -> list[float]:
        """The levels ``model`` was evaluated at, ascending."""
        return sorted(s for m, s in self.summary if m == model)

    def reported(self, model: str, sigma: float, key: str = "psnr_mean") -> float:
        """A summary number of ``model`` at ``sigma`` exactly as the run wrote it."""
        return float(self.summary[(model, float(sigma))][key])

    def oracle(self, sigma: float, *, subset: str = "all", kind: str = "best", stride: int | None = None) -> float:
        """Mean PSNR of the sigma-matched ReLU oracle at ``sigma``.

        Args:
            subset: ``"all"`` test images, or ``"levers"``: the images the levers were
                evaluated on.
            kind: ``"scratch"`` (the oracle of ``reproduce bsd68``), ``"warm"`` (the same
                recipe started from another oracle's weights, role ``oracle-warm``) or
                ``"best"``: the better of the two, the ceiling every gap is measured to.
            stride: the stride-1 check (``stride=1``: on the lever images and levels only).
        """
        if kind == "best":
            scratch = self.oracle(sigma, subset=subset, kind="scratch", stride=stride)
            try:
                return max(scratch, self.oracle(sigma, subset=subset, kind="warm", stride=stride))
            except KeyError:  # no warm start at this level (the level it starts from)
                return scratch
        if kind not in ("scratch", "warm"):
            raise ValueError(f"kind must be 'best', 'scratch' or 'warm', got {kind!r}")
        base = f"oracle{'_warm' if kind == 'warm' else ''}_sigma{fmt_sigma(sigma)}"
        if stride is not None:
            return self.reported(f"{base}_levers@stride{stride}", sigma)
        name = base + ("_levers" if subset == "levers" else "")
        if subset == "levers" and (name, float(sigma)) not in self.summary:
            name = base  # the lever images are all the images
        return self.reported(name, sigma)

    @cached_property
    def rows(self) -> Rows:
        """The per-image rows of ``universal.csv`` beside the JSON (read once)."""
        return read_rows(self.folder / "universal.csv")

    def mean_on(self, model: str, sigma: float, images: Sequence[str] | None = None) -> float:
        """Mean PSNR of ``model`` at ``sigma`` over some test ``images`` (names; default: the lever
        images), from the per-image rows of ``universal.csv``: e.g. a model evaluated on every
        image, on the images of the stride-1 check."""
        wanted = set(self.meta["lever_images"] if images is None else images)
        values = [r["psnr"] for r in self.rows.rows if r["model"] == model and float(r["test_sigma"]) == float(sigma) and r["image"] in wanted]
        if len(values) != len(wanted):
            raise KeyError(f"{model} at sigma {sigma:g} was evaluated on {len(values)} of the {len(wanted)} images")
        return float(np.mean(values))

    def checkpoint(self, model: str) -> Path:
        """Path of ``model``'s checkpoint (loads with :func:`nelu.models.load_denoiser`)."""
        return self.folder / self.models[model]["checkpoint"]


def load_universal(path: str | os.PathLike | None = None) -> UniversalResults:
    """Read ``universal.json`` of a results folder (default :func:`results_dir`) or the file itself."""
    data, file = _json(path, "universal.json")
    summary = {(r["model"], float(r["test_sigma"])): {k: v for k, v in r.items() if k not in ("model", "test_sigma")}
               for r in data["summary"]}
    return UniversalResults(meta=data["meta"], models=data["models"], summary=summary, folder=file.parent)
