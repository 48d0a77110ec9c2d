"""Tests of nelu.results: every reader, on tiny hand-made results and on the committed ones.

Two kinds of input: tiny results written to a temporary folder by :func:`write_tiny`
(every number known; ``tests/test_tables.py`` and ``tests/test_plots.py`` use them too) and
the committed results of the full profile (``results/``; those tests are skipped when the
folder is absent). The last test checks the data flow: no chapter reads a results file
itself, every chapter goes through :mod:`nelu.results`.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import nbformat
import numpy as np
import pytest

from nelu import results as rs
from nelu.baselines import PUBLISHED_BM3D_BSD68
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
    assert r.reported("nelu_sigma20", 10) == 93.5 / 3 and r.reported("relu_sigma20", 20, "noisy_psnr_mean") == 22.0
    assert r.reported("relu_sigma10", 10, "n_images") == 3
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
    with pytest.raises(KeyError, match="relu_sigma10"):
        r.reported("relu_sigma10", 20)
    with pytest.raises(FileNotFoundError, match="bsd68.csv"):
        r.rows                                               # no CSV beside the tiny JSON
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
    assert s.folder == tiny


def test_read_rows_types_cells(tmp_path):
    (tmp_path / "x.csv").write_text("image,index,test_sigma,assumed_sigma,oracle,train_range,psnr\n"
                                    "test001.png,0,5.0,,True,0-75,30.5\n"
                                    "test002.png,1,25.0,25.0,False,,nan\n")
    rows = rs.read_rows(tmp_path, "x.csv")
    assert rows.columns == ("image", "index", "test_sigma", "assumed_sigma", "oracle", "train_range", "psnr")
    first, second = rows
    assert first == {"image": "test001.png", "index": 0, "test_sigma": 5.0, "assumed_sigma": None, "oracle": True,
                     "train_range": "0-75", "psnr": 30.5}
    assert type(first["index"]) is int and second["oracle"] is False and math.isnan(second["psnr"])
    assert rows.where(test_sigma=25) == [second]
    np.testing.assert_allclose(rows.column("assumed_sigma"), [np.nan, 25.0])
    assert rs.read_rows(tmp_path / "x.csv").rows[0] == first                # the file itself
    with pytest.raises(KeyError, match="no column"):
        rows.where(model="a")
    with pytest.raises(FileNotFoundError):
        rs.read_rows(tmp_path, "y.csv")


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
def test_committed_bsd68_csv_files_agree_with_the_json():
    r = rs.load_bsd68(RESULTS)
    assert len(r.rows) == 68 * len(r.per_image) and len(r.summary_rows) == len(r.summary)
    for (m, s), v in r.per_image.items():
        np.testing.assert_allclose(r.rows.column("psnr", model=m, test_sigma=s), v["psnr"], rtol=1e-12)
        assert r.reported(m, s) == pytest.approx(r.mean(m, s), rel=1e-12)   # as written vs recomputed
    for row in r.summary_rows:
        assert row["psnr_mean"] == pytest.approx(r.reported(row["model"], row["test_sigma"]), rel=1e-12)
    noisy = r.rows.column("noisy_psnr", model="nelu_sigma25", test_sigma=25.0)
    assert noisy.mean() == pytest.approx(r.reported("nelu_sigma25", 25.0, "noisy_psnr_mean"), rel=1e-12)


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
    np.testing.assert_allclose(s.rows.column("nelu_mse"), s.mse["nelu"], rtol=1e-12)   # synthetic.csv


@committed
def test_committed_noise():
    n = rs.load_noise(RESULTS)
    assert n.kinds[0] == "gaussian" and len(n.kinds) == 5 and n.sigmas == (5.0, 15.0, 25.0, 50.0, 75.0)
    assert len(n.summary) == len(n.models) * len(n.kinds) * len(n.sigmas) and len(n.images) == 68
    assert n.meta["profile"] == "full"
    b = rs.load_bsd68(RESULTS)
    for m in n.models:                                     # Gaussian noise: the BSD68 evaluation, again
        for s in n.sigmas:
            np.testing.assert_allclose(n.values(m, "gaussian", s), b.values(m, s), rtol=0, atol=1e-9)
    assert n.reported("nelu_sigma25", "laplace", 75) == pytest.approx(n.values("nelu_sigma25", "laplace", 75).mean())
    assert n.reported("nelu_sigma25", "varying", 50, "psnr_band3_mean") > 0
    assert len(n.rows) == 68 * len(n.summary)                # noise.csv
    np.testing.assert_allclose(n.rows.column("psnr", model="relu_sigma25", noise="uniform", test_sigma=25.0),
                               n.values("relu_sigma25", "uniform", 25), rtol=1e-12)
    with pytest.raises(KeyError, match="no result"):
        n.values("nelu_sigma25", "gaussian", 10)


@committed
def test_committed_conv():
    c = rs.load_conv(RESULTS)
    assert list(c.models) == ["conv_relu_sigma25", "conv_nelu_sigma25", "conv_nelu-global_sigma25"]
    assert c.sigmas == (5.0, 10.0, 15.0, 25.0, 40.0, 50.0, 75.0) and c.varying_sigmas == (25.0, 50.0)
    assert c.meta["profile"] == "full" and c.global_images == 68
    assert all(c.reported("conv_nelu_sigma25", "gaussian", s, "n_images") == 68 for s in c.sigmas)
    assert c.values("conv_nelu-global_sigma25", "varying", 50).shape == (c.global_images,)
    assert all(c.checkpoint(m).is_file() for m in c.models)
    assert len(c.rows) == sum(r["n_images"] for r in c.summary.values())   # conv.csv


@committed
def test_committed_baselines():
    b = rs.load_baselines(RESULTS)
    assert b.folder == RESULTS / "baselines" and rs.load_baselines(RESULTS / "baselines").meta == b.meta
    assert b.meta["profile"] == "full" and b.sigmas == rs.load_bsd68(RESULTS).sigmas
    assert [c.sigma for c in b.check] == list(PUBLISHED_BM3D_BSD68)
    for c in b.check:
        assert c.published == PUBLISHED_BM3D_BSD68[c.sigma] and c.n_images == 68
        assert c.difference == pytest.approx(c.psnr_mean - c.published)
    true, fixed = b.sweep_curve("true"), b.sweep_curve("fixed")
    assert list(true) == list(fixed) == list(b.sigmas) and true[25.0] == fixed[25.0]
    assert b.dncnn.checkpoint.is_file() and b.dncnn.steps == b.dncnn.config["steps"]
    assert list(b.dncnn.curve()) == list(b.sigmas)
    assert b.timing["bm3d_s"] > b.timing["dncnn_s"] > b.timing["nelu_stride4_s"]
    # the three CSV files
    assert len(b.bm3d_rows) == b.cost["calls"] and {r["setting"] for r in b.bm3d_rows} == {"true", "fixed"}
    for c in b.check:
        psnr = b.bm3d_rows.column("psnr", test_sigma=c.sigma, setting="true")
        assert psnr.size == 68 and psnr.mean() == pytest.approx(c.psnr_mean, rel=1e-12)
    for s, v in b.dncnn.curve().items():
        assert b.dncnn_rows.column("psnr", test_sigma=s).mean() == pytest.approx(v, rel=1e-12)
    check = {r["test_sigma"]: r["psnr_mean"] for r in b.summary_rows.where(method="bm3d_true", subset="check")}
    assert check == pytest.approx(b.check_curve(), rel=1e-12)
    with pytest.raises(KeyError, match="setting"):
        b.sweep_curve("estimated")


@committed
def test_committed_reproduce_timings():
    run = rs.load_reproduce(RESULTS)
    assert run.target == "all" and run.experiments == ["synthetic", "bsd68", "noise", "conv"]
    assert run.total_s >= sum(run.seconds(e) for e in run.experiments) > 0
    assert run.meta["profile"] == "full"
    for target in ("conv", "noise"):
        one = rs.load_reproduce(RESULTS, target)
        assert one.experiments == [target] and one.total_s >= one.seconds(target)


@committed
def test_committed_bench():
    b = rs.load_bench(RESULTS)
    assert b.batch == 4096 and b.m == 256 and b.row("ReLU").max_error_vs_cvxpy is None
    exact = b.row("NeLU exact")
    assert exact.max_error_vs_cvxpy < 1e-6
    assert b.train_step_ratio_nelu_over_relu == pytest.approx(b.train_step_ms["NeLU exact"] / b.train_step_ms["ReLU"])
    with pytest.raises(KeyError, match="no method"):
        b.row("GELU")


# ------------------------------------------------------------------------ the data flow

# What a chapter must not do with a results file: parse it, open it, or build its path.
FORBIDDEN = {
    "json.load": re.compile(r"\bjson\.load"),
    "csv.": re.compile(r"\bcsv\."),
    "read_text()": re.compile(r"\.read_text\("),
    "open(...)": re.compile(r"(?<![\w.])open\("),
    "import json/csv": re.compile(r"^\s*import\s+(json|csv)\b|^\s*from\s+(json|csv)\s+import", re.M),
    "a results file joined to a path": re.compile(r"/\s*[\"'][\w.-]+\.(json|csv)[\"']"),
    "the checkpoints folder joined to a path": re.compile(r"/\s*[\"']checkpoints[\"']"),
    "$NELU_RESULTS read by hand": re.compile(r"environ[^\n]*NELU_RESULTS"),
}
CHAPTERS = sorted(p for p in (ROOT / "book").glob("*.ipynb"))


def test_the_scan_finds_what_it_forbids():
    bad = ['base = json.loads((RESULTS / "baselines" / "baselines.json").read_text())',
           'with open(RESULTS / "bsd68.csv") as f:\n    rows = list(csv.DictReader(f))',
           'RESULTS = Path(os.environ.get("NELU_RESULTS") or "results")',
           'load_denoiser(RESULTS / "checkpoints" / "nelu_sigma25.pt")']
    for code in bad:
        assert any(p.search(code) for p in FORBIDDEN.values()), code
    good = 'res = load_bsd68()\nprint("results/bsd68.json:", provenance(res.meta))\nload_denoiser(res.checkpoint("x"))'
    assert not any(p.search(good) for p in FORBIDDEN.values())


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_chapters_read_results_only_through_nelu_results(path):
    """No chapter opens, parses or locates a results file itself: it calls a reader of nelu.results."""
    nb = nbformat.read(path, as_version=4)
    found = [f"cell {i}: {what}" for i, cell in enumerate(nb.cells) if cell.cell_type == "code"
             for what, pattern in FORBIDDEN.items() if pattern.search(cell.source)]
    assert not found, f"{path.name} reads results by hand ({'; '.join(found)}); use nelu.results"


@committed
def test_universal_ceiling_and_per_image_means():
    uni = rs.load_universal(RESULTS)
    for s in uni.meta["test_sigmas"]:
        scratch = uni.oracle(s, kind="scratch")
        if s == uni.meta["warm_source"]:  # no warm start at the level the warm starts come from
            assert uni.oracle(s) == scratch and f"oracle_warm_sigma{s:g}" not in uni.models
        else:
            assert uni.oracle(s) == max(scratch, uni.oracle(s, kind="warm"))
    for s in uni.meta["lever_sigmas"]:  # the all-image rows, restricted to the lever images, give the lever summary
        assert uni.mean_on(f"oracle_sigma{s:g}", s) == pytest.approx(uni.oracle(s, subset="levers", kind="scratch"),
                                                                      abs=1e-9)
    with pytest.raises(KeyError, match="evaluated on 0 of the 20 images"):
        uni.mean_on("universal_nelu", 7.0)
    with pytest.raises(ValueError, match="kind must be"):
        uni.oracle(5.0, kind="median")
