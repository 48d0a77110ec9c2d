"""The setup check ``python -m nelu.check``: fast, and a failure says what to fix."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from conftest import needs_data

from nelu import check
from nelu.data import registry

ROOT = Path(__file__).resolve().parents[1]
LIMIT_S = 90  # the budget on a laptop CPU; it takes about ten seconds


@needs_data
def test_the_command_passes_quickly_on_a_ready_machine():
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "nelu.check"], cwd=ROOT, capture_output=True, text=True,
                          timeout=LIMIT_S, check=False)
    took = time.perf_counter() - start
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    for name in ("python", "torch", "packages", "data", "training"):
        assert any(line.startswith("ok") and line.split()[1] == name for line in lines), proc.stdout
    assert "FAIL" not in proc.stdout and "all 5 checks passed" in lines[-1]
    assert took < LIMIT_S


def test_a_missing_data_folder_is_reported_with_its_fix(tmp_path, monkeypatch, capsys):
    missing = tmp_path / "no-such-folder"
    monkeypatch.setenv("NELU_DATA", str(missing))
    fast = (check.check_python, check.check_data)  # the training run is tested above
    items = check.run(fast)
    assert [item.ok for item in items] == [True, False]
    out = capsys.readouterr().out.splitlines()
    assert out[1] == f"FAIL  data      the data folder {missing} (from NELU_DATA) does not exist"
    assert out[2].startswith("      fix: set NELU_DATA to the folder that holds BSD68/")
    monkeypatch.setattr(check, "CHECKS", fast)
    assert check.main([]) == 1
    assert "1 of 2 checks failed (data;" in capsys.readouterr().out


def test_missing_and_corrupt_files_are_counted(tmp_path):
    first, second = sorted(registry())[:2]
    (tmp_path / second).parent.mkdir(parents=True)
    (tmp_path / second).write_bytes(b"not an image")
    item = check.check_data(tmp_path)
    assert not item.ok
    assert f"{len(registry()) - 1} of {len(registry())} files missing (first: {first})" in item.detail
    assert f"1 corrupt, their SHA-256 is not the registry's (first: {second})" in item.detail
    assert item.fix.startswith("delete the corrupt files, then run python -c")


@needs_data
def test_the_shared_data_folder_passes():
    item = check.check_data(Path(os.environ["NELU_DATA"]))
    assert item.ok, item.detail


def test_a_check_that_raises_is_a_failed_item(capsys):
    def check_broken():
        raise ImportError("libtorch.so: cannot open shared object file")

    [item] = check.run((check_broken,))
    assert (item.name, item.ok) == ("broken", False)
    assert item.detail == "ImportError: libtorch.so: cannot open shared object file"
    assert capsys.readouterr().out.splitlines()[1].startswith("      fix: pip install -r requirements.txt")


def test_an_untrained_model_fails_the_training_check(monkeypatch):
    monkeypatch.setattr(check, "TRAINING_MAX_RATIO", 0.01)  # no model gets there in a few steps
    item = check.check_training(check.SyntheticConfig(steps=2, test_size=100))
    assert not item.ok and "each must be below 0.01" in item.detail and "reinstall torch" in item.fix
