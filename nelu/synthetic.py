"""Synthetic experiment: signals that are exactly sparse under a known transform.

Model: ``x = D0 s`` with ``D0`` a fixed random orthogonal ``n x n`` matrix and
``s`` non-negative with ``k`` non-zeros at random positions, each uniform in
``[1, 2]``; ``y = x + v``, ``v ~ N(0, sigma^2 I)`` (``sigma`` per entry, on the
scale of ``x``). The ideal non-negative lasso auto-encoder is ``W = [D0^T; -D0^T]``
(any code size ``m >= n`` with paired atoms), which training must find.

ReLU (learned per-unit bias) and NeLU (learned pivotal ``lam``) auto-encoders of
code size ``m`` (no DC removal) are trained at one ``sigma`` and tested on a grid
of ``sigma``; a sigma-matched ReLU "oracle" is trained at each test ``sigma``.
Reported: mean squared error per entry, ``mean((x_hat - x)^2)``, on fixed test
signals (seeded), next to the noisy input's ``sigma^2``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch

from . import training
from .evaluation import parallel_map
from .models import SparseAE, make_activation
from .training import torch_settings

__all__ = ["SyntheticConfig", "make_dictionary", "dictionary", "sample", "fit", "run_synthetic"]


@dataclass
class SyntheticConfig:
    n: int = 32
    m: int = 64
    k: int = 3
    train_sigma: float = 0.1
    sigmas: tuple[float, ...] = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5)
    steps: int = 6000
    batch_size: int = 256
    lr: float = 1e-2
    nelu_lam: float = 0.1  # initial; universal_lam(64) = 0.36 zeroes every code at init (no gradient)
    test_size: int = 10000
    seed: int = 0
    threads: int = 1
    backend: str = "torch"  # the exact NeLU's implementation: "torch" or "numba" (CPU)


def make_dictionary(n: int, seed: int) -> torch.Tensor:
    """The known orthogonal transform ``D0`` (n x n), fixed by ``seed``."""
    g = torch.Generator().manual_seed(seed)
    return torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))[0].float()


def dictionary(cfg: SyntheticConfig) -> torch.Tensor:
    """The basis ``D0`` that :func:`run_synthetic` uses for ``cfg``."""
    return make_dictionary(cfg.n, cfg.seed + 7)


def sample(D0: torch.Tensor, count: int, k: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` clean signals ``D0 s`` (rows), ``s >= 0`` with ``k`` non-zeros in ``[1, 2]``."""
    n = D0.shape[1]
    keys = torch.rand(count, n, generator=generator)
    support = keys.argsort(dim=1)[:, :k]
    values = 1.0 + torch.rand(count, k, generator=generator)
    s = torch.zeros(count, n).scatter(1, support, values)
    return s @ D0.T


def fit(activation: str, sigma: float, D0: torch.Tensor, cfg: SyntheticConfig) -> SparseAE:
    """Train one auto-encoder at noise level ``sigma`` (deterministic given ``cfg.seed``)."""
    g_init = torch.Generator().manual_seed(cfg.seed)
    act = make_activation(activation, cfg.m, lam=cfg.nelu_lam, backend=cfg.backend)
    model = SparseAE(cfg.n, cfg.m, act, remove_dc=False, generator=g_init)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)

    def batch(gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        x = sample(D0, cfg.batch_size, cfg.k, gen)
        return x + sigma * torch.randn(x.shape, generator=gen), x

    training.fit(model, opt, batch, torch.Generator().manual_seed(cfg.seed + 1), steps=cfg.steps, warmup=0.05,
                 min_lr_factor=0.02)
    return model.eval()


@torch.no_grad()
def test_mse(model: SparseAE, D0: torch.Tensor, sigmas, cfg: SyntheticConfig) -> dict[float, float]:
    """MSE per entry at each sigma on fixed test signals (same signals and noise for every model)."""
    gen = torch.Generator().manual_seed(cfg.seed + 12345)
    x = sample(D0, cfg.test_size, cfg.k, gen)
    unit = torch.randn(x.shape, generator=gen)
    return {float(s): float(torch.mean((model(x + s * unit) - x) ** 2)) for s in sigmas}


def _fit_and_test(job: tuple[str, float, tuple[float, ...], SyntheticConfig]) -> dict:
    """Train one model (``activation`` at ``sigma``) and test it at ``test_sigmas``; picklable results."""
    activation, sigma, test_sigmas, cfg = job
    t = time.perf_counter()
    with torch_settings(cfg.threads):
        D0 = dictionary(cfg)
        model = fit(activation, sigma, D0, cfg)
        mse = test_mse(model, D0, test_sigmas, cfg)
        act = model.activation
        learned = float(act.lam.detach()) if activation == "nelu" else float(act.threshold.detach().mean())
    return {"mse": mse, "learned": learned, "seconds": time.perf_counter() - t}


def run_synthetic(cfg: SyntheticConfig, log=print, workers: int = 1) -> dict:
    """Train ReLU and NeLU at ``train_sigma`` plus a ReLU oracle per test sigma; return the tables.

    The fits are independent runs on ``cfg.threads`` threads each; ``workers > 1`` spreads
    them over that many processes (:func:`nelu.evaluation.parallel_map`), with every number
    bitwise what one process computes. Timings: the seconds of each fit and its test, in its process
    (``oracles_train_s``: their sum for the oracles) and the wall time ``total_s``.
    """
    t0 = time.perf_counter()
    sigmas = tuple(float(s) for s in cfg.sigmas)
    oracle_sigmas = [s for s in sigmas if s != cfg.train_sigma]  # the ReLU at train_sigma is that oracle
    jobs = [("relu", cfg.train_sigma, sigmas, cfg), ("nelu", cfg.train_sigma, sigmas, cfg)]
    jobs += [("relu", s, (s,), cfg) for s in oracle_sigmas]
    results = parallel_map(_fit_and_test, jobs, workers)
    main, oracles = dict(zip(("relu", "nelu"), results[:2])), dict(zip(oracle_sigmas, results[2:]))
    timings = {f"{act}_train_s": main[act]["seconds"] for act in main}
    for act in main:
        log(f"synthetic: trained {act} at sigma={cfg.train_sigma} in {timings[f'{act}_train_s']:.1f}s")
    timings["oracles_train_s"] = sum(r["seconds"] for r in oracles.values())
    oracle = {s: oracles[s]["mse"][s] if s in oracles else main["relu"]["mse"][s] for s in sigmas}
    rows = [{"sigma": s, "noisy_mse": s * s, "relu_mse": main["relu"]["mse"][s], "nelu_mse": main["nelu"]["mse"][s],
             "oracle_relu_mse": oracle[s]} for s in sigmas]
    learned = {"nelu_lam": main["nelu"]["learned"], "relu_threshold_mean": main["relu"]["learned"]}
    timings["workers"] = workers
    timings["total_s"] = time.perf_counter() - t0
    return {"config": asdict(cfg), "rows": rows, "learned": learned, "timings": timings}
