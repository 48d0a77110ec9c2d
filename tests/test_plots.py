"""Tests of nelu.plots: the curves and images it draws (Agg backend, fast)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from test_results import write_tiny  # noqa: E402

from nelu import plots as pl  # noqa: E402
from nelu import results as rs  # noqa: E402


@pytest.fixture
def tiny(tmp_path) -> Path:
    return write_tiny(tmp_path)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_plots_tiny(tiny):
    r = rs.load_bsd68(tiny)
    fig, (a, b) = plt.subplots(1, 2)
    pl.psnr_vs_sigma(a, r, ["relu_sigma20", "nelu_sigma20", "nelu_blind0-30"], noisy=True, spread=True)
    labels = [line.get_label() for line in a.get_lines()]
    assert labels[:5] == ["noisy input", "σ-matched ReLU (oracle)", "ReLU, σ=20", "NeLU, σ=20", "NeLU, blind 0-30"]
    vertical = [line for line in a.get_lines() if np.allclose(line.get_xdata(), 20.0)]
    assert len(vertical) == 1                              # the training sigma, marked once
    assert "PSNR" in a.get_ylabel() and "σ" in a.get_xlabel()
    assert [tick.get_text() for tick in a.get_xticklabels()] == ["10", "20"]
    assert not a.patches                                   # no blind range shaded when a level is marked
    fig, c = plt.subplots()
    pl.psnr_vs_sigma(c, r, ["nelu_blind0-30"], oracle=False)
    assert len(c.patches) == 1 and not c.get_lines()[1:]   # the blind range, shaded; one curve
    pl.sigma_axis(c, [5.0, 50.0], log=True)
    assert c.get_xscale() == "log" and [tick.get_text() for tick in c.get_xticklabels()] == ["5", "50"]
    pl.gap_to_oracle(b, r, ["nelu_sigma20"], train_sigma=None)
    np.testing.assert_allclose(b.get_lines()[1].get_ydata(), r.gap("nelu_sigma20"))
    assert b.get_lines()[1].get_color() == pl.COLORS["nelu"]
    s = rs.load_synthetic(tiny)
    fig, ax = plt.subplots()
    pl.mse_vs_sigma(ax, s, relative=True)
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    np.testing.assert_allclose(ax.get_lines()[0].get_ydata(), [1.0, 1.0])


def test_filter_mosaic():
    W = torch.zeros(5, 4)
    W[:, 0] = torch.arange(1.0, 6.0)
    W[2, 3] = -10.0
    mos = pl.filter_mosaic(W, patch=2, ncols=3, pad=1)
    assert mos.shape == (5, 8)
    assert np.isnan(mos[2]).all() and np.isnan(mos[:, 2]).all()   # the gaps
    assert mos[0, 0] == 1.0 and mos[0, 3] == 1.0                   # each tile scaled by its max
    assert mos[1, 7] == -1.0 and mos[0, 6] == pytest.approx(0.3)  # tile 2: (3, 0, 0, -10) / 10
    with pytest.raises(ValueError, match="patch"):
        pl.filter_mosaic(W, patch=3)
    fig, ax = plt.subplots()
    pl.show_filters(ax, W, patch=2, ncols=3, title="W")
    assert ax.get_title() == "W"


def write_tiny_universal(folder: Path) -> Path:
    """A tiny ``universal.json`` beside the tiny BSD68 results: two levels, the recommended NeLU,
    ReLU with the same recipe and the oracles."""
    import json

    rows = [("universal_nelu", 10.0, 31.0), ("universal_nelu", 20.0, 27.0), ("universal_relu", 10.0, 30.0),
            ("universal_relu", 20.0, 26.5), ("oracle_sigma10", 10.0, 33.0), ("oracle_sigma20", 20.0, 28.0)]
    noisy = {10.0: 28.0, 20.0: 22.0}
    models = {"universal_nelu": {"role": "recommended"}, "universal_relu": {"role": "same-recipe"}}
    summary = [{"model": m, "test_sigma": s, "n_images": 3, "noisy_psnr_mean": noisy[s], "psnr_mean": p}
               for m, s, p in rows]
    (folder / "universal.json").write_text(json.dumps({"meta": {}, "models": models, "summary": summary}))
    return folder


def test_universal_vs_sigma_tiny(tiny):
    uni, bsd = rs.load_universal(write_tiny_universal(tiny)), rs.load_bsd68(tiny)
    _, (a, b) = plt.subplots(1, 2)
    pl.universal_vs_sigma(a, uni, bsd68=bsd, also=["nelu_sigma20"], noisy=True)
    lines = {line.get_label(): line for line in a.get_lines()}
    assert list(lines) == ["noisy input", "σ-matched ReLU (oracle)", "NeLU, σ=20", "ReLU, blind, same recipe",
                           "NeLU, blind (recommended)"]
    np.testing.assert_allclose(lines["noisy input"].get_ydata(), [28.0, 22.0])
    np.testing.assert_allclose(lines["σ-matched ReLU (oracle)"].get_ydata(), [33.0, 28.0])
    np.testing.assert_allclose(lines["NeLU, σ=20"].get_ydata(), [93.5 / 3, 27.0])
    assert lines["NeLU, blind (recommended)"].get_color() == pl.COLORS["nelu"]
    pl.universal_vs_sigma(b, uni, gap=True, target=2.0)
    gaps = {line.get_label(): line.get_ydata() for line in b.get_lines()}
    np.testing.assert_allclose(gaps["NeLU, blind (recommended)"], [-2.0, -1.0])   # 31 - 33, 27 - 28
    np.testing.assert_allclose(gaps["ReLU, blind, same recipe"], [-3.0, -1.5])
    np.testing.assert_allclose(gaps["2 dB below the oracle"], [-2.0, -2.0])
    assert b.get_ylabel() == "PSNR minus oracle (dB)" and [t.get_text() for t in b.get_xticklabels()] == ["10", "20"]
    with pytest.raises(ValueError, match="bsd68"):
        pl.universal_vs_sigma(b, uni, also=["nelu_sigma20"])


def test_book_style_is_readable_and_sharp():
    """The book's figures: at least 150 dpi, legends and labels at 10 pt or more."""
    import matplotlib as mpl

    with mpl.rc_context():
        pl.book_style()
        assert mpl.rcParams["figure.dpi"] >= 150
        assert mpl.rcParams["legend.fontsize"] >= 10 and mpl.rcParams["axes.labelsize"] >= 10
        fig, ax = plt.subplots(figsize=(6.5, 4))
        assert fig.get_size_inches()[0] * fig.dpi >= 975      # sharp when the page scales it down


@pytest.mark.parametrize("activation", ["nelu", "relu"])
def test_autoencoder_diagram(activation):
    """Six boxes, left to right, joined by five arrows, with the activation in the fourth."""
    fig, ax = plt.subplots(figsize=(12, 2.4))
    pl.autoencoder_diagram(ax, activation)
    boxes = sorted(ax.patches, key=lambda p: p.get_x())
    assert len(boxes) == 6 and all(a.get_x() + a.get_width() < b.get_x() for a, b in zip(boxes, boxes[1:]))
    arrows = [t for t in ax.texts if getattr(t, "arrow_patch", None) is not None]
    assert len(arrows) == 5
    titles = [t.get_text() for t in ax.texts if t.get_fontweight() == "bold"]
    assert titles[0] == "noisy patch" and titles[3] == {"nelu": "NeLU", "relu": "ReLU"}[activation]
    assert titles[-1] == "average" and not ax.axison
    with pytest.raises(ValueError, match="activation"):
        pl.autoencoder_diagram(ax, "gelu")
