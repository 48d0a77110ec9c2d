"""The workshop kit (``nelu.kit``): student notebooks without solutions that still run, executed
notebooks with outputs, an offline slide deck, all linked from the workshop page of the built site.

The fast tests work on the chapters' sources and on small notebooks made here; the ``slow`` ones
use the session's one book build (``book_build`` in tests/conftest.py), whose Sphinx run makes
the kit (``nelu.kit`` is one of its extensions).
"""

from __future__ import annotations

import base64
import io
import re
import zipfile
from pathlib import Path
from urllib.parse import urljoin

import nbformat
import pytest
from nbclient import NotebookClient
from PIL import Image
from test_book import exercise_directives

from nelu import kit

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
CHAPTERS = kit.chapters(ROOT)


def md(source: str):
    return nbformat.v4.new_markdown_cell(source)


def code(source: str):
    return nbformat.v4.new_code_cell(source)


def test_solutions_are_removed_whatever_their_form():
    nb = nbformat.v4.new_notebook(cells=[
        code("x = 1"),
        md("## Exercises\n\n```{exercise} One\n:label: ex-one\n\nShow it.\n```\n\n"
           "````{solution} ex-one\n:class: dropdown\n\nSECRET ONE\n```python\nprint(1)\n```\n````\n\n"
           ":::{solution} ex-one\n:class: dropdown\nSECRET COLON\n:::\n\n"
           "````{exercise} Two\n:label: ex-two\n\nCompute it.\n````\n\n"
           "````{solution-start} ex-two\n:class: dropdown\n````\n\nSECRET TWO"),
        code("secret = 2"),
        md("SECRET BETWEEN"),
        code("secret += 1"),
        md("SECRET LAST\n\n````{solution-end}\n````\n\nAfter the solution."),
        code("y = 2"),
    ])
    student = kit.student_notebook(nb)
    text = nbformat.writes(student)
    assert "SECRET" not in text and "secret" not in text and "{solution" not in text
    assert [(c.cell_type, c.source) for c in student.cells] == [
        ("code", "x = 1"),
        ("markdown", ("## Exercises\n\n```{exercise} One\n:label: ex-one\n\nShow it.\n```\n\n"
                      "````{exercise} Two\n:label: ex-two\n\nCompute it.\n````")),
        ("code", "# Your solution"),
        ("markdown", "After the solution."),
        ("code", "y = 2"),
    ]


@pytest.mark.parametrize("text", [
    "````{solution-start} ex\n````\n\nno end",
    "````{solution-end}\n````",
    "```{solution} ex\nnever closed",
])
def test_unbalanced_solutions_are_refused(text):
    with pytest.raises(kit.KitError):
        kit.student_notebook(nbformat.v4.new_notebook(cells=[md(text)]))


def solution_texts(nb) -> list[str]:
    """The first line of text of every ``solution`` block, and the code of every gated solution."""
    found, inside = [], False
    for cell in nb.cells:
        if cell.cell_type == "code" and inside:
            found.append(cell.source)
        if cell.cell_type != "markdown":
            continue
        for m in re.finditer(r"^(`{3,}|:{3,})\{solution\}[^\n]*\n((?:[ \t]*:[\w-]+:[^\n]*\n)*)\s*([^\n]+)",
                             cell.source, re.MULTILINE):
            found.append(m[3])
        for m in re.finditer(r"\{(solution-start|solution-end)\}", cell.source):
            inside = m[1] == "solution-start"
    return found


@pytest.mark.parametrize("chapter", CHAPTERS, ids=str)
def test_student_chapters_keep_the_exercises_and_lose_the_solutions(chapter, tmp_path):
    original = nbformat.read(ROOT / chapter, as_version=4)
    student = kit.student_notebook(original)
    path = tmp_path / chapter.name
    nbformat.write(student, path)
    kinds = [name for _, name, _, _ in exercise_directives(path)]
    exercises = [name for _, name, _, _ in exercise_directives(ROOT / chapter) if name.startswith("exercise")]
    assert kinds == exercises  # every exercise, no solution directive
    text = "\n".join(cell.source for cell in student.cells)
    leaked = [s for s in solution_texts(original) if s.strip() in text]
    assert not leaked, f"solution text left in the student {chapter}: {leaked}"
    assert all(not c.outputs and c.execution_count is None for c in student.cells if c.cell_type == "code")


@pytest.mark.slow
def test_the_student_preface_runs(tmp_path):
    student = kit.student_notebook(nbformat.read(BOOK / "preface.ipynb", as_version=4))
    assert "# Your solution" in [c.source for c in student.cells if c.cell_type == "code"]
    NotebookClient(student, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(BOOK)}}).execute()
    assert any(c.outputs for c in student.cells if c.cell_type == "code")


def png(color: int) -> str:
    buffer = io.BytesIO()
    Image.new("L", (8, 6), color).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def executed(caption: str, colors: list[int]):
    cells = [md("(chap-x)=\n# The $\\lambda$ chapter")]
    for color in colors:
        cell = code(f"plot({color})")
        cell.outputs = [nbformat.v4.new_output("display_data", data={"image/png": png(color), "text/plain": "<Figure>"})]
        cells += [cell, md(caption + "\n\nMore text.")]
    return nbformat.v4.new_notebook(cells=cells)


def test_the_deck_embeds_its_figures_and_needs_no_network():
    notebooks = {"a": executed("*The error against $\\sigma$ and $\\|u - z\\|_2^2$, see {ref}`there <x>`.*", [10, 200])}
    slides = (kit.Slide("a", "plot(200)", "Second <b>"), kit.Slide("a", "plot(", "First"))
    deck = kit.slides_html("Title", "Why?", notebooks, slides)
    assert deck.count("<section") == 3
    images = re.findall(r'<img alt="[^"]*" src="data:image/png;base64,([^"]+)"', deck)
    assert [Image.open(io.BytesIO(base64.b64decode(b))).getpixel((0, 0)) for b in images] == [200, 10]  # by marker
    assert "<p>The error against σ and ‖u - z‖₂², see there.</p>" in deck
    assert "<h2>Second &lt;b&gt;</h2>" in deck and "<h2>First</h2>" in deck
    assert '<a href="../book/a.html">The λ chapter</a>' in deck
    assert not re.search(r"https?:|<link|<script src|<img src=\"(?!data:)", deck)
    with pytest.raises(kit.KitError, match="no cell of the chapter 'a' that contains 'plot\\(3\\)' draws a figure"):
        kit.slides_html("Title", "Why?", notebooks, (kit.Slide("a", "plot(3)", "Third"),))


def test_a_chapter_without_its_execution_is_an_error(tmp_path):
    chapter = CHAPTERS[0]
    with pytest.raises(kit.KitError, match=f"no execution of {chapter} as it is now .*make book"):
        kit.build_kit(ROOT, tmp_path)
    copy = tmp_path / kit.EXECUTED_DIR / chapter  # myst-nb's copy of a chapter taken from the cache: no outputs
    copy.parent.mkdir(parents=True)
    copy.write_bytes((ROOT / chapter).read_bytes())
    with pytest.raises(kit.KitError, match=f"the execution of {chapter} in .* has no output"):
        kit.executed_notebook(ROOT, chapter, tmp_path)
    nb = nbformat.read(copy, as_version=4)
    first = next(i for i, cell in enumerate(nb.cells) if cell.cell_type == "code")
    nb.cells[first].outputs = [nbformat.v4.new_output("error", ename="ValueError", evalue="no", traceback=[])]
    nbformat.write(nb, copy)
    with pytest.raises(kit.KitError, match=rf"the execution of {chapter} in .* raised errors \(cells \[{first}\]\)"):
        kit.executed_notebook(ROOT, chapter, tmp_path)


# ----------------------------------------------------------------------------- the built site


@pytest.fixture(scope="module")
def site(book_build) -> Path:
    assert book_build.returncode == 0, "the book did not build; see test_book_builds"
    return book_build.html


@pytest.mark.slow
def test_the_workshop_page_links_every_file_of_the_kit(site):
    page = site / "book" / "workshop.html"
    hrefs = re.findall(r'href="([^"#]+)"', page.read_text())
    for name in kit.ARCHIVES.values():
        links = [h for h in hrefs if h.endswith("/" + name)]
        assert links, f"book/workshop.md does not link {name}"
        for href in links:
            target = site / urljoin("book/workshop.html", href)
            assert target.resolve().is_file(), f"{href} in workshop.html resolves to no file"


def members(site: Path, role: str) -> dict[str, nbformat.NotebookNode]:
    with zipfile.ZipFile(site / kit.KIT_DIR / kit.ARCHIVES[role]) as zf:
        names = zf.namelist()
        assert names == ["README.txt"] + [f"{i:02d}-{c.name}" for i, c in enumerate(CHAPTERS, start=1)]
        return {n: nbformat.reads(zf.read(n).decode(), as_version=4) for n in names[1:]}


@pytest.mark.slow
def test_the_executed_archive_has_every_output(site):
    images = 0
    for name, nb in members(site, "executed").items():
        code_cells = [c for c in nb.cells if c.cell_type == "code"]
        assert not code_cells or any(c.outputs for c in code_cells), f"{name} has no output"
        images += sum("image/png" in o.get("data", {}) or "image/svg+xml" in o.get("data", {})
                      for c in code_cells for o in c.outputs)
    assert images >= len(kit.SLIDES)


@pytest.mark.slow
def test_the_student_archive_has_no_solution_and_no_output(site):
    for name, nb in members(site, "student").items():
        assert "{solution" not in nbformat.writes(nb), name
        assert all(not c.outputs for c in nb.cells if c.cell_type == "code"), name


@pytest.mark.slow
def test_the_deck_in_the_site(site):
    path = site / kit.KIT_DIR / kit.ARCHIVES["slides"]
    deck = path.read_text(encoding="utf-8")
    assert deck.count("<section") == len(kit.SLIDES) + 1
    assert 8 <= len(kit.SLIDES) <= 12  # about ten
    assert len(re.findall(r'<img alt="[^"]*" src="data:image/(?:png|svg\+xml);base64,', deck)) == len(kit.SLIDES)
    assert not re.search(r"https?:|<link|<script src", deck)
    captions = re.findall(r"<p>(.*?)</p>", deck)
    assert not [c for c in captions if "$" in c or "\\" in c], "TeX left in a caption: add it to nelu.kit._TEX"
    for href in re.findall(r'href="([^"]+)"', deck):
        assert (path.parent / href).resolve().is_file(), href
