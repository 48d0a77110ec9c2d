"""Tests of nelu.figures: loading, tables, plots and measurements (Agg backend, fast).

Two kinds of input: the committed results of the full profile (``results/``; those tests
are skipped when the folder is absent) and tiny hand-made results written to a
temporary folder, whose every number is known.
"""

from __future__ import annotations

import doctest
import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from nelu import figures as fg  # noqa: E402
from nelu.models import SparseAE, load_denoiser  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"
committed = pytest.mark.skipif(not (RESULTS / "bsd68.json").is_file(), reason="no committed results/")


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


# ----------------------------------------------------------------------- tiny results


def _model(name, act, sigma, role, sigma_range=None):
    return {"name": name, "activation": act, "sigma": sigma, "sigma_range": sigma_range, "role": role,
            "oracle": act == "relu" and sigma is not None, "checkpoint": f"checkpoints/{name}.pt",
            "steps": 10, "train_time_s": 1.5, "val_psnr_set12": 25.0,
            "learned_lam": 0.05 if act == "nelu" else None,
            "learned_threshold_mean": 0.1 if act == "relu" else None, "history": []}


def _row(model, sigma, psnr, ssim, noisy=20.0):
    return {"model": model, "test_sigma": sigma, "n_images": len(psnr), "noisy_psnr_mean": noisy,
            "psnr_mean": float(np.mean(psnr)), "psnr": psnr, "ssim": ssim}


@pytest.fixture
def tiny(tmp_path) -> Path:
    """Three models on three images at sigma 10 and 20; an oracle at 10 (relu_sigma10) and 20."""
    models = {
        "relu_sigma20": _model("relu_sigma20", "relu", 20.0, "main"),
        "nelu_sigma20": _model("nelu_sigma20", "nelu", 20.0, "main"),
        "nelu_blind0-30": _model("nelu_blind0-30", "nelu", None, "blind", [0.0, 30.0]),
        "relu_sigma10": _model("relu_sigma10", "relu", 10.0, "oracle"),
    }
    summary = [
        _row("relu_sigma20", 10.0, [30.0, 31.0, 32.0], [0.8, 0.8, 0.8], noisy=28.0),
        _row("relu_sigma20", 20.0, [27.0, 28.0, 29.0], [0.7, 0.7, 0.7], noisy=22.0),
        _row("nelu_sigma20", 10.0, [31.0, 31.5, 31.0], [0.85, 0.85, 0.85], noisy=28.0),
        _row("nelu_sigma20", 20.0, [26.0, 27.0, 28.0], [0.6, 0.6, 0.6], noisy=22.0),
        _row("nelu_blind0-30", 10.0, [29.0, 30.0, 31.0], [0.8, 0.8, 0.8], noisy=28.0),
        _row("nelu_blind0-30", 20.0, [26.5, 27.5, 28.5], [0.65, 0.65, 0.65], noisy=22.0),
        _row("relu_sigma10", 10.0, [33.0, 33.0, 33.0], [0.9, 0.9, 0.9], noisy=28.0),
    ]
    meta = {"command": "python -m nelu reproduce bsd68 --profile quick", "git_commit": "abcdef0123456789",
            "date_utc": "2024-06-01T12:34:56Z", "profile": "quick", "test_sigmas": [20.0, 10.0],
            "images": ["a.png", "b.png", "c.png"]}
    (tmp_path / "bsd68.json").write_text(json.dumps({"meta": meta, "models": models, "summary": summary}))
    syn = {"meta": {"command": "python -m nelu reproduce synthetic", "git_commit": None, "date_utc": "x"},
           "config": {"train_sigma": 0.1, "n": 4, "m": 8},
           "rows": [{"sigma": 0.2, "noisy_mse": 0.04, "relu_mse": 0.02, "nelu_mse": 0.01, "oracle_relu_mse": 0.008},
                    {"sigma": 0.1, "noisy_mse": 0.01, "relu_mse": 0.002, "nelu_mse": 0.003, "oracle_relu_mse": 0.002}],
           "learned": {"nelu_lam": 0.08, "relu_threshold_mean": 0.05}}
    (tmp_path / "synthetic.json").write_text(json.dumps(syn))
    return tmp_path


def test_doctests():
    result = doctest.testmod(fg, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted > 0


def test_load_tiny(tiny):
    r = fg.load_bsd68(tiny)
    assert r.sigmas == (10.0, 20.0)
    assert r.images == ("a.png", "b.png", "c.png")
    assert r.names(role="main") == ["relu_sigma20", "nelu_sigma20"]
    assert r.names(activation="nelu") == ["nelu_sigma20", "nelu_blind0-30"]
    assert r.mean("relu_sigma20", 10) == pytest.approx(31.0)
    assert r.std("relu_sigma20", 10) == pytest.approx(1.0)
    assert r.noisy_psnr == {10.0: 28.0, 20.0: 22.0}
    assert r.evaluated("relu_sigma10") == [10.0]
    np.testing.assert_allclose(r.curve("relu_sigma10"), [33.0, np.nan])
    assert r.oracle_name(10) == "relu_sigma10" and r.oracle_name(20) == "relu_sigma20"
    np.testing.assert_allclose(r.oracle_curve(), [33.0, 28.0])
    np.testing.assert_allclose(r.gap("nelu_sigma20"), [93.5 / 3 - 33.0, -1.0])
    assert r.wins("nelu_sigma20", "relu_sigma20", 10) == pytest.approx(2 / 3)  # 31 > 30, 31.5 > 31, 31 < 32
    assert r.train_sigma("nelu_blind0-30") is None and r.train_range("nelu_blind0-30") == (0.0, 30.0)
    assert r.label("nelu_blind0-30") == "NeLU, blind 0-30" and r.label("relu_sigma10") == "ReLU, σ=10"
    assert r.checkpoint("relu_sigma20") == tiny / "checkpoints" / "relu_sigma20.pt"
    assert len(r.tidy()) == 7 and {row["n_images"] for row in r.tidy()} == {3}
    with pytest.raises(KeyError, match="not evaluated"):
        r.values("relu_sigma10", 20)
    with pytest.raises(KeyError, match="no ReLU model"):
        r.oracle_name(15)
    # the JSON file itself, and NELU_RESULTS
    assert fg.load_bsd68(tiny / "bsd68.json").sigmas == (10.0, 20.0)


def test_results_dir(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("NELU_RESULTS", str(tiny))
    assert fg.results_dir() == tiny
    assert fg.load_bsd68().mean("relu_sigma10", 10) == 33.0
    with pytest.raises(FileNotFoundError, match="reproduce"):
        fg.load_bsd68(tmp_path / "nowhere")


def test_provenance():
    text = fg.provenance({"command": "python -m nelu reproduce all --profile full", "git_commit": "f" * 40,
                          "date_utc": "2026-11-28T07:55:45Z", "profile": "full"})
    assert text == "python -m nelu reproduce all --profile full, git commit ffffffffffff, 2026-11-28 07:55 UTC"
    assert "git commit unknown" in fg.provenance({"command": "c", "git_commit": None, "date_utc": "x"})


def test_tables_tiny(tiny):
    r = fg.load_bsd68(tiny)
    t = fg.bsd68_table(r, ["relu_sigma20", "nelu_sigma20"])
    assert t.columns == ["σ", "noisy", "ReLU, σ=20", "NeLU, σ=20", "oracle"]
    assert t.rows[0] == ["10", "28.00", "31.00", "31.17", "33.00"]
    assert t.bold == {(0, 3), (1, 2)}                      # NeLU best at 10, ReLU at 20
    md = t.to_markdown()
    assert "| 10 | 28.00 | 31.00 | **31.17** | 33.00 |" in md
    html = t._repr_html_()
    assert html.count("<tr>") == 3 and "<b>31.17</b>" in html and "<table" in html
    assert "31.17" in str(t)
    s = fg.bsd68_table(r, ["nelu_sigma20"], metric="ssim", spread=True, oracle=False)
    assert s.columns == ["σ", "NeLU, σ=20"] and s.rows[0] == ["10", "0.8500 ± 0.000"]
    g = fg.gap_table(r, ["nelu_sigma20"])
    assert g.text(1, 1) == "-1.00" and g.text(0, 2) == "33.00"
    m = fg.models_table(r)
    assert len(m.rows) == 4 and m.text(0, 7) == "mean b = 0.1000" and m.text(2, 3) == "uniform in [0, 30]"
    # html escaping
    assert "&lt;b&gt;" in fg.Table(["x"], [["<b>"]]).to_html()
    assert fg.Table(["x"], [[float("nan")]], formats=[".2f"]).text(0, 0) == "-"


def test_plots_tiny(tiny):
    r = fg.load_bsd68(tiny)
    fig, (a, b) = plt.subplots(1, 2)
    fg.psnr_vs_sigma(a, r, ["relu_sigma20", "nelu_sigma20", "nelu_blind0-30"], noisy=True, spread=True)
    labels = [line.get_label() for line in a.get_lines()]
    assert labels[:5] == ["noisy input", "σ-matched ReLU (oracle)", "ReLU, σ=20", "NeLU, σ=20", "NeLU, blind 0-30"]
    vertical = [line for line in a.get_lines() if np.allclose(line.get_xdata(), 20.0)]
    assert len(vertical) == 1                              # the training sigma, marked once
    assert "PSNR" in a.get_ylabel() and "σ" in a.get_xlabel()
    assert [tick.get_text() for tick in a.get_xticklabels()] == ["10", "20"]
    assert not a.patches                                   # no blind range shaded when a level is marked
    fig, c = plt.subplots()
    fg.psnr_vs_sigma(c, r, ["nelu_blind0-30"], oracle=False)
    assert len(c.patches) == 1 and not c.get_lines()[1:]   # the blind range, shaded; one curve
    fg.sigma_axis(c, [5.0, 50.0], log=True)
    assert c.get_xscale() == "log" and [tick.get_text() for tick in c.get_xticklabels()] == ["5", "50"]
    fg.gap_to_oracle(b, r, ["nelu_sigma20"], train_sigma=None)
    np.testing.assert_allclose(b.get_lines()[1].get_ydata(), r.gap("nelu_sigma20"))
    s = fg.load_synthetic(tiny)
    fig, ax = plt.subplots()
    fg.mse_vs_sigma(ax, s, relative=True)
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    np.testing.assert_allclose(ax.get_lines()[0].get_ydata(), [1.0, 1.0])


def test_synthetic_tiny(tiny):
    s = fg.load_synthetic(tiny)
    np.testing.assert_allclose(s.sigmas, [0.1, 0.2])       # sorted
    assert s.at("nelu", 0.2) == 0.01 and s.train_sigma == 0.1 and s.learned["nelu_lam"] == 0.08
    t = fg.synthetic_table(s)
    assert t.bold == {(0, 2), (1, 3)}                      # ReLU better at 0.1, NeLU at 0.2
    assert fg.synthetic_table(s, relative=True).text(1, 3) == "0.250"


def test_filter_mosaic():
    W = torch.zeros(5, 4)
    W[:, 0] = torch.arange(1.0, 6.0)
    W[2, 3] = -10.0
    mos = fg.filter_mosaic(W, patch=2, ncols=3, pad=1)
    assert mos.shape == (5, 8)
    assert np.isnan(mos[2]).all() and np.isnan(mos[:, 2]).all()   # the gaps
    assert mos[0, 0] == 1.0 and mos[0, 3] == 1.0                   # each tile scaled by its max
    assert mos[1, 7] == -1.0 and mos[0, 6] == pytest.approx(0.3)  # tile 2: (3, 0, 0, -10) / 10
    with pytest.raises(ValueError, match="patch"):
        fg.filter_mosaic(W, patch=3)
    fig, ax = plt.subplots()
    fg.show_filters(ax, W, patch=2, ncols=3, title="W")
    assert ax.get_title() == "W"


def _ae(act: str) -> SparseAE:
    ae = SparseAE(16, 32, act, generator=torch.Generator().manual_seed(0))
    if act == "relu":
        with torch.no_grad():
            ae.activation.threshold.fill_(0.05)
    return ae.eval()


def test_code_statistics_nelu_is_scale_free_on_pure_noise():
    """Constant patches: the code sees pure noise, and NeLU's statistics do not depend on sigma."""
    flat = torch.full((2000, 16), 0.5)
    st = fg.code_statistics(_ae("nelu"), flat, [5.0, 25.0, 75.0])
    assert st.clean_residual == pytest.approx(0.0, abs=1e-5)
    np.testing.assert_allclose(st.active, st.active[0], rtol=1e-4)
    np.testing.assert_allclose(st.kappa, st.kappa[0], rtol=1e-4)
    np.testing.assert_allclose(st.ratio, st.ratio[0], rtol=1e-4)
    assert 0.5 < st.ratio[0] <= 1.0 + 1e-6                 # some noise passes into the code
    np.testing.assert_allclose(st.noise / st.noise[0], [1.0, 5.0, 15.0], rtol=1e-5)
    # a fixed ReLU threshold lets more and more noise through
    relu = fg.code_statistics(_ae("relu"), flat, [5.0, 25.0, 75.0])
    assert relu.active[0] < relu.active[1] < relu.active[2]
    np.testing.assert_allclose(relu.threshold, 0.05, rtol=1e-6)
    np.testing.assert_allclose(relu.kappa * relu.sigmas, relu.kappa[0] * 5.0, rtol=1e-5)


def test_code_statistics_with_signal():
    g = torch.Generator().manual_seed(1)
    clean = torch.rand(1000, 16, generator=g)
    st = fg.code_statistics(_ae("nelu"), clean, [1.0, 50.0])
    assert st.clean_residual > 0 and 0 < st.clean_negative_share <= 1
    assert st.ratio[0] > st.ratio[1]                       # the signal dominates at low noise
    assert st.crossover == pytest.approx(1.0 * st.clean_residual / st.noise[0])
    with pytest.raises(ValueError):
        fg.code_statistics(_ae("nelu"), clean, [0.0])


def test_unit_statistics():
    g = torch.Generator().manual_seed(3)
    clean = torch.rand(2000, 16, generator=g)
    ae = _ae("nelu")
    st = fg.unit_statistics(ae, clean, 25.0)
    assert st.snr.shape == st.active.shape == st.residual_share.shape == (32,)
    assert st.residual_share.sum() == pytest.approx(1.0) and (st.residual_share >= 0).all()
    np.testing.assert_allclose(st.decoder_norm, ae.decoder.weight.detach().norm(dim=0).numpy(), rtol=1e-6)
    # the paired initialization: W = [V; -V] with unit rows on the zero-mean subspace
    np.testing.assert_allclose(st.encoder_norm, 1.0, rtol=1e-5)
    np.testing.assert_allclose(st.snr[:16], st.snr[16:], rtol=1e-5)
    assert fg.unit_statistics(ae, clean, 100.0).snr.mean() < st.snr.mean()
    with pytest.raises(ValueError):
        fg.unit_statistics(ae, clean, 0.0)


def test_best_lam():
    g = torch.Generator().manual_seed(2)
    clean = torch.rand(500, 16, generator=g)
    lams = [0.01, 0.05, 0.2]
    best, mse = fg.best_lam(_ae("nelu"), clean, [10.0, 40.0], lams)
    assert mse.shape == (2, 3) and set(best) <= set(lams)
    assert np.all(best == np.array(lams)[mse.argmin(axis=1)])
    with pytest.raises(ValueError, match="NeLU"):
        fg.best_lam(_ae("relu"), clean, [10.0], lams)


# ------------------------------------------------------------------- committed results


@committed
def test_committed_bsd68_is_complete():
    r = fg.load_bsd68(RESULTS)
    assert r.sigmas == (5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 40.0, 50.0, 60.0, 75.0)
    assert len(r.images) == 68
    for m in r.names(role="main") + r.names(role="blind"):
        assert r.evaluated(m) == list(r.sigmas)
    for s in r.sigmas:
        assert r.train_sigma(r.oracle_name(s)) == s
    for (m, s), v in r.per_image.items():
        assert v["psnr"].shape == (68,) and v["ssim"].shape == (68,), (m, s)
    assert len(r.tidy()) == 8 * 10 + 7
    assert np.all(r.gap("relu_sigma25")[r.sigmas.index(25.0)] == 0.0)
    assert r.meta["profile"] == "full"


@committed
def test_committed_bsd68_robust_facts():
    r = fg.load_bsd68(RESULTS)
    assert r.mean("nelu_sigma25", 75) - r.mean("relu_sigma25", 75) > 3.0
    assert r.mean("relu_sigma25", 25) > r.mean("nelu_sigma25", 25)
    assert all(r.mean("nelu_blind0-75", s) > r.mean("relu_blind0-75", s) for s in r.sigmas)
    assert np.all(r.gap("nelu_sigma25") < 0.05)            # nobody beats the oracle by much


@committed
def test_committed_learned_lam_matches_checkpoints():
    r = fg.load_bsd68(RESULTS)
    for m in r.names(activation="nelu"):
        lam = float(load_denoiser(r.checkpoint(m)).ae.activation.lam.detach())
        assert lam == pytest.approx(r.models[m]["learned_lam"], rel=1e-6)


@committed
def test_committed_synthetic():
    s = fg.load_synthetic(RESULTS)
    assert len(s.sigmas) == 7 and s.train_sigma == 0.1
    np.testing.assert_allclose(s.mse["noisy"], s.sigmas**2)
    assert s.at("oracle", 0.1) == s.at("relu", 0.1)        # the oracle at the training sigma is the model
    assert all(s.at("nelu", x) < s.at("relu", x) for x in (0.2, 0.3, 0.5))
    assert not math.isnan(s.learned["nelu_lam"])
