"""Tests of nelu.results: the readers, on tiny hand-made results and on the committed ones.

Two kinds of input: tiny results written to a temporary folder by :func:`write_tiny`
(every number known; ``tests/test_tables.py`` and ``tests/test_plots.py`` use them too) and
the committed results of the full profile (``results/``; those tests are skipped when the
folder is absent).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from nelu import results as rs
from nelu.models import load_denoiser

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"
committed = pytest.mark.skipif(not (RESULTS / "bsd68.json").is_file(), reason="no committed results/")


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


def write_tiny(folder: Path) -> Path:
    """Write tiny ``bsd68.json`` and ``synthetic.json`` into ``folder``; return it.

    Three models on three images at sigma 10 and 20; an oracle at 10 (relu_sigma10) and 20.
    """
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
    (folder / "bsd68.json").write_text(json.dumps({"meta": meta, "models": models, "summary": summary}))
    syn = {"meta": {"command": "python -m nelu reproduce synthetic", "git_commit": None, "date_utc": "x"},
           "config": {"train_sigma": 0.1, "n": 4, "m": 8},
           "rows": [{"sigma": 0.2, "noisy_mse": 0.04, "relu_mse": 0.02, "nelu_mse": 0.01, "oracle_relu_mse": 0.008},
                    {"sigma": 0.1, "noisy_mse": 0.01, "relu_mse": 0.002, "nelu_mse": 0.003, "oracle_relu_mse": 0.002}],
           "learned": {"nelu_lam": 0.08, "relu_threshold_mean": 0.05}}
    (folder / "synthetic.json").write_text(json.dumps(syn))
    return folder


@pytest.fixture
def tiny(tmp_path) -> Path:
    return write_tiny(tmp_path)


def test_load_tiny(tiny):
    r = rs.load_bsd68(tiny)
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
    # the JSON file itself
    assert rs.load_bsd68(tiny / "bsd68.json").sigmas == (10.0, 20.0)


def test_results_dir(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("NELU_RESULTS", str(tiny))
    assert rs.results_dir() == tiny
    assert rs.load_bsd68().mean("relu_sigma10", 10) == 33.0
    with pytest.raises(FileNotFoundError, match="reproduce"):
        rs.load_bsd68(tmp_path / "nowhere")
    monkeypatch.delenv("NELU_RESULTS")
    monkeypatch.chdir(tmp_path)
    if RESULTS.is_dir():                                   # the checkout's, wherever the working directory is
        assert rs.results_dir() == RESULTS


def test_provenance():
    text = rs.provenance({"command": "python -m nelu reproduce all --profile full", "git_commit": "f" * 40,
                          "date_utc": "2026-11-28T07:55:45Z", "profile": "full"})
    assert text == "python -m nelu reproduce all --profile full, git commit ffffffffffff, 2026-11-28 07:55 UTC"
    assert "git commit unknown" in rs.provenance({"command": "c", "git_commit": None, "date_utc": "x"})


def test_synthetic_tiny(tiny):
    s = rs.load_synthetic(tiny)
    np.testing.assert_allclose(s.sigmas, [0.1, 0.2])       # sorted
    assert s.at("nelu", 0.2) == 0.01 and s.train_sigma == 0.1 and s.learned["nelu_lam"] == 0.08


# ------------------------------------------------------------------- committed results


@committed
def test_committed_bsd68_is_complete():
    r = rs.load_bsd68(RESULTS)
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
    r = rs.load_bsd68(RESULTS)
    assert r.mean("nelu_sigma25", 75) - r.mean("relu_sigma25", 75) > 3.0
    assert r.mean("relu_sigma25", 25) > r.mean("nelu_sigma25", 25)
    assert all(r.mean("nelu_blind0-75", s) > r.mean("relu_blind0-75", s) for s in r.sigmas)
    assert np.all(r.gap("nelu_sigma25") < 0.05)            # nobody beats the oracle by much


@committed
def test_committed_learned_lam_matches_checkpoints():
    r = rs.load_bsd68(RESULTS)
    for m in r.names(activation="nelu"):
        lam = float(load_denoiser(r.checkpoint(m)).ae.activation.lam.detach())
        assert lam == pytest.approx(r.models[m]["learned_lam"], rel=1e-6)


@committed
def test_committed_synthetic():
    s = rs.load_synthetic(RESULTS)
    assert len(s.sigmas) == 7 and s.train_sigma == 0.1
    np.testing.assert_allclose(s.mse["noisy"], s.sigmas**2)
    assert s.at("oracle", 0.1) == s.at("relu", 0.1)        # the oracle at the training sigma is the model
    assert all(s.at("nelu", x) < s.at("relu", x) for x in (0.2, 0.3, 0.5))
    assert not math.isnan(s.learned["nelu_lam"])

