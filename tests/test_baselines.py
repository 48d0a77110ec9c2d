"""Tests of nelu.baselines (python -m nelu.baselines): same noise as the evaluation, BM3D, DnCNN, CLI."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from conftest import needs_data, one_error_line

from nelu import baselines as bl
from nelu.baselines.__main__ import main
from nelu.data import cached_dataset
from nelu.evaluation import evaluate_images, noisy_image
from nelu.experiments import baselines as experiment
from nelu.training import train_or_reuse

pytestmark = needs_data

TINY_DNCNN = dict(depth=3, channels=4, patch=12, batch_size=4, steps=3, lr=1e-3, pool_size=50, train_images=2)
TINY = {
    "crop": 40,
    "check_images": 1,
    "check_sigmas": (25.0,),
    "sweep_images": (0,),
    "sweep_sigmas": (5.0, 25.0),
    "dncnn": TINY_DNCNN,
    "dncnn_images": 1,
    "dncnn_sigmas": (15.0, 50.0),
    "timing_repeats": 1,
    "workers": 1,
    "threads": 1,
}


def test_noisy_images_are_those_of_the_evaluation():
    """noisy_image reproduces bit for bit what evaluate_images feeds the ReLU/NeLU models."""
    seen = []

    class Recorder(torch.nn.Module):
        def forward(self, y):
            seen.append(y.clone())
            return y

    images = cached_dataset("BSD68", 2)
    sigmas = [15.0, 50.0]
    evaluate_images(Recorder(), images, sigmas, metrics=("psnr",))
    for i, clean in enumerate(images):
        for j, s in enumerate(sigmas):
            assert torch.equal(seen[i][j, 0], noisy_image(clean, i, s))


def test_dncnn_is_residual():
    net = bl.SmallDnCNN(depth=3, channels=4)
    with torch.no_grad():
        net.net[-1].weight.zero_()
        net.net[-1].bias.zero_()
    y = torch.rand(2, 1, 9, 7)
    assert torch.equal(net(y), y)  # net(y) predicts the noise; zero prediction = identity
    assert net(y[0, 0]).shape == (9, 7)
    with pytest.raises(ValueError, match="images must be"):
        net(torch.rand(1, 2, 5, 5))


def test_train_dncnn_deterministic_and_reused(tmp_path):
    cfg = bl.DnCNNConfig(threads=1, **TINY_DNCNN)
    a, reused = train_or_reuse(cfg, tmp_path / "a.pt", False, bl.load_dncnn_checkpoint, bl.train_dncnn)
    b = bl.train_dncnn(cfg, tmp_path / "b.pt")
    assert not reused and len(a["history"]) == 3 and a["complete"]
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    again, reused = train_or_reuse(cfg, tmp_path / "a.pt", False, bl.load_dncnn_checkpoint, bl.train_dncnn)
    assert reused and again["optimizer"] is None  # stripped after training
    other = bl.DnCNNConfig(threads=1, **{**TINY_DNCNN, "lr": 2e-3})
    _, reused = train_or_reuse(other, tmp_path / "a.pt", False, bl.load_dncnn_checkpoint, bl.train_dncnn)
    assert not reused  # config changed: retrained
    model = bl.load_dncnn(tmp_path / "b.pt")
    assert not model.training and model(torch.rand(16, 16)).shape == (16, 16)
    with pytest.raises(ValueError, match="does not exist"):
        bl.load_dncnn(tmp_path / "missing.pt")


def test_bm3d_denoises_and_is_scale_equivariant():
    pytest.importorskip("bm3d")
    clean = cached_dataset("BSD68", 1)[0][200:248, 100:148]
    noisy = clean + 25 / 255 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))
    est = bl.bm3d_denoise(noisy, 25.0)
    mse = lambda e: float(((torch.as_tensor(e) - clean.double()) ** 2).mean())  # noqa: E731
    assert est.shape == (48, 48) and mse(est) < 0.5 * mse(noisy.double())
    # BM3D(c y; c sigma) = c BM3D(y; sigma): its thresholds scale with the sigma it is told.
    scaled = bl.bm3d_denoise(2 * noisy.double(), 50.0) / 2
    assert abs(scaled - est).max() < 1e-6


@pytest.mark.slow  # two spawned worker processes import torch: about 10-20 s
def test_bm3d_workers_give_the_same_numbers():
    pytest.importorskip("bm3d")
    tasks = [(0, 25.0, 25.0, 40, 0), (1, 50.0, 25.0, 40, 0)]
    inline = bl.bm3d_run(tasks, workers=1)
    pooled = bl.bm3d_run(tasks, workers=2)
    assert [r["psnr"] for r in inline] == [r["psnr"] for r in pooled]
    assert inline[1]["assumed_sigma"] == 25.0 and inline[1]["test_sigma"] == 50.0


def test_main_tiny_profile(tmp_path, monkeypatch, capsys):
    pytest.importorskip("bm3d")
    monkeypatch.setitem(experiment.PROFILES, "quick", TINY)
    out = tmp_path / "res"
    assert main(["--profile", "quick", "--out", str(out), "--checkpoints", str(tmp_path / "none")]) == 0
    res = json.loads((out / "baselines.json").read_text())
    assert res["meta"]["command"].startswith("python -m nelu.baselines --profile quick")
    assert res["meta"]["sweep_images"] == ["test001.png"] and res["meta"]["crop"] == 40
    check = res["bm3d"]["check"]
    assert [c["sigma"] for c in check] == [25.0] and check[0]["published"] == 28.57
    assert abs(check[0]["difference"] - (check[0]["psnr_mean"] - 28.57)) < 1e-12
    settings = {(r["setting"], r["test_sigma"]) for r in res["bm3d"]["sweep"]}
    assert settings == {("true", 5.0), ("true", 25.0), ("fixed", 5.0), ("fixed", 25.0)}
    assert res["bm3d"]["cost"]["calls"] == 3  # (25, told 25) is shared by the check and the sweep
    assert [r["test_sigma"] for r in res["dncnn"]["summary"]] == [15.0, 50.0]
    assert "relu_note" in res["timing"] and res["timing"]["bm3d_s"] > 0
    assert (out / "dncnn_sigma25.pt").is_file() and (out / "bm3d.csv").read_text().startswith("image,index")
    # A rerun reuses the DnCNN checkpoint and reproduces every number.
    assert main(["--profile", "quick", "--out", str(out), "--checkpoints", str(tmp_path / "none")]) == 0
    res2 = json.loads((out / "baselines.json").read_text())
    assert res2["dncnn"]["reused_checkpoint"]
    assert res2["dncnn"]["summary"] == res["dncnn"]["summary"] and res2["bm3d"]["check"] == res["bm3d"]["check"]


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--profile", "slow"], "slow"),
        (["--workers", "0", "--profile", "quick"], "workers"),
        (["--profile", "quick", "--out", "AFILE/sub"], "cannot write"),
        (["--bogus"], "bogus"),
    ],
)
def test_user_mistakes_exit_2_with_one_line(argv, needle, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    argv = [a.replace("AFILE", str(tmp_path / "afile")) for a in argv]
    assert main(argv) == 2
    assert needle in one_error_line(capsys, 'nelu.baselines')


def test_missing_bm3d_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "bm3d", None)  # import bm3d now raises ImportError
    assert main(["--profile", "quick", "--out", str(tmp_path)]) == 2
    assert "pip install bm3d" in one_error_line(capsys, 'nelu.baselines')
