"""The experiments behind every result the book shows, one module each.

Each module has ``PROFILES`` (``"full"``: the committed results under ``results/``;
``"quick"``: the same code on little data, under ``results/quick/``) and
``run(ctx: Context) -> dict``. They share :class:`~nelu.experiments.common.Context`
(output folder, provenance, atomic JSON/CSV writing) and are run by
``python -m nelu reproduce NAME``. :mod:`~nelu.experiments.drift` compares a fresh run
with the committed results.

========== ===================================================================
synthetic  signals sparse under a known transform
bsd68      the patch auto-encoders on BSD68 (trains the checkpoints)
noise      the BSD68 models under five noise models (trains nothing)
conv       convolutional auto-encoders
universal  one blind model for every noise level: levers, the recommended model (not in ``all``)
baselines  BM3D and a DnCNN-style network (not in ``all``: the longest target)
========== ===================================================================
"""

from __future__ import annotations

from types import ModuleType

from . import baselines, bsd68, conv, noise, synthetic, universal
from .common import Context, ExperimentError

__all__ = ["EXPERIMENTS", "ALL", "Context", "ExperimentError", "get"]

#: Every experiment by its ``reproduce`` name, in the order ``all`` runs them.
EXPERIMENTS: dict[str, ModuleType] = {
    "synthetic": synthetic, "bsd68": bsd68, "noise": noise, "conv": conv, "universal": universal,
    "baselines": baselines,
}
#: What ``reproduce all`` runs: everything but the one-model study and the baselines (the two longest).
ALL = ("synthetic", "bsd68", "noise", "conv")


def get(name: str) -> ModuleType:
    """The experiment module called ``name``; ``ExperimentError`` for an unknown name."""
    if name not in EXPERIMENTS:
        raise ExperimentError(f"unknown experiment {name!r}; valid: {', '.join(EXPERIMENTS)}")
    return EXPERIMENTS[name]
