"""Tables of results: one :class:`Table` class and the builders the chapters call.

A :class:`Table` shows itself as an HTML table in a notebook (wrapped in a horizontally
scrollable ``div``, so a wide table never overflows the page), as Markdown
(:meth:`Table.to_markdown`) or as plain text (``str``). The builders turn the dataclasses
of :mod:`nelu.results` into tables; nothing in a table is typed by hand.

* BSD68 (:class:`~nelu.results.BSD68Results`): :func:`bsd68_table` (mean PSNR or SSIM per
  model and test sigma), :func:`gap_table` (distance to the sigma-matched oracle),
  :func:`models_table` (how each model was trained).
* Synthetic (:class:`~nelu.results.SyntheticResults`): :func:`synthetic_table`.
* Noise models (:class:`~nelu.results.NoiseResults`): :func:`noise_table`.
* Baselines (:class:`~nelu.results.BaselinesResults`): :func:`bm3d_check_table`.

Example::

    from nelu.results import load_bsd68
    from nelu.tables import bsd68_table
    bsd68_table(load_bsd68(), ["relu_sigma25", "nelu_sigma25"])   # an HTML table in a notebook
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .results import BaselinesResults, BSD68Results, NoiseResults, SyntheticResults, fmt_sigma

__all__ = ["Table", "bsd68_table", "gap_table", "models_table", "synthetic_table", "noise_table",
           "bm3d_check_table"]


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
    >>> t.to_html().startswith('<div style="overflow-x:auto">')
    True
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
        """An HTML table (no colours: readable in light and dark themes), in a ``div`` that scrolls
        horizontally when the table is wider than the page."""
        cells = self._cells()
        out = ['<div style="overflow-x:auto">',
               '<table class="nelu-table" style="text-align:right; border-collapse:collapse">']
        if self.caption:
            out.append(f'<caption style="caption-side:top; text-align:left">{html.escape(self.caption)}</caption>')
        out.append("<thead><tr>" + "".join(f'<th style="padding:2px 8px; white-space:nowrap">{html.escape(c)}</th>'
                                           for c in self.columns) + "</tr></thead><tbody>")
        for i, row in enumerate(cells):
            tds = []
            for j, c in enumerate(row):
                c = html.escape(c)
                tds.append(f'<td style="padding:2px 8px; white-space:nowrap">'
                           f'{f"<b>{c}</b>" if (i, j) in self.bold else c}</td>')
            out.append("<tr>" + "".join(tds) + "</tr>")
        out.append("</tbody></table>")
        out.append("</div>")
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


# ------------------------------------------------------------------------------ BSD68


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
        row: list[Any] = [fmt_sigma(s)]
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
        rows.append([fmt_sigma(s)] + [results.mean(m, s, metric) - o for m in models] + [o])
    formats = [None] + [spec] * len(models) + [".2f" if metric == "psnr" else ".4f"]
    return Table(["σ"] + [results.label(m) for m in models] + ["oracle"], rows, formats=formats, caption=caption)


def models_table(results: BSD68Results, models: Sequence[str] | None = None) -> Table:
    """One row per model: training noise, steps, training time, Set12 validation PSNR, learned parameter."""
    rows = []
    for m in models or results.names():
        d = results.models[m]
        r = results.train_range(m)
        train = fmt_sigma(d["sigma"]) if d["sigma"] is not None else f"uniform in [{fmt_sigma(r[0])}, {fmt_sigma(r[1])}]"
        learned = (f"λ = {d['learned_lam']:.4f}" if d.get("learned_lam") is not None
                   else f"mean b = {d['learned_threshold_mean']:.4f}")
        rows.append([m, results.label(m), d["role"], train, d["steps"], d.get("train_time_s"),
                     d.get("val_psnr_set12"), learned])
    return Table(["model", "label", "role", "training σ", "steps", "train time (s)", "Set12 PSNR (dB)",
                  "learned"], rows, formats=[None, None, None, None, "d", ".1f", ".2f", None])


# -------------------------------------------------------------------------- synthetic


def synthetic_table(res: SyntheticResults, *, relative: bool = False, caption: str | None = None) -> Table:
    """MSE per entry (or MSE / sigma**2 with ``relative``) of each model at each ``sigma``; the
    better of ReLU and NeLU in bold."""
    names = ["noisy", "relu", "nelu", "oracle"]
    heads = {"noisy": "noisy (σ²)", "relu": f"ReLU, σ={res.train_sigma:g}", "nelu": f"NeLU, σ={res.train_sigma:g}",
             "oracle": "σ-matched ReLU"}
    rows, bold = [], set()
    for i, s in enumerate(res.sigmas):
        vals = [res.mse[n][i] / (s * s if relative else 1.0) for n in names]
        rows.append([fmt_sigma(float(s))] + vals)
        bold.add((i, 2 if vals[1] <= vals[2] else 3))
    spec = ".3f" if relative else ".2e"
    return Table(["σ"] + [heads[n] for n in names], rows, formats=[None] + [spec] * 4, bold=bold, caption=caption)


# ----------------------------------------------------------------------- noise models


def noise_table(res: NoiseResults, model: str, *, key: str = "psnr_mean", caption: str | None = None) -> Table:
    """``key`` (the mean PSNR, as written) of ``model`` at every test sigma (rows) under every
    noise model (columns)."""
    rows = [[fmt_sigma(s)] + [res.reported(model, k, s, key) for k in res.kinds] for s in res.sigmas]
    return Table(["σ"] + list(res.kinds), rows, formats=[None] + [".2f"] * len(res.kinds),
                 caption=model if caption is None else caption)


# -------------------------------------------------------------------------- baselines


def bm3d_check_table(res: BaselinesResults, *, caption: str | None = None) -> Table:
    """BM3D told the true sigma against its published mean PSNR on BSD68 (dB), one row per level."""
    rows = [[fmt_sigma(c.sigma), c.n_images, c.psnr_mean, c.published, c.difference] for c in res.check]
    return Table(["σ", "images", "this book", "published", "difference"], rows,
                 formats=[None, "d", ".2f", ".2f", "+.2f"], caption=caption)


# --------------------------------------------------------------------- the one-model study

from .results import UniversalResults  # here, so that this section is appended whole

__all__ += ["universal_table"]


def universal_table(uni: UniversalResults, *, bsd68: BSD68Results | None = None, also: Sequence[str] = (),
                    baselines: BaselinesResults | None = None, caption: str | None = None) -> Table:
    """The one-model study at every test ``sigma`` (rows): mean PSNR (dB) of the noisy input, the
    sigma-matched oracle (the ceiling of :meth:`~nelu.results.UniversalResults.oracle`), the recommended blind NeLU and its gap to the oracle, ReLU trained with
    the same recipe and NeLU's margin over it; then the BSD68 models named in ``also`` (from
    ``bsd68``) and BM3D told the true sigma (from ``baselines``, where it was run: ``-`` elsewhere).

    Example::

        universal_table(load_universal(), bsd68=load_bsd68(), also=["nelu_sigma25"], baselines=load_baselines())
    """
    if also and bsd68 is None:
        raise ValueError("pass bsd68= to add the BSD68 models in also=")
    rec, same = uni.names(role="recommended")[0], uni.names(role="same-recipe")[0]
    bm3d = baselines.check_curve() if baselines is not None else {}
    rows = []
    for s in uni.sigmas(rec):
        r, o, q = uni.reported(rec, s), uni.oracle(s), uni.reported(same, s)
        row = [fmt_sigma(s), uni.reported(rec, s, "noisy_psnr_mean"), o, r, r - o, q, r - q]
        row += [bsd68.mean(m, s) if (m, s) in bsd68.per_image else np.nan for m in also]
        rows.append(row + ([bm3d.get(s, np.nan)] if baselines is not None else []))
    columns = ["σ", "noisy", "oracle", "NeLU, blind (recommended)", "gap to oracle", "ReLU, blind, same recipe",
               "NeLU − ReLU"] + [bsd68.label(m) for m in also] + (["BM3D (told σ)"] if baselines is not None else [])
    formats = [None, ".2f", ".2f", ".2f", "+.2f", ".2f", "+.2f"] + [".2f"] * (len(columns) - 7)
    return Table(columns, rows, formats=formats, caption=caption)
