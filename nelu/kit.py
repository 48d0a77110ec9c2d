"""The workshop kit: student notebooks, executed notebooks and slides, made with the book.

The book's build makes it (``make book``): ``_config.yml`` loads this module as a Sphinx
extension, and once the HTML is written it puts in ``_build/html/kit/``:

* ``nelu-student-notebooks.zip``: every chapter of ``_toc.yml`` without its solutions
  (the ``solution`` directives, and everything from a ``solution-start`` to its
  ``solution-end``, code cells included: an empty code cell takes the place of a
  computational solution) and without outputs;
* ``nelu-executed-notebooks.zip``: every chapter as the build executed it, outputs included;
* ``nelu-slides.html``: about ten slides of the book's own figures (:data:`SLIDES`), one
  file that needs no network: the images are embedded, and style and script are inline.

The workshop page links to them. ``python -m nelu.kit --build _build`` makes them again
from an existing build.

>>> text = "Intro.\\n\\n```{solution} ex-a\\n:class: dropdown\\n\\nThe answer.\\n```\\n\\nMore."
>>> strip_solutions(text, inside=False)
('Intro.\\n\\nMore.', False)
"""

from __future__ import annotations

import argparse
import base64
import html
import re
import sys
import zipfile
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import nbformat
import yaml

__all__ = [
    "ARCHIVES",
    "SLIDES",
    "KitError",
    "Slide",
    "build_kit",
    "chapters",
    "executed_notebook",
    "figures",
    "main",
    "setup",
    "slides_html",
    "strip_solutions",
    "student_notebook",
]

#: The files the kit writes into the site's ``kit/`` folder, by role.
ARCHIVES = {
    "student": "nelu-student-notebooks.zip",
    "executed": "nelu-executed-notebooks.zip",
    "slides": "nelu-slides.html",
}
KIT_DIR = "kit"
EXECUTED_DIR = "jupyter_execute"  # where myst-nb writes the executed notebooks, beside html/
CACHE_DIR = ".jupyter_cache"  # where myst-nb keeps the executions (execute_notebooks: cache)
_FIXED_TIME = (2024, 1, 1, 0, 0, 0)  # every archive member's date: the archives depend only on their content
_DIRECTIVE = re.compile(r"^[ \t]*(?P<fence>`{3,}|:{3,})\{(?P<name>solution|solution-start|solution-end)\}(?P<arg>.*)$")


class KitError(RuntimeError):
    """The kit cannot be made: a chapter has no executed copy, a figure is missing, a solution is open."""


# ----------------------------------------------------------------------------- student notebooks


def _block_end(lines: list[str], start: int, fence: str) -> int:
    """Index of the line closing the directive opened at ``lines[start]`` by ``fence``."""
    closing = re.compile(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$")
    for j in range(start + 1, len(lines)):
        if closing.match(lines[j]):
            return j
    raise KitError(f"the directive {lines[start].strip()!r} is never closed by {fence}")


def strip_solutions(text: str, inside: bool) -> tuple[str, bool]:
    """Remove the solutions from the Markdown ``text``; return it and whether a gated solution is still open.

    ``inside`` says whether ``text`` starts within a gated solution (a ``solution-start``
    of an earlier cell not yet closed by its ``solution-end``): what comes before the
    closing ``solution-end`` is removed too. A ``solution`` block is removed whole.

    >>> strip_solutions("Why?\\n\\n````{solution-start} ex-b\\n:class: dropdown\\n````\\n\\nBecause.", False)
    ('Why?', True)
    >>> strip_solutions("Hence.\\n\\n````{solution-end}\\n````\\n\\nNext.", True)
    ('Next.', False)
    """
    lines = text.split("\n")
    kept: list[str] = []
    i = 0
    while i < len(lines):
        m = _DIRECTIVE.match(lines[i])
        if m is None:
            if not inside:
                kept.append(lines[i])
            i += 1
            continue
        name = m["name"]
        if name == "solution-end" and not inside:
            raise KitError(f"a solution-end without its solution-start: {lines[i].strip()!r}")
        if name == "solution-start" and inside:
            raise KitError(f"a solution-start inside another gated solution: {lines[i].strip()!r}")
        if name != "solution":
            inside = name == "solution-start"
        i = _block_end(lines, i, m["fence"]) + 1
    kept_text = re.sub(r"\n{3,}", "\n\n", "\n".join(kept)).strip()
    return kept_text, inside


def student_notebook(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy of the chapter ``nb`` without solutions or outputs, for learners.

    Markdown cells lose their solutions (:func:`strip_solutions`) and are dropped when
    nothing is left; code cells within a gated solution are dropped, and an empty code
    cell, ``# Your solution``, takes the place of each gated solution that held code.
    Every code cell is cleared (no outputs, no execution counts).
    """
    out = nbformat.v4.new_notebook(metadata=nb.metadata)
    inside, dropped_code = False, False
    for cell in nb.cells:
        if cell.cell_type == "code":
            if inside:
                dropped_code = True
                continue
            cell = nbformat.from_dict(cell)
            cell.outputs, cell.execution_count = [], None
            cell.metadata.pop("execution", None)
            out.cells.append(cell)
            continue
        if cell.cell_type != "markdown":
            out.cells.append(cell)
            continue
        was_inside = inside
        text, inside = strip_solutions(cell.source, inside)
        if was_inside and not inside and dropped_code:
            out.cells.append(nbformat.v4.new_code_cell("# Your solution"))
        if not inside:
            dropped_code = False
        if text:
            out.cells.append(nbformat.from_dict({**cell, "source": text}))
    if inside:
        raise KitError("a solution-start is never closed by a solution-end")
    nbformat.validate(out)
    return out


# ----------------------------------------------------------------------------- chapters


def toc_files(root: Path) -> list[str]:
    """Every ``file:`` of ``root/_toc.yml`` (root first), as written, without extension."""
    toc = yaml.safe_load((root / "_toc.yml").read_text(encoding="utf-8"))
    files: list[str] = [toc["root"]]

    def walk(entries: list[dict] | None) -> None:
        for entry in entries or []:
            if "file" in entry:
                files.append(entry["file"])
            for key in ("parts", "chapters", "sections"):
                walk(entry.get(key))

    walk(toc.get("parts"))
    walk(toc.get("chapters"))
    return files


def chapters(root: Path) -> list[Path]:
    """The notebook chapters of ``root/_toc.yml``, in the book's order (paths relative to ``root``)."""
    return [Path(f).with_suffix(".ipynb") for f in toc_files(root) if (root / f).with_suffix(".ipynb").is_file()]


def _write_zip(path: Path, members: dict[str, bytes]) -> None:
    """Write ``members`` (name -> content) into the zip ``path``, with fixed dates."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            info = zipfile.ZipInfo(name, date_time=_FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    tmp.replace(path)


def _member(index: int, chapter: Path) -> str:
    return f"{index:02d}-{chapter.name}"


def _readme(kind: str) -> bytes:
    what = {
        "student": "the chapters of the book without their solutions and without outputs: work through the "
                   "exercises; the solutions are in the book, in a dropdown under each exercise",
        "executed": "the chapters of the book with every output, as executed when the site was built",
    }[kind]
    return (
        f"Pivotal Sparse Auto-Encoders: {what}.\n\n"
        "The notebooks import the nelu package: open them in Jupyter from the environment where it is\n"
        "installed (pip install -e . in the book's repository; the book's workshop page gives the steps\n"
        "for Linux, macOS and Windows), with NELU_DATA set to the folder of the images. Check a machine\n"
        "with: python -m nelu.check\n"
        "On Colab, the notebook's first cell installs the package and downloads the images.\n"
    ).encode()


# ----------------------------------------------------------------------------- slides


@dataclass(frozen=True)
class Slide:
    """One figure of the book: the first image that a cell of ``chapter`` containing ``marker`` draws.

    The ``title`` says what the figure shows, in words (no number: those are in the figure).
    A marker from the figure's own code (its title, a label) keeps the slide on its figure
    when figures are added to or removed from the chapter.
    """

    chapter: str
    marker: str
    title: str


#: The slides, in the order of the workshop's plan: the problem, its cause, the fix, natural images, the end.
SLIDES = (
    Slide("preface", "Pure noise in, how much gets through?",
          "Pure noise in: a ReLU bias tuned at one noise level lets it through above that level; NeLU does not"),
    Slide("noise_mismatch", "tested at many",
          "Trained at one noise level, tested at many: the ReLU auto-encoder falls away above its level"),
    Slide("noise_mismatch", "how many units fire?",
          "On pure noise, more ReLU units fire as the noise grows; as many NeLU units fire at every level"),
    Slide("noise_mismatch", "Rescaling the bias with the true noise level",
          "Rescaling the ReLU bias with the true noise level repairs most of the damage"),
    Slide("lasso_threshold", "The oracle threshold is proportional to",
          "The best lasso threshold grows in proportion to the noise"),
    Slide("sqrt_lasso", "or pivotal",
          "The best λ: proportional to σ for the lasso, the same at every σ for the square-root lasso"),
    Slide("nelu_layer", 'method="fixed_point", iters=T',
          "NeLU as a layer: the fixed-point iteration reaches machine precision in a few dozen iterations"),
    Slide("bsd68", "gap_to_oracle(ax",
          "Natural images: trained at one level, NeLU holds up far better above it; below it, every model "
          "falls short of the σ-matched oracle"),
    Slide("universal", "recommended NeLU (blind)", "One blind model for every noise level, against the σ-matched oracle"),
    Slide("what_we_learned", "blind, recommended recipe",
          "What we learned: NeLU's margin over ReLU at every noise level, trained at one level or blind"),
)

_TEX = {
    r"\sigma": "σ", r"\lambda": "λ", r"\tau": "τ", r"\mu": "μ", r"\rho": "ρ", r"\kappa": "κ", r"\alpha": "α",
    r"\beta": "β", r"\gamma": "γ", r"\theta": "θ", r"\phi": "φ", r"\varphi": "φ", r"\epsilon": "ε",
    r"\ell": "ℓ", r"\infty": "∞", r"\times": "×", r"\cdot": "·", r"\leq": "≤", r"\le": "≤", r"\geq": "≥",
    r"\ge": "≥", r"\approx": "≈", r"\in": "∈", r"\sqrt": "√", r"\|": "‖", r"\ldots": "…", r"\dots": "…",
    r"\pm": "±", r"\to": "→", r"\log": "log", r"\,": " ", r"\;": " ", r"\ ": " ", r"\%": "%",
}
_SUPER = str.maketrans("0123456789+-", "⁰¹²³⁴⁵⁶⁷⁸⁹⁺⁻")
_SUB = str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉")


def _plain(markdown: str) -> str:
    """Markdown with simple inline TeX as plain text (``$\\sigma = 25$`` -> ``σ = 25``)."""

    def math(m: re.Match) -> str:
        tex = m[1]
        for macro in sorted(_TEX, key=len, reverse=True):
            tex = re.sub(re.escape(macro) + (r"(?![A-Za-z])" if macro[-1].isalpha() else ""), _TEX[macro], tex)
        tex = re.sub(r"\\(?:mathrm|operatorname|text|mathbf|mathit)\{([^{}]*)\}", r"\1", tex)
        tex = re.sub(r"\^\{?([0-9+-]+)\}?", lambda s: s[1].translate(_SUPER), tex)
        tex = re.sub(r"_\{?([0-9]+)\}?", lambda s: s[1].translate(_SUB), tex)
        return tex.replace("{", "").replace("}", "")

    text = re.sub(r"\$([^$]+)\$", math, markdown)
    text = re.sub(r"\{[\w:-]+\}`([^`<]*?)(?:\s*<[^>]*>)?`", r"\1", text)  # {ref}`text <label>` -> text
    text = re.sub(r"\*\*?|`", "", text)
    return " ".join(text.split())


def _caption(nb: nbformat.NotebookNode, cell_index: int) -> str:
    """The first paragraph of the Markdown cell after a figure when it is a caption (``*...``), as text."""
    following = nb.cells[cell_index + 1] if cell_index + 1 < len(nb.cells) else None
    if following is None or following.cell_type != "markdown" or not following.source.startswith("*"):
        return ""
    text = _plain(following.source.split("\n\n")[0]).removeprefix("Figure.").strip()
    return text


def _title(nb: nbformat.NotebookNode) -> str:
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return _plain(line[2:])
    return ""


def figures(nb: nbformat.NotebookNode) -> list[tuple[str, str, str, str]]:
    """``(mime type, base64 data, caption, cell source)`` of every image output of an executed notebook."""
    found = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            mime = next((m for m in ("image/svg+xml", "image/png") if m in data), None)
            if mime is not None:
                payload = data[mime]
                if mime == "image/svg+xml":
                    svg = payload if isinstance(payload, str) else "".join(payload)
                    payload = base64.b64encode(svg.encode()).decode()
                found.append((mime, "".join(payload.split()), _caption(nb, i), cell.source))
    return found


_STYLE = """
body { margin: 0; font-family: system-ui, sans-serif; background: #fff; color: #222; }
section { box-sizing: border-box; min-height: 100vh; padding: 3vh 5vw; display: flex; flex-direction: column;
          justify-content: center; align-items: center; text-align: center; border-bottom: 1px solid #ccc; }
body.deck section { display: none; height: 100vh; border: 0; }
body.deck section.current { display: flex; }
h1 { font-size: 5vh; margin: 0 0 2vh; } h2 { font-size: 3.6vh; margin: 0 0 1.5vh; }
img { max-width: 100%; max-height: 68vh; object-fit: contain; }
p { font-size: 2.3vh; max-width: 70em; margin: 1.5vh 0 0; }
footer { font-size: 1.8vh; color: #777; margin-top: 1.5vh; }
footer a { color: #777; }
@media print { body.deck section { display: flex; page-break-after: always; } }
"""

_SCRIPT = """
document.body.classList.add("deck");
const slides = [...document.querySelectorAll("section")];
let current = Math.max(0, Math.min(slides.length - 1, parseInt(location.hash.slice(1) || "1") - 1));
function show(i) {
  current = Math.max(0, Math.min(slides.length - 1, i));
  slides.forEach((s, j) => s.classList.toggle("current", j === current));
  history.replaceState(null, "", "#" + (current + 1));
}
document.addEventListener("keydown", (e) => {
  if (["ArrowRight", "PageDown", " "].includes(e.key)) show(current + 1);
  if (["ArrowLeft", "PageUp"].includes(e.key)) show(current - 1);
  if (e.key === "Home") show(0);
  if (e.key === "End") show(slides.length - 1);
});
document.addEventListener("click", (e) => { if (!e.target.closest("a")) show(current + 1); });
show(current);
"""


def slides_html(title: str, question: str, notebooks: dict[str, nbformat.NotebookNode],
                slides: tuple[Slide, ...] = SLIDES) -> str:
    """A self-contained HTML deck: a title slide, then one slide per figure of ``slides``.

    ``notebooks`` maps each chapter name (``"preface"``) to its executed notebook. Each
    figure slide shows its title, the image (embedded as a ``data:`` URI), its
    caption from the book and a link to the chapter (``../book/<chapter>.html``). Arrow
    keys, space or a click move between slides; without JavaScript, or printed, the
    slides follow one another.
    """
    sections = [(f"<section><h1>{html.escape(title)}</h1><p>{html.escape(question)}</p>"
                 f"<footer>→ or click: next slide; ← previous</footer></section>")]
    for n, slide in enumerate(slides, start=2):
        if slide.chapter not in notebooks:
            raise KitError(f"slide {n}: no executed notebook of the chapter {slide.chapter!r}")
        nb = notebooks[slide.chapter]
        found = [f for f in figures(nb) if slide.marker in f[3]]
        if not found:
            raise KitError(f"slide {n}: no cell of the chapter {slide.chapter!r} that contains {slide.marker!r} "
                           "draws a figure; update nelu.kit.SLIDES")
        mime, data, caption, _ = found[0]
        chapter, title = html.escape(_title(nb)), html.escape(slide.title)
        link = f'<a href="../book/{slide.chapter}.html">{chapter}</a>'
        sections.append(
            f"<section><h2>{title}</h2><img alt=\"{html.escape(caption or slide.title)}\" src=\"data:{mime};base64,{data}\">"
            + (f"<p>{html.escape(caption)}</p>" if caption else "")
            + f"<footer>{n} / {len(slides) + 1} · {link}</footer></section>"
        )
    body = "\n".join(sections)
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{html.escape(title)}: slides</title>\n<style>{_STYLE}</style>\n</head>\n"
            f"<body>\n{body}\n<script>{_SCRIPT}</script>\n</body>\n</html>\n")


# ----------------------------------------------------------------------------- the kit


def _question(root: Path) -> str:
    """The question of the workshop: the italic sentence of its page that asks it."""
    m = re.search(r"\*(why does [^*]+\?)\*", (root / "book" / "workshop.md").read_text(encoding="utf-8"), re.IGNORECASE)
    return _plain(m[1][0].upper() + m[1][1:]) if m else ""


def executed_notebook(root: Path, chapter: Path, build: Path) -> nbformat.NotebookNode:
    """The chapter ``root/chapter`` with the outputs of its last execution by the build ``build``.

    The outputs come from the build's execution cache (``build/.jupyter_cache``, where
    ``execute_notebooks: cache`` keeps them; the copy that myst-nb writes to
    ``build/jupyter_execute`` has no outputs when the chapter came from the cache), else from
    that copy (``execute_notebooks: force``).

    Raises:
        KitError: no execution of the chapter as it is now, or one without any output or
            with an error (a build with ``allow_errors`` caches those).
    """
    source = nbformat.read(root / chapter, as_version=4)
    executed = None
    if (build / CACHE_DIR).is_dir():
        from jupyter_cache import get_cache  # myst-nb's cache: there whenever the book can be built

        with suppress(KeyError):  # no cached execution of this version of the chapter
            executed = get_cache(str(build / CACHE_DIR)).merge_match_into_notebook(source)[1]
    if executed is None and (build / EXECUTED_DIR / chapter).is_file():
        executed = nbformat.read(build / EXECUTED_DIR / chapter, as_version=4)
    if executed is None:
        raise KitError(f"no execution of {chapter} as it is now in {build}: build the book first (make book)")
    code = [cell for cell in executed.cells if cell.cell_type == "code"]
    if code and not any(cell.get("outputs") for cell in code):
        raise KitError(f"the execution of {chapter} in {build} has no output: build the book again (make book)")
    errors = [i for i, cell in enumerate(executed.cells) if cell.cell_type == "code"
              and any(output.output_type == "error" for output in cell.get("outputs", []))]
    if errors:
        raise KitError(f"the execution of {chapter} in {build} raised errors (cells {errors}): fix the chapter")
    return executed


def build_kit(root: Path, build: Path) -> dict[str, Path]:
    """Write the kit into ``build/html/kit``; return the path of each file by role (:data:`ARCHIVES`).

    Args:
        root: the book's source folder (``_toc.yml``, ``_config.yml``, the chapters).
        build: the build folder (``_build``): the site in ``html/``, the executions in
            ``.jupyter_cache/`` or ``jupyter_execute/`` (:func:`executed_notebook`).

    Raises:
        KitError: a chapter has no execution (build the book first), or a solution or a
            slide's figure cannot be found.
    """
    student, executed, notebooks = {"README.txt": _readme("student")}, {"README.txt": _readme("executed")}, {}
    for i, chapter in enumerate(chapters(root), start=1):
        try:
            stripped = student_notebook(nbformat.read(root / chapter, as_version=4))
        except KitError as exc:
            raise KitError(f"{chapter}: {exc}") from exc
        student[_member(i, chapter)] = nbformat.writes(stripped).encode()
        notebooks[chapter.stem] = executed_notebook(root, chapter, build)
        executed[_member(i, chapter)] = nbformat.writes(notebooks[chapter.stem]).encode()
    paths = {role: build / "html" / KIT_DIR / name for role, name in ARCHIVES.items()}
    _write_zip(paths["student"], student)
    _write_zip(paths["executed"], executed)
    title = yaml.safe_load((root / "_config.yml").read_text(encoding="utf-8"))["title"]
    paths["slides"].write_text(slides_html(title, _question(root), notebooks), encoding="utf-8")
    return paths


def _on_build_finished(app, exception: Exception | None) -> None:
    if exception is None and app.builder.format == "html":
        from sphinx.util import logging

        paths = build_kit(Path(app.srcdir), Path(app.outdir).parent)
        logging.getLogger(__name__).info("workshop kit: " + ", ".join(str(p.relative_to(app.outdir)) for p in paths.values()))


def setup(app) -> dict:
    """The Sphinx extension: make the kit once the HTML is written (``extra_extensions`` in ``_config.yml``)."""
    app.connect("build-finished", _on_build_finished)
    return {"parallel_read_safe": True, "parallel_write_safe": True}


def main(argv: list[str] | None = None) -> int:
    """``python -m nelu.kit [--build _build] [--root .]``: make the kit from an existing build."""
    parser = argparse.ArgumentParser(prog="python -m nelu.kit", description=__doc__.split("\n\n")[0])
    parser.add_argument("--build", type=Path, default=Path("_build"), help="the build folder (default: _build)")
    parser.add_argument("--root", type=Path, default=Path("."), help="the book's source folder (default: .)")
    args = parser.parse_args(argv)
    try:
        paths = build_kit(args.root, args.build)
    except KitError as exc:
        print(f"nelu.kit: error: {exc}", file=sys.stderr)
        return 2
    for path in paths.values():
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
