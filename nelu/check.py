"""``python -m nelu.check``: is this machine ready for the book? (about ten seconds)

It checks, in order, and prints one line per item (``ok`` or ``FAIL``), with what to do
under each failure:

* ``python``: the interpreter (3.10 or later; the requirements are pinned for 3.11);
* ``torch``: its version, threads and a small computation;
* ``packages``: the other packages the chapters import (numpy, scipy, matplotlib,
  scikit-image, cvxpy, numba);
* ``data``: the image folder (``$NELU_DATA``, else the repository's ``data/``): every file of
  the registry present, and its SHA-256 as the registry records it. Nothing is downloaded;
* ``training``: a tiny NeLU auto-encoder trained on synthetic sparse signals (a few hundred
  steps of :func:`nelu.synthetic.fit`), which must remove most of the noise at three noise
  levels.

The exit status is 0 when every item passed, 1 otherwise.

>>> item = check_python()
>>> item.name, item.ok
('python', True)
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch

from . import synthetic
from .data import REGISTRY_PATH, data_dir, registry
from .synthetic import SyntheticConfig
from .training import torch_settings

__all__ = ["Item", "check_data", "check_packages", "check_python", "check_torch", "check_training", "main", "run"]

INSTALL = "pip install -r requirements.txt && pip install -e . (in the activated virtual environment)"
#: The packages the chapters import, beyond torch (distribution names).
PACKAGES = ("numpy", "scipy", "matplotlib", "scikit-image", "cvxpy", "numba")
#: The tiny training run: noise levels it is tested at, and the largest error it may leave,
#: as a fraction of the noise energy (a trained model leaves about 0.3; an untrained one 1).
TRAINING_SIGMAS = (0.05, 0.1, 0.2)
TRAINING_MAX_RATIO = 0.5
TRAINING_CONFIG = SyntheticConfig(steps=400, lr=3e-2, test_size=2000, train_sigma=0.1)


@dataclass(frozen=True)
class Item:
    """The outcome of one check: its name, whether it passed, what was found, what to do."""

    name: str
    ok: bool
    detail: str
    fix: str = ""

    def lines(self) -> list[str]:
        """The report's lines for this item.

        >>> Item("data", False, "no folder /x", "set NELU_DATA").lines()
        ['FAIL  data      no folder /x', '      fix: set NELU_DATA']
        """
        out = [f"{'ok' if self.ok else 'FAIL':4s}  {self.name:8s}  {self.detail}"]
        return out + ([f"      fix: {self.fix}"] if self.fix and not self.ok else [])


def check_python() -> Item:
    """Python 3.10 or later (3.11 is the version the requirements are pinned for)."""
    found = f"{platform.python_version()} ({sys.executable})"
    if sys.version_info < (3, 10):  # noqa: UP036 (an older interpreter running a source tree)
        return Item("python", False, f"{found} is too old",
                    "install Python 3.11 (python.org, or your package manager) and create the virtual environment "
                    "with it: python3.11 -m venv .venv")
    return Item("python", True, found)


def check_torch() -> Item:
    """torch's version and threads, and a small matrix product that must be right."""
    a = torch.arange(12.0).reshape(3, 4)
    if not torch.equal(a @ a.T, torch.tensor([[14.0, 38.0, 62.0], [38.0, 126.0, 214.0], [62.0, 214.0, 366.0]])):
        return Item("torch", False, f"torch {torch.__version__} computes a wrong matrix product",
                    "reinstall torch: pip install --force-reinstall torch "
                    "--index-url https://download.pytorch.org/whl/cpu")
    accel = "CUDA available" if torch.cuda.is_available() else "CPU only (enough for the book)"
    return Item("torch", True, f"{torch.__version__}, {torch.get_num_threads()} threads, {accel}")


def check_packages(names: tuple[str, ...] = PACKAGES) -> Item:
    """Every package of ``names`` is installed (their versions are reported)."""
    found, missing = [], []
    for name in names:
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            missing.append(name)
    if missing:
        return Item("packages", False, f"missing: {', '.join(missing)}", INSTALL)
    return Item("packages", True, ", ".join(found))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_data(folder: Path | None = None) -> Item:
    """Every registry file is in ``folder`` (default :func:`nelu.data.data_dir`) with its SHA-256."""
    folder = data_dir() if folder is None else folder
    env = os.environ.get("NELU_DATA")
    where = f"{folder} (from NELU_DATA)" if env else f"{folder} (NELU_DATA is not set)"
    download = ('python -c "from nelu.data import fetch, registry; [fetch(f) for f in registry()]" '
                "(with internet; it downloads into $NELU_DATA and checks every file)")
    if not folder.is_dir():
        return Item("data", False, f"the data folder {where} does not exist",
                    "set NELU_DATA to the folder that holds BSD68/, Set12/ and Train400/ "
                    f"(export NELU_DATA=/path/to/data; in Windows PowerShell: $env:NELU_DATA = \"C:\\path\\to\\data\"), or run {download}")
    missing, corrupt = [], []
    for rel, (sha, _) in registry().items():
        path = folder / rel
        if not path.is_file():
            missing.append(rel)
        elif _sha256(path) != sha:
            corrupt.append(rel)
    if missing or corrupt:
        parts = [f"{len(missing)} of {len(registry())} files missing (first: {missing[0]})"] if missing else []
        parts += [f"{len(corrupt)} corrupt, their SHA-256 is not the registry's (first: {corrupt[0]})"] if corrupt else []
        fix = "delete the corrupt files, then " if corrupt else ""
        return Item("data", False, f"in {where}: " + "; ".join(parts), fix + f"run {download}")
    sets = sorted({rel.split("/")[0] for rel in registry()})
    return Item("data", True, f"{where}: all {len(registry())} files of {', '.join(sets)} match "
                f"their SHA-256 in {REGISTRY_PATH.name}")


def check_training(cfg: SyntheticConfig = TRAINING_CONFIG) -> Item:
    """A tiny NeLU auto-encoder must learn to denoise synthetic sparse signals at every test level."""
    start = time.perf_counter()
    with torch_settings(1):
        D0 = synthetic.dictionary(cfg)
        model = synthetic.fit("nelu", cfg.train_sigma, D0, cfg)
        mse = synthetic.test_mse(model, D0, TRAINING_SIGMAS, cfg)
    ratios = {s: m / s**2 for s, m in mse.items()}
    levels = ", ".join(f"{r:.2f} at sigma {s:g}" for s, r in ratios.items())
    detail = (f"NeLU auto-encoder, {cfg.steps} steps in {time.perf_counter() - start:.1f} s: "
              f"error / noise energy = {levels}")
    if not all(math.isfinite(r) and r < TRAINING_MAX_RATIO for r in ratios.values()):
        return Item("training", False, detail + f" (each must be below {TRAINING_MAX_RATIO})",
                    "the installation is broken: reinstall torch and the package (" + INSTALL + "), "
                    "then rerun; if it still fails, report this output as an issue")
    return Item("training", True, detail)


CHECKS: tuple[Callable[[], Item], ...] = (check_python, check_torch, check_packages, check_data, check_training)


def run(checks: tuple[Callable[[], Item], ...], log: Callable[[str], None] = print) -> list[Item]:
    """Run ``checks`` in order, logging each item's lines as it finishes; an error is a failed item."""
    items = []
    for check in checks:
        try:
            item = check()
        except Exception as exc:  # noqa: BLE001 (a broken installation must still give a readable line)
            name = check.__name__.removeprefix("check_")
            item = Item(name, False, f"{type(exc).__name__}: {exc}", INSTALL)
        for line in item.lines():
            log(line)
        items.append(item)
    return items


def main(argv: list[str] | None = None) -> int:
    """``python -m nelu.check``: print the report; return 0 if every item passed, else 1."""
    argparse.ArgumentParser(prog="python -m nelu.check", description=__doc__.split("\n\n")[0]).parse_args(argv)
    start = time.perf_counter()
    print("nelu setup check")
    items = run(CHECKS)
    failed = [item.name for item in items if not item.ok]
    took = f"{time.perf_counter() - start:.0f} s"
    if failed:
        print(f"{len(failed)} of {len(items)} checks failed ({', '.join(failed)}; {took}): "
              "do what the 'fix:' lines say, then rerun python -m nelu.check")
        return 1
    print(f"all {len(items)} checks passed in {took}: this machine is ready for the book")
    return 0


if __name__ == "__main__":
    sys.exit(main())
