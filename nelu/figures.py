"""Tables, figures and measurements for the experiment chapters (part II of the book).

Everything here reads what ``python -m nelu reproduce`` wrote: ``bsd68.json``,
``synthetic.json`` and the checkpoints of a results folder (``results/`` for the
full profile, any folder for ``--out``). Nothing is typed by hand: a table or a
curve is a function of those files.

* Loading: :func:`results_dir`, :func:`load_bsd68` (a :class:`BSD68Results`:
  per model and test ``sigma``, the per-image PSNR/SSIM, their means and spread,
  the sigma-matched ReLU oracle), :func:`load_synthetic` (a
  :class:`SyntheticResults`), :func:`provenance` (command, commit and date).
* Tables: :class:`Table` (HTML in a notebook, Markdown or plain text), built by
  :func:`bsd68_table`, :func:`gap_table`, :func:`models_table`, :func:`synthetic_table`.
* Plots on a given matplotlib ``Axes``: :func:`psnr_vs_sigma` and
  :func:`gap_to_oracle` (BSD68, training noise level marked), :func:`mse_vs_sigma`
  (synthetic, log scales), :func:`show_filters` (rows of ``W`` as image patches),
  :func:`sigma_axis` (the noise levels as x ticks).
* Measurements on a trained auto-encoder: :func:`code_statistics` (active
  fraction, threshold, residual ``||u - z||`` against the noise energy),
  :func:`unit_statistics` (the same, unit by unit) and :func:`best_lam` (the NeLU ``lam`` with the smallest patch error at each noise
  level, the transform held fixed).

Example::

    from nelu.figures import load_bsd68, bsd68_table, psnr_vs_sigma
    res = load_bsd68()                                   # results/bsd68.json
    bsd68_table(res, ["relu_sigma25", "nelu_sigma25"])   # an HTML table in a notebook
    fig, ax = plt.subplots()
    psnr_vs_sigma(ax, res, ["relu_sigma25", "nelu_sigma25"])
"""

from __future__ import annotations

import html
import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from . import functional as F

__all__ = [
    "COLORS",
    "BSD68Results",
    "SyntheticResults",
    "Table",
    "CodeStats",
    "results_dir",
    "load_bsd68",
    "load_synthetic",
    "provenance",
    "model_label",
    "bsd68_table",
    "gap_table",
    "models_table",
    "synthetic_table",
    "psnr_vs_sigma",
    "gap_to_oracle",
    "mse_vs_sigma",
    "sigma_axis",
    "filter_mosaic",
    "show_filters",
    "code_statistics",
    "UnitStats",
    "unit_statistics",
    "best_lam",
]

#: Colours used for the same thing in every figure.
COLORS = {"relu": "tab:red", "nelu": "tab:blue", "oracle": "tab:green", "noisy": "gray"}
_MARKERS = {15.0: "v", 25.0: "o", 50.0: "^", None: "D"}
_METRIC_NAMES = {"psnr": "PSNR (dB)", "ssim": "SSIM"}


def _fmt_sigma(s: float) -> str:
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
            raise KeyError(f"{model} was not evaluated at sigma={_fmt_sigma(sigma)} ({metric})") from None

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
        raise KeyError(f"no ReLU model trained at sigma={_fmt_sigma(sigma)}")

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
        return f"{act}, σ={_fmt_sigma(float(desc['sigma']))}"
    lo, hi = desc["sigma_range"]
    return f"{act}, blind {_fmt_sigma(lo)}-{_fmt_sigma(hi)}"


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


# ------------------------------------------------------------------------------- tables


@dataclass
class Table:
    """A small table that shows itself as HTML in a notebook, or as Markdown or text.

    Args:
        columns: header of each column.
        rows: the cells, row by row: numbers or strings (NaN/None show as ``-``).
        formats: per column, a format spec for numbers (``".2f"``) or None.
        bold: ``(row, column)`` cells to show in bold (e.g. the best of a row).
        caption: an optional caption above the table.

    >>> t = Table(["σ", "PSNR"], [[25, 28.123]], formats=[None, ".2f"])
    >>> print(t.to_markdown())
    | σ | PSNR |
    |---:|---:|
    | 25 | 28.12 |
    """

    columns: list[str]
    rows: list[list[Any]]
    formats: list[str | None] | None = None
    bold: set[tuple[int, int]] = field(default_factory=set)
    caption: str | None = None

    def text(self, i: int, j: int) -> str:
        """The cell ``(i, j)`` as shown."""
        v = self.rows[i][j]
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "-"
        spec = self.formats[j] if self.formats else None
        if spec and isinstance(v, (int, float, np.floating, np.integer)):
            return format(v, spec)
        return str(v)

    def _cells(self) -> list[list[str]]:
        return [[self.text(i, j) for j in range(len(self.columns))] for i in range(len(self.rows))]

    def to_markdown(self) -> str:
        """A Markdown (GFM) table; bold cells in ``**``."""
        cells = self._cells()
        lines = ["| " + " | ".join(self.columns) + " |", "|" + "|".join("---:" for _ in self.columns) + "|"]
        for i, row in enumerate(cells):
            lines.append("| " + " | ".join(f"**{c}**" if (i, j) in self.bold else c for j, c in enumerate(row)) + " |")
        return ("" if self.caption is None else self.caption + "\n\n") + "\n".join(lines)

    def to_html(self) -> str:
        """An HTML table (no colours: readable in light and dark themes)."""
        cells = self._cells()
        out = ['<table class="nelu-table" style="text-align:right; border-collapse:collapse">']
        if self.caption:
            out.append(f'<caption style="caption-side:top; text-align:left">{html.escape(self.caption)}</caption>')
        out.append("<thead><tr>" + "".join(f'<th style="padding:2px 8px">{html.escape(c)}</th>'
                                           for c in self.columns) + "</tr></thead><tbody>")
        for i, row in enumerate(cells):
            tds = []
            for j, c in enumerate(row):
                c = html.escape(c)
                tds.append(f'<td style="padding:2px 8px">{f"<b>{c}</b>" if (i, j) in self.bold else c}</td>')
            out.append("<tr>" + "".join(tds) + "</tr>")
        out.append("</tbody></table>")
        return "\n".join(out)

    def __str__(self) -> str:
        cells = self._cells()
        widths = [max(len(c) for c in [h] + [r[j] for r in cells]) for j, h in enumerate(self.columns)]
        lines = ([self.caption] if self.caption else []) + ["  ".join(h.rjust(w) for h, w in zip(self.columns, widths))]
        lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in cells]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        return self.to_html()


def bsd68_table(
    results: BSD68Results,
    models: Sequence[str],
    *,
    metric: str = "psnr",
    oracle: bool = True,
    noisy: bool = True,
    spread: bool = False,
    bold_best: bool = True,
    caption: str | None = None,
) -> Table:
    """Mean ``metric`` of ``models`` at every test ``sigma`` (rows), optionally with the noisy
    input and the sigma-matched oracle; ``spread`` adds ``± std`` over the images. The best of
    ``models`` in each row is bold (the oracle and the noisy input do not compete)."""
    digits = ".2f" if metric == "psnr" else ".4f"
    columns = ["σ"] + (["noisy"] if noisy and metric == "psnr" else []) + [results.label(m) for m in models]
    columns += ["oracle"] if oracle else []
    rows, bold = [], set()
    first = 1 + (noisy and metric == "psnr")
    for i, s in enumerate(results.sigmas):
        row: list[Any] = [_fmt_sigma(s)]
        if noisy and metric == "psnr":
            row.append(format(results.noisy_psnr[s], digits))
        means = [results.mean(m, s, metric) if (m, s) in results.per_image else np.nan for m in models]
        for m, v in zip(models, means):
            txt = "-" if np.isnan(v) else format(v, digits)
            if spread and not np.isnan(v):
                txt += f" ± {format(results.std(m, s, metric), '.2f' if metric == 'psnr' else '.3f')}"
            row.append(txt)
        if oracle:
            row.append(format(results.oracle(s, metric), digits))
        if bold_best and not all(np.isnan(means)):
            bold.add((i, first + int(np.nanargmax(means))))
        rows.append(row)
    return Table(columns, rows, bold=bold, caption=caption)


def gap_table(results: BSD68Results, models: Sequence[str], *, metric: str = "psnr",
              caption: str | None = None) -> Table:
    """``model - oracle`` (dB for PSNR) at every test ``sigma``; the oracle's own value in the last column."""
    spec = "+.2f" if metric == "psnr" else "+.4f"
    rows = []
    for s in results.sigmas:
        o = results.oracle(s, metric)
        rows.append([_fmt_sigma(s)] + [results.mean(m, s, metric) - o for m in models] + [o])
    formats = [None] + [spec] * len(models) + [".2f" if metric == "psnr" else ".4f"]
    return Table(["σ"] + [results.label(m) for m in models] + ["oracle"], rows, formats=formats, caption=caption)


def models_table(results: BSD68Results, models: Sequence[str] | None = None) -> Table:
    """One row per model: training noise, steps, training time, Set12 validation PSNR, learned parameter."""
    rows = []
    for m in models or results.names():
        d = results.models[m]
        r = results.train_range(m)
        train = _fmt_sigma(d["sigma"]) if d["sigma"] is not None else f"uniform in [{_fmt_sigma(r[0])}, {_fmt_sigma(r[1])}]"
        learned = (f"λ = {d['learned_lam']:.4f}" if d.get("learned_lam") is not None
                   else f"mean b = {d['learned_threshold_mean']:.4f}")
        rows.append([m, results.label(m), d["role"], train, d["steps"], d.get("train_time_s"),
                     d.get("val_psnr_set12"), learned])
    return Table(["model", "label", "role", "training σ", "steps", "train time (s)", "Set12 PSNR (dB)",
                  "learned"], rows, formats=[None, None, None, None, "d", ".1f", ".2f", None])


def synthetic_table(res: SyntheticResults, *, relative: bool = False, caption: str | None = None) -> Table:
    """MSE per entry (or MSE / sigma**2 with ``relative``) of each model at each ``sigma``; the
    better of ReLU and NeLU in bold."""
    names = ["noisy", "relu", "nelu", "oracle"]
    heads = {"noisy": "noisy (σ²)", "relu": f"ReLU, σ={res.train_sigma:g}", "nelu": f"NeLU, σ={res.train_sigma:g}",
             "oracle": "σ-matched ReLU"}
    rows, bold = [], set()
    for i, s in enumerate(res.sigmas):
        vals = [res.mse[n][i] / (s * s if relative else 1.0) for n in names]
        rows.append([_fmt_sigma(float(s))] + vals)
        bold.add((i, 2 if vals[1] <= vals[2] else 3))
    spec = ".3f" if relative else ".2e"
    return Table(["σ"] + [heads[n] for n in names], rows, formats=[None] + [spec] * 4, bold=bold, caption=caption)


# -------------------------------------------------------------------------------- plots


def _style(results: BSD68Results, model: str) -> dict:
    d = results.models[model]
    s = results.train_sigma(model)
    return {"color": COLORS.get(d["activation"], "black"), "marker": _MARKERS.get(s, "o"),
            "linestyle": "--" if s is None else "-", "label": results.label(model)}


def _mark_training(ax, results: BSD68Results, models: Iterable[str], train_sigma) -> None:
    if train_sigma is None:
        return
    if train_sigma == "auto":
        marks = sorted({s for m in models if (s := results.train_sigma(m)) is not None})
        ranges = sorted({r for m in models if (r := results.train_range(m)) is not None})
    else:
        marks = sorted(float(s) for s in np.atleast_1d(train_sigma))
        ranges = []
    for s in marks:
        ax.axvline(s, color="black", linestyle=":", linewidth=1)
        text = f"training σ={_fmt_sigma(s)}" if len(marks) == 1 else _fmt_sigma(s)
        ax.annotate(text, (s, 0.98), xycoords=("data", "axes fraction"),
                    xytext=(3, 0), textcoords="offset points", va="top", fontsize=8)
    if not marks:  # shade a blind model's training range (only when no level is marked)
        for lo, hi in ranges:
            ax.axvspan(lo, hi, color="gray", alpha=0.08, linewidth=0)


def sigma_axis(ax, sigmas: Sequence[float], *, log: bool = False,
               label: str = "test noise level σ (gray levels, 0-255 scale)"):
    """Put the noise levels ``sigmas`` as the x ticks of ``ax`` (optionally on a log scale). Returns ``ax``."""
    from matplotlib.ticker import NullFormatter

    if log:
        ax.set_xscale("log")
    ax.set_xticks(list(sigmas), [_fmt_sigma(s) for s in sigmas])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.tick_params(axis="x", labelsize=8)
    ax.set_xlabel(label)
    return ax


def psnr_vs_sigma(
    ax,
    results: BSD68Results,
    models: Sequence[str],
    *,
    metric: str = "psnr",
    oracle: bool = True,
    noisy: bool = False,
    train_sigma: float | Sequence[float] | str | None = "auto",
    spread: bool = False,
    legend: bool = True,
):
    """Mean ``metric`` against the test ``sigma`` for ``models`` on ``ax``.

    Args:
        oracle: add the sigma-matched ReLU oracle (green, a ceiling for a ReLU model).
        noisy: add the noisy input (PSNR only).
        train_sigma: ``"auto"`` marks each model's training ``sigma`` with a dotted line
            (and shades a blind model's training range); a number or list marks those; None nothing.
        spread: shade ± one standard deviation over the images around each curve.

    Returns ``ax``.
    """
    x = np.array(results.sigmas)
    if noisy and metric == "psnr":
        ax.plot(x, [results.noisy_psnr[s] for s in results.sigmas], color=COLORS["noisy"], linestyle="--",
                marker=".", label="noisy input")
    if oracle:
        ax.plot(x, results.oracle_curve(metric), color=COLORS["oracle"], marker="*", markersize=8,
                label="σ-matched ReLU (oracle)")
    for m in models:
        y = results.curve(m, metric)
        st = _style(results, m)
        ax.plot(x, y, **st)
        if spread:
            sd = np.array([results.std(m, s, metric) if (m, s) in results.per_image else np.nan for s in results.sigmas])
            ax.fill_between(x, y - sd, y + sd, color=st["color"], alpha=0.12, linewidth=0)
    _mark_training(ax, results, models, train_sigma)
    sigma_axis(ax, results.sigmas)
    ax.set_ylabel(f"mean {_METRIC_NAMES.get(metric, metric)} on BSD68")
    ax.grid(alpha=0.3)
    if legend:
        ax.legend(fontsize=8)
    return ax


def gap_to_oracle(ax, results: BSD68Results, models: Sequence[str], *, metric: str = "psnr",
                  train_sigma: float | Sequence[float] | str | None = "auto", legend: bool = True):
    """``model - oracle`` against the test ``sigma`` (0 is the sigma-matched ReLU). Returns ``ax``."""
    x = np.array(results.sigmas)
    ax.axhline(0.0, color=COLORS["oracle"], linewidth=1.5, label="σ-matched ReLU (oracle)")
    for m in models:
        ax.plot(x, results.gap(m, metric), **_style(results, m))
    _mark_training(ax, results, models, train_sigma)
    unit = " (dB)" if metric == "psnr" else ""
    sigma_axis(ax, results.sigmas)
    ax.set_ylabel(f"{metric.upper()} minus oracle{unit}")
    ax.grid(alpha=0.3)
    if legend:
        ax.legend(fontsize=8)
    return ax


def mse_vs_sigma(ax, res: SyntheticResults, *, relative: bool = False, legend: bool = True):
    """Synthetic experiment: MSE per entry (or MSE / sigma**2) against ``sigma``, log-log. Returns ``ax``."""
    s = res.sigmas
    d = (s * s) if relative else np.ones_like(s)
    ax.plot(s, res.mse["noisy"] / d, color=COLORS["noisy"], linestyle="--", marker=".", label="noisy input (σ²)")
    ax.plot(s, res.mse["oracle"] / d, color=COLORS["oracle"], marker="*", markersize=8, label="σ-matched ReLU")
    ax.plot(s, res.mse["relu"] / d, color=COLORS["relu"], marker="o", label=f"ReLU, trained at σ={res.train_sigma:g}")
    ax.plot(s, res.mse["nelu"] / d, color=COLORS["nelu"], marker="s", label=f"NeLU, trained at σ={res.train_sigma:g}")
    ax.axvline(res.train_sigma, color="black", linestyle=":", linewidth=1)
    ax.annotate(f"training σ={res.train_sigma:g}", (res.train_sigma, 0.02), xycoords=("data", "axes fraction"),
                xytext=(3, 0), textcoords="offset points", va="bottom", fontsize=8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("noise level σ (signal units)")
    ax.set_ylabel("MSE / σ²  (1 = no denoising)" if relative else "MSE per entry")
    ax.grid(alpha=0.3, which="both")
    if legend:
        ax.legend(fontsize=8)
    return ax


def filter_mosaic(W: Tensor | np.ndarray, patch: int = 8, ncols: int = 16, pad: int = 1) -> np.ndarray:
    """Rows of ``W`` (``(m, patch**2)``) as ``patch x patch`` tiles in a grid, each scaled to [-1, 1].

    Each tile is divided by its largest absolute value; the gaps between tiles are NaN.
    Returns an array of shape ``(rows*(patch+pad)-pad, ncols*(patch+pad)-pad)``.

    >>> filter_mosaic(np.eye(4), patch=2, ncols=2).shape
    (5, 5)
    """
    W = W.detach().cpu().numpy() if isinstance(W, Tensor) else np.asarray(W)
    m = W.shape[0]
    if W.shape[1] != patch * patch:
        raise ValueError(f"rows of W must have patch**2 = {patch * patch} entries, got {W.shape[1]}")
    nrows = math.ceil(m / ncols)
    step = patch + pad
    out = np.full((nrows * step - pad, ncols * step - pad), np.nan)
    for i, w in enumerate(W):
        scale = np.abs(w).max()
        r, c = divmod(i, ncols)
        out[r * step:r * step + patch, c * step:c * step + patch] = (w / scale if scale > 0 else w).reshape(patch, patch)
    return out


def show_filters(ax, W: Tensor | np.ndarray, *, patch: int = 8, ncols: int = 16, title: str | None = None):
    """Show the rows of ``W`` as patches (gray: 0, white: positive, black: negative). Returns the image."""
    import matplotlib.pyplot as plt

    cmap = plt.get_cmap("gray").with_extremes(bad="white")
    im = ax.imshow(filter_mosaic(W, patch, ncols), cmap=cmap, vmin=-1, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=10)
    return im


# ------------------------------------------------------------------ measurements on models


@dataclass(frozen=True)
class CodeStats:
    """What the encoder and the activation of an auto-encoder do to noisy patches.

    All arrays are indexed like ``sigmas`` (0-255 scale). With ``u = W (y - mean)``
    and ``z = a(u)`` the code:

    Attributes:
        active: mean fraction of non-zero entries of ``z``.
        threshold: mean threshold applied (NeLU: ``tau = lam ||u - z||``; ReLU: mean of ``b``).
        kappa: ``threshold`` in units of the noise std of a typical code entry,
            ``threshold / (sigma/255 * median_i ||(W C)_i||)`` (``C`` removes the mean).
        residual: root mean square of ``||u - z||`` over the patches.
        noise: root mean square of ``||W C v||``, the noise energy in the code domain.
        clean_residual: the same residual for the clean patches (``sigma = 0``): what the
            code discards of the signal alone.
        clean_negative_share: fraction of ``clean_residual**2`` that comes from entries ``u_i < 0``.
    """

    sigmas: np.ndarray
    active: np.ndarray
    threshold: np.ndarray
    kappa: np.ndarray
    residual: np.ndarray
    noise: np.ndarray
    clean_residual: float
    clean_negative_share: float

    @property
    def ratio(self) -> np.ndarray:
        """``residual / noise``: about constant (and below 1) when the residual is mostly noise."""
        return self.residual / self.noise

    @property
    def crossover(self) -> float:
        """The ``sigma`` at which the noise energy equals ``clean_residual`` (linear in sigma)."""
        return float(self.sigmas[0] * self.clean_residual / self.noise[0])


def _encode(ae, y: Tensor) -> Tensor:
    if getattr(ae, "remove_dc", False):
        y = y - y.mean(-1, keepdim=True)
    return ae.encoder(y)


def _threshold(act, u: Tensor) -> Tensor:
    """The threshold an activation applies to each row of ``u`` (NeLU) or each unit (ReLU)."""
    if hasattr(act, "lam"):
        return F.sqrt_lasso_threshold(u, act.lam, nonneg=act.nonneg)
    return act.threshold.expand_as(u)


@torch.no_grad()
def code_statistics(ae, clean: Tensor, sigmas: Sequence[float], *, seed: int = 0) -> CodeStats:
    """Measure an auto-encoder's code on clean patches plus Gaussian noise at each ``sigma``.

    Args:
        ae: a :class:`~nelu.models.SparseAE` (``encoder``, ``activation``, ``remove_dc``),
            e.g. ``load_denoiser(path).ae``.
        clean: clean patches ``(N, n)`` with values in [0, 1].
        sigmas: noise levels, 0-255 scale (> 0).
        seed: of the unit noise, reused at every ``sigma``.
    """
    sig = np.asarray(sigmas, float)
    if (sig <= 0).any():
        raise ValueError("sigmas must be > 0")
    ae = ae.eval()
    n = clean.shape[-1]
    W = ae.encoder.weight
    clean = clean.to(W.dtype)
    C = torch.eye(n, dtype=W.dtype) - (1.0 / n if getattr(ae, "remove_dc", False) else 0.0)
    row_norm = float((W @ C).norm(dim=1).median())
    unit = torch.randn(clean.shape, generator=torch.Generator().manual_seed(seed), dtype=clean.dtype)
    ux = _encode(ae, clean)
    zx = ae.activation(ux)
    rx = (ux - zx).pow(2).sum(-1)
    neg = ux.clamp(max=0).pow(2).sum(-1)
    out = {k: [] for k in ("active", "threshold", "residual", "noise")}
    for s in sig:
        v = (s / 255.0) * unit
        u = _encode(ae, clean + v)
        z = ae.activation(u)
        out["active"].append(float((z > 0).double().mean()))
        out["threshold"].append(float(_threshold(ae.activation, u).double().mean()))
        out["residual"].append(float((u - z).pow(2).sum(-1).double().mean().sqrt()))
        out["noise"].append(float((v @ C.T @ W.T).pow(2).sum(-1).double().mean().sqrt()))
    arr = {k: np.array(v) for k, v in out.items()}
    return CodeStats(
        sigmas=sig,
        kappa=arr["threshold"] / (sig / 255.0 * row_norm),
        clean_residual=float(rx.double().mean().sqrt()),
        clean_negative_share=float(neg.double().sum() / rx.double().sum()),
        **arr,
    )


@dataclass(frozen=True)
class UnitStats:
    """Unit by unit: what each code entry of an auto-encoder sees and does at one noise level.

    Attributes (arrays of length ``m``):
        encoder_norm: ``||(W C)_i||``, the gain of unit ``i`` (``C`` removes the patch mean).
        decoder_norm: ``||D[:, i]||``, how much unit ``i`` contributes to the output.
        snr: ``E[(W C x)_i^2] / E[(W C v)_i^2]``: the unit's signal energy over its noise energy.
        active: fraction of the patches on which unit ``i`` is non-zero.
        residual_share: unit ``i``'s share of ``E ||u - z||^2`` (sums to 1).
    """

    encoder_norm: np.ndarray
    decoder_norm: np.ndarray
    snr: np.ndarray
    active: np.ndarray
    residual_share: np.ndarray


@torch.no_grad()
def unit_statistics(ae, clean: Tensor, sigma: float, *, seed: int = 0) -> UnitStats:
    """Per-unit statistics of an auto-encoder on clean patches ``(N, n)`` plus noise of level
    ``sigma`` (0-255 scale, > 0); see :class:`UnitStats`."""
    if not sigma > 0:
        raise ValueError("sigma must be > 0")
    ae = ae.eval()
    W, D = ae.encoder.weight, ae.decoder.weight
    clean = clean.to(W.dtype)
    n = clean.shape[-1]
    C = torch.eye(n, dtype=W.dtype) - (1.0 / n if getattr(ae, "remove_dc", False) else 0.0)
    WC = W @ C
    v = (sigma / 255.0) * torch.randn(clean.shape, generator=torch.Generator().manual_seed(seed), dtype=clean.dtype)
    u = _encode(ae, clean + v)
    z = ae.activation(u)
    r2 = (u - z).double().pow(2).sum(0)
    signal = _encode(ae, clean).double().pow(2).mean(0)
    noise = WC.double().pow(2).sum(1) * (sigma / 255.0) ** 2
    return UnitStats(
        encoder_norm=WC.norm(dim=1).double().numpy(),
        decoder_norm=D.norm(dim=0).double().numpy(),
        snr=(signal / noise).numpy(),
        active=(z > 0).double().mean(0).numpy(),
        residual_share=(r2 / r2.sum()).numpy(),
    )


@torch.no_grad()
def best_lam(ae, clean: Tensor, sigmas: Sequence[float], lams: Sequence[float] | Tensor, *,
             seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """For a NeLU auto-encoder with its transform fixed: the ``lam`` of ``lams`` with the
    smallest mean squared patch error at each ``sigma`` (0-255 scale).

    The encoder, decoder and DC handling are the model's; only ``lam`` changes.
    Returns ``(best lam per sigma, mse of shape (len(sigmas), len(lams)))``.
    """
    act = ae.activation
    if not hasattr(act, "lam"):
        raise ValueError("best_lam needs a NeLU auto-encoder")
    clean = clean.to(ae.encoder.weight.dtype)
    grid = np.asarray(lams.tolist() if isinstance(lams, Tensor) else lams, float)
    unit = torch.randn(clean.shape, generator=torch.Generator().manual_seed(seed), dtype=clean.dtype)
    mse = np.zeros((len(sigmas), len(grid)))
    for i, s in enumerate(sigmas):
        y = clean + (float(s) / 255.0) * unit
        dc = y.mean(-1, keepdim=True) if getattr(ae, "remove_dc", False) else torch.zeros_like(y[..., :1])
        u = ae.encoder(y - dc)
        for j, lam in enumerate(grid):
            est = ae.decoder(F.nelu(u, float(lam), nonneg=act.nonneg)) + dc
            mse[i, j] = float((est - clean).pow(2).mean())
    return grid[mse.argmin(axis=1)], mse
