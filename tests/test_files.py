"""Tests of nelu.files: no code runs from a file, atomic and concurrent writes, stale temporary
files, output guards and the training lock."""

from __future__ import annotations

import json
import multiprocessing
import os
import pickle
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nelu.files import (
    FileSafetyError,
    UnsafeFileError,
    check_distinct,
    load_torch,
    lock,
    remove_stale_temps,
    save_torch,
    write_csv,
    write_json,
)
from nelu.models import CheckpointError, read_checkpoint

ROOT = Path(__file__).resolve().parents[1]


class Payload:
    """Unpickling this object runs ``touch MARKER``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_object_inside_a_valid_checkpoint_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"format": "nelu-checkpoint", "version": 1, "config": {}, "model": {}, "x": Payload(marker)}, path)
    with pytest.raises(UnsafeFileError, match="arbitrary code"):
        load_torch(path)
    with pytest.raises(CheckpointError, match="refusing"):
        read_checkpoint(path, "nelu-checkpoint", 1, "nelu")
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
def test_bare_pickle_runs_nothing(tmp_path, protocol):
    marker = tmp_path / "pwned"
    path = tmp_path / "bare.pt"
    path.write_bytes(pickle.dumps(Payload(marker), protocol=protocol))
    with pytest.raises(CheckpointError):
        read_checkpoint(path, "nelu-checkpoint", 1, "nelu")
    assert not marker.exists()


def test_malicious_checkpoint_through_the_cli_runs_nothing(tmp_path):
    """The whole command, in a fresh interpreter: exit 2, one line, no side effect."""
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"format": "nelu-checkpoint", "version": 1, "config": {"activation": "nelu", "patch": 4, "m": 16},
                "model": {"w": Payload(marker)}}, path)
    proc = subprocess.run([sys.executable, "-m", "nelu", "evaluate", "--checkpoint", str(path), "--dataset",
                           "Set12", "--sigmas", "25"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nelu: error:") and "arbitrary code" in lines[0]
    assert not marker.exists()


def test_every_committed_checkpoint_loads_safely():
    paths = sorted((ROOT / "results").rglob("*.pt"))
    assert len(paths) >= 10
    for path in paths:
        ck = load_torch(path)
        assert isinstance(ck, dict) and "model" in ck, path


def test_save_and_load_round_trip_with_a_plain_version_string(tmp_path):
    obj = {"w": torch.arange(3.0), "torch_version": str(torch.__version__), "t": (1, 2.5, None)}
    save_torch(obj, tmp_path / "a.pt")
    back = load_torch(tmp_path / "a.pt")
    assert torch.equal(back["w"], obj["w"]) and back["torch_version"] == obj["torch_version"]
    assert back["t"] == (1, 2.5, None)


def _hammer(args) -> int:
    path, k = args
    for i in range(40):
        write_json(path, {"writer": k, "i": i, "pad": "x" * (1000 * (k + 1))})
        write_csv(Path(path).with_suffix(".csv"), [{"writer": k, "i": i}] * (50 * (k + 1)))
    return k


def test_concurrent_writers_never_publish_a_partial_file(tmp_path):
    path = tmp_path / "r.json"
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(4) as pool:
        assert sorted(pool.map(_hammer, [(str(path), k) for k in range(4)])) == [0, 1, 2, 3]
    data = json.loads(path.read_text())
    assert data["i"] == 39 and len(data["pad"]) == 1000 * (data["writer"] + 1)
    rows = path.with_suffix(".csv").read_text().splitlines()
    assert rows[0] == "writer,i" and len(rows) - 1 == 50 * (int(rows[1].split(",")[0]) + 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.csv", "r.json"]


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temporary_files_of_dead_writers_are_removed(tmp_path):
    host = socket.gethostname().replace(".", "_")
    dead = tmp_path / f".c.pt.{host}-{_dead_pid()}.abc123.tmp"
    live = tmp_path / f".c.pt.{host}-{os.getpid()}.def456.tmp"
    other_host = tmp_path / f".c.pt.elsewhere-{_dead_pid()}.ghi789.tmp"
    other_file = tmp_path / f".d.pt.{host}-{_dead_pid()}.jkl000.tmp"
    for p in (dead, live, other_host, other_file):
        p.write_bytes(b"partial")
    save_torch({"a": 1}, tmp_path / "c.pt")
    assert not dead.exists()
    assert live.exists() and other_host.exists() and other_file.exists()
    assert remove_stale_temps(tmp_path / "c.pt") == []


def test_a_failed_write_keeps_the_old_file_and_names_the_target(tmp_path, monkeypatch):
    path = tmp_path / "r.json"
    write_json(path, {"old": True})

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError) as info:
        write_json(path, {"old": False})
    assert info.value.filename == str(path) and info.value.errno == 28
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"old": True}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_check_distinct(tmp_path):
    a = tmp_path / "a.pt"
    a.write_bytes(b"x")
    (tmp_path / "link.pt").symlink_to(a)
    os.link(a, tmp_path / "hard.pt")
    check_distinct([("--json", tmp_path / "r.json")], [("--checkpoint", a)])
    for same in (a, tmp_path / "link.pt", tmp_path / "hard.pt", tmp_path / "sub" / ".." / "a.pt"):
        with pytest.raises(FileSafetyError, match="same file as --checkpoint"):
            check_distinct([("--json", same)], [("--checkpoint", a)])
    with pytest.raises(FileSafetyError, match="--csv"):
        check_distinct([("--json", tmp_path / "x"), ("--csv", tmp_path / "x")], [])


def test_lock_is_exclusive_and_cleans_up(tmp_path):
    target = tmp_path / "c.pt"
    with lock(target, "training run"):
        with pytest.raises(FileSafetyError, match="another training run is writing"):
            with lock(target, "training run"):
                pass
        # Another process is refused too.
        code = ("import sys; from nelu.files import lock, FileSafetyError\n"
                "try:\n    lock(sys.argv[1]).__enter__()\nexcept FileSafetyError:\n    sys.exit(3)\n")
        assert subprocess.run([sys.executable, "-c", code, str(target)], timeout=60).returncode == 3
    assert list(tmp_path.iterdir()) == []
    with lock(target):  # free again
        pass


def test_lock_of_a_killed_process_does_not_block(tmp_path):
    target = tmp_path / "c.pt"
    code = ("import os, sys; from nelu.files import lock\n"
            "held = lock(sys.argv[1]); held.__enter__(); os._exit(0)\n")  # dies holding the lock, file left behind
    assert subprocess.run([sys.executable, "-c", code, str(target)], timeout=60).returncode == 0
    assert (tmp_path / ".c.pt.lock").exists()
    with lock(target):
        pass
