"""``reproduce synthetic``: signals sparse under a known transform (see :mod:`nelu.synthetic`).

Writes ``synthetic.json`` and ``synthetic.csv``.
"""

from __future__ import annotations

from ..synthetic import SyntheticConfig, run_synthetic
from .common import BACKEND, Context

__all__ = ["PROFILES", "run"]

PROFILES: dict[str, dict] = {
    # 2000 steps at 3e-3 left low-sigma oracles near identity
    "full": dict(steps=6000, lr=1e-2, test_size=10000, backend=BACKEND),
    "quick": dict(steps=40, test_size=500, backend=BACKEND),
}


def run(ctx: Context) -> dict:
    profile, out, seed, threads, log = ctx.profile, ctx.out, ctx.seed, ctx.threads, ctx.log
    cfg = SyntheticConfig(seed=seed, threads=threads, **PROFILES[profile])
    res = run_synthetic(cfg, log=log, workers=ctx.workers_for(len(cfg.sigmas) + 1))
    meta = ctx.meta(profile=profile, seed=seed, threads=threads, timings=res["timings"])
    ctx.write_json("synthetic.json", {"meta": meta, **res})
    ctx.write_csv("synthetic.csv", res["rows"])
    log(f"synthetic: wrote {out / 'synthetic.json'} and synthetic.csv ({res['timings']['total_s']:.1f}s)")
    return res["timings"]
