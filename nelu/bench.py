"""Benchmark: NeLU against ReLU and cvxpy on this machine. ``python -m nelu.bench``.

Prints a Markdown table of median wall-clock times over repeats (it measures,
it asserts nothing) and, with ``--json PATH``, writes the same numbers to JSON.

* forward and forward+backward of ReLU, exact NeLU, unrolled NeLU (10 and 100
  iterations) and cvxpy, for a batch of ``--batch`` codes of length ``--m``;
  cvxpy is timed on ``--cvxpy-rows`` codes and scaled to the batch (marked);
* each method's largest error against cvxpy, ``max_rows ||z - z_cvxpy|| / ||u||``;
* one training step (forward, backward, AdamW) of a ``64 -> 256 -> 64``
  auto-encoder with ReLU (learned bias) and with exact NeLU.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
import warnings
from collections.abc import Callable

import torch
from torch import nn

from . import functional as F
from .nn import NeLU, ShiftedReLU


def median_ms(fn: Callable[[], object], repeats: int, warmup: int = 3) -> float:
    """Median wall-clock time of ``fn()`` in milliseconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def _forward_backward(act: Callable[[torch.Tensor], torch.Tensor], u: torch.Tensor) -> Callable[[], None]:
    leaf = u.clone().requires_grad_()
    grad = torch.randn_like(u)

    def step() -> None:
        leaf.grad = None
        act(leaf).backward(grad)

    return step


def _train_step(activation: nn.Module, batch: int, n: int = 64, m: int = 256) -> Callable[[], None]:
    gen = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(n, m, bias=False), activation, nn.Linear(m, n, bias=False))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    y = torch.randn(batch, n, generator=gen)
    x = y + 0.1 * torch.randn(batch, n, generator=gen)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = ((model(y) - x) ** 2).mean()
        loss.backward()
        opt.step()

    return step


def run(batch: int = 4096, m: int = 256, repeats: int = 20, cvxpy_rows: int = 32, seed: int = 0) -> dict:
    """Measure everything; returns a dict of results (times in ms)."""
    from .reference import sqrt_lasso

    gen = torch.Generator().manual_seed(seed)
    u = torch.randn(batch, m, generator=gen)
    lam = F.universal_lam(m)
    methods: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
        "ReLU": torch.relu,
        "NeLU exact": lambda x: F.nelu(x, lam),
        "NeLU unrolled, 10 it.": lambda x: F.nelu(x, lam, method="unrolled", iters=10),
        "NeLU unrolled, 100 it.": lambda x: F.nelu(x, lam, method="unrolled", iters=100),
    }
    sub = u[:cvxpy_rows].double()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        start = time.perf_counter()
        z_ref = torch.from_numpy(sqrt_lasso(sub, lam))
        cvxpy_ms = 1e3 * (time.perf_counter() - start) * batch / cvxpy_rows
    scale = sub.norm(dim=-1)

    rows = []
    for name, act in methods.items():
        with torch.no_grad():
            fwd = median_ms(lambda: act(u), repeats)
        fwd_bwd = median_ms(_forward_backward(act, u), repeats)
        error = None if name == "ReLU" else float(((act(sub) - z_ref).norm(dim=-1) / scale).max())
        rows.append({"method": name, "forward_ms": fwd, "forward_backward_ms": fwd_bwd, "max_error_vs_cvxpy": error})
    rows.append({"method": "cvxpy (scaled from %d codes)" % cvxpy_rows, "forward_ms": cvxpy_ms,
                 "forward_backward_ms": None, "max_error_vs_cvxpy": 0.0})
    relu_step = median_ms(_train_step(ShiftedReLU(256), batch), repeats)
    nelu_step = median_ms(_train_step(NeLU(lam=lam), batch), repeats)
    return {
        "batch": batch,
        "m": m,
        "lam": lam,
        "repeats": repeats,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "activations": rows,
        "train_step_ms": {"ReLU": relu_step, "NeLU exact": nelu_step},
        "speedup_exact_vs_cvxpy": cvxpy_ms / next(r["forward_ms"] for r in rows if r["method"] == "NeLU exact"),
        "train_step_ratio_nelu_over_relu": nelu_step / relu_step,
    }


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def to_markdown(res: dict) -> str:
    """The results as the Markdown tables the README shows."""
    lines = [
        f"Batch of {res['batch']} codes, m = {res['m']}, lam = {res['lam']:.4f}, float32, "
        f"{res['threads']} threads, torch {res['torch']}; medians of {res['repeats']} repeats.",
        "",
        "| method | forward (ms) | forward + backward (ms) | max error vs cvxpy (float64) |",
        "|---|---:|---:|---:|",
    ]
    for r in res["activations"]:
        lines.append(
            f"| {r['method']} | {_fmt(r['forward_ms'], '.2f')} | {_fmt(r['forward_backward_ms'], '.2f')} "
            f"| {_fmt(r['max_error_vs_cvxpy'], '.1e')} |"
        )
    step = res["train_step_ms"]
    lines += [
        "",
        "| auto-encoder training step (64 → 256 → 64, batch %d) | ms |" % res["batch"],
        "|---|---:|",
        f"| ReLU (learned bias) | {step['ReLU']:.2f} |",
        f"| NeLU exact | {step['NeLU exact']:.2f} |",
        "",
        f"Exact NeLU is {res['speedup_exact_vs_cvxpy']:.0f}x faster than cvxpy; "
        f"the NeLU training step takes {res['train_step_ratio_nelu_over_relu']:.2f}x the ReLU step.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nelu.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--m", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--cvxpy-rows", type=int, default=32)
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--readme", help="replace the table between the bench markers of this Markdown file")
    args = parser.parse_args(argv)
    if min(args.batch, args.m, args.repeats, args.cvxpy_rows) < 1 or args.cvxpy_rows > args.batch:
        parser.error("--batch, --m, --repeats and --cvxpy-rows must be positive, with --cvxpy-rows <= --batch")
    res = run(args.batch, args.m, args.repeats, args.cvxpy_rows)
    print(to_markdown(res))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=2)
    if args.readme:
        update_readme(args.readme, to_markdown(res))
    return 0


def update_readme(path: str, table: str, start: str = "<!-- bench:start -->", end: str = "<!-- bench:end -->") -> None:
    """Write ``table`` between the ``start`` and ``end`` markers of the file at ``path``."""
    with open(path) as fh:
        text = fh.read()
    if start not in text or end not in text:
        raise SystemExit(f"error: {path} has no {start} ... {end} markers to replace")
    head, rest = text.split(start, 1)
    tail = rest.split(end, 1)[1]
    with open(path, "w") as fh:
        fh.write(f"{head}{start}\n{table}\n{end}{tail}")


if __name__ == "__main__":
    raise SystemExit(main())
