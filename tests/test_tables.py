"""Tests of nelu.tables: the Table class (HTML, Markdown, text) and every table builder."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_results import RESULTS, committed, write_tiny

from nelu import results as rs
from nelu import tables as tb


@pytest.fixture
def tiny(tmp_path) -> Path:
    return write_tiny(tmp_path)


def test_table_formats_and_renders():
    t = tb.Table(["σ", "PSNR", "note"], [[25, 28.123, "<b>"], [50, float("nan"), None]],
                 formats=[None, ".2f", None], bold={(0, 1)}, caption="A & B")
    assert t.text(0, 1) == "28.12" and t.text(1, 1) == "-" and t.text(1, 2) == "-"
    html = t._repr_html_()
    assert html.startswith('<div style="overflow-x:auto">') and html.endswith("</div>")   # wide tables scroll
    assert html.count("<table") == 1 and html.count("<tr>") == 3 and "<b>28.12</b>" in html
    assert "&lt;b&gt;" in html and "A &amp; B" in html                                     # escaped
    assert t.to_markdown().splitlines()[-2] == "| 25 | **28.12** | <b> |"
    assert str(t).splitlines()[0] == "A & B" and "28.12" in repr(t)


def test_bsd68_tables_tiny(tiny):
    r = rs.load_bsd68(tiny)
    t = tb.bsd68_table(r, ["relu_sigma20", "nelu_sigma20"])
    assert t.columns == ["σ", "noisy", "ReLU, σ=20", "NeLU, σ=20", "oracle"]
    assert t.rows[0] == ["10", "28.00", "31.00", "31.17", "33.00"]
    assert t.bold == {(0, 3), (1, 2)}                      # NeLU best at 10, ReLU at 20
    md = t.to_markdown()
    assert "| 10 | 28.00 | 31.00 | **31.17** | 33.00 |" in md
    html = t._repr_html_()
    assert html.count("<tr>") == 3 and "<b>31.17</b>" in html and "<table" in html
    assert "31.17" in str(t)
    s = tb.bsd68_table(r, ["nelu_sigma20"], metric="ssim", spread=True, oracle=False)
    assert s.columns == ["σ", "NeLU, σ=20"] and s.rows[0] == ["10", "0.8500 ± 0.000"]
    g = tb.gap_table(r, ["nelu_sigma20"])
    assert g.text(1, 1) == "-1.00" and g.text(0, 2) == "33.00"
    m = tb.models_table(r)
    assert len(m.rows) == 4 and m.text(0, 7) == "mean b = 0.1000" and m.text(2, 3) == "uniform in [0, 30]"


def test_synthetic_table_tiny(tiny):
    s = rs.load_synthetic(tiny)
    t = tb.synthetic_table(s)
    assert t.bold == {(0, 2), (1, 3)}                      # ReLU better at 0.1, NeLU at 0.2
    assert tb.synthetic_table(s, relative=True).text(1, 3) == "0.250"


@committed
def test_noise_table_committed():
    n = rs.load_noise(RESULTS)
    t = tb.noise_table(n, "nelu_sigma25")
    assert t.columns == ["σ", *n.kinds] and t.caption == "nelu_sigma25" and len(t.rows) == len(n.sigmas)
    assert t.text(4, 2) == f"{n.reported('nelu_sigma25', 'laplace', 75):.2f}"


@committed
def test_bm3d_check_table_committed():
    b = rs.load_baselines(RESULTS)
    t = tb.bm3d_check_table(b)
    assert t.columns == ["σ", "images", "this book", "published", "difference"]
    assert [t.text(i, 0) for i in range(3)] == ["15", "25", "50"] and t.text(1, 3) == "28.57"
    assert t.text(0, 4).startswith("+") and t.text(0, 1) == "68"


def test_universal_table_tiny(tiny):
    from test_plots import write_tiny_universal

    uni, bsd = rs.load_universal(write_tiny_universal(tiny)), rs.load_bsd68(tiny)
    t = tb.universal_table(uni, bsd68=bsd, also=["nelu_sigma20"])
    assert t.columns == ["σ", "noisy", "oracle", "NeLU, blind (recommended)", "gap to oracle",
                         "ReLU, blind, same recipe", "NeLU − ReLU", "NeLU, σ=20"]
    assert [t.text(0, j) for j in range(8)] == ["10", "28.00", "33.00", "31.00", "-2.00", "30.00", "+1.00", "31.17"]
    assert t.text(1, 6) == "+0.50"
    with pytest.raises(ValueError, match="bsd68"):
        tb.universal_table(uni, also=["nelu_sigma20"])


@committed
def test_universal_table_committed():
    uni, base = rs.load_universal(RESULTS), rs.load_baselines(RESULTS)
    t = tb.universal_table(uni, baselines=base)
    assert [float(r[0]) for r in t.rows] == uni.meta["test_sigmas"] and t.columns[-1] == "BM3D (told σ)"
    bm3d = {float(r[0]): r[-1] for r in t.rows if r[-1] == r[-1]}   # NaN where BM3D was not run
    assert bm3d == base.check_curve()
    assert all(r[4] == pytest.approx(r[3] - r[2]) and r[6] == pytest.approx(r[3] - r[5]) for r in t.rows)
