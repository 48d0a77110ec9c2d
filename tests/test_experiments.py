"""Tests of nelu.experiments: the registry, the shared context, and every experiment's shape."""

from __future__ import annotations

import inspect
import json

import pytest

from nelu.cli import build_parser
from nelu.experiments import ALL, EXPERIMENTS, Context, ExperimentError, get
from nelu.experiments.common import mean, relative_path, std, summary_stats


def test_registry_matches_the_command_line():
    choices = build_parser()._subparsers._group_actions[0].choices["reproduce"]._actions[1].choices
    assert set(choices) == set(EXPERIMENTS) | {"all"}
    assert set(ALL) == set(EXPERIMENTS) - {"baselines"}
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
