"""nelu.bench runs end to end at a tiny size (it measures; nothing here checks timings)."""

import json

import pytest
import torch
from conftest import needs_data

from nelu import bench
from nelu.results import load_bench


@needs_data
def test_bench_runs_and_reports_errors(tmp_path, capsys):
    out = tmp_path / "bench.json"
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- bench:start -->\nold\n<!-- bench:end -->\nrest\n")
    args = ["--batch", "64", "--m", "16", "--repeats", "1", "--cvxpy-rows", "4", "--train-steps", "3", "--rounds", "2",
            "--json", str(out), "--readme", str(readme)]
    assert bench.main(args) == 0
    res = json.loads(out.read_text())
    errors = {r["method"]: r["max_error_vs_cvxpy"] for r in res["activations"]}
    assert errors["NeLU exact"] < 1e-6
    assert errors["NeLU unrolled, 100 it."] < errors["NeLU unrolled, 10 it."]
    compiled = next(e for method, e in errors.items() if method.startswith("cvxpy compiled once"))
    assert compiled < 1e-3  # Clarabel's default tolerances: close, not exact
    assert errors["NeLU numba"] < 1e-6
    b = load_bench(out)  # the reader understands every new field
    assert set(b.train_step_no_optimizer_ms) == {"ReLU", "NeLU exact", "NeLU numba"}
    assert {r["method"] for r in b.trained["activations"]} == {"ReLU", "NeLU exact", "NeLU numba"}
    assert b.train_step_ratio_numba_over_relu > 0 and b.speedup_numba_vs_cvxpy_compiled > 0
    e2e = b.end_to_end
    assert e2e["train_config"]["steps"] == 3 and e2e["rounds"] == 2
    for kind in ("train", "eval"):  # the ratio is the median of the rounds' ratios, and every round is kept
        rounds = e2e[f"{kind}_rounds_s"]
        assert all(len(t) == 2 for t in rounds.values()) and set(rounds) == {"ReLU", "NeLU exact", "NeLU numba"}
        for name in ("NeLU exact", "NeLU numba"):
            ratios = sorted(n / r for n, r in zip(rounds[name], rounds["ReLU"]))
            assert e2e[f"{kind}_ratios"][name] == pytest.approx(sum(ratios) / 2)
        assert e2e[f"{kind}_ratio"] == e2e[f"{kind}_ratios"]["NeLU exact"]
    assert (b.cuda is None) == (not torch.cuda.is_available())
    text = readme.read_text()
    assert "old" not in text and "| NeLU exact |" in text and "| NeLU numba |" in text
    assert text.startswith("intro") and text.endswith("rest\n")
    assert "| NeLU exact |" in capsys.readouterr().out


def test_bench_rejects_bad_sizes():
    with pytest.raises(SystemExit):
        bench.main(["--cvxpy-rows", "0"])


def test_bench_without_checkpoints_skips_the_trained_rows_with_a_note(tmp_path):
    res = bench.run(batch=8, m=8, repeats=1, cvxpy_rows=2, train_steps=0, results=tmp_path)
    assert res["trained"] is None and res["end_to_end"] is None
    assert any("skipped" in note for note in res["notes"])
    assert "Note: trained and end-to-end rows skipped" in bench.to_markdown(res)


@needs_data
def test_trained_rows_time_each_backend_whatever_the_checkpoint_records():
    from nelu.results import results_dir

    models, noisy, _ = bench._trained_setup(results_dir(None), 8)
    assert {name: m.activation.backend for name, m in models.items() if name != "ReLU"} == bench.NELU_ROWS
    assert noisy.shape == (8, 64)
