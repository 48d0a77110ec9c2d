"""Tests of nelu.conv: the convolutional auto-encoder, its activations, training and the CLI targets."""

from __future__ import annotations

import doctest
import json
import math

import pytest
import torch
import torch.nn.functional as TF
from conftest import needs_data

import nelu.conv as nc
from nelu import cli
from nelu import functional as F
from nelu.conv import (
    ChannelsLast,
    ConvAE,
    ConvConfig,
    GlobalNeLU,
    load_conv_checkpoint,
    load_conv_denoiser,
    train_conv,
)
from nelu.evaluation import evaluate_images
from nelu.models import CheckpointError, SparseAE
from nelu.training import ConfigError


def test_docstring_examples():
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    result = doctest.testmod(nc, optionflags=flags)
    assert result.failed == 0 and result.attempted > 0


@pytest.mark.parametrize("act", nc.CONV_ACTIVATIONS)
@pytest.mark.parametrize("shape", [(2, 1, 12, 9), (1, 1, 7, 7), (10, 13)])
def test_shapes(act, shape):
    ae = ConvAE(16, 7, act, generator=torch.Generator().manual_seed(0))
    y = torch.rand(shape, generator=torch.Generator().manual_seed(1))
    assert ae(y).shape == y.shape
    with torch.no_grad():
        assert ae(y).shape == y.shape
    assert ae.code(y.reshape(-1, 1, *shape[-2:])).shape[1:] == (16, shape[-2] + 6, shape[-1] + 6)


def test_bad_inputs():
    with pytest.raises(ValueError, match="odd"):
        ConvAE(16, 6)
    with pytest.raises(ValueError, match="at least"):
        ConvAE(16, 7)(torch.rand(1, 1, 5, 20))
    with pytest.raises(ValueError, match="images must be"):
        ConvAE(16, 7)(torch.rand(1, 2, 9, 9))
    with pytest.raises(ValueError, match="unknown activation"):
        ConvAE(16, 7, "gelu")


def test_complete_paired_init_is_the_identity():
    """m = 2 (k^2 - 1) paired zero-mean filters, threshold 0: x_hat = y exactly (module docstring)."""
    ae = ConvAE(2 * 48, 7, "relu", generator=torch.Generator().manual_seed(3))
    y = torch.rand(2, 1, 15, 11, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    ae = ae.double()
    assert torch.allclose(ae(y), y, atol=1e-6)  # weights initialized in float32


def test_unfold_path_equals_conv_layers():
    """The unfold/fold computation is conv2d -> act on channels -> conv_transpose2d (+ low-pass)."""
    g = torch.Generator().manual_seed(1)
    ae = ConvAE(12, 5, "nelu", generator=g).double()
    with torch.no_grad():
        ae.encoder.copy_(torch.randn(ae.encoder.shape, generator=g, dtype=torch.float64))
        ae.decoder.copy_(torch.randn(ae.decoder.shape, generator=g, dtype=torch.float64) / 25)
    y = torch.rand(2, 1, 13, 10, generator=g, dtype=torch.float64)
    k, p, (H, W) = 5, 4, y.shape[-2:]
    z = ChannelsLast(ae.activation)(ae.code(y))
    box = torch.full((1, 1, k, k), 1.0 / k**2, dtype=torch.float64)
    low = TF.conv_transpose2d(TF.avg_pool2d(ae._pad(y), k, stride=1), box)[..., p : p + H, p : p + W]
    ref = TF.conv_transpose2d(z, ae.decoder)[..., p : p + H, p : p + W] + low
    assert torch.allclose(ae(y), ref, atol=1e-10)
    ae.chunk = 7  # the chunked no-grad path gives the same result
    with torch.no_grad():
        assert torch.allclose(ae(y), ref, atol=1e-10)


def test_nelu_channelwise_equals_functional_on_permuted_code():
    ae = ConvAE(16, 7, "nelu", generator=torch.Generator().manual_seed(0)).double()
    y = torch.rand(2, 1, 11, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    u = ae.code(y)  # (B, m, H', W')
    lam = float(ae.activation.lam.detach())
    expected = F.nelu(u.permute(0, 2, 3, 1), lam).permute(0, 3, 1, 2)
    assert torch.allclose(ChannelsLast(ae.activation)(u), expected, atol=1e-12)
    # ... and each location's threshold is lam times its own residual norm.
    z = expected
    active = z > 0
    tau = (u - z)[active]  # on the active set u - z is the threshold of that location
    tau_loc = lam * torch.linalg.vector_norm(u - z, dim=1, keepdim=True).expand_as(u)[active]
    assert torch.allclose(tau, tau_loc, atol=1e-10)


def test_zero_mean_filters_remove_the_patch_mean():
    """u_p = W (patch - mean(patch)): the code of a constant image is zero, and of y + c equals that of y."""
    ae = ConvAE(16, 7, "relu", generator=torch.Generator().manual_seed(0))
    y = torch.rand(1, 1, 12, 12, generator=torch.Generator().manual_seed(6))
    assert ae.code(torch.full_like(y, 0.7)).abs().max() < 1e-5
    assert torch.allclose(ae.code(y + 0.3), ae.code(y), atol=1e-5)
    # The low-pass path reproduces constants: x_hat of a constant image is that constant.
    assert torch.allclose(ae(torch.full_like(y, 0.4)), torch.full_like(y, 0.4), atol=1e-6)


def test_interior_matches_the_patch_autoencoder_at_stride_1():
    """Same W, D (decoder divided by k^2): interior pixels equal the stride-1 patch AE's average."""
    g = torch.Generator().manual_seed(2)
    k, m = 5, 32
    ae = ConvAE(m, k, "nelu", generator=g).double()
    with torch.no_grad():
        ae.decoder.add_(0.01 * torch.randn(ae.decoder.shape, generator=g, dtype=torch.float64))
    sae = SparseAE(k * k, m, "nelu").double()
    with torch.no_grad():
        sae.encoder.weight.copy_(ae.encoder.reshape(m, -1))
        sae.decoder.weight.copy_(ae.decoder.reshape(m, -1).T * k * k)
        sae.activation.lam = ae.activation.lam.detach().clone()
    y = torch.rand(1, 1, 20, 18, generator=g, dtype=torch.float64)
    patches = TF.unfold(y, k).transpose(1, 2)  # (1, L, n), no padding
    est = TF.fold(sae(patches).transpose(1, 2), (20, 18), k) / TF.fold(torch.ones_like(patches).transpose(1, 2),
                                                                          (20, 18), k)
    p = k - 1  # pixels at least k-1 from the border are covered by k^2 unpadded patches
    assert torch.allclose(ae(y)[..., p:-p, p:-p], est[..., p:-p, p:-p], atol=1e-10)


def test_global_nelu_is_one_square_root_lasso_per_image():
    g = GlobalNeLU(0.2).double()
    lam = float(g.lam.detach())  # 0.2 up to the float32 rounding of its initial value
    u = torch.randn(3, 10, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))  # (B, L, m)
    z = g(u)
    for b in range(3):
        assert torch.allclose(z[b], F.nelu(u[b].reshape(-1), lam / math.sqrt(10)).reshape(10, 8), atol=1e-12)
    # One threshold per image: u - z is the same on every active entry of an image.
    for b in range(3):
        r = (u[b] - z[b])[z[b] > 0]
        assert r.max() - r.min() < 1e-12
    # lam is size-free: tiling an image's code repeats the same threshold.
    tiled = torch.cat([u[:1]] * 4, dim=1)
    assert torch.allclose(g(tiled)[0, :10], z[0], atol=1e-12)


def _rows(kind: str, n: int, gen: torch.Generator) -> torch.Tensor:
    """A float64 row of ``n`` entries of one of the shapes the image threshold must handle."""
    x = torch.randn(n, dtype=torch.float64, generator=gen)
    if kind == "sparse":  # mostly zeros, a few large entries
        return torch.where(torch.rand(n, generator=gen, dtype=torch.float64) < 0.05, 10 * x.abs(), 0.0 * x)
    if kind == "ties":  # small integers: many entries equal to each other (and to the threshold's neighbours)
        return torch.randint(-3, 6, (n,), generator=gen).double()
    if kind == "heavy":  # Cauchy tails
        return torch.tan(torch.pi * (torch.rand(n, generator=gen, dtype=torch.float64) - 0.5))
    if kind == "negative":
        return -x.abs()
    if kind == "positive":  # no negative entries: the z = u regime when lam**2 n <= 1
        return x.abs() + 1
    return x


@pytest.mark.parametrize("kind", ["gaussian", "sparse", "ties", "heavy", "negative", "positive"])
@pytest.mark.parametrize("n", [1, 2, 7, 1000, 100_000])
@pytest.mark.parametrize("nonneg", [True, False])
def test_image_threshold_is_the_exact_threshold(kind, n, nonneg):
    """The O(N) threshold equals the exact solver's (sort) in float64, whatever the row."""
    gen = torch.Generator().manual_seed(n)
    u = torch.stack([_rows(kind, n, gen) for _ in range(2)])
    for lam in (0.5 / math.sqrt(n), 2.0 / math.sqrt(n), 0.999 / math.sqrt(n), 0.3):
        ref = F.sqrt_lasso_threshold(u, lam, nonneg=nonneg)
        tau = nc.image_threshold(u, lam, nonneg=nonneg)
        assert tau.shape == (2, 1) and tau.dtype == torch.float64
        assert torch.allclose(tau, ref, rtol=1e-11, atol=1e-300), (lam, tau, ref)


@pytest.mark.parametrize("factor", [1e-9, 1e9])
def test_image_threshold_bracket_fallbacks(monkeypatch, factor):
    """A first lower bound far too close (widened until certified) or far too low (lo = 0): same root."""
    monkeypatch.setattr(nc, "_BRACKET_FACTOR", factor)
    u = torch.randn(3, 50_000, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    lam = 1.5 / math.sqrt(50_000)
    assert torch.allclose(nc.image_threshold(u, lam), F.sqrt_lasso_threshold(u, lam), rtol=1e-11)


def test_image_threshold_matches_cvxpy():
    reference = pytest.importorskip("nelu.reference")
    pytest.importorskip("cvxpy")
    gen = torch.Generator().manual_seed(3)
    u = torch.randn(4, 40, dtype=torch.float64, generator=gen)
    for lam in (0.05, 0.15):
        z = torch.from_numpy(reference.sqrt_lasso(u.numpy(), lam))
        tau = nc.image_threshold(u, lam)
        assert torch.allclose((u - tau).clamp_min(0), z, atol=1e-6)


def test_image_threshold_float32_at_image_scale():
    """10^6 float32 coefficients: the active set of the float64 exact solver, tau to float32 rounding."""
    gen = torch.Generator().manual_seed(4)
    u = torch.randn(1, 1_000_000, generator=gen) * torch.rand(1, 1_000_000, generator=gen)  # mixed scales
    lam = 0.1 / math.sqrt(1_000_000 / 64)
    tau = nc.image_threshold(u, lam)
    ref = F.sqrt_lasso_threshold(u.double(), lam)
    assert tau.dtype == torch.float32
    assert torch.allclose(tau.double(), ref, rtol=1e-6)
    assert int((u.double() > tau.double()).sum()) == int((u.double() > ref).sum())


def test_image_threshold_degenerate_rows():
    u = torch.tensor([[0.0, 0.0, 0.0], [1.0, float("nan"), 2.0], [1.0, float("inf"), 2.0], [-1.0, -2.0, -3.0]])
    tau = nc.image_threshold(u, 0.3)
    ref = F.sqrt_lasso_threshold(u, 0.3)
    assert tau[0, 0] == 0 and torch.isnan(tau[1, 0]) and torch.allclose(tau[2:], ref[2:], equal_nan=True)
    tiny = torch.tensor([[1e-200, 3e-200, -2e-200]], dtype=torch.float64)  # squares underflow in float64
    assert torch.allclose(nc.image_threshold(tiny, 0.3), F.sqrt_lasso_threshold(tiny, 0.3), rtol=1e-12)
    with pytest.raises(ValueError, match="lam"):
        nc.image_threshold(u, 0.0)
    with pytest.raises(ValueError, match=r"\(B, N\)"):
        nc.image_threshold(u[0], 0.3)


def test_global_nelu_without_gradients_uses_the_o_n_threshold(monkeypatch):
    """Evaluation (no gradients): the image threshold, the same codes as the training path."""
    g = GlobalNeLU(0.2)
    u = torch.randn(2, 300, 16, generator=torch.Generator().manual_seed(5))
    with_grad = g(u)
    calls, original = [], nc.image_threshold
    monkeypatch.setattr(nc, "image_threshold", lambda *a, **k: calls.append(1) or original(*a, **k))
    with torch.no_grad():
        without = g(u)
    assert calls == [1] and torch.allclose(without, with_grad, atol=1e-6)


@pytest.mark.parametrize("act", nc.CONV_ACTIVATIONS)
def test_gradients_flow(act):
    g = torch.Generator().manual_seed(7)
    ae = ConvAE(16, 5, act, generator=g)
    y = torch.rand(2, 1, 10, 10, generator=g)
    loss = ((ae(y + 0.1 * torch.randn(y.shape, generator=g)) - y) ** 2).mean()
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in ae.parameters())


def test_config_validation():
    with pytest.raises(ConfigError, match="activation"):
        ConvConfig(activation="gelu").validate()
    with pytest.raises(ConfigError, match="kernel"):
        ConvConfig(kernel=4).validate()
    with pytest.raises(ConfigError, match="sigma"):
        ConvConfig(sigma=-1).validate()
    with pytest.raises(ConfigError, match="crop"):
        ConvConfig(crop=5, kernel=7).validate()


def tiny(**kw) -> ConvConfig:
    base = dict(activation="nelu", m=8, kernel=5, crop=12, steps=6, batch_size=2, pool_size=20, train_images=2,
                checkpoint_every=2)
    base.update(kw)
    return ConvConfig(**base)


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@needs_data
@pytest.mark.parametrize("act", nc.CONV_ACTIVATIONS)
def test_tiny_training_is_deterministic_and_resumable(tmp_path, act):
    cfg = tiny(activation=act)
    full = train_conv(cfg, tmp_path / "full.pt")
    again = train_conv(cfg, tmp_path / "again.pt")
    assert full["complete"] and full["step"] == 6 and _same(full["model"], again["model"])
    other = train_conv(tiny(activation=act, seed=1), tmp_path / "other.pt")
    assert not _same(full["model"], other["model"])
    half = train_conv(cfg, tmp_path / "half.pt", stop_after=3)
    assert half["step"] == 3 and not half["complete"]
    resumed = train_conv(cfg, tmp_path / "half.pt", resume=True)
    assert resumed["complete"] and _same(full["model"], resumed["model"])
    assert [h["train_mse"] for h in full["history"]] == [h["train_mse"] for h in resumed["history"]]
    assert not list(tmp_path.glob(".*.tmp"))
    ae = load_conv_denoiser(tmp_path / "full.pt")
    assert not ae.training
    res = evaluate_images(ae, [torch.rand(16, 14)], [10.0, 30.0], metrics=("psnr",))
    assert all(math.isfinite(v) for s in (10.0, 30.0) for v in res["psnr"][s])


@needs_data
def test_training_reduces_the_loss(tmp_path):
    ck = train_conv(tiny(steps=40, lr=1e-2, m=16, crop=16, batch_size=4, pool_size=50), tmp_path / "t.pt")
    noisy_mse = (25 / 255) ** 2
    assert ck["history"][-1]["train_mse"] < 0.8 * noisy_mse


@needs_data
def test_resume_with_a_different_config_fails(tmp_path):
    train_conv(tiny(), tmp_path / "a.pt", stop_after=2)
    with pytest.raises(CheckpointError, match="differs"):
        train_conv(tiny(lr=1e-2), tmp_path / "a.pt", resume=True)


def test_load_errors(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_conv_checkpoint(tmp_path / "nope.pt")
    torch.save({"format": "nelu-checkpoint", "version": 1}, tmp_path / "patch.pt")
    with pytest.raises(CheckpointError, match="not a convolutional"):
        load_conv_checkpoint(tmp_path / "patch.pt")
    torch.save({"format": "nelu-conv-checkpoint", "version": 1, "config": {"activation": "relu", "m": 8,
                                                                             "kernel": 5},
                "model": {"encoder": torch.zeros(3)}}, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="does not match"):
        load_conv_denoiser(tmp_path / "bad.pt")


@needs_data
def test_reproduce_noise_and_conv_tiny(tmp_path, tiny_profiles):
    """``reproduce noise`` evaluates existing checkpoints under every noise kind; ``reproduce conv`` trains."""
    from nelu.experiments import noise

    quick = ["--profile", "quick", "--out", str(tmp_path)]
    assert cli.main(["reproduce", "noise", *quick]) == 2  # no checkpoints yet
    assert cli.main(["reproduce", "bsd68", *quick]) == 0
    assert cli.main(["reproduce", "noise", *quick]) == 0
    res = json.loads((tmp_path / "noise.json").read_text())
    kinds = {r["noise"] for r in res["summary"]}
    assert kinds == {"gaussian", "laplace", "uniform", "poisson-gaussian", "varying"}
    assert len(res["summary"]) == len(noise.NOISE_MODELS) * 5 * len(noise.NOISE_SIGMAS)
    assert "psnr_band3_mean" in res["summary"][0] and res["meta"]["profile"] == "quick"
    # Gaussian noise gives exactly the numbers of reproduce bsd68 (same models, noise seeds and code).
    bsd = json.loads((tmp_path / "bsd68.json").read_text())
    ref = {(r["model"], r["test_sigma"]): r["psnr"] for r in bsd["summary"]}
    for r in res["summary"]:
        if r["noise"] == "gaussian":
            assert r["psnr"] == ref[(r["model"], r["test_sigma"])]
    assert cli.main(["reproduce", "conv", *quick]) == 0
    conv = json.loads((tmp_path / "conv.json").read_text())
    assert {m["activation"] for m in conv["models"].values()} == set(nc.CONV_ACTIVATIONS)
    assert (tmp_path / "checkpoints" / "conv_nelu_sigma25.pt").is_file()
    assert load_conv_checkpoint(tmp_path / "checkpoints" / "conv_relu_sigma25.pt")["optimizer"] is None
    # A rerun reuses the checkpoints and reproduces every number.
    assert cli.main(["reproduce", "conv", *quick]) == 0
    conv2 = json.loads((tmp_path / "conv.json").read_text())
    assert [r["psnr"] for r in conv2["summary"]] == [r["psnr"] for r in conv["summary"]]
    assert all(m["reused_checkpoint"] for m in conv2["models"].values())


@needs_data
def test_resumed_history_equals_an_uninterrupted_run(tmp_path):
    """Stopped in the middle of a history entry (every 2 steps): the loss sums are checkpointed."""
    cfg = tiny(steps=8, checkpoint_every=1)
    full = train_conv(cfg, tmp_path / "full.pt")
    train_conv(cfg, tmp_path / "half.pt", stop_after=3)
    resumed = train_conv(cfg, tmp_path / "half.pt", resume=True)
    assert [h["step"] for h in full["history"]] == [2, 4, 6, 8]
    assert [h["train_mse"] for h in resumed["history"]] == [h["train_mse"] for h in full["history"]]


@needs_data
def test_hostile_conv_checkpoint_config(tmp_path):
    path = tmp_path / "bad.pt"
    torch.save({"format": nc.CONV_CHECKPOINT_FORMAT, "version": nc.CONV_CHECKPOINT_VERSION,
                "config": {"activation": "nelu", "m": 10**6, "kernel": 7}, "model": {}}, path)
    with pytest.raises(CheckpointError, match="m must be an integer"):
        load_conv_denoiser(path)
