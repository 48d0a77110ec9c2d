"""Tests of nelu.train: config checks, determinism, bitwise-exact resume, evaluation."""

from __future__ import annotations

import os
from dataclasses import replace

import pytest
import torch
from conftest import needs_data

from nelu.files import save_torch as save_atomic
from nelu.models import CheckpointError, load_checkpoint, load_denoiser
from nelu.train import TrainConfig, train
from nelu.training import ConfigError, lr_factor

pytestmark = needs_data


def tiny(**kw) -> TrainConfig:
    base = dict(activation="nelu", sigma=25.0, steps=10, patch=4, m=16, batch_size=16, pool_size=400,
                train_images=2, val_images=1, val_every=5, val_stride=4, eval_stride=4, checkpoint_every=3,
                progress=False)
    base.update(kw)
    return TrainConfig(**base)


def _same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("act", ["relu", "nelu"])
def test_resume_is_bitwise_identical(tmp_path, act):
    cfg = tiny(activation=act)
    full = train(cfg, tmp_path / "full.pt")
    half = train(cfg, tmp_path / "half.pt", stop_after=5)
    assert half["step"] == 5 and not half["complete"]
    resumed = train(cfg, tmp_path / "half.pt", resume=True)
    assert resumed["complete"] and resumed["step"] == 10
    assert _same_state(full["model"], resumed["model"])
    assert torch.equal(full["generator"], resumed["generator"])
    assert [h["val_psnr"] for h in full["history"]] == [h["val_psnr"] for h in resumed["history"]]
    # Resuming a finished run is a no-op.
    again = train(cfg, tmp_path / "half.pt", resume=True)
    assert _same_state(again["model"], resumed["model"])


def test_deterministic_given_seed(tmp_path):
    a = train(tiny(sigma=None, sigma_range=(0, 75)), tmp_path / "a.pt")
    b = train(tiny(sigma=None, sigma_range=(0, 75)), tmp_path / "b.pt")
    c = train(tiny(sigma=None, sigma_range=(0, 75), seed=1), tmp_path / "c.pt")
    assert _same_state(a["model"], b["model"])
    assert not _same_state(a["model"], c["model"])
    assert a["history"][-1]["val_psnr"] is not None


def test_warm_start_begins_from_the_given_weights(tmp_path):
    source = train(tiny(activation="relu"), tmp_path / "source.pt")
    warm = tiny(activation="relu", sigma=5.0, init_from=str(tmp_path / "source.pt"))
    one = train(replace(warm, steps=1, val_every=0), tmp_path / "one.pt")
    cold = train(replace(warm, steps=1, val_every=0, init_from=None), tmp_path / "cold.pt")
    moved = max(float((one["model"][k] - source["model"][k]).abs().max()) for k in source["model"])
    assert 0 < moved < 0.05 and not _same_state(one["model"], cold["model"])
    a = train(warm, tmp_path / "a.pt")
    half = train(warm, tmp_path / "b.pt", stop_after=4)
    assert not half["complete"]
    b = train(warm, tmp_path / "b.pt", resume=True)  # resumes from its own checkpoint, not the source
    assert _same_state(a["model"], b["model"]) and a["config"]["init_from"] == str(tmp_path / "source.pt")


@pytest.mark.parametrize("changes, match", [
    (dict(init_from="missing.pt"), "init_from: checkpoint missing.pt does not exist"),
    (dict(init_from="SOURCE", m=8), "another architecture: m 16"),
    (dict(init_from="SOURCE", activation="nelu"), "another architecture: activation 'relu'"),
    (dict(init_from=3), "init_from must be a checkpoint path"),
    (dict(init_from="OUT"), "the run would overwrite the weights it starts from"),
])
def test_warm_start_errors(tmp_path, changes, match):
    train(tiny(activation="relu", steps=2, val_every=0), tmp_path / "source.pt")
    if changes["init_from"] in ("SOURCE", "OUT"):
        changes = {**changes, "init_from": str(tmp_path / ("source.pt" if changes["init_from"] == "SOURCE" else "out.pt"))}
    with pytest.raises(ConfigError, match=match):
        train(tiny(**{"activation": "relu", **changes}), tmp_path / "out.pt")
    assert not (tmp_path / "out.pt").exists()


def test_checkpoint_contents_and_no_temp_files(tmp_path):
    train(tiny(activation="relu"), tmp_path / "r.pt")
    ck = load_checkpoint(tmp_path / "r.pt")
    for key in ("model", "optimizer", "scheduler", "generator", "step", "config", "history", "elapsed_s"):
        assert key in ck
    assert ck["config"]["activation"] == "relu" and ck["step"] == 10
    assert [h["step"] for h in ck["history"]] == [5, 10]
    assert sorted(os.listdir(tmp_path)) == ["r.pt"]
    den = load_denoiser(tmp_path / "r.pt")
    assert den(torch.rand(12, 12)).shape == (12, 12)


def test_resume_rejects_other_config(tmp_path):
    train(tiny(), tmp_path / "x.pt", stop_after=3)
    with pytest.raises(CheckpointError, match="config differs"):
        train(tiny(lr=1e-2), tmp_path / "x.pt", resume=True)
    # Runtime-only fields may differ.
    train(replace(tiny(), threads=2), tmp_path / "x.pt", resume=True)


@pytest.mark.parametrize(
    "changes, match",
    [
        (dict(activation="gelu"), "unknown activation"),
        (dict(sigma=-1.0), r"sigma \(0-255 scale\) must be a finite number >= 0"),
        (dict(sigma=None, sigma_range=(50, 10)), "sigma range"),
        (dict(sigma_range=(0, 10)), "exactly one"),
        (dict(m=1), "m must be"),
        (dict(eval_stride=9), r"eval_stride must be an integer in \[1, \d+\]"),
    ],
)
def test_config_errors(changes, match):
    with pytest.raises(ConfigError, match=match):
        tiny(**changes).validate()


def test_lr_schedule():
    assert lr_factor(0, 100, 0.1, 0.0) == pytest.approx(0.1)
    assert lr_factor(9, 100, 0.1, 0.0) == pytest.approx(1.0)
    assert lr_factor(10, 100, 0.1, 0.0) == pytest.approx(1.0)
    assert lr_factor(100, 100, 0.1, 0.02) == pytest.approx(0.02)
    assert lr_factor(0, 100, 0.0, 0.0) == pytest.approx(1.0)


def test_save_atomic_leaves_old_file_on_failure(tmp_path):
    save_atomic({"a": 1}, tmp_path / "c.pt")

    class Bad:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        save_atomic({"a": Bad()}, tmp_path / "c.pt")
    assert torch.load(tmp_path / "c.pt") == {"a": 1}
    assert os.listdir(tmp_path) == ["c.pt"]


@pytest.mark.parametrize("stop", [3, 7])
def test_resumed_history_equals_an_uninterrupted_run(tmp_path, stop):
    """Interrupted between two history entries: the running loss sums are checkpointed too."""
    cfg = tiny(checkpoint_every=1)
    full = train(cfg, tmp_path / "full.pt")
    train(cfg, tmp_path / "half.pt", stop_after=stop)
    resumed = train(cfg, tmp_path / "half.pt", resume=True)

    def timeless(history):
        return [{k: v for k, v in h.items() if k != "time_s"} for h in history]

    assert timeless(resumed["history"]) == timeless(full["history"])
    assert [h["step"] for h in full["history"]] == [5, 10]


def test_checkpoints_store_a_plain_version_string(tmp_path):
    ck = train(tiny(steps=2), tmp_path / "a.pt")
    assert type(ck["torch_version"]) is str
    assert type(load_checkpoint(tmp_path / "a.pt")["torch_version"]) is str


def test_non_finite_weights_stop_training_before_they_are_saved(tmp_path):
    from nelu.training import TrainingDiverged, fit

    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=1e30)  # the first step sends the weights to inf

    def batch(gen):
        x = torch.randn(4, 2, generator=gen) * 1e10
        return x, -x

    with pytest.raises(TrainingDiverged, match="not finite|the loss is"):
        fit(model, opt, batch, torch.Generator().manual_seed(0), steps=5, out=tmp_path / "x.pt", checkpoint_every=1)
    assert not (tmp_path / "x.pt").exists()


def test_memory_is_checked_before_allocation():
    with pytest.raises(ConfigError, match="GiB of memory"):
        tiny(pool_size=10**9 - 1, patch=32, eval_stride=4, val_stride=4).validate()
