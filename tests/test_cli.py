"""Tests of the command line (python -m nelu): happy paths and one-line errors with status 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import needs_data, one_error_line

from nelu import cli
from nelu.cli import main
from nelu.data import clear_dataset_cache

pytestmark = needs_data

TINY = ["--steps", "6", "--patch", "4", "--m", "16", "--batch-size", "16", "--pool-size", "300",
        "--train-images", "2", "--val-images", "1", "--no-progress"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("ck") / "nelu_sigma25.pt"
    assert main(["train", "--activation", "nelu", "--sigma", "25", "--out", str(out), *TINY]) == 0
    return out


def test_train_and_evaluate(checkpoint, tmp_path, capsys):
    capsys.readouterr()
    js = tmp_path / "sub" / "eval.json"
    rc = main(["evaluate", "--checkpoint", str(checkpoint), "--dataset", "Set12", "--sigmas", "15", "50",
               "--limit", "2", "--json", str(js)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "PSNR" in out and "SSIM" in out
    data = json.loads(js.read_text())
    assert [r["sigma"] for r in data["summary"]] == [15.0, 50.0]
    assert len(data["per_image"]) == 4 and data["meta"]["dataset"] == "Set12"
    assert js.with_suffix(".csv").read_text().startswith("image,sigma,noisy_psnr,psnr,ssim")


def test_train_blind_and_resume(tmp_path, capsys):
    out = tmp_path / "b.pt"
    args = ["train", "--activation", "relu", "--sigma-range", "0", "75", "--out", str(out), *TINY]
    assert main(args) == 0
    assert main(args + ["--resume"]) == 0
    assert "6 steps" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["evaluate", "--checkpoint", "CK", "--dataset", "CIFAR", "--sigmas", "25"], "CIFAR"),
        (["train", "--activation", "gelu", "--sigma", "25", "--out", "OUT"], "gelu"),
        (["train", "--activation", "relu", "--sigma", "-5", "--out", "OUT"], "sigma"),
        (["evaluate", "--checkpoint", "CK", "--dataset", "Set12", "--sigmas", "-1"], "sigma"),
        (["evaluate", "--checkpoint", "MISSING", "--dataset", "Set12", "--sigmas", "25"], "does not exist"),
        (["evaluate", "--checkpoint", "JUNK", "--dataset", "Set12", "--sigmas", "25"], "cannot read"),
        (["evaluate", "--checkpoint", "CK", "--dataset", "Set12", "--sigmas", "25", "--json", "BADDIR/x.json"],
         "cannot write"),
        (["train", "--activation", "relu", "--sigma", "25", "--out", "BADDIR/x.pt"], "cannot write"),
        (["reproduce", "all", "--profile", "quick", "--out", "BADDIR"], "cannot write"),
        (["reproduce", "everything"], "everything"),
        (["train", "--activation", "relu", "--sigma", "25", "--sigma-range", "0", "5", "--out", "OUT"], "sigma"),
    ],
)
def test_user_mistakes_exit_2_with_one_line(argv, needle, checkpoint, tmp_path, capsys):
    (tmp_path / "junk.pt").write_bytes(b"garbage")
    (tmp_path / "afile").write_text("x")
    subst = {"CK": str(checkpoint), "MISSING": str(tmp_path / "missing.pt"), "JUNK": str(tmp_path / "junk.pt"),
             "OUT": str(tmp_path / "o.pt")}
    argv = [subst.get(a, a.replace("BADDIR", str(tmp_path / "afile"))) for a in argv]
    capsys.readouterr()
    assert main(argv) == 2
    assert needle in one_error_line(capsys)


def test_incompatible_checkpoint(tmp_path, capsys):
    torch.save({"format": "nelu-checkpoint", "version": 1, "config": {"activation": "relu", "patch": 4, "m": 16},
                "model": {"encoder.weight": torch.zeros(3, 3)}}, tmp_path / "bad.pt")
    assert main(["evaluate", "--checkpoint", str(tmp_path / "bad.pt"), "--dataset", "Set12", "--sigmas", "25"]) == 2
    assert "does not match" in one_error_line(capsys)


def test_data_error(checkpoint, tmp_path, monkeypatch, capsys):
    (tmp_path / "Set12").mkdir()
    (tmp_path / "Set12" / "01.png").write_bytes(b"corrupt")
    monkeypatch.setenv("NELU_DATA", str(tmp_path))
    clear_dataset_cache()
    try:
        rc = main(["evaluate", "--checkpoint", str(checkpoint), "--dataset", "Set12", "--sigmas", "25",
                   "--limit", "1"])
    finally:
        clear_dataset_cache()
    assert rc == 2
    assert "corrupt" in one_error_line(capsys)


def test_reproduce_pipeline_tiny(tmp_path, monkeypatch, capsys, tiny_profiles):
    """The reproduce pipeline end to end on a profile even smaller than quick."""
    monkeypatch.chdir(tmp_path)  # the quick profile's default folder: results/quick
    tmp_path = tmp_path / "results" / "quick"
    assert main(["reproduce", "all", "--profile", "quick"]) == 0
    res = json.loads((tmp_path / "bsd68.json").read_text())
    names = {r["model"] for r in res["summary"]}
    assert {"relu_sigma25", "nelu_sigma25", "relu_blind0-75", "nelu_blind0-75", "relu_sigma75"} <= names
    assert len([r for r in res["summary"] if r["model"] == "nelu_sigma25"]) == 10
    assert [r["test_sigma"] for r in res["summary"] if r["model"] == "relu_sigma60"] == [60.0]
    assert res["meta"]["profile"] == "quick" and "total_s" in res["meta"]["timings"]
    assert (tmp_path / "checkpoints" / "nelu_sigma25.pt").is_file()
    assert load_ok(tmp_path / "checkpoints" / "relu_blind0-75.pt")
    syn = json.loads((tmp_path / "synthetic.json").read_text())
    assert len(syn["rows"]) == 7 and "nelu_mse" in syn["rows"][0]
    # A second run reuses the finished checkpoints and reproduces the numbers exactly.
    assert main(["reproduce", "bsd68", "--profile", "quick"]) == 0
    res2 = json.loads((tmp_path / "bsd68.json").read_text())
    assert [r["psnr"] for r in res2["summary"]] == [r["psnr"] for r in res["summary"]]
    assert all(m["reused_checkpoint"] for m in res2["models"].values())


def load_ok(path: Path) -> bool:
    from nelu.models import PatchDenoiser, load_denoiser

    return isinstance(load_denoiser(path), PatchDenoiser)


def test_subprocess_error_is_one_line(tmp_path):
    env = dict(os.environ)
    proc = subprocess.run(
        [sys.executable, "-m", "nelu", "evaluate", "--checkpoint", str(tmp_path / "nope.pt"), "--dataset", "BSD68",
         "--sigmas", "25"],
        capture_output=True, text=True, env=env, cwd=Path(__file__).resolve().parent.parent, timeout=120,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nelu: error:") and "nope.pt" in lines[0]


def test_reproduce_baselines_quick_is_wired_to_nelu_baselines(tmp_path, capsys):
    pytest.importorskip("bm3d")
    assert main(["reproduce", "baselines", "--profile", "quick", "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "baselines" / "baselines.json").read_text())
    assert res["meta"]["profile"] == "quick"
    assert res["meta"]["command"].startswith("python -m nelu.baselines --profile quick")
    assert (tmp_path / "reproduce_baselines.json").is_file()


# ------------------------------------------------------------------ hostile but fair input


def _tiny_train(out, *extra) -> list[str]:
    return ["train", "--activation", "nelu", "--sigma", "25", "--out", str(out), *TINY, *extra]


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--lr", "inf"], "finite"),
        (["--lr", "nan"], "finite"),
        (["--weight-decay", "nan"], "finite"),
        (["--epochs", "inf"], "finite"),
        (["--nelu-lam", "inf"], "finite"),
        (["--nelu-lam", "0"], "nelu_lam"),
        (["--train-images", "0"], "train_images"),
        (["--seed", str(2**70)], "seed"),
        (["--device", "meta"], "meta"),
        (["--device", "nonsense"], "nonsense"),
        (["--patch", "200"], "patch must be an integer in [1, 32]"),
        (["--m", "100000000"], "m must be an integer in [2, 65536]"),
        (["--pool-size", "2000000000"], "pool_size"),
        (["--threads", "0"], "threads"),
        (["--val-every", "-1"], "val_every"),
    ],
)
def test_train_rejects_absurd_values_fast(extra, needle, tmp_path, capsys):
    import time

    t = time.perf_counter()
    assert main(_tiny_train(tmp_path / "o.pt", *extra)) == 2
    assert needle in one_error_line(capsys)
    assert time.perf_counter() - t < 10 and not (tmp_path / "o.pt").exists()


@pytest.mark.parametrize("sigma", ["1e300", "inf", "nan", "-1"])
def test_sigma_out_of_range(sigma, tmp_path, capsys):
    argv = ["train", "--activation", "nelu", "--sigma", sigma, "--out", str(tmp_path / "o.pt"), *TINY]
    assert main(argv) == 2
    assert "sigma" in one_error_line(capsys)


def test_evaluate_stride_checks(checkpoint, capsys):
    base = ["evaluate", "--checkpoint", str(checkpoint), "--dataset", "Set12", "--sigmas", "25", "--limit", "1"]
    for stride in ("0", "100", "-1"):
        assert main(base + ["--stride", stride]) == 2
        assert "--stride must be in [1, 4]" in one_error_line(capsys)


def test_evaluate_never_overwrites_its_inputs(checkpoint, tmp_path, capsys):
    before = checkpoint.read_bytes()
    base = ["evaluate", "--checkpoint", str(checkpoint), "--dataset", "Set12", "--sigmas", "25", "--limit", "1"]
    assert main(base + ["--json", str(tmp_path / "r.csv")]) == 2  # the CSV beside it would be the JSON itself
    assert "must end in .json" in one_error_line(capsys)
    assert main(base + ["--json", str(checkpoint)]) == 2
    assert ".json" in one_error_line(capsys)
    # A checkpoint named like the CSV written beside --json.
    ck_csv = tmp_path / "model.csv"
    ck_csv.write_bytes(before)
    assert main(["evaluate", "--checkpoint", str(ck_csv), "--dataset", "Set12", "--sigmas", "25", "--limit", "1",
                 "--json", str(tmp_path / "model.json")]) == 2
    assert "same file as --checkpoint" in one_error_line(capsys)
    assert ck_csv.read_bytes() == before and checkpoint.read_bytes() == before
    assert not (tmp_path / "model.json").exists()


def test_train_never_overwrites_another_kind_of_file(tmp_path, capsys):
    notes = tmp_path / "notes.pt"
    notes.write_text("my notes")
    for extra in ([], ["--overwrite"], ["--resume"]):
        assert main(_tiny_train(notes, *extra)) == 2
        assert "exists and is not a checkpoint of this kind; refusing to overwrite it" in one_error_line(capsys)
        assert notes.read_text() == "my notes"


def test_train_over_an_existing_checkpoint_needs_resume_or_overwrite(checkpoint, tmp_path, capsys):
    out = tmp_path / "c.pt"
    out.write_bytes(checkpoint.read_bytes())
    assert main(_tiny_train(out)) == 2
    assert "--resume" in one_error_line(capsys) and out.read_bytes() == checkpoint.read_bytes()
    assert main(_tiny_train(out, "--overwrite")) == 0


def test_two_runs_on_one_checkpoint(tmp_path, capsys):
    from nelu.files import lock

    out = tmp_path / "c.pt"
    with lock(out, "training run"):  # as a concurrent 'nelu train' holds it
        assert main(_tiny_train(out)) == 2
        assert "another training run is writing" in one_error_line(capsys)
    assert not out.exists()
    assert main(_tiny_train(out)) == 0


@pytest.mark.parametrize(
    "config, needle",
    [
        ({"activation": "nelu", "patch": 4, "m": 16, "eval_stride": 100}, "eval_stride"),
        ([1, 2, 3], "lacks a 'config' dict"),
        ({"activation": "nelu", "patch": 200, "m": 16}, "patch"),
        ({"activation": "nelu", "patch": 4, "m": 16, "nelu_lam": float("inf")}, "nelu_lam"),
        ({"activation": "nelu", "patch": "4", "m": 16}, "patch"),
    ],
)
def test_hostile_checkpoint_configs(config, needle, tmp_path, capsys):
    path = tmp_path / "bad.pt"
    torch.save({"format": "nelu-checkpoint", "version": 1, "config": config, "model": {}}, path)
    assert main(["evaluate", "--checkpoint", str(path), "--dataset", "Set12", "--sigmas", "25"]) == 2
    assert needle in one_error_line(capsys)


def test_unfinished_checkpoint_gets_a_note(tmp_path, capsys):
    from nelu.train import TrainConfig, train

    out = tmp_path / "half.pt"
    train(TrainConfig(activation="nelu", sigma=25.0, steps=6, patch=4, m=16, batch_size=16, pool_size=300,
                      train_images=2, val_images=1, progress=False), out, stop_after=3)
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(out), "--dataset", "Set12", "--sigmas", "25", "--limit", "1"]) == 0
    err = capsys.readouterr().err
    assert "unfinished run (step 3 of 6)" in err


def test_a_bug_keeps_its_traceback_and_says_so(monkeypatch, capsys):
    def broken(args, argv):
        raise RuntimeError("an internal invariant failed")

    parser = cli.build_parser

    def patched():
        p = parser()
        p._subparsers._group_actions[0].choices["evaluate"].set_defaults(func=broken)
        return p

    monkeypatch.setattr(cli, "build_parser", patched)
    assert main(["evaluate", "--checkpoint", "x.pt", "--dataset", "Set12", "--sigmas", "25"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "RuntimeError: an internal invariant failed" in err
    assert err.strip().splitlines()[-1].startswith("nelu: internal error: this is a bug")


def test_divergence_is_one_line(tmp_path, capsys, monkeypatch):
    from nelu import train as nt

    def nan_loss(*a, **k):  # a loss that became NaN, as an absurd learning rate produces
        return torch.tensor(float("nan"))

    monkeypatch.setattr(nt.torch, "mean", nan_loss)
    out = tmp_path / "d.pt"
    try:
        rc = main(_tiny_train(out))
    finally:
        monkeypatch.undo()
    assert rc == 2
    assert "training diverged at step 1" in one_error_line(capsys) and not out.exists()
