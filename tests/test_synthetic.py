"""Tests of nelu.synthetic: the known transform, the sparse signals, deterministic fits."""

from __future__ import annotations

import torch

from nelu.synthetic import SyntheticConfig, dictionary, fit, run_synthetic, sample
from nelu.synthetic import test_mse as mse_on_test_signals


def test_signals_are_k_sparse_and_non_negative_under_the_transform():
    cfg = SyntheticConfig(n=16, k=3)
    D0 = dictionary(cfg)
    torch.testing.assert_close(D0.T @ D0, torch.eye(16), atol=1e-5, rtol=0)
    x = sample(D0, 50, 3, torch.Generator().manual_seed(0))
    s = x @ D0  # the coefficients (D0 orthogonal)
    active = s.abs() > 1e-4
    assert active.sum(1).eq(3).all() and (s[active] >= 1 - 1e-4).all() and (s[active] <= 2 + 1e-4).all()


def test_fit_is_deterministic_and_denoises():
    cfg = SyntheticConfig(n=16, m=32, k=2, steps=150, batch_size=64, test_size=300)
    D0 = dictionary(cfg)
    a, b = fit("nelu", 0.1, D0, cfg), fit("nelu", 0.1, D0, cfg)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    mse = mse_on_test_signals(a, D0, [0.1], cfg)[0.1]
    assert mse < 0.1**2  # better than the noisy input


def test_run_synthetic_gives_the_same_numbers_on_two_workers():
    cfg = SyntheticConfig(n=8, m=16, k=2, steps=30, batch_size=32, test_size=100, sigmas=(0.05, 0.1, 0.2))
    one, two = run_synthetic(cfg, log=lambda msg: None), run_synthetic(cfg, log=lambda msg: None, workers=2)
    assert one["rows"] == two["rows"] and one["learned"] == two["learned"]
    assert [r["sigma"] for r in one["rows"]] == [0.05, 0.1, 0.2]
    assert one["rows"][1]["oracle_relu_mse"] == one["rows"][1]["relu_mse"]  # the ReLU at train_sigma is the oracle
    assert two["timings"]["workers"] == 2
