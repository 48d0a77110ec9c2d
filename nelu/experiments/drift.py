"""Compare a fresh reproduction with the committed results; exit 1 when they drift.

The weekly workflow ``.github/workflows/reproduce.yml`` reruns::

    python -m nelu reproduce all --profile full --out FRESH

into a temporary folder, then runs::

    python -m nelu.experiments.drift FRESH      # reference: results/ of the current folder

What is compared (every row must be present in both, with the same keys):

* ``bsd68.csv``: per model, test noise level and image, the PSNR of the denoised image and
  of the noisy input (the latter checks the noise draw) to ``--tol-db`` (0.01 dB), and the
  SSIM to ``--tol-ssim`` (0.001);
* ``bsd68_summary.csv``: the mean PSNR per model and noise level, to ``--tol-db``;
* ``synthetic.csv``: every MSE column, in decibels (``10 log10 mse``), to ``--tol-db``;
* ``noise.csv`` and ``conv.csv`` (other noise models, convolutional models): per model, noise
  model, level and image, the PSNR of the output and of the noisy input, to ``--tol-db``;
  ``universal.csv`` (the one-model study) per model, level and image; each compared once it
  is committed (a committed file missing from the fresh run is an error).

Exit status: 0 when everything agrees, 1 when anything drifts (a table of the largest
differences is printed), 2 when a results file is missing or unreadable. The unit tests
of this comparison are in ``tests/test_drift.py``.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from dataclasses import dataclass
from pathlib import Path

TOL_DB = 0.01
TOL_SSIM = 1e-3


@dataclass(frozen=True)
class Table:
    """A results CSV: key columns identify a row; value columns are compared."""

    file: str
    keys: tuple[str, ...]
    values: dict[str, str]  # column -> "db" (PSNR, compared in dB), "mse" (to dB first) or "ssim"
    optional: bool = False  # compared only when the committed results have it


TABLES = (
    Table("bsd68.csv", ("model", "test_sigma", "image"), {"psnr": "db", "noisy_psnr": "db", "ssim": "ssim"}),
    Table("bsd68_summary.csv", ("model", "test_sigma"), {"psnr_mean": "db"}),
    Table(
        "synthetic.csv",
        ("sigma",),
        {"noisy_mse": "mse", "relu_mse": "mse", "nelu_mse": "mse", "oracle_relu_mse": "mse"},
    ),
    Table("noise.csv", ("model", "noise", "test_sigma", "image"), {"psnr": "db", "noisy_psnr": "db"}, True),
    Table("conv.csv", ("model", "noise", "test_sigma", "image"), {"psnr": "db", "noisy_psnr": "db"}, True),
    Table("universal.csv", ("model", "test_sigma", "image"), {"psnr": "db", "noisy_psnr": "db"}, True),
)


@dataclass(frozen=True)
class Drift:
    """One number (or row) that differs by more than its tolerance."""

    file: str
    key: tuple[str, ...]
    column: str
    reference: float
    fresh: float
    diff: float  # in dB for "db" and "mse" columns; inf for a missing row or value
    tol: float

    def __str__(self) -> str:
        key = ", ".join(self.key)
        unit = "" if self.column == "ssim" else " dB"
        return (f"{self.file}: [{key}] {self.column}: committed {self.reference:.6g}, fresh {self.fresh:.6g}, "
                f"|diff| {self.diff:.4g}{unit} > {self.tol:g}{unit}")


class ResultsError(RuntimeError):
    """A results file is missing or unreadable."""


def _norm_key(value: str) -> str:
    """'25.0' and '25' name the same noise level."""
    try:
        return f"{float(value):g}"
    except ValueError:
        return value


def read_table(folder: Path, table: Table) -> dict[tuple[str, ...], dict[str, str]]:
    path = Path(folder) / table.file
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as exc:
        raise ResultsError(f"cannot read {path}: {exc.strerror or exc}") from exc
    missing = [c for c in (*table.keys, *table.values) if rows and c not in rows[0]]
    if not rows or missing:
        raise ResultsError(f"{path}: no rows, or missing columns {missing}")
    out: dict[tuple[str, ...], dict[str, str]] = {}
    for row in rows:
        key = tuple(_norm_key(row[k]) for k in table.keys)
        if key in out:
            raise ResultsError(f"{path}: duplicate row {key}")
        out[key] = row
    return out


def _difference(kind: str, ref: float, new: float) -> float:
    if math.isnan(ref) and math.isnan(new):
        return 0.0
    if kind == "mse":
        if ref <= 0 or new <= 0:
            return 0.0 if ref == new else math.inf
        return abs(10 * math.log10(new / ref))
    return abs(new - ref)


def compared_tables(reference: Path) -> list[Table]:
    """The tables to compare: every required one, and the optional ones that are committed."""
    return [t for t in TABLES if not t.optional or (Path(reference) / t.file).is_file()]


def compare(reference: Path, fresh: Path, tol_db: float = TOL_DB, tol_ssim: float = TOL_SSIM) -> list[Drift]:
    """Every number of ``fresh`` that differs from ``reference`` by more than its tolerance."""
    drifts: list[Drift] = []
    for table in compared_tables(reference):
        ref, new = read_table(reference, table), read_table(fresh, table)
        for key in sorted(ref.keys() | new.keys()):
            if key not in ref or key not in new:
                where = "fresh run" if key not in new else "committed results"
                drifts.append(Drift(table.file, key, f"(row missing from the {where})", math.nan, math.nan,
                                    math.inf, 0.0))
                continue
            for column, kind in table.values.items():
                tol = tol_ssim if kind == "ssim" else tol_db
                try:
                    a, b = float(ref[key][column]), float(new[key][column])
                except ValueError:
                    drifts.append(Drift(table.file, key, column, math.nan, math.nan, math.inf, tol))
                    continue
                d = _difference(kind, a, b)
                if not d <= tol:  # also catches NaN
                    drifts.append(Drift(table.file, key, column, a, b, d, tol))
    return drifts


def main(argv: list[str] | None = None) -> int:
    """Command line; returns 0 (agree), 1 (drift) or 2 (missing or unreadable results)."""
    p = argparse.ArgumentParser(prog="python -m nelu.experiments.drift", description=__doc__.split("\n\n")[0])
    p.add_argument("fresh", type=Path, help="folder written by `python -m nelu reproduce all --out FOLDER`")
    p.add_argument("--reference", type=Path, default=Path("results"), help="committed results (default results/)")
    p.add_argument("--tol-db", type=float, default=TOL_DB, help=f"PSNR/MSE tolerance in dB (default {TOL_DB})")
    p.add_argument("--tol-ssim", type=float, default=TOL_SSIM, help=f"SSIM tolerance (default {TOL_SSIM})")
    p.add_argument("--show", type=int, default=40, help="largest differences to print (default 40)")
    args = p.parse_args(argv)
    try:
        drifts = compare(args.reference, args.fresh, args.tol_db, args.tol_ssim)
    except ResultsError as exc:
        print(f"nelu.experiments.drift: error: {exc}", file=sys.stderr)
        return 2
    files = ", ".join(t.file for t in compared_tables(args.reference))
    if not drifts:
        print(f"results agree: {args.fresh} matches {args.reference} in {files} "
              f"(PSNR and MSE to {args.tol_db:g} dB, SSIM to {args.tol_ssim:g})")
        return 0
    print(f"RESULTS DRIFTED: {len(drifts)} numbers of {args.fresh} differ from {args.reference} "
          f"(tolerance {args.tol_db:g} dB, SSIM {args.tol_ssim:g}); the largest:", file=sys.stderr)
    for d in sorted(drifts, key=lambda d: -d.diff / d.tol if d.tol else -math.inf)[: args.show]:
        print(f"  {d}", file=sys.stderr)
    files = sorted({d.file for d in drifts})
    print(f"Drifted files: {', '.join(files)}. Investigate, or commit the new results with the "
          "change that explains them.", file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
