"""Tests of nelu.experiments: the registry, the shared context, and every experiment's shape."""

from __future__ import annotations

import inspect
import json

import pytest
from conftest import needs_data

from nelu.cli import build_parser
from nelu.experiments import ALL, EXPERIMENTS, Context, ExperimentError, get
from nelu.experiments.common import TEST_SIGMAS, mean, relative_path, std, summary_stats


def test_registry_matches_the_command_line():
    choices = build_parser()._subparsers._group_actions[0].choices["reproduce"]._actions[1].choices
    assert set(choices) == set(EXPERIMENTS) | {"all"}
    assert set(ALL) == set(EXPERIMENTS) - {"baselines", "universal"}
    with pytest.raises(ExperimentError, match="unknown experiment"):
        get("everything")


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_every_experiment_has_profiles_and_run(name):
    module = EXPERIMENTS[name]
    assert {"full", "quick"} <= set(module.PROFILES)
    assert list(inspect.signature(module.run).parameters) == ["ctx"]


def test_context_writes_atomically_with_provenance(tmp_path):
    ctx = Context(profile="quick", out=tmp_path, argv=["reproduce", "bsd68"], seed=3)
    path = ctx.write_json("r.json", {"meta": ctx.meta(extra=1), "x": [1.5]})
    data = json.loads(path.read_text())
    assert data["meta"]["command"] == "python -m nelu reproduce bsd68" and data["meta"]["extra"] == 1
    assert {"git_commit", "torch", "python", "date_utc"} <= set(data["meta"])
    ctx.write_csv("r.csv", [{"a": 1, "b": 2}])
    assert (tmp_path / "r.csv").read_text().splitlines() == ["a,b", "1,2"]
    assert ctx.checkpoint_dir == tmp_path / "checkpoints"
    assert relative_path(tmp_path / "checkpoints" / "x.pt", tmp_path) == "checkpoints/x.pt"
    assert relative_path(tmp_path.parent / "y.pt", tmp_path) == str(tmp_path.parent / "y.pt")


def test_summaries():
    res = {"noisy_psnr": {5.0: [1.0, 3.0]}, "psnr": {5.0: [2.0, 4.0]}}
    assert summary_stats(res, 5.0, ("psnr",)) == {"noisy_psnr_mean": 2.0, "psnr_mean": 3.0,
                                                  "psnr_std": pytest.approx(2**0.5)}
    assert std([1.0]) == 0.0 and mean([]) != mean([])  # nan


@needs_data
def test_universal_study_tiny(tmp_path, tiny_profiles, monkeypatch, capsys):
    from nelu.cli import main
    from nelu.experiments import universal
    from nelu.models import load_denoiser
    from nelu.results import load_universal

    monkeypatch.setitem(universal.PROFILES, "quick", {
        "train": dict(patch=4, m=8, steps=3, batch_size=8, lr=2e-3, nelu_lam=0.05, pool_size=100, train_images=1,
                      val_images=1, val_every=0, val_stride=4, eval_stride=4),
        "images": 1, "lever_images": 1})
    quick = ["--profile", "quick", "--out", str(tmp_path)]
    assert main(["reproduce", "universal", *quick]) == 2  # the oracles come from reproduce bsd68
    assert "reproduce bsd68" in capsys.readouterr().err
    assert main(["reproduce", "bsd68", *quick]) == 0
    assert main(["reproduce", "universal", *quick]) == 0
    res = json.loads((tmp_path / "universal.json").read_text())
    assert {m["role"] for m in res["models"].values()} == {"lever", "recommended", "same-recipe", "fixed", "oracle-warm"}
    warm = res["models"]["oracle_warm_sigma5"]["train_config"]
    assert warm["init_from"].endswith("relu_sigma25.pt") and warm["sigma"] == 5.0 and warm["activation"] == "relu"
    assert "oracle_warm_sigma25" not in res["models"]  # the level the warm starts come from
    assert res["models"]["lever_signed"]["train_config"]["activation"] == "snelu"
    assert res["models"]["lever_steps_x3"]["steps"] == 3 * res["models"]["lever_baseline"]["steps"]
    rec = res["models"]["universal_nelu"]
    assert rec["train_config"]["activation"] == "wnelu" and rec["train_config"]["gate"]
    assert {"lam_median", "gate_a", "gate_b"} <= set(rec["learned"])
    assert [c["sigma"] for c in rec["code_stats"]] == list(TEST_SIGMAS) and rec["code_stats"][0]["k_mean"] >= 0
    assert res["models"]["universal_nelu_sigma25"]["train_config"]["sigma"] == 25.0
    assert res["models"]["universal_relu"]["train_config"]["activation"] == "relu"
    by_model = {}
    for r in res["summary"]:
        by_model.setdefault(r["model"], []).append(r["test_sigma"])
    assert by_model["universal_nelu"] == list(TEST_SIGMAS) and by_model["lever_gate"] == list(universal.LEVER_SIGMAS)
    assert by_model["oracle_sigma5"] == [5.0] and by_model["oracle_warm_sigma5"] == [5.0]
    assert by_model["universal_nelu@stride1"] == list(universal.LEVER_SIGMAS)
    assert by_model["oracle_warm_sigma5_levers@stride1"] == [5.0] and by_model["oracle_sigma25_levers@stride1"] == [25.0]
    uni = load_universal(tmp_path)
    for s in TEST_SIGMAS:  # the ceiling is the better of the two oracles
        assert uni.oracle(s) == max(uni.oracle(s, kind="scratch"), uni.oracle(s, kind="warm") if s != 25 else -1)
    assert uni.oracle(5.0, stride=1) == max(uni.oracle(5.0, stride=1, kind=k) for k in ("scratch", "warm"))
    assert uni.mean_on("universal_nelu", 5.0) == uni.reported("universal_nelu", 5.0)  # one image: lever images = images[:1]
    den = load_denoiser(tmp_path / "checkpoints" / "universal_nelu.pt")  # the committed-checkpoint contract
    assert den.ae.gate and den.ae.activation.pivotal
    assert main(["reproduce", "universal", *quick]) == 0  # reuses every checkpoint, same numbers
    again = json.loads((tmp_path / "universal.json").read_text())
    assert [r["psnr_mean"] for r in again["summary"]] == [r["psnr_mean"] for r in res["summary"]]
    assert all(m["reused_checkpoint"] for m in again["models"].values())
