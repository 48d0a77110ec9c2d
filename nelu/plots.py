"""Plots of results on a given matplotlib ``Axes`` (one colour per kind of model, everywhere).

* BSD68 (:class:`~nelu.results.BSD68Results`): :func:`psnr_vs_sigma` (mean PSNR or SSIM
  against the test sigma, the training noise level marked) and :func:`gap_to_oracle`
  (distance to the sigma-matched ReLU).
* Synthetic (:class:`~nelu.results.SyntheticResults`): :func:`mse_vs_sigma` (log scales).
* Weights: :func:`filter_mosaic` and :func:`show_filters` (rows of ``W`` as image patches).
* Axes: :func:`sigma_axis` (the noise levels as x ticks).
* The book's look: :data:`BOOK_STYLE` and :func:`book_style` (readable type, high resolution),
  and :func:`autoencoder_diagram` (the patch auto-encoder, drawn as boxes and arrows).

Each function draws on the ``ax`` it is given and returns it; none calls ``plt.show()``.
matplotlib is imported only by the functions that need it.

Example::

    import matplotlib.pyplot as plt
    from nelu.results import load_bsd68
    from nelu.plots import psnr_vs_sigma
    fig, ax = plt.subplots()
    psnr_vs_sigma(ax, load_bsd68(), ["relu_sigma25", "nelu_sigma25"])
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
from torch import Tensor

from .results import BSD68Results, SyntheticResults, fmt_sigma

__all__ = ["COLORS", "MARKERS", "BOOK_STYLE", "book_style", "autoencoder_diagram", "psnr_vs_sigma", "gap_to_oracle",
           "mse_vs_sigma", "sigma_axis", "filter_mosaic", "show_filters"]

#: Colours used for the same thing in every figure.
COLORS = {"relu": "tab:red", "nelu": "tab:blue", "oracle": "tab:green", "noisy": "gray"}
#: Marker of a model by its training noise level (None: blind).
MARKERS = {15.0: "v", 25.0: "o", 50.0: "^", None: "D"}
_METRIC_NAMES = {"psnr": "PSNR (dB)", "ssim": "SSIM"}

#: matplotlib settings of the book's figures: drawn at 150 dpi (a figure 6.5 inches wide is
#: 975 pixels, sharp when the page scales it down), with type and legends large enough to
#: read at that scale, on white (readable in the dark theme too).
BOOK_STYLE = {
    "figure.dpi": 150,
    "savefig.dpi": 150,
    "figure.facecolor": "white",
    "font.size": 11,
    "axes.titlesize": 12,
    "axes.labelsize": 11,
    "xtick.labelsize": 10,
    "ytick.labelsize": 10,
    "legend.fontsize": 10,
    "legend.framealpha": 0.9,
}


def book_style() -> None:
    """Apply :data:`BOOK_STYLE` to matplotlib (every chapter calls it after its imports).

    >>> import matplotlib
    >>> book_style()
    >>> matplotlib.rcParams["figure.dpi"], matplotlib.rcParams["legend.fontsize"]
    (150.0, 10.0)
    """
    import matplotlib

    matplotlib.rcParams.update(BOOK_STYLE)


#: The boxes of :func:`autoencoder_diagram`: (title, what it does, shape of what comes out).
_AE_STAGES = [
    ("noisy patch", "$y$: an $8 \\times 8$\npatch, as a vector", "$n = 64$"),
    ("remove mean", "$y - \\bar y\\,\\mathbf{1}$", "$n = 64$"),
    ("encoder $W$", "$u = W (y - \\bar y\\,\\mathbf{1})$", "$m = 256$"),
    ("{act}", "{act_formula}", "$m = 256$, sparse"),
    ("decoder $D$", "$\\hat x = D z + \\bar y\\,\\mathbf{1}$", "$n = 64$"),
    ("average", "overlapping\npatches into\nthe image", "image"),
]
_ACTIVATIONS = {
    "nelu": ("NeLU", "$z = \\mathrm{ReLU}(u - \\tau)$\n$\\tau = \\lambda \\|u - z\\|_2$"),
    "relu": ("ReLU", "$z = \\mathrm{ReLU}(u - b)$\n$b$ learned"),
}


def autoencoder_diagram(ax, activation: str = "nelu"):
    """Draw the patch auto-encoder on ``ax``: patch, remove the mean, ``W``, activation, ``D``, average.

    One box per stage, left to right, with what the stage computes and the size of what it
    passes on. ``activation`` is ``"nelu"`` (the threshold set by the residual) or ``"relu"``
    (a learned bias). Returns ``ax``; its frame and ticks are turned off.

    >>> import matplotlib.pyplot as plt
    >>> fig, ax = plt.subplots(figsize=(12, 2.4))
    >>> len(autoencoder_diagram(ax).patches)
    6
    >>> plt.close(fig)
    """
    from matplotlib.colors import to_rgba
    from matplotlib.patches import FancyBboxPatch

    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
    act, act_formula = _ACTIVATIONS[activation]
    learned = {"encoder $W$", "decoder $D$", act}
    width, gap = 1.3, 0.4
    for i, (title, body, size) in enumerate(_AE_STAGES):
        title = title.replace("{act}", act)
        body = body.replace("{act_formula}", act_formula)
        x = i * (width + gap)
        highlight = title == act
        color = COLORS[activation] if highlight else ("0.35" if title in learned else "0.6")
        ax.add_patch(FancyBboxPatch((x, 0.0), width, 1.0, boxstyle="round,pad=0.02,rounding_size=0.06",
                                    facecolor=to_rgba(color, 0.12) if highlight else "white",
                                    edgecolor=color, linewidth=2 if title in learned else 1))
        ax.text(x + width / 2, 0.82, title, ha="center", va="center", fontsize=10, fontweight="bold")
        ax.text(x + width / 2, 0.45, body, ha="center", va="center", fontsize=9, linespacing=1.5)
        ax.text(x + width / 2, -0.12, size, ha="center", va="top", fontsize=8, color="0.35")
        if i:
            ax.annotate("", xy=(x - 0.02, 0.5), xytext=(x - gap + 0.02, 0.5),
                        arrowprops=dict(arrowstyle="-|>", color="0.2", linewidth=1.2))
    ax.set_xlim(-0.1, len(_AE_STAGES) * (width + gap) - gap + 0.1)
    ax.set_ylim(-0.35, 1.1)
    ax.set_axis_off()
    return ax


def _style(results: BSD68Results, model: str) -> dict:
    d = results.models[model]
    s = results.train_sigma(model)
    return {"color": COLORS.get(d["activation"], "black"), "marker": MARKERS.get(s, "o"),
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
        text = f"training σ={fmt_sigma(s)}" if len(marks) == 1 else fmt_sigma(s)
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
    ax.set_xticks(list(sigmas), [fmt_sigma(s) for s in sigmas])
    ax.xaxis.set_minor_formatter(NullFormatter())
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
        ax.legend()
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
        ax.legend()
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
        ax.legend()
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
        ax.set_title(title)
    return im


# --------------------------------------------------------------------- the one-model study

from .results import UniversalResults  # here, so that this section is appended whole

__all__ += ["universal_vs_sigma"]


def universal_vs_sigma(ax, uni: UniversalResults, *, gap: bool = False, bsd68: BSD68Results | None = None,
                       also: Sequence[str] = (), noisy: bool = False, target: float | None = None,
                       legend: bool = True):
    """The one-model study (:class:`~nelu.results.UniversalResults`) against the test ``sigma``.

    Draws the recommended blind NeLU, ReLU trained with the same recipe and the sigma-matched
    oracle (the ceiling of :meth:`~nelu.results.UniversalResults.oracle`; mean PSNR on all the test images), or with ``gap`` their distance to the oracle.

    Args:
        gap: plot ``model - oracle`` (dB; the oracle is the line at 0).
        bsd68: the BSD68 results, needed for ``also``.
        also: BSD68 models to add (e.g. ``"nelu_sigma25"``), dotted, at the levels of the
            study's grid where they were evaluated.
        noisy: add the noisy input (not with ``gap``).
        target: with ``gap``, a dashed line ``target`` dB below the oracle (e.g. 2.0).

    Returns ``ax``.

    Example::

        fig, ax = plt.subplots()
        universal_vs_sigma(ax, load_universal(), gap=True, bsd68=load_bsd68(), also=["nelu_sigma25"])
    """
    if also and bsd68 is None:
        raise ValueError("pass bsd68= to draw the BSD68 models in also=")
    rec, same = uni.names(role="recommended")[0], uni.names(role="same-recipe")[0]
    grid = uni.sigmas(rec)
    x = np.array(grid)
    oracle = np.array([uni.oracle(s) for s in grid])
    base = oracle if gap else np.zeros_like(oracle)
    if gap:
        ax.axhline(0.0, color=COLORS["oracle"], linewidth=1.5, label="σ-matched ReLU (oracle)")
        if target is not None:
            ax.axhline(-target, color="gray", linestyle="--", linewidth=1, label=f"{target:g} dB below the oracle")
    else:
        if noisy:
            ax.plot(x, [uni.reported(rec, s, "noisy_psnr_mean") for s in grid], color=COLORS["noisy"],
                    linestyle="--", marker=".", label="noisy input")
        ax.plot(x, oracle, color=COLORS["oracle"], marker="*", markersize=8, label="σ-matched ReLU (oracle)")
    for name in also:
        y = np.array([bsd68.mean(name, s) if (name, s) in bsd68.per_image else np.nan for s in grid])
        ax.plot(x, y - base, **{**_style(bsd68, name), "linestyle": ":", "alpha": 0.7})
    ax.plot(x, np.array([uni.reported(same, s) for s in grid]) - base, color=COLORS["relu"], marker="o",
            linestyle="--", label="ReLU, blind, same recipe")
    ax.plot(x, np.array([uni.reported(rec, s) for s in grid]) - base, color=COLORS["nelu"], marker="s",
            linewidth=2, label="NeLU, blind (recommended)")
    sigma_axis(ax, grid)
    ax.set_ylabel("PSNR minus oracle (dB)" if gap else "mean PSNR (dB)")
    ax.grid(alpha=0.3)
    if legend:
        ax.legend()
    return ax
