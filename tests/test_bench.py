"""nelu.bench runs end to end at a tiny size (it measures; nothing here checks timings)."""

import json

import pytest

from nelu import bench


def test_bench_runs_and_reports_errors(tmp_path, capsys):
    out = tmp_path / "bench.json"
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- bench:start -->\nold\n<!-- bench:end -->\nrest\n")
    args = ["--batch", "64", "--m", "16", "--repeats", "1", "--cvxpy-rows", "4", "--json", str(out), "--readme", str(readme)]
    assert bench.main(args) == 0
    res = json.loads(out.read_text())
    errors = {r["method"]: r["max_error_vs_cvxpy"] for r in res["activations"]}
    assert errors["NeLU exact"] < 1e-6
    assert errors["NeLU unrolled, 100 it."] < errors["NeLU unrolled, 10 it."]
    text = readme.read_text()
    assert "old" not in text and "| NeLU exact |" in text and text.startswith("intro") and text.endswith("rest\n")
    assert "| NeLU exact |" in capsys.readouterr().out


def test_bench_rejects_bad_sizes():
    with pytest.raises(SystemExit):
        bench.main(["--cvxpy-rows", "0"])
