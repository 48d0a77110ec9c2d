"""Tests of nelu.training, the one training engine, on a toy model (no data needed)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from nelu.files import FileSafetyError, load_torch, lock, save_torch
from nelu.models import CheckpointError
from nelu.training import (
    ConfigError,
    TrainingDiverged,
    check_device,
    config_matches,
    fit,
    lr_factor,
    open_run,
    strip_optimizer,
    train_or_reuse,
)


@dataclasses.dataclass
class ToyConfig:
    steps: int = 12
    lr: float = 0.05
    seed: int = 0
    threads: int = 1  # a runtime field: free to differ on resume and reuse


def _load(path):
    try:
        ck = load_torch(path)
    except Exception:
        raise CheckpointError(f"cannot read {path}") from None
    if not isinstance(ck, dict) or ck.get("format") != "toy":
        raise CheckpointError(f"{path} is not a toy checkpoint")
    return ck


def toy_train(cfg: ToyConfig, out, resume: bool = False, *, stop_after=None):
    """A denoiser of 4-vectors: the smallest caller of fit (model, optimizer, batch function)."""
    with open_run(out, cfg, _load, resume) as ckpt:
        if ckpt is not None and ckpt.get("complete"):
            return ckpt
        torch.manual_seed(cfg.seed)
        model = torch.nn.Linear(4, 4)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)

        def batch(gen):
            x = torch.randn(8, 4, generator=gen)
            return x + 0.3 * torch.randn(8, 4, generator=gen), x

        return fit(model, opt, batch, torch.Generator().manual_seed(cfg.seed + 1), steps=cfg.steps, log_every=5,
                   describe=lambda: {"weight_norm": float(model.weight.detach().norm())}, out=out,
                   header={"format": "toy", "config": dataclasses.asdict(cfg)}, checkpoint_every=2,
                   resume=ckpt, stop_after=stop_after)


def _timeless(history):
    return [{k: v for k, v in h.items() if k != "time_s"} for h in history]


@pytest.mark.parametrize("stop", [1, 4, 7, 11])
def test_resume_is_bitwise_identical_history_included(tmp_path, stop):
    full = toy_train(ToyConfig(), tmp_path / "full.pt")
    half = toy_train(ToyConfig(), tmp_path / "half.pt", stop_after=stop)
    assert half["step"] == stop and not half["complete"]
    resumed = toy_train(ToyConfig(threads=2), tmp_path / "half.pt", resume=True)
    assert resumed["complete"] and resumed["step"] == 12
    assert all(torch.equal(full["model"][k], resumed["model"][k]) for k in full["model"])
    assert _timeless(resumed["history"]) == _timeless(full["history"])
    assert [h["step"] for h in full["history"]] == [5, 10, 12] and "weight_norm" in full["history"][0]


def test_deterministic_and_the_loss_goes_down(tmp_path):
    a = toy_train(ToyConfig(steps=60), tmp_path / "a.pt")
    b = toy_train(ToyConfig(steps=60), tmp_path / "b.pt")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert a["history"][-1]["train_mse"] < a["history"][0]["train_mse"]
    c = toy_train(ToyConfig(steps=60, seed=1), tmp_path / "c.pt")
    assert not torch.equal(a["model"]["weight"], c["model"]["weight"])


def test_resume_refuses_another_config(tmp_path):
    toy_train(ToyConfig(), tmp_path / "x.pt", stop_after=3)
    with pytest.raises(CheckpointError, match="config differs .*lr"):
        toy_train(ToyConfig(lr=0.1), tmp_path / "x.pt", resume=True)


def test_open_run_refuses_other_files_and_a_second_run(tmp_path):
    (tmp_path / "notes.pt").write_text("mine")
    with pytest.raises(FileSafetyError, match="not a checkpoint of this kind"):
        toy_train(ToyConfig(), tmp_path / "notes.pt")
    assert (tmp_path / "notes.pt").read_text() == "mine"
    with lock(tmp_path / "busy.pt", "training run"):
        with pytest.raises(FileSafetyError, match="another training run"):
            toy_train(ToyConfig(), tmp_path / "busy.pt")


def test_train_or_reuse_and_strip_optimizer(tmp_path):
    path = tmp_path / "r.pt"
    ck, reused = train_or_reuse(ToyConfig(), path, False, _load, toy_train)
    assert not reused and ck["complete"]
    again, reused = train_or_reuse(ToyConfig(threads=4), path, False, _load, toy_train)
    assert reused and again["optimizer"] is None  # stripped after training; runtime fields may differ
    _, reused = train_or_reuse(ToyConfig(), path, True, _load, toy_train)
    assert not reused  # fresh
    _, reused = train_or_reuse(ToyConfig(lr=0.01), path, False, _load, toy_train)
    assert not reused  # another config
    toy_train(ToyConfig(), tmp_path / "half.pt", stop_after=2)
    with pytest.raises(CheckpointError, match="not a finished run"):
        strip_optimizer(tmp_path / "half.pt", _load)


def test_divergence_stops_before_saving(tmp_path):
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=1e30)

    def batch(gen):
        x = torch.randn(4, 2, generator=gen) * 1e10
        return x, -x

    with pytest.raises(TrainingDiverged):
        fit(model, opt, batch, torch.Generator().manual_seed(0), steps=5, out=tmp_path / "x.pt", checkpoint_every=1)
    assert not (tmp_path / "x.pt").exists()


def test_config_matches_ignores_runtime_fields_only():
    assert config_matches(dataclasses.asdict(ToyConfig(threads=3)), ToyConfig())
    assert not config_matches(dataclasses.asdict(ToyConfig(lr=1.0)), ToyConfig())
    assert config_matches({"steps": 12}, ToyConfig())  # fields added later count as their defaults
    assert not config_matches({"steps": 12, "lr": 0.05, "seed": 0, "width": 3}, ToyConfig())  # an unknown field
    assert not config_matches([1, 2], ToyConfig())


def test_lr_schedule_and_device_checks():
    f = [lr_factor(s, 100, 0.1, 0.02) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0) and f[-1] == pytest.approx(0.02, abs=1e-3)
    assert all(a >= b for a, b in zip(f[10:], f[11:]))
    assert check_device("cpu") == "cpu"
    for bad in ("meta", "nonsense", "cuda:99"):
        with pytest.raises(ConfigError):
            check_device(bad)


def test_a_finished_checkpoint_is_returned_as_is(tmp_path):
    path = tmp_path / "f.pt"
    first = toy_train(ToyConfig(), path)
    save_torch({**first, "history": first["history"] + [{"note": 1}]}, path)
    assert toy_train(ToyConfig(), path, resume=True)["history"][-1] == {"note": 1}
