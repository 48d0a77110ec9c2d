"""Tests of nelu.metrics against values computed independently of scikit-image."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nelu.metrics import psnr, psnr_batch, ssim, ssim_batch


def image(seed: int = 0, shape=(48, 40)) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 0.1 + 0.8 * torch.rand(shape, generator=g, dtype=torch.float64)  # in [0.1, 0.9]


@pytest.mark.parametrize("offset", [0.01, 0.05, -0.1])
def test_psnr_of_constant_offset_is_the_formula(offset):
    clean = image()
    assert psnr(clean, clean + offset) == pytest.approx(-20 * math.log10(abs(offset)), abs=1e-9)


def test_psnr_matches_mse_formula_and_accepts_numpy_and_float32():
    clean = image(1)
    g = torch.Generator().manual_seed(2)
    noisy = clean + 0.03 * torch.randn(clean.shape, generator=g, dtype=torch.float64)
    mse = float(((noisy.clamp(0, 1) - clean) ** 2).mean())
    expected = 10 * math.log10(1 / mse)
    assert psnr(clean, noisy) == pytest.approx(expected, abs=1e-9)
    assert psnr(clean.numpy(), noisy.numpy()) == pytest.approx(expected, abs=1e-9)
    assert psnr(clean.float(), noisy.float()) == pytest.approx(expected, abs=1e-4)
    assert psnr(clean[None, None], noisy[None]) == pytest.approx(expected, abs=1e-9)  # (1,1,H,W)


def test_psnr_clips_the_estimate_only():
    zeros, ones = torch.zeros(16, 16), torch.ones(16, 16)
    assert psnr(zeros, zeros - 0.5) == math.inf  # clipped to 0: identical
    assert psnr(ones, ones + 3.0) == math.inf
    assert psnr(zeros, zeros + 2.0) == pytest.approx(0.0, abs=1e-12)  # clipped to 1: MSE 1
    assert psnr(image(), image()) == math.inf


def test_ssim_known_values():
    clean = image(3)
    assert ssim(clean, clean) == pytest.approx(1.0, abs=1e-12)
    # Two constant images: only the luminance term remains, (2 a b + C1) / (a^2 + b^2 + C1).
    a, b, c1 = 0.5, 0.6, (0.01 * 1.0) ** 2
    expected = (2 * a * b + c1) / (a * a + b * b + c1)
    flat_a, flat_b = (torch.full((32, 32), v, dtype=torch.float64) for v in (a, b))
    assert ssim(flat_a, flat_b) == pytest.approx(expected, abs=1e-12)
    # Clipping applies: an estimate of all 1.5 measures as all 1.
    assert ssim(torch.ones(32, 32), torch.full((32, 32), 1.5)) == pytest.approx(1.0, abs=1e-12)


def test_ssim_drops_with_noise():
    clean = image(4, (64, 64))
    g = torch.Generator().manual_seed(5)
    noise = torch.randn(clean.shape, generator=g, dtype=torch.float64)
    values = [ssim(clean, clean + s * noise) for s in (0.01, 0.05, 0.2)]
    assert 1 > values[0] > values[1] > values[2] > -1


def test_batch_helpers_on_tensors_and_lists():
    clean = torch.stack([image(i, (32, 32)) for i in range(3)])[:, None]  # (3, 1, 32, 32)
    est = clean + 0.02
    assert psnr_batch(clean, est) == [psnr(c, e) for c, e in zip(clean, est)]
    assert ssim_batch(clean, est) == [ssim(c[0], e[0]) for c, e in zip(clean, est)]
    assert all(isinstance(v, float) for v in psnr_batch(clean, est) + ssim_batch(clean, est))
    mixed = [image(0, (20, 30)), image(1, (31, 17)).numpy()]  # lists of different sizes
    assert psnr_batch(mixed, [m + 0.1 for m in mixed]) == pytest.approx([20.0, 20.0], abs=1e-9)
    assert ssim_batch(mixed, mixed) == pytest.approx([1.0, 1.0])


def test_metric_input_errors():
    with pytest.raises(ValueError, match="shape"):
        psnr(torch.zeros(8, 8), torch.zeros(8, 9))
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        ssim(torch.zeros(2, 8, 8), torch.zeros(2, 8, 8))
    with pytest.raises(ValueError, match="3 images"):
        psnr_batch(torch.zeros(3, 1, 8, 8), torch.zeros(2, 1, 8, 8))
    assert np.isfinite(psnr(np.zeros((8, 8)), np.full((8, 8), 0.5)))
