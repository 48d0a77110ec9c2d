"""Benchmark: NeLU against ReLU and cvxpy on this machine. ``python -m nelu.bench``.

Prints Markdown tables of median wall-clock times over repeats (it measures, it
asserts nothing) and, with ``--json PATH``, writes the same numbers to JSON.

Every exact-NeLU row is timed with both backends of :func:`nelu.functional.nelu`:
``NeLU exact`` (PyTorch operations, the default) and ``NeLU numba`` (:mod:`nelu.kernels`,
which the committed experiments use), whatever backend a committed checkpoint records.

* **The activation alone**, forward and forward+backward, on a batch of
  ``--batch`` dense random codes of length ``--m``: ReLU, exact NeLU, unrolled
  NeLU (10 and 100 iterations) and two cvxpy baselines, timed on
  ``--cvxpy-rows`` codes and scaled to the batch: the referee of the tests
  (:mod:`nelu.reference`: tight tolerances and a Newton polish) and the fair
  one, a problem compiled once with the code as a ``cp.Parameter`` and
  re-solved with Clarabel's default tolerances. Each method's largest error
  against the referee, ``max_rows ||z - z_ref|| / ||u||``.
* **A training step** (forward, backward, with and without the AdamW step) of
  a ``64 -> 256 -> 64`` auto-encoder with ReLU (learned bias) and exact NeLU:
  on dense random data, and (``trained`` rows) with the committed
  ``relu_sigma25`` / ``nelu_sigma25`` models on noisy Train400 patches, whose
  codes are sparse as in real training. The two models' steps are timed in turn.
* **End to end** (needs the images): the training loop of
  :func:`nelu.train.train` for the same :class:`~nelu.train.TrainConfig` with
  ``relu`` and ``nelu`` (``--train-steps`` steps, batch 256, one thread), and
  the BSD68 evaluation of one image by the two committed models (stride 4, one
  thread), in ``--rounds`` interleaved rounds (ratios: the median of the rounds').
* The activation and step rows again on CUDA when a GPU is present.

The trained and end-to-end rows are skipped, with a note, when the images or
the committed checkpoints are not found.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from . import functional as F
from . import kernels
from .nn import NeLU, ShiftedReLU

#: The committed checkpoints of the trained rows (results/checkpoints).
TRAINED = {"ReLU": "relu_sigma25.pt", "NeLU exact": "nelu_sigma25.pt"}
#: Noise level of the trained rows' patches (0-255), the models' training level.
TRAINED_SIGMA = 25.0
#: The exact NeLU's backends timed (numba when installed), by row name.
NELU_ROWS = {"NeLU exact": "torch", "NeLU numba": "numba"}


def _backends() -> dict[str, str]:
    """The NeLU rows to time here: both backends, or the torch one alone without numba."""
    return {name: b for name, b in NELU_ROWS.items() if b == "torch" or kernels.available()}


def interleaved_ms(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 3,
                   sync: Callable[[], None] | None = None) -> dict[str, float]:
    """Median milliseconds of each ``fns[name]()``, timed in turn (a, b, a, b, ...), so that a slow
    spell of the machine falls on all of them instead of on one (``sync`` waits for a GPU)."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            if sync:
                sync()
            start = time.perf_counter()
            fn()
            if sync:
                sync()
            times[name].append(time.perf_counter() - start)
    return {name: 1e3 * statistics.median(t) for name, t in times.items()}


def median_ms(fn: Callable[[], object], repeats: int, warmup: int = 3, sync: Callable[[], None] | None = None) -> float:
    """Median wall-clock time of ``fn()`` in milliseconds (``sync`` waits for a GPU)."""
    return interleaved_ms({"": fn}, repeats, warmup, sync)[""]


def _forward_backward(act: Callable[[torch.Tensor], torch.Tensor], u: torch.Tensor) -> Callable[[], None]:
    leaf = u.clone().requires_grad_()
    grad = torch.randn_like(u)

    def step() -> None:
        leaf.grad = None
        act(leaf).backward(grad)

    return step


def _step(model: nn.Module, y: torch.Tensor, x: torch.Tensor, optimizer: bool) -> Callable[[], None]:
    """One training step of ``model`` on the batch ``(y, x)``, with or without the AdamW update."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        ((model(y) - x) ** 2).mean().backward()
        if optimizer:
            opt.step()

    return step


def _random_model(activation: nn.Module, n: int = 64, m: int = 256) -> nn.Module:
    return nn.Sequential(nn.Linear(n, m, bias=False), activation, nn.Linear(m, n, bias=False))


def _step_times(models: dict[str, nn.Module], y: torch.Tensor, x: torch.Tensor, repeats: int, sync=None) -> dict:
    """``{"with_optimizer": {name: ms}, "without_optimizer": {name: ms}}``, the models timed in turn; they
    are copied, not trained."""
    import copy

    return {key: interleaved_ms({name: _step(copy.deepcopy(model), y, x, optimizer) for name, model in models.items()},
                                repeats, sync=sync)
            for key, optimizer in (("with_optimizer", True), ("without_optimizer", False))}


def _cvxpy_compiled(u: torch.Tensor, lam: float) -> tuple[float, torch.Tensor]:
    """Seconds to solve every row of ``u`` with one compiled cvxpy problem, and its answers."""
    import cvxpy as cp

    m = u.shape[-1]
    u_par = cp.Parameter(m)
    z = cp.Variable(m, nonneg=True)
    problem = cp.Problem(cp.Minimize(cp.norm(u_par - z, 2) + lam * cp.norm(z, 1)))
    u_par.value = u[0].double().numpy()
    problem.solve(solver=cp.CLARABEL)  # compile (canonicalize) once, outside the timing
    rows = []
    start = time.perf_counter()
    for row in u.double().numpy():
        u_par.value = row
        problem.solve(solver=cp.CLARABEL)
        rows.append(torch.from_numpy(z.value.copy()))
    return time.perf_counter() - start, torch.stack(rows)


def _activation_rows(u: torch.Tensor, lam: float, repeats: int, cvxpy_rows: int) -> tuple[list[dict], dict]:
    """The activation table on ``u`` and the two cvxpy speed-ups."""
    from .reference import sqrt_lasso

    batch = u.shape[0]
    methods: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
        "ReLU": torch.relu,
        **{name: (lambda x, b=b: F.nelu(x, lam, backend=b)) for name, b in _backends().items()},
        "NeLU unrolled, 10 it.": lambda x: F.nelu(x, lam, method="unrolled", iters=10),
        "NeLU unrolled, 100 it.": lambda x: F.nelu(x, lam, method="unrolled", iters=100),
    }
    sub = u[:cvxpy_rows].double()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        start = time.perf_counter()
        z_ref = torch.from_numpy(sqrt_lasso(sub, lam))
        referee_ms = 1e3 * (time.perf_counter() - start) * batch / cvxpy_rows
        compiled_s, z_compiled = _cvxpy_compiled(sub, lam)
    compiled_ms = 1e3 * compiled_s * batch / cvxpy_rows
    scale = sub.norm(dim=-1)

    def error(z: torch.Tensor) -> float:
        return float(((z.double() - z_ref).norm(dim=-1) / scale).max())

    rows = []
    for name, act in methods.items():
        with torch.no_grad():
            fwd = median_ms(lambda act=act: act(u), repeats)
        fwd_bwd = median_ms(_forward_backward(act, u), repeats)
        rows.append({"method": name, "forward_ms": fwd, "forward_backward_ms": fwd_bwd,
                     "max_error_vs_cvxpy": None if name == "ReLU" else error(act(sub))})
    rows.append({"method": f"cvxpy referee, polished (scaled from {cvxpy_rows} codes)", "forward_ms": referee_ms,
                 "forward_backward_ms": None, "max_error_vs_cvxpy": 0.0})
    rows.append({"method": f"cvxpy compiled once (scaled from {cvxpy_rows} codes)", "forward_ms": compiled_ms,
                 "forward_backward_ms": None, "max_error_vs_cvxpy": error(z_compiled)})
    fwd = {r["method"]: r["forward_ms"] for r in rows}
    speedup = {"referee": referee_ms / fwd["NeLU exact"], "compiled": compiled_ms / fwd["NeLU exact"]}
    if "NeLU numba" in fwd:
        speedup["compiled_numba"] = compiled_ms / fwd["NeLU numba"]
    return rows, speedup


def _trained_setup(results: Path, batch: int) -> tuple[dict[str, nn.Module], torch.Tensor, torch.Tensor]:
    """The committed ReLU and NeLU models at sigma 25, the NeLU one once per backend (whatever its
    checkpoint records), and a batch of noisy Train400 patches."""
    import copy

    from . import data as nd
    from .models import load_denoiser

    def load(file: str) -> nn.Module:
        return load_denoiser(results / "checkpoints" / file).ae.train()

    models, nelu = {"ReLU": load(TRAINED["ReLU"])}, load(TRAINED["NeLU exact"])
    for name, backend in _backends().items():
        models[name] = copy.deepcopy(nelu)
        models[name].activation.backend = backend
    gen = torch.Generator().manual_seed(0)
    clean = nd.random_patches(nd.cached_dataset("Train400", 50), batch, 8, gen)
    noisy = clean + TRAINED_SIGMA / 255.0 * torch.randn(clean.shape, generator=gen)
    return models, noisy, clean


def _trained_rows(models: dict[str, nn.Module], noisy: torch.Tensor, clean: torch.Tensor, repeats: int) -> dict:
    """Activation and training-step times on the codes of the trained models."""
    codes = {}
    with torch.no_grad():
        for name, model in models.items():
            y = noisy - noisy.mean(-1, keepdim=True)
            codes[name] = model.encoder(y)
    act = {name: models[name].activation for name in models}
    rows = []
    for name, u in codes.items():
        with torch.no_grad():
            fwd = median_ms(lambda f=act[name], u=u: f(u), repeats)
        fwd_bwd = median_ms(_forward_backward(act[name], u), repeats)
        active = float((act[name](u) > 0).float().sum(-1).mean())
        rows.append({"method": name, "forward_ms": fwd, "forward_backward_ms": fwd_bwd, "mean_active": active})
    return {"sigma": TRAINED_SIGMA, "checkpoints": TRAINED, "activations": rows,
            "train_step_ms": _step_times(models, noisy, clean, repeats)}


def _end_to_end(results: Path, steps: int, rounds: int = 5) -> dict:
    """Training-loop seconds of the same TrainConfig with ReLU and NeLU, and one BSD68 evaluation.

    Both are measured in ``rounds`` interleaved rounds (ReLU, NeLU, ReLU, NeLU, ...), so that a
    slow spell of a shared machine falls on both; the ratios are the medians of the rounds'
    ratios, and every round's seconds are kept (``*_rounds_s``).
    """
    from . import data as nd
    from .evaluation import noisy_image
    from .models import load_denoiser
    from .train import TrainConfig, train

    names = (("ReLU", "relu", "torch"), *((name, "nelu", b) for name, b in _backends().items()))
    base = dict(sigma=25.0, patch=8, m=256, steps=steps, batch_size=256, lr=5e-3, nelu_lam=0.05, pool_size=20_000,
                train_images=50, val_images=0, threads=1, checkpoint_every=steps, progress=False)
    train_rounds: dict[str, list[float]] = {name: [] for name, _, _ in names}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            for name, act, backend in names:
                ckpt = train(TrainConfig(activation=act, backend=backend, **base), Path(tmp) / f"{act}{backend}{r}.pt")
                train_rounds[name].append(ckpt["elapsed_s"])
    image = nd.cached_dataset("BSD68", 1)[0]
    noisy = noisy_image(image, 0, TRAINED_SIGMA, 0)
    eval_rounds: dict[str, list[float]] = {name: [] for name, _, _ in names}
    with torch.no_grad():
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            denoisers = {}
            for name, act, backend in names:
                file = TRAINED["ReLU" if act == "relu" else "NeLU exact"]
                denoisers[name] = load_denoiser(results / "checkpoints" / file, stride=4)
                if act == "nelu":
                    denoisers[name].ae.activation.backend = backend
            for _ in range(rounds):
                for name, denoiser in denoisers.items():
                    eval_rounds[name].append(median_ms(lambda d=denoiser: d(noisy), 5, warmup=1) / 1e3)
        finally:
            torch.set_num_threads(threads)

    def summary(rounds_s: dict[str, list[float]]) -> tuple[dict, dict]:
        ratios = {name: statistics.median(n / r for n, r in zip(t, rounds_s["ReLU"]))
                  for name, t in rounds_s.items() if name != "ReLU"}
        return {name: statistics.median(t) for name, t in rounds_s.items()}, ratios

    train_s, train_ratios = summary(train_rounds)
    eval_s, eval_ratios = summary(eval_rounds)
    return {"train_config": base, "rounds": rounds, "train_loop_s": train_s, "train_rounds_s": train_rounds,
            "train_ratio": train_ratios["NeLU exact"], "train_ratios": train_ratios,
            "eval_image_shape": list(image.shape), "eval_stride": 4, "eval_s": eval_s,
            "eval_rounds_s": eval_rounds, "eval_ratio": eval_ratios["NeLU exact"], "eval_ratios": eval_ratios}


def _cuda_rows(batch: int, m: int, lam: float, repeats: int) -> dict:
    """The activation and step rows on the GPU (synchronized timings)."""
    device = torch.device("cuda")
    sync = torch.cuda.synchronize
    u = torch.randn(batch, m, generator=torch.Generator().manual_seed(0)).to(device)
    rows = []
    for name, act in (("ReLU", torch.relu), ("NeLU exact", lambda x: F.nelu(x, lam))):
        with torch.no_grad():
            fwd = median_ms(lambda act=act: act(u), repeats, sync=sync)
        fwd_bwd = median_ms(_forward_backward(act, u), repeats, sync=sync)
        rows.append({"method": name, "forward_ms": fwd, "forward_backward_ms": fwd_bwd})
    y, x = _dense_batch(batch)
    models = {"ReLU": _random_model(ShiftedReLU(256)).to(device), "NeLU exact": _random_model(NeLU(lam=lam)).to(device)}
    return {"device": torch.cuda.get_device_name(0), "activations": rows,
            "train_step_ms": _step_times(models, y.to(device), x.to(device), repeats, sync=sync)}


def _dense_batch(batch: int, n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    y = torch.randn(batch, n, generator=gen)
    return y, y + 0.1 * torch.randn(batch, n, generator=gen)


def run(batch: int = 4096, m: int = 256, repeats: int = 20, cvxpy_rows: int = 16, seed: int = 0,
        train_steps: int = 300, results: str | Path | None = None, threads: int = 1, rounds: int = 5) -> dict:
    """Measure everything; returns a dict of results (times in ms unless the key says ``_s``).

    ``results`` is the folder of the committed checkpoints (default: the repository's
    ``results/``); the trained and end-to-end rows are ``None`` (with a ``notes`` entry)
    when it or the images are missing. ``train_steps=0`` skips the end-to-end rows;
    ``rounds``: their interleaved ReLU/NeLU rounds.
    ``threads``: torch CPU threads of the activation and step rows (the end-to-end rows
    use one, as training does).
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _run(batch, m, repeats, cvxpy_rows, seed, train_steps, results, rounds)
    finally:
        torch.set_num_threads(previous)


def _run(batch: int, m: int, repeats: int, cvxpy_rows: int, seed: int, train_steps: int,
         results: str | Path | None, rounds: int) -> dict:
    from .data import DataError
    from .results import results_dir

    gen = torch.Generator().manual_seed(seed)
    u = torch.randn(batch, m, generator=gen)
    lam = F.universal_lam(m)
    rows, speedup = _activation_rows(u, lam, repeats, cvxpy_rows)
    y, x = _dense_batch(batch)
    dense = _step_times({"ReLU": _random_model(ShiftedReLU(256)),
                         **{name: _random_model(NeLU(lam=lam, backend=b)) for name, b in _backends().items()}},
                        y, x, repeats)
    notes, trained, end_to_end = [], None, None
    try:
        folder = results_dir(results)
        models, noisy, clean = _trained_setup(folder, batch)
        trained = _trained_rows(models, noisy, clean, repeats)
        if train_steps:
            end_to_end = _end_to_end(folder, train_steps, rounds)
    except (DataError, OSError, ValueError) as exc:
        notes.append(f"trained and end-to-end rows skipped ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})")
    step = dense["with_optimizer"]
    return {
        "batch": batch, "m": m, "lam": lam, "repeats": repeats, "torch": torch.__version__,
        "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
        "activations": rows,
        "train_step_ms": step,
        "train_step_no_optimizer_ms": dense["without_optimizer"],
        "speedup_exact_vs_cvxpy": speedup["referee"],
        "speedup_exact_vs_cvxpy_compiled": speedup["compiled"],
        "train_step_ratio_nelu_over_relu": step["NeLU exact"] / step["ReLU"],
        "train_step_ratio_numba_over_relu": step["NeLU numba"] / step["ReLU"] if "NeLU numba" in step else None,
        "speedup_numba_vs_cvxpy_compiled": speedup.get("compiled_numba"),
        "trained": trained,
        "end_to_end": end_to_end,
        "cuda": _cuda_rows(batch, m, lam, repeats) if torch.cuda.is_available() else None,
        "notes": notes + ([] if torch.cuda.is_available() else ["no CUDA device: no GPU rows"]),
    }


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _nelu_names(times: dict) -> list[str]:
    return [name for name in NELU_ROWS if name in times]


def _step_table(title: str, steps: dict) -> list[str]:
    names = _nelu_names(steps["with_optimizer"])
    lines = [f"| {title} | ReLU (ms) | " + " | ".join(f"{n} (ms)" for n in names) + " | " +
             " | ".join(f"{n.removeprefix('NeLU ')} / ReLU" for n in names) + " |",
             "|---|---:|" + "---:|" * (2 * len(names))]
    for key, label in (("with_optimizer", "forward, backward, AdamW"), ("without_optimizer", "forward, backward")):
        t = steps[key]
        lines.append(f"| {label} | {t['ReLU']:.2f} | " + " | ".join(f"{t[n]:.2f}" for n in names) + " | " +
                     " | ".join(f"{t[n] / t['ReLU']:.2f}x" for n in names) + " |")
    return lines


def _end_to_end_table(e2e: dict) -> list[str]:
    cfg, names = e2e["train_config"], _nelu_names(e2e["train_loop_s"])
    ratios = {"train": e2e.get("train_ratios", {"NeLU exact": e2e["train_ratio"]}),
              "eval": e2e.get("eval_ratios", {"NeLU exact": e2e["eval_ratio"]})}
    head = (f"| end to end, one thread, median of {e2e.get('rounds', 1)} interleaved rounds | ReLU (s) | " +
            " | ".join(f"{n} (s)" for n in names) + " | " +
            " | ".join(f"{n.removeprefix('NeLU ')} / ReLU" for n in names) + " |")
    rows = [(f"training loop, {cfg['steps']} steps, batch {cfg['batch_size']}, m = {cfg['m']}", "train",
             e2e["train_loop_s"], ".2f"),
            (f"denoising one {e2e['eval_image_shape'][0]}x{e2e['eval_image_shape'][1]} BSD68 image, "
             f"stride {e2e['eval_stride']}", "eval", e2e["eval_s"], ".3f")]
    return [head, "|---|---:|" + "---:|" * (2 * len(names))] + [
        f"| {label} | {t['ReLU']:{spec}} | " + " | ".join(f"{t[n]:{spec}}" for n in names) + " | " +
        " | ".join(f"{ratios[kind][n]:.2f}x" for n in names) + " |" for label, kind, t, spec in rows]


def to_markdown(res: dict) -> str:
    """The results as the Markdown tables the README shows."""
    lines = [
        f"Batch of {res['batch']} codes, m = {res['m']}, lam = {res['lam']:.4f}, float32, "
        f"{res['threads']} threads, torch {res['torch']}; medians of {res['repeats']} repeats.",
        "",
        "| method (dense random codes) | forward (ms) | forward + backward (ms) | max error vs cvxpy referee |",
        "|---|---:|---:|---:|",
    ]
    for r in res["activations"]:
        lines.append(f"| {r['method']} | {_fmt(r['forward_ms'], '.2f')} | {_fmt(r['forward_backward_ms'], '.2f')} "
                     f"| {_fmt(r['max_error_vs_cvxpy'], '.1e')} |")
    steps = {"with_optimizer": res["train_step_ms"], "without_optimizer": res["train_step_no_optimizer_ms"]}
    lines += ["", *_step_table(f"training step, 64 → 256 → 64, dense random data, batch {res['batch']}", steps)]
    if res.get("trained"):
        tr = res["trained"]
        lines += ["", f"| codes of the committed sigma = {tr['sigma']:g} models (noisy Train400 patches) | "
                      "forward (ms) | forward + backward (ms) | active units (mean) |", "|---|---:|---:|---:|"]
        for r in tr["activations"]:
            lines.append(f"| {r['method']} | {r['forward_ms']:.2f} | {r['forward_backward_ms']:.2f} "
                         f"| {r['mean_active']:.1f} |")
        lines += ["", *_step_table(f"training step of the committed models, batch {res['batch']}",
                                   tr["train_step_ms"])]
    if res.get("end_to_end"):
        lines += ["", *_end_to_end_table(res["end_to_end"])]
    if res.get("cuda"):
        cu = res["cuda"]
        lines += ["", f"| CUDA ({cu['device']}) | forward (ms) | forward + backward (ms) |", "|---|---:|---:|"]
        lines += [f"| {r['method']} | {r['forward_ms']:.3f} | {r['forward_backward_ms']:.3f} |"
                  for r in cu["activations"]]
        lines += ["", *_step_table("CUDA training step", cu["train_step_ms"])]
    lines += ["", f"Exact NeLU is {res['speedup_exact_vs_cvxpy_compiled']:.0f}x faster than cvxpy compiled once "
                  f"({res['speedup_exact_vs_cvxpy']:.0f}x than the polished referee); the NeLU training step "
                  f"takes {res['train_step_ratio_nelu_over_relu']:.2f}x the ReLU step."]
    if res.get("speedup_numba_vs_cvxpy_compiled"):
        lines += [f"With the numba backend: {res['speedup_numba_vs_cvxpy_compiled']:.0f}x faster than cvxpy compiled "
                  f"once, and the training step takes {res['train_step_ratio_numba_over_relu']:.2f}x the ReLU step."]
    lines += [f"Note: {note}." for note in res.get("notes", [])]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nelu.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--m", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--cvxpy-rows", type=int, default=16)
    parser.add_argument("--train-steps", type=int, default=300,
                        help="steps of the end-to-end training rows (0: skip them)")
    parser.add_argument("--rounds", type=int, default=5,
                        help="interleaved ReLU/NeLU rounds of the end-to-end rows (ratio: their median)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1, as in training)")
    parser.add_argument("--results", help="folder of the committed checkpoints (default: the repository's results/)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--readme", help="replace the table between the bench markers of this Markdown file")
    args = parser.parse_args(argv)
    if min(args.batch, args.m, args.repeats, args.cvxpy_rows) < 1 or args.cvxpy_rows > args.batch:
        parser.error("--batch, --m, --repeats and --cvxpy-rows must be positive, with --cvxpy-rows <= --batch")
    if args.train_steps < 0 or args.threads < 1 or args.rounds < 1:
        parser.error("--train-steps must be 0 or positive, --threads and --rounds positive")
    res = run(args.batch, args.m, args.repeats, args.cvxpy_rows, train_steps=args.train_steps, results=args.results,
              threads=args.threads, rounds=args.rounds)
    print(to_markdown(res))
    if args.json:
        from .files import write_json

        write_json(args.json, res)
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
