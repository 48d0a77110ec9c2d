"""``python -m nelu.baselines``: the baselines experiment (:mod:`nelu.experiments.baselines`).

The same as ``python -m nelu reproduce baselines``, with the options of that experiment
alone (``--workers``, ``--threads``). A user mistake prints one line
``nelu.baselines: error: ...`` and exits with status 2.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..cli import UsageError, run_reporting_errors
from ..experiments import baselines as experiment
from ..experiments.common import OUT, Context
from ..files import check_writable


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        raise UsageError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="nelu.baselines", description="BM3D and a small DnCNN-style network on BSD68, "
                "on the noisy images of the ReLU/NeLU evaluation.")
    p.add_argument("--profile", choices=tuple(experiment.PROFILES), default="full",
                   help="full: the committed results (the longest target); quick: crops, seconds")
    p.add_argument("--out", default=None, help="results folder (default results/baselines, "
                   "quick: results/quick/baselines)")
    p.add_argument("--workers", type=int, default=None,
                   help="processes for BM3D and the DnCNN evaluation, one thread each (default: full every core, quick 1)")
    p.add_argument("--threads", type=int, default=None, help="torch threads for the DnCNN (default: full 2, quick 1)")
    p.add_argument("--seed", type=int, default=0, help="noise seed (0: the noise of the committed evaluation)")
    p.add_argument("--checkpoints", default=None,
                   help="folder with relu_sigma25.pt and nelu_sigma25.pt to time (default results/checkpoints)")
    p.add_argument("--fresh", action="store_true", help="retrain the DnCNN even if a matching checkpoint exists")
    return p


def main(argv: list[str] | None = None) -> int:
    """Command line; returns the exit status (2 for a user mistake, one line on stderr)."""
    t0 = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:7.1f}s] {msg}", flush=True)

    def action() -> int:
        args = build_parser().parse_args(argv)
        out = Path(args.out if args.out is not None else Path(OUT[args.profile]) / "baselines")
        check_writable(out, folder=True)
        ctx = Context(profile=args.profile, out=out, seed=args.seed, fresh=args.fresh,
                      checkpoints=Path(args.checkpoints or "results/checkpoints"), argv=argv, log=log,
                      program="python -m nelu.baselines",
                      options={"workers": args.workers, "threads": args.threads})
        experiment.run(ctx)
        return 0

    return run_reporting_errors("nelu.baselines", action)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
