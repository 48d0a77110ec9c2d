"""Shared fixtures and helpers.

* ``needs_data``: skip a test (or a module, as ``pytestmark``) when ``$NELU_DATA`` is not a folder.
* ``one_error_line(capsys, prog)``: the single ``PROG: error: ...`` line a user mistake prints.
* ``tiny_profiles``: the ``quick`` profiles of the experiments shrunk to seconds.
* ``book_build``: ONE build of the book per test session.

Building the book executes every chapter, so it is done once and shared by
``tests/test_book.py::test_book_builds`` (the build must succeed with ``-W``) and
``tests/test_site.py`` (the built HTML in a browser). Under pytest-xdist each worker has
its own session, so the build goes into the run's common temporary folder (the parent of
the workers' ``basetemp``), guarded by a file lock: the first worker to need it builds, the
others wait for it and reuse the result (``build.json`` beside it records the exit status
and the log).

``NELU_BOOK_HTML=/path/to/_build/html`` skips the build and checks an existing one instead
(e.g. after ``make book``: ``NELU_BOOK_HTML=_build/html pytest tests/test_site.py``).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUILD_TIMEOUT_S = 3600

needs_data = pytest.mark.skipif(
    not os.path.isdir(os.environ.get("NELU_DATA") or "/nonexistent"),
    reason="NELU_DATA is unset or not a folder; set it to the image data folder",
)


def one_error_line(capsys, prog: str = "nelu") -> str:
    """The one line on stderr of a command that failed on a user mistake (no traceback)."""
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{prog}: error:") and "Traceback" not in err
    return lines[0]


@pytest.fixture
def tiny_profiles(monkeypatch):
    """The experiments' ``quick`` profiles shrunk to a few steps on one image each."""
    from nelu.experiments import bsd68, conv, noise, synthetic

    monkeypatch.setitem(bsd68.PROFILES, "quick", {
        "train": dict(patch=4, m=8, steps=3, batch_size=8, lr=2e-3, pool_size=100, train_images=1,
                      val_images=1, val_every=0, val_stride=4, eval_stride=4),
        "images": 1})
    monkeypatch.setitem(synthetic.PROFILES, "quick", dict(steps=3, test_size=50))
    monkeypatch.setitem(noise.PROFILES, "quick", dict(images=1))
    monkeypatch.setitem(conv.PROFILES, "quick", dict(
        train=dict(m=8, kernel=5, crop=12, steps=3, batch_size=2, lr=3e-3, nelu_lam=0.1, pool_size=10,
                   train_images=1), images=1, global_images=1))
ANSI = re.compile(r"\x1b\[[0-9;]*m")  # colour codes in jupyter-book's log


@dataclass(frozen=True)
class BookBuild:
    returncode: int
    output: str  # stdout + stderr of jupyter-book, colour codes removed
    html: Path  # the _build/html folder
    cmd: str

    def problems(self) -> list[str]:
        """Sphinx's "WARNING:" / "ERROR:" lines."""
        return [line for line in self.output.splitlines() if "WARNING:" in line or "ERROR:" in line]


def jupyter_book() -> str:
    exe = Path(sys.executable).with_name("jupyter-book")
    return str(exe) if exe.exists() else "jupyter-book"


@contextmanager
def file_lock(path: Path):
    """An exclusive lock between processes (the xdist workers) on ``path``."""
    try:
        import fcntl
    except ImportError:  # not POSIX: fall back to no lock (xdist workers may then build twice)
        yield
        return
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def run_build(out: Path) -> BookBuild:
    """``jupyter-book build ROOT -W -n --keep-going --path-output out`` (what ``make book`` runs)."""
    cmd = [jupyter_book(), "build", str(ROOT), "-W", "-n", "--keep-going", "--path-output", str(out)]
    env = {**os.environ, "MPLBACKEND": os.environ.get("MPLBACKEND", "Agg")}
    try:
        proc = subprocess.run(
            cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False
        )
        rc, output = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as exc:
        rc, output = -1, f"{exc.stdout or ''}{exc.stderr or ''}\nbuild timed out after {BUILD_TIMEOUT_S} s"
        output = output if isinstance(output, str) else output.decode(errors="replace")
    return BookBuild(rc, ANSI.sub("", output), out / "_build" / "html", " ".join(cmd))


@pytest.fixture(scope="session")
def book_build(tmp_path_factory: pytest.TempPathFactory) -> BookBuild:
    existing = os.environ.get("NELU_BOOK_HTML")
    if existing:
        html = Path(existing).resolve()
        if not (html / "index.html").is_file():
            pytest.fail(f"NELU_BOOK_HTML={existing}: no index.html there")
        return BookBuild(0, f"(reused the build in {html})", html, "(none)")
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # common to the workers of this run only
    out = shared / "book-build"
    record = shared / "book-build.json"
    with file_lock(shared / "book-build.lock"):
        if not record.is_file():
            build = run_build(out)
            record.write_text(json.dumps({"returncode": build.returncode, "output": build.output, "cmd": build.cmd}))
        saved = json.loads(record.read_text())
    return BookBuild(saved["returncode"], saved["output"], out / "_build" / "html", saved["cmd"])
