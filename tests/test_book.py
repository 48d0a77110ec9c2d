"""Tests of the book: every chapter listed in ``_toc.yml`` runs, and the book builds.

How chapters are tested (the nbval scheme)
------------------------------------------
Chapters are committed *without outputs* (checked by ``test_chapters_have_no_outputs``),
so there is no stored output for nbval to compare a cell against. Each chapter is
therefore executed with ``pytest --nbval-lax``: every cell runs in order in a fresh
kernel, and the chapter fails if any cell raises. Outputs are never compared.

Correctness is checked *inside* the chapters: a cell that computes something the text
relies on ends with an ``assert`` (``assert err < 1e-6``, ``assert rmse(x_hat) <
0.6 * rmse(y)``), so a wrong number raises and fails the chapter. Printed values are
for the reader and may vary with the platform or solver; asserted ones may not. Rules
for chapter authors:

* put a tolerance-based ``assert`` after every deterministic check you print;
* never tag a cell ``nbval-check-output`` or mark it ``# NBVAL_CHECK_OUTPUT`` (there is
  no stored output to compare with; ``test_no_strict_output_checks`` enforces this);
* tag cells whose output depends on the machine (versions, timings) with
  ``nbval-ignore-output``: a no-op under ``--nbval-lax``, it documents intent and keeps
  the cell safe if a chapter is ever run with strict ``--nbval``;
* the first code cell is the hidden Colab/Binder setup cell (``remove-input``).

Why a subprocess per chapter: ``make test`` runs ``pytest -n 2 tests`` (pytest-xdist).
If the notebooks were collected directly, xdist would spread the cells of one notebook
over several workers, and a cell would run in a kernel that never executed the cells
before it. One test per chapter, each running ``pytest --nbval-lax`` on that chapter in
a subprocess, keeps a chapter's cells together in one kernel while xdist runs different
chapters in parallel.

The list of chapters comes from the notebooks in ``book/``; a test checks that it is
exactly the set of notebooks in ``_toc.yml``, so no chapter is built but not tested, or
tested but not built.

Run (``NELU_DATA`` and ``MPLBACKEND=Agg`` are set by the Makefile)::

    python -m pytest -n 2 tests                          # everything (``make test``)
    python -m pytest tests/test_book.py -k chapter_runs  # execute the chapters only
    python -m pytest tests/test_book.py -m "not slow"    # skip the book build
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from nelu import kit

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
TOC = ROOT / "_toc.yml"
# Generous upper bounds; the whole book currently executes in well under a minute.
CHAPTER_TIMEOUT_S = 1800
ANSI = re.compile(r"\x1b\[[0-9;]*m")  # colour codes in the logs of jupyter-book and nbval


def toc_files() -> list[str]:
    """Every ``file:`` of ``_toc.yml`` (root first), as written, without extension."""
    return kit.toc_files(ROOT)


def resolve(file: str) -> Path | None:
    """The source file a toc entry points to, or None if it does not exist."""
    for suffix in ("", ".ipynb", ".md"):
        path = ROOT / (file + suffix)
        if path.is_file():
            return path
    return None


def notebooks_on_disk() -> list[Path]:
    """The chapter notebooks executed by ``test_chapter_runs`` (all of ``book/``)."""
    return sorted(
        p for p in BOOK.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts and "_build" not in p.parts
    )


CHAPTERS = notebooks_on_disk()


def chapter_id(path: Path) -> str:
    return str(path.relative_to(BOOK))


def test_toc_and_executed_chapters_agree():
    """Every toc entry exists; the notebooks executed by nbval are exactly those in the toc."""
    files = toc_files()
    missing = [f for f in files if resolve(f) is None]
    assert not missing, f"listed in _toc.yml but not found: {missing}"
    in_toc = {resolve(f) for f in files}
    toc_notebooks = {p for p in in_toc if p.suffix == ".ipynb"}
    executed = set(CHAPTERS)
    not_executed = sorted(str(p.relative_to(ROOT)) for p in toc_notebooks - executed)
    not_in_toc = sorted(str(p.relative_to(ROOT)) for p in executed - toc_notebooks)
    assert not not_executed, f"chapters in _toc.yml that nbval would not execute: {not_executed}"
    assert not not_in_toc, f"notebooks in book/ missing from _toc.yml: {not_in_toc}"
    assert toc_notebooks, "no notebook chapters found"


@pytest.mark.parametrize("path", CHAPTERS, ids=chapter_id)
def test_chapters_have_no_outputs(path: Path):
    """Chapters are committed clean: no outputs, no execution counts, a python3 kernel."""
    nb = nbformat.read(path, as_version=4)
    dirty = [
        i
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code" and (cell.get("outputs") or cell.get("execution_count") is not None)
    ]
    assert not dirty, f"{path.name}: code cells {dirty} have outputs or execution counts; clear them"
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3", f"{path.name}: kernelspec must be python3"


@pytest.mark.parametrize("path", CHAPTERS, ids=chapter_id)
def test_no_strict_output_checks(path: Path):
    """No cell asks nbval to compare outputs: there are none stored (see the module docstring)."""
    nb = nbformat.read(path, as_version=4)
    strict = [
        i
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code"
        and ("nbval-check-output" in cell.metadata.get("tags", []) or "NBVAL_CHECK_OUTPUT" in cell.source)
    ]
    assert not strict, f"{path.name}: cells {strict} request output comparison; use an assert instead"


@pytest.mark.parametrize("path", CHAPTERS, ids=chapter_id)
def test_chapter_starts_with_setup_cell(path: Path):
    """The first code cell is the hidden Colab/Binder setup cell."""
    nb = nbformat.read(path, as_version=4)
    first = next(cell for cell in nb.cells if cell.cell_type == "code")
    assert "remove-input" in first.metadata.get("tags", []), f"{path.name}: setup cell must be tagged remove-input"
    assert "google.colab" in first.source, f"{path.name}: the first code cell must be the Colab setup cell"


@pytest.mark.parametrize("path", CHAPTERS, ids=chapter_id)
def test_chapter_runs(path: Path):
    """Execute one chapter with nbval (lax: every cell must run; asserts inside check results)."""
    cmd = [
        sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-current-env",
        "-p", "no:cacheprovider", "-q", "--no-header",
        # Ignore the project's addopts (e.g. a future "-n auto" or --doctest-modules).
        "-o", "addopts=",
        str(path.relative_to(ROOT)),
    ]  # fmt: skip
    env = {**os.environ, "MPLBACKEND": os.environ.get("MPLBACKEND", "Agg")}
    proc = subprocess.run(
        cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=CHAPTER_TIMEOUT_S, check=False
    )
    log = ANSI.sub("", f"{proc.stdout[-8000:]}\n{proc.stderr[-2000:]}")
    assert proc.returncode == 0, f"{path.name} failed under nbval (rc={proc.returncode}):\n{log}"


@pytest.mark.slow
def test_book_builds(book_build):
    """The whole book builds, executing every chapter, with warnings as errors (one build).

    The build is the session fixture ``book_build`` (tests/conftest.py): one
    ``jupyter-book build ROOT -W -n --keep-going --path-output <tmp>`` per test run, shared
    with the browser checks of tests/test_site.py.
    """
    output = book_build.output
    # Sphinx reports problems as "path: WARNING: ..." / "ERROR: ..."; show those first.
    problems = book_build.problems()
    log = "\n".join(problems[:50]) + f"\n... last lines of the build log:\n{output[-4000:]}"
    assert book_build.returncode == 0, f"jupyter-book build failed (rc={book_build.returncode}):\n{log}"
    html = book_build.html
    missing = [f for f in toc_files() if not (html / f"{f}.html").is_file()]
    assert not missing, f"no html for {missing} in {html}:\n{log}"


# Opening lines of sphinx-exercise directives in markdown cells (backtick or colon fences).
EXERCISE_DIRECTIVE = re.compile(
    r"^[ \t]*(`{3,}|:{3,})\{(?P<name>exercise|exercise-start|solution|solution-start|solution-end)\}"
    r"[ \t]*(?P<arg>[^\n]*)\n(?P<options>(?:[ \t]*:[\w-]+:[^\n]*\n)*)",
    re.M,
)


def exercise_directives(path: Path) -> list[tuple[int, str, str, dict[str, str]]]:
    """``(cell index, directive, argument, options)`` of every exercise/solution directive."""
    nb = nbformat.read(path, as_version=4)
    found = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "markdown":
            continue
        for m in EXERCISE_DIRECTIVE.finditer(cell.source + "\n"):
            options = dict(
                (key.strip(), value.strip())
                for key, value in re.findall(r"^[ \t]*:([\w-]+):(.*)$", m["options"], re.M)
            )
            found.append((i, m["name"], m["arg"].strip(), options))
    return found


LANDING = resolve(toc_files()[0])  # the front page (the toc's root): the findings, not a chapter; no exercises


@pytest.mark.parametrize("path", [p for p in CHAPTERS if p != LANDING], ids=chapter_id)
def test_chapter_has_exercises_with_hidden_solutions(path: Path):
    """At least three exercises, each solved in a hidden dropdown; one solution runs code in CI.

    A *gated* solution (``solution-start`` ... ``solution-end``) holds code cells, which
    the chapter tests and the book build execute like any other cell.
    """
    nb = nbformat.read(path, as_version=4)
    found = exercise_directives(path)
    exercises = [(i, opts.get("label")) for i, name, _, opts in found if name in ("exercise", "exercise-start")]
    solutions = [(i, name, arg, opts) for i, name, arg, opts in found if name in ("solution", "solution-start")]
    problems = []
    if len(exercises) < 3:
        problems.append(f"{len(exercises)} exercises (at least 3 needed)")
    if len(solutions) < 3:
        problems.append(f"{len(solutions)} solutions (at least 3 needed)")
    labels = {label for _, label in exercises}
    for i, name, arg, opts in solutions:
        if "dropdown" not in opts.get("class", "").split():
            problems.append(f"cell {i}: the {name} of {arg!r} is not hidden (add ':class: dropdown')")
        if arg not in labels:
            problems.append(f"cell {i}: {name} {arg!r} names no exercise label of this chapter {sorted(labels)}")
    ends = sorted(i for i, name, _, _ in found if name == "solution-end")
    gated_with_code = []
    for i, name, arg, _ in solutions:
        if name == "solution-start":
            end = next((j for j in ends if j > i), None)
            if end is None:
                problems.append(f"cell {i}: solution-start {arg!r} has no solution-end")
            elif any(c.cell_type == "code" for c in nb.cells[i + 1 : end]):
                gated_with_code.append(arg)
    if not gated_with_code:
        problems.append("no gated solution (solution-start, a code cell, solution-end): one exercise must be "
                        "computational, with a solution that CI executes")
    assert not problems, f"{path.name}:\n  " + "\n  ".join(problems)


# Opening lines of the numbered results (sphinx-proof directives other than proofs).
RESULT_DIRECTIVE = re.compile(
    r"^[ \t]*(?:`{3,}|:{3,})\{prf:(?P<kind>theorem|proposition|lemma|corollary|definition|algorithm)\}"
    r"[ \t]*(?P<title>[^\n]*)\n(?:[ \t]*:[\w-]+:[^\n]*\n)*?[ \t]*:label:[ \t]*(?P<label>\S+)",
    re.M,
)
RESULTS_PAGE = BOOK / "results.md"
RESULTS_HEADER = """(chap-results)=
# List of results

Every definition, lemma, proposition, theorem, corollary and algorithm of the book, by chapter,
with its title. Each link goes to the statement; its proof follows it. The
{ref}`general index <genindex>` lists the key terms, and the {ref}`notation <chap-notation>`
page the letters. (This list is generated from the chapters; `tests/test_book.py` checks that it
is complete: run `python tests/test_book.py` to rewrite it.)
"""


def results_page() -> str:
    """The text of ``book/results.md``: the results of every toc chapter, in toc order."""
    parts = [RESULTS_HEADER]
    for file in toc_files():
        path = resolve(file)
        if path is None or path == RESULTS_PAGE:
            continue
        if path.suffix == ".ipynb":
            text = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "markdown")
        else:
            text = path.read_text()
        found = [(m["label"], " ".join(m["title"].split())) for m in RESULT_DIRECTIVE.finditer(text)]
        if found:
            parts.append(f"\n## {{doc}}`{path.stem}`\n\n"
                         + "".join(f"- {{prf:ref}}`{label}`: {title}\n" for label, title in found))
    return "".join(parts)


def test_results_page_lists_every_result():
    """book/results.md links every numbered result of the book, with its title, in toc order."""
    assert RESULTS_PAGE.read_text() == results_page(), "book/results.md is stale: run python tests/test_book.py"
    assert "book/results" in toc_files(), "book/results.md is not in _toc.yml"


if __name__ == "__main__":
    RESULTS_PAGE.write_text(results_page())
    print(f"wrote {RESULTS_PAGE}")
