"""The drift check of the weekly reproduction (``nelu.experiments.drift``) on the committed results."""

from __future__ import annotations

import csv
import math
import shutil
from pathlib import Path

import pytest

from nelu.experiments.drift import TABLES, compare, main

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"


@pytest.fixture
def fresh(tmp_path: Path) -> Path:
    """A copy of the committed results CSVs, to perturb."""
    for table in TABLES:
        if (RESULTS / table.file).is_file():
            shutil.copy(RESULTS / table.file, tmp_path / table.file)
    return tmp_path


def edit(folder: Path, file: str, row: int, column: str, change) -> None:
    """Apply ``change`` to one value (data row ``row``, 0-based) of a CSV."""
    path = folder / file
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    rows[row][column] = repr(change(float(rows[row][column])))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def drop_row(folder: Path, file: str, row: int) -> None:
    path = folder / file
    lines = path.read_text().splitlines(keepends=True)
    del lines[row + 1]
    path.write_text("".join(lines))


def test_committed_results_agree_with_themselves(capsys):
    assert compare(RESULTS, RESULTS) == []
    assert main([str(RESULTS), "--reference", str(RESULTS)]) == 0
    assert "results agree" in capsys.readouterr().out


def test_psnr_drift_above_tolerance_fails_loudly(fresh: Path, capsys):
    edit(fresh, "bsd68.csv", 7, "psnr", lambda v: v + 0.02)
    drifts = compare(RESULTS, fresh)
    assert [(d.file, d.column) for d in drifts] == [("bsd68.csv", "psnr")]
    assert math.isclose(drifts[0].diff, 0.02, rel_tol=1e-6)
    assert main([str(fresh), "--reference", str(RESULTS)]) == 1
    err = capsys.readouterr().err
    assert "RESULTS DRIFTED" in err and "bsd68.csv" in err and "psnr" in err


def test_psnr_change_within_tolerance_passes(fresh: Path):
    edit(fresh, "bsd68.csv", 7, "psnr", lambda v: v + 0.005)
    edit(fresh, "bsd68_summary.csv", 3, "psnr_mean", lambda v: v - 0.009)
    edit(fresh, "bsd68.csv", 9, "ssim", lambda v: v + 5e-4)
    assert compare(RESULTS, fresh) == []


def test_synthetic_mse_is_compared_in_decibels(fresh: Path):
    edit(fresh, "synthetic.csv", 2, "nelu_mse", lambda v: v * 10 ** (0.005 / 10))
    assert compare(RESULTS, fresh) == []
    edit(fresh, "synthetic.csv", 2, "nelu_mse", lambda v: v * 10 ** (0.02 / 10))
    (drift,) = compare(RESULTS, fresh)
    assert drift.file == "synthetic.csv" and drift.column == "nelu_mse"
    assert math.isclose(drift.diff, 0.025, rel_tol=1e-3)


def test_missing_rows_and_files_are_errors(fresh: Path, tmp_path: Path):
    drop_row(fresh, "bsd68_summary.csv", 0)
    drifts = compare(RESULTS, fresh)
    assert len(drifts) == 1 and "missing from the fresh run" in drifts[0].column
    (fresh / "synthetic.csv").unlink()
    assert main([str(fresh), "--reference", str(RESULTS)]) == 2


def test_committed_results_are_complete():
    """Every model of the full profile is evaluated at every test noise level (oracles at their own)."""
    from nelu.experiments.bsd68 import model_specs
    from nelu.experiments.common import TEST_SIGMAS

    with open(RESULTS / "bsd68_summary.csv", newline="") as f:
        rows = {(r["model"], float(r["test_sigma"])): r for r in csv.DictReader(f)}
    expected = {
        (spec["name"], s)
        for spec in model_specs()
        for s in ([spec["sigma"]] if spec["role"] == "oracle" else TEST_SIGMAS)
    }
    assert set(rows) == expected
    assert {int(r["n_images"]) for r in rows.values()} == {68}


def test_optional_tables_are_compared_once_committed(tmp_path: Path):
    """noise.csv / conv.csv: skipped while not committed; once committed, a fresh run must have them."""
    ref, new = tmp_path / "ref", tmp_path / "new"
    for folder in (ref, new):
        folder.mkdir()
        for table in TABLES:
            if not table.optional:
                shutil.copy(RESULTS / table.file, folder / table.file)
    assert compare(ref, new) == []
    header = "model,activation,noise,test_sigma,image,noisy_psnr,psnr\n"
    (ref / "conv.csv").write_text(header + "conv_nelu,nelu,gaussian,25.0,test001.png,20.1,28.5\n")
    assert main([str(new), "--reference", str(ref)]) == 2  # committed but not produced
    (new / "conv.csv").write_text(header + "conv_nelu,nelu,gaussian,25,test001.png,20.1,28.52\n")
    (drift,) = compare(ref, new)
    assert (drift.file, drift.key, drift.column) == ("conv.csv", ("conv_nelu", "gaussian", "25", "test001.png"), "psnr")
