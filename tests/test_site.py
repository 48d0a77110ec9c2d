"""The rendered site, checked in a real browser, and the configuration that publishes it.

Browser checks (``slow``; they use the one book build of the session, ``book_build`` in
tests/conftest.py): the HTML is served on 127.0.0.1 by ``http.server`` in a thread and
opened in Debian's headless ``chromium`` (``--dump-dom`` for the DOM after the page's
scripts ran, ``--screenshot`` for pictures). The browser has no network but that server
(``OFFLINE``: every other host is unresolvable and every other request goes to a dead
proxy), as in a workshop room without internet, so the checks never depend on the network.
The server adds a small script (``PROBE``) to each page that records, once the page has
loaded and MathJax has typeset it, what only the browser knows: the decoded size of each
image, whether each solution's body is hidden by the computed style, where the figures and
exercises are, the page height, every resource the page loaded. On the index page and two
chapters (``SAMPLE_CHAPTERS``: the preface and the square-root lasso) the tests check:

* navigation: the sidebar links every chapter of the toc;
* figures: every ``img`` of the chapter's output was fetched (HTTP 200), decoded and shown
  by the browser, and is not blank;
* math: typeset offline. MathJax is served with the book (``mathjax_path`` in
  ``_config.yml``, the file in ``book/_static/mathjax``); the page loads it from there, it
  ran, every ``div.math`` block and ``span.math`` (in the text and in the sidebars' tables
  of contents) holds MathJax's output (``mjx-container``), and no TeX delimiter (``\\(``,
  ``\\[``, ``$$``) is left in the visible text outside code;
* exercises: as many as the chapter's notebook has, each with its solution in a dropdown
  that the toggle-button script has collapsed (``toggle-hidden``; its body is hidden by the
  computed style) and whose content is in the page; at least one solution holds a code cell;
* launch buttons: Binder and Colab links to this chapter's notebook, built from the
  repository and branch in ``_config.yml``; repository and issues buttons;
* every request the browser made for the page's own files succeeded, and nothing at all is
  loaded from the internet (no external reference in the page, no resource the browser
  loaded from elsewhere).

``test_math_typesets_from_a_file_url`` opens a chapter as a reader of a copied
``_build/html`` does (``file://``, no server, no network) and checks its math is typeset.

Screenshots go to ``_build/screenshots/`` (paths printed): the first screen of each page,
and for chapters the first figure and the exercises. Headless chromium paints only the first
screen of a scrolled page, so each page is shot once in a window as tall as the page and
cropped.

``chromium`` is installed by ``.ci/run``; without it the browser tests are skipped.

Static checks (fast): the site settings in ``_config.yml``; the bundled MathJax (its
checksums, its version); the repository's address, set once in ``_config.yml``
(``repository.url``) and copied, because it must be, only where a test can compare the copy
with it; and the two GitHub workflows (``book.yml`` builds and deploys to GitHub Pages,
``reproduce.yml`` reruns the full experiments weekly and compares them with the committed
results).
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import re
import shutil
import subprocess
import threading
from functools import partial
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest
import yaml
from PIL import Image, ImageStat

from test_book import exercise_directives, resolve, toc_files

ROOT = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
REPO_URL = CONFIG["repository"]["url"].rstrip("/")
BRANCH = CONFIG["repository"].get("branch", "main")
SCREENSHOTS = ROOT / "_build" / "screenshots"
# MathJax, served with the book: the path Sphinx gives it (relative to _static/) and its folder.
MATHJAX_PATH = CONFIG["sphinx"]["config"]["mathjax_path"]
MATHJAX_URL_PATH = f"/_static/{MATHJAX_PATH}"
MATHJAX_DIR = (ROOT / CONFIG["sphinx"]["config"]["html_static_path"][0] / MATHJAX_PATH).parent
# TeX left untypeset: MathJax's delimiters as Sphinx writes them, and $$ (dollarmath).
RAW_TEX = re.compile(r"\\\(|\\\)|\\\[|\\\]|\$\$|\\begin\{")
CHROMIUM_TIMEOUT_S = 120

NOTEBOOK_CHAPTERS = [f for f in toc_files() if (p := resolve(f)) is not None and p.suffix == ".ipynb"]
# Two chapters with every element the test looks for (a figure, display math, exercises).
SAMPLE_CHAPTERS = ["book/preface", "book/sqrt_lasso"]
PAGES = [toc_files()[0]] + [f for f in SAMPLE_CHAPTERS if f in NOTEBOOK_CHAPTERS]


def chromium_exe() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if found := shutil.which(name):
            return found
    return None


# --------------------------------------------------------------------------- browser


# Injected by the test server before </body> of every page: once the page has loaded (images
# decoded, the theme's and the toggle button's scripts run) and MathJax, if the page loads it,
# has typeset it (MathJax.startup.promise), it records what only a browser knows in an invisible
# JSON element, which --dump-dom returns. It changes nothing on screen.
PROBE = """<script>
window.addEventListener("load", async () => {
  let mathjax = null;  // MathJax's version once it has typeset the page; null if the page has no MathJax
  if (window.MathJax) {
    try {
      await window.MathJax.startup.promise;
      mathjax = window.MathJax.version;
    } catch (err) {
      mathjax = `failed: ${err}`;  // the configuration is there but MathJax never loaded or failed
    }
  }
  const top = (el) => (el ? Math.round(el.getBoundingClientRect().top + window.scrollY) : null);
  const figures = [...document.querySelectorAll("article img")].map((img) => ({
    src: img.getAttribute("src"), natural: [img.naturalWidth, img.naturalHeight],
    shown: Math.round(img.getBoundingClientRect().width), top: top(img)}));
  const hidden = [...document.querySelectorAll("article div.solution")].map((sol) => {
    const body = sol.querySelector(".admonition-title ~ *");
    return body ? getComputedStyle(body).visibility === "hidden" || body.offsetHeight === 0 : false;
  });
  // Every table of the text: its right edge, and the nearest box around it that scrolls sideways.
  const column = document.querySelector("article") || document.body;
  const tables = [...document.querySelectorAll("article table")].map((t) => {
    let box = t.parentElement;
    while (box && box !== column && !["auto", "scroll"].includes(getComputedStyle(box).overflowX)) box = box.parentElement;
    const scroller = box && box !== column ? box : null;
    return {caption: (t.querySelector("caption") || t.querySelector("th") || t).textContent.trim().slice(0, 60),
      width: Math.round(t.getBoundingClientRect().width), right: Math.round(t.getBoundingClientRect().right),
      column_right: Math.round(column.getBoundingClientRect().right), window_width: window.innerWidth,
      scroller_right: scroller ? Math.round(scroller.getBoundingClientRect().right) : null,
      scroll_width: scroller ? scroller.scrollWidth : null};
  });
  const out = document.createElement("script");
  out.type = "application/json";
  out.id = "nelu-test-probe";
  out.textContent = JSON.stringify({height: document.documentElement.scrollHeight, figures,
    solutions_hidden: hidden, exercises_top: top(document.querySelector("article div.exercise")), tables,
    mathjax, mathjax_typeset: document.querySelectorAll("mjx-container").length,
    resources: performance.getEntriesByType("resource").map((r) => r.name)});
  document.body.appendChild(out);
});
</script>"""
MAX_SHOT_HEIGHT = 32000  # pixels; a taller page is cut there (figures and exercises below are not shot)
# No network but 127.0.0.1 (the test server), as in a room without internet: every other host
# is unresolvable, and every other request (an IP address too) goes to a proxy that is not there.
OFFLINE = ("--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
           "--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=127.0.0.1")


class Site:
    """The built HTML served on 127.0.0.1, opened in headless chromium."""

    def __init__(self, html: Path, chromium: str, profile: Path):
        self.html, self.chromium, self.profile = html, chromium, profile
        self.requests: list[tuple[str, int]] = []  # (path, HTTP status) of every request
        requests = self.requests

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_request(self, code="-", size="-"):
                requests.append((urlsplit(self.path).path, int(code) if str(code).isdigit() else 0))

            def log_message(self, *args):
                pass

            def do_GET(self):
                path = Path(self.translate_path(self.path))
                if path.suffix != ".html" or not path.is_file():
                    return super().do_GET()
                page = path.read_text(encoding="utf-8")
                body = page.replace("</body>", PROBE + "</body>", 1).encode("utf-8")
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(html)))
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}/"

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def _run(self, url: str, *args: str) -> str:
        cmd = [
            self.chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage", "--hide-scrollbars", f"--user-data-dir={self.profile}",
            *OFFLINE, "--virtual-time-budget=10000", *args, urljoin(self.base, url),
        ]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=CHROMIUM_TIMEOUT_S, check=False)
        assert proc.returncode == 0, f"chromium failed on {url} (rc={proc.returncode}):\n{proc.stderr[-3000:]}"
        return proc.stdout

    def raw_dom(self, url: str) -> str:
        """The DOM after the page's scripts ran (``url``: relative to the server, or file://)."""
        dom = self._run(url, "--window-size=1280,1600", "--dump-dom")
        assert "<html" in dom, f"chromium returned no DOM for {url}"
        return dom

    def dom(self, url: str) -> tuple[str, dict]:
        """The DOM after the page's scripts ran, and what the probe measured."""
        dom = self.raw_dom(url)
        probe = soup(dom).find("script", id="nelu-test-probe")
        assert probe is not None, f"{url}: the page never finished loading (no load event, or MathJax hung)"
        return dom, json.loads(probe.get_text())

    def screenshot(self, url: str, path: Path, height: int) -> Image.Image:
        """The whole page (up to MAX_SHOT_HEIGHT) in one window: headless chromium paints
        only the first screen of a scrolled page, so we never scroll, and crop instead."""
        height = max(800, min(height, MAX_SHOT_HEIGHT))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        self._run(url, f"--window-size=1280,{height}", f"--screenshot={path}")
        assert path.is_file(), f"no screenshot of {url}"
        with Image.open(path) as im:
            im.load()
        path.unlink()
        return im


def save_crop(im: Image.Image, top: int, height: int, path: Path) -> Path:
    top = max(0, min(top, im.height - 1))
    crop = im.crop((0, top, im.width, min(im.height, top + height)))
    spread = ImageStat.Stat(crop.convert("L")).stddev[0]
    assert spread > 10, f"{path.name}: the screenshot is blank there (pixel std {spread:.1f})"
    crop.save(path)
    return path


@pytest.fixture(scope="module")
def site(book_build, tmp_path_factory):
    chromium = chromium_exe()
    if chromium is None:
        pytest.skip("no chromium on PATH (.ci/run installs Debian's: apt-get install chromium)")
    assert book_build.returncode == 0, "the book did not build; see test_book_builds"
    s = Site(book_build.html, chromium, tmp_path_factory.mktemp("chromium-profile"))
    yield s
    s.close()


def soup(dom: str):
    from bs4 import BeautifulSoup  # installed with pydata-sphinx-theme (jupyter-book)

    return BeautifulSoup(dom, "html.parser")


def classes(tag) -> set[str]:
    return set(tag.get("class") or [])


def local_path(page: str, ref: str) -> str:
    """The server path a relative reference of ``page`` resolves to."""
    return urlsplit(urljoin("http://x/" + page, ref)).path


def check_navigation(doc, page: str) -> None:
    nav = doc.select_one("nav.bd-docs-nav")
    assert nav is not None, f"{page}: no sidebar navigation"
    linked = {local_path(page, a["href"]) for a in nav.select("a[href]")}
    expected = {f"/{f}.html" for f in toc_files()[1:]}
    assert expected <= linked, f"{page}: sidebar lacks {sorted(expected - linked)}"


def check_nothing_is_external(doc, page: str, probe: dict, site: Site) -> None:
    """No reference in the page to the internet, and no resource the browser loaded from it
    (it could not have: the network is blocked; a blocked request may still be listed)."""
    external = []
    for tag, attr in (("script", "src"), ("link", "href"), ("img", "src"), ("iframe", "src")):
        for t in doc.find_all(tag):
            ref = t.get(attr)
            if tag == "link" and not ({"stylesheet", "preload", "icon"} & set(t.get("rel") or [])):
                continue
            if ref and urlsplit(ref).scheme in ("http", "https") and not ref.startswith(site.base):
                external.append(ref)
    assert not external, f"{page} loads from the internet: {external}"
    elsewhere = [r for r in probe["resources"] if not r.startswith((site.base, "data:", "blob:"))]
    assert not elsewhere, f"{page}: the browser requested resources from the internet: {elsewhere}"


def visible_text(doc) -> str:
    """The text a reader sees, MathJax's output and code (cells, outputs, literals) left out."""
    doc = soup(str(doc))
    for t in doc.select("script, style, noscript, template, mjx-container, pre, code, .highlight"):
        t.decompose()
    return doc.body.get_text(" ") if doc.body else doc.get_text(" ")


def check_math(doc, page: str, probe: dict, display: bool = True) -> str:
    """The page loads the book's own MathJax, which ran and typeset every formula, sidebars included."""
    scripts = [s.get("src", "") for s in doc.find_all("script")]
    assert any(local_path(page, s) == MATHJAX_URL_PATH for s in scripts), (
        f"{page}: no MathJax loader {MATHJAX_URL_PATH} (mathjax_path in _config.yml) in {scripts}"
    )
    config = " ".join(s.get_text() for s in doc.find_all("script") if "window.MathJax" in s.get_text())
    assert "processHtmlClass" in config and "math" in config, f"{page}: no MathJax configuration"
    assert probe["mathjax"] and not probe["mathjax"].startswith("failed"), (
        f"{page}: MathJax did not run offline: {probe['mathjax']}"
    )
    blocks = doc.select("article div.math")
    assert blocks or not display, f"{page}: no display math"
    for block in blocks:
        for number in block.select(".eqno"):  # "(12)#" of a numbered equation
            number.extract()
        assert block.find("mjx-container") is not None, f"{page}: display math not typeset: {block.get_text()[:80]!r}"
    formulas = doc.select("span.math, div.math")
    untypeset = [f.get_text()[:60] for f in formulas if f.find("mjx-container") is None]
    assert not untypeset, f"{page}: {len(untypeset)} of {len(formulas)} formulas not typeset: {untypeset[:5]}"
    text = visible_text(doc)
    raw = [text[max(0, m.start() - 40) : m.end() + 40] for m in RAW_TEX.finditer(text)]
    assert not raw, f"{page}: raw TeX in the visible text: {raw[:5]}"
    typeset = doc.find_all("mjx-container")
    assert probe["mathjax_typeset"] == len(typeset) >= len(formulas)
    # Headings with math are listed, with their math, in the table of contents beside the text.
    in_toc = [f for f in formulas if f.find_parent("article") is None]
    if doc.select("article section > h2 span.math"):
        assert in_toc, f"{page}: headings have math, the page's table of contents has none"
    return (f"{len(blocks)} display-math blocks, {len(typeset)} formulas typeset offline by MathJax "
            f"{probe['mathjax']} ({len(in_toc)} in the sidebars)")


def check_exercises(doc, page: str, notebook: Path) -> int:
    expected = sum(name in ("exercise", "exercise-start") for _, name, _, _ in exercise_directives(notebook))
    exercises = doc.select("article div.exercise")
    solutions = doc.select("article div.solution")
    assert len(exercises) == expected >= 3, f"{page}: {len(exercises)} exercises in the page, {expected} in the notebook"
    assert len(solutions) >= 3, f"{page}: {len(solutions)} solutions"
    for sol in solutions:
        title = sol.select_one(".admonition-title")
        assert title is not None and "Solution" in title.get_text(), sol.get_text()[:80]
        assert {"dropdown", "toggle", "toggle-hidden"} <= classes(sol), (
            f"{page}: a solution is not collapsed by the toggle button: {sorted(classes(sol))}"
        )
        assert sol.select_one("button.toggle-button"), f"{page}: a solution has no toggle button"
        body = sol.get_text(" ", strip=True).replace(title.get_text(" ", strip=True), "", 1)
        assert len(body) > 20, f"{page}: a solution is empty"
    with_code = [s for s in solutions if s.select_one("div.cell")]
    assert with_code, f"{page}: no solution holds a code cell (gated solution)"
    return len(exercises)


def check_launch_buttons(doc, page: str, chapter: str) -> None:
    hrefs = {a["href"] for a in doc.select("a[href]")}
    org_repo = REPO_URL.removeprefix("https://github.com/")
    binder = f"https://mybinder.org/v2/gh/{org_repo}/{BRANCH}?urlpath=tree/{chapter}.ipynb"
    colab = f"https://colab.research.google.com/github/{org_repo}/blob/{BRANCH}/{chapter}.ipynb"
    launch = doc.select_one(".dropdown-launch-buttons")
    assert launch is not None, f"{page}: no launch buttons"
    launch_hrefs = {a["href"] for a in launch.select("a[href]")}
    assert binder in launch_hrefs, f"{page}: no Binder link {binder} in {sorted(launch_hrefs)}"
    assert colab in launch_hrefs, f"{page}: no Colab link {colab} in {sorted(launch_hrefs)}"
    assert REPO_URL in hrefs, f"{page}: no repository button"
    assert any(h.startswith(f"{REPO_URL}/issues/new") for h in hrefs), f"{page}: no issues button"


def check_figures(page: str, site: Site, probe: dict) -> dict:
    """Every figure of the chapter: fetched (HTTP 200), decoded and shown by the browser."""
    figures = [f for f in probe["figures"] if "/_images/" in local_path(page, f["src"])]
    assert figures, f"{page}: no figure"
    for fig in figures:
        path = local_path(page, fig["src"])
        statuses = [code for p, code in site.requests if p == path]
        assert 200 in statuses, f"{page}: the browser did not load {path} ({statuses})"
        assert min(fig["natural"]) >= 100 and fig["shown"] >= 100, f"{page}: {path} not decoded or shown: {fig}"
        with Image.open(site.html / path.lstrip("/")) as im:
            assert ImageStat.Stat(im.convert("L")).stddev[0] > 5, f"{path} is blank"
    return figures[0]


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES)
def test_page_in_browser(site: Site, page: str, capsys):
    root = page == toc_files()[0]
    url = "index.html" if root else f"{page}.html"  # the site's front page redirects to the root
    before = len(site.requests)
    dom, probe = site.dom(url)
    doc = soup(dom)
    html_page = f"{page}.html"
    assert doc.select_one("article h1"), f"{url}: no title"
    if root:
        assert (f"/{html_page}", 200) in site.requests[before:], f"index.html did not lead to {html_page}"
    check_navigation(doc, html_page)
    check_nothing_is_external(doc, html_page, probe, site)
    has_math = doc.select("span.math, div.math")
    math = check_math(doc, html_page, probe, display=not root) if has_math or not root else "no math"
    shot = site.screenshot(url, SCREENSHOTS / f"{Path(page).name}.png", probe["height"])
    name = Path(page).name
    shots = [save_crop(shot, 0, 1600, SCREENSHOTS / f"{name}.png")]
    report = f"{html_page}: navigation ok; {math}"
    if not root:
        figure = check_figures(html_page, site, probe)
        n = check_exercises(doc, html_page, resolve(page))
        assert len(probe["solutions_hidden"]) >= n and all(probe["solutions_hidden"]), (
            f"{html_page}: solutions visible before a click: {probe['solutions_hidden']}"
        )
        check_launch_buttons(doc, html_page, page)
        report += (f"; {len(probe['figures'])} images shown; {n} exercises, solutions hidden in the browser; "
                   "Binder and Colab buttons ok")
        if figure["top"] + 400 < shot.height:
            shots.append(save_crop(shot, figure["top"] - 150, 1100, SCREENSHOTS / f"{name}-figure.png"))
        if probe["exercises_top"] + 400 < shot.height:
            shots.append(save_crop(shot, probe["exercises_top"] - 120, 1600, SCREENSHOTS / f"{name}-exercises.png"))
    failed = [(p, code) for p, code in site.requests[before:] if code >= 400 and p != "/favicon.ico"]
    assert not failed, f"{url}: requests failed: {failed}"
    with capsys.disabled():
        print(f"\n{report}\n  screenshots: " + ", ".join(str(s) for s in shots))


@pytest.mark.slow
def test_math_typesets_from_a_file_url(site: Site):
    """A reader who opens the copied _build/html from disk: no server, no network."""
    page = next(f for f in SAMPLE_CHAPTERS if f in NOTEBOOK_CHAPTERS)
    path = site.html / f"{page}.html"
    doc = soup(site.raw_dom(path.as_uri()))
    formulas = doc.select("span.math, div.math")
    assert doc.select("article div.math"), f"{path}: no display math"
    untypeset = [f.get_text()[:60] for f in formulas if f.find("mjx-container") is None]
    assert not untypeset, f"{path.as_uri()}: {len(untypeset)} of {len(formulas)} formulas not typeset: {untypeset[:5]}"
    raw = [m.group() for m in RAW_TEX.finditer(visible_text(doc))]
    assert not raw, f"{path.as_uri()}: raw TeX in the visible text: {raw[:5]}"


# ---------------------------------------------------------------------- static checks


def test_site_configuration():
    assert CONFIG["title"] and CONFIG["author"]
    assert (ROOT / CONFIG["logo"]).is_file(), CONFIG["logo"]
    assert CONFIG["only_build_toc_files"] is True
    extensions = set(CONFIG["sphinx"]["extra_extensions"])
    assert {"sphinx_proof", "sphinx_exercise"} <= extensions
    assert {"amsmath", "dollarmath"} <= set(CONFIG["parse"]["myst_enable_extensions"])
    assert all((ROOT / f).is_file() for f in CONFIG["bibtex_bibfiles"])  # loads sphinxcontrib-bibtex
    assert CONFIG["sphinx"]["config"].get("intersphinx_mapping") == {}, "nothing may be fetched at build time"
    bibliography = resolve("book/bibliography")
    assert "book/bibliography" in toc_files() and "```{bibliography}" in bibliography.read_text()
    assert CONFIG["execute"]["execute_notebooks"] in ("cache", "force") and CONFIG["execute"]["raise_on_error"]



def test_mathjax_is_served_with_the_book():
    """mathjax_path names the copy in book/_static (no CDN), verified against its SHA256SUMS."""
    assert not urlsplit(MATHJAX_PATH).scheme and not MATHJAX_PATH.startswith(("/", "//")), (
        f"mathjax_path={MATHJAX_PATH!r}: serve MathJax with the book (a path relative to _static/)"
    )
    script = MATHJAX_DIR / Path(MATHJAX_PATH).name
    assert script.is_file(), f"{script} is missing (mathjax_path={MATHJAX_PATH!r})"
    sums = {}
    for line in (MATHJAX_DIR / "SHA256SUMS").read_text().splitlines():
        if line.strip():
            digest, name = line.split()
            sums[name.lstrip("*")] = digest
    assert {script.name, "LICENSE"} <= set(sums), f"SHA256SUMS must list {script.name} and LICENSE: {sorted(sums)}"
    for name, digest in sums.items():
        actual = hashlib.sha256((MATHJAX_DIR / name).read_bytes()).hexdigest()
        assert actual == digest, f"{MATHJAX_DIR / name}: sha256 {actual}, SHA256SUMS says {digest}"
    extra = {p.name for p in MATHJAX_DIR.iterdir()} - set(sums) - {"SHA256SUMS", "README.txt"}
    assert not extra, f"{MATHJAX_DIR}: files not in SHA256SUMS: {sorted(extra)}"
    code = script.read_text(encoding="utf-8")
    version = re.search(r'\bVERSION="(\d+\.\d+\.\d+)"', code)
    assert version and version.group(1).startswith("3."), "Sphinx configures MathJax 3 (mathjax3_config)"
    readme = (MATHJAX_DIR / "README.txt").read_text()
    assert f"MathJax {version.group(1)}" in readme and f"mathjax@{version.group(1)}" in readme, (
        f"{MATHJAX_DIR / 'README.txt'} does not describe MathJax {version.group(1)}"
    )
    # Every TeX extension built in: none is fetched on demand (offline, that fetch fails).
    assert "[tex]/all-packages" in code, f"{script.name} is not a -full MathJax component"


# GitHub repositories named anywhere in the repository's text files: besides the book's, only these.
GITHUB_REPO = re.compile(r"github\.com/([\w.-]+)/([\w-]+(?:\.(?!git\b)[\w-]+)*)")
THIRD_PARTY_REPOS = {"cszn/DnCNN"}  # data/README.md: where the DnCNN test images come from
VENDORED = ("book/_static/mathjax/",)  # copied unchanged from elsewhere (MathJax's own links)


def repository_texts() -> dict[str, str]:
    """``{path: text}`` of the repository's text files (tracked, or new and not ignored)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=ROOT, capture_output=True, text=True, check=True, timeout=60).stdout
    texts = {}
    for rel in sorted(set(listed.split("\0")) - {""}):
        path = ROOT / rel
        if rel.startswith(VENDORED) or not path.is_file() or path.stat().st_size > 5_000_000:
            continue
        data = path.read_bytes()
        if b"\0" not in data[:8192]:
            texts[rel] = data.decode("utf-8", errors="replace")
    return texts


def test_repository_address_is_one_setting():
    """``repository.url`` in _config.yml is the book's address. The launch, repository and issues
    buttons are built from it (``check_launch_buttons``); the copies that cannot be (the Colab
    setup cells, which run with no checkout, and commands in the text) must equal it."""
    assert re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", REPO_URL), REPO_URL
    ours = REPO_URL.removeprefix("https://github.com/")
    texts = repository_texts()
    assert "_config.yml" in texts and "book/workshop.md" in texts, "git ls-files found no sources"
    wrong, copies = [], 0
    for rel, text in texts.items():
        for number, line in enumerate(text.splitlines(), 1):
            for m in GITHUB_REPO.finditer(line):
                found = f"{m.group(1)}/{m.group(2)}"
                if found == ours:
                    copies += rel != "_config.yml"
                elif found not in THIRD_PARTY_REPOS:
                    wrong.append(f"{rel}:{number}: {m.group()}")
            for m in re.finditer(r"git clone (?:--?[\w-]+(?: \d+)? )*(\S+)(?: (\S+))? && cd (\S+)", line):
                folder = m.group(2) or m.group(1).removesuffix(".git").rstrip("/").rsplit("/", 1)[-1]
                if m.group(3) != folder:
                    wrong.append(f"{rel}:{number}: the clone is in {folder}/, not {m.group(3)}/")
    assert not wrong, (
        f"the repository is {REPO_URL} (_config.yml: repository.url); other addresses in the sources "
        "(add a third-party repository to THIRD_PARTY_REPOS):\n  " + "\n  ".join(wrong)
    )
    assert copies, "no chapter names the repository (the Colab setup cells install from it)"


def workflow(name: str) -> dict:
    path = ROOT / ".github" / "workflows" / name
    data = yaml.safe_load(path.read_text())
    data["on"] = data.pop(True, data.get("on"))  # YAML 1.1 reads the key `on` as True
    return data


def steps(job: dict) -> list[dict]:
    return job["steps"]


def uses(job: dict, action: str) -> dict:
    found = [s for s in steps(job) if s.get("uses", "").split("@")[0] == action]
    assert found, f"no step uses {action}"
    return found[0]


def runs(job: dict) -> str:
    return "\n".join(s.get("run", "") for s in steps(job))


def check_setup(job: dict) -> None:
    uses(job, "actions/checkout")
    assert str(uses(job, "actions/setup-python")["with"]["python-version"]) == "3.11"
    assert "make .venv/.installed" in runs(job) or "make book" in runs(job)
    assert "fetch(" in runs(job), "download and verify the images before they are needed"


def test_book_workflow_builds_and_deploys_to_pages():
    wf = workflow("book.yml")
    assert "main" in wf["on"]["push"]["branches"]
    assert wf["permissions"]["pages"] == "write" and wf["permissions"]["id-token"] == "write"
    build, deploy = wf["jobs"]["build"], wf["jobs"]["deploy"]
    check_setup(build)
    assert "make book" in runs(build)
    assert uses(build, "actions/upload-pages-artifact")["with"]["path"] == "_build/html"
    assert deploy["needs"] == "build" and deploy["environment"]["name"] == "github-pages"
    uses(deploy, "actions/deploy-pages")
    assert "refs/heads/main" in deploy["if"]
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^book:.*\n\t.*jupyter-book build \. -W", makefile, re.M), "make book must build with -W"


def test_reproduce_workflow_reruns_the_full_profile_weekly():
    from nelu.cli import build_parser

    wf = workflow("reproduce.yml")
    cron = wf["on"]["schedule"][0]["cron"]
    fields = cron.split()
    assert len(fields) == 5 and fields[2] == "*" and fields[3] == "*" and fields[4] != "*", f"not weekly: {cron}"
    job = wf["jobs"]["reproduce"]
    check_setup(job)
    commands = runs(job)
    rerun = next(line for line in commands.splitlines() if "-m nelu reproduce" in line)
    argv = rerun.split("-m nelu ", 1)[1].replace('"$RUNNER_TEMP/fresh"', "/tmp/fresh").split()
    args = build_parser().parse_args(argv)  # the command line is valid for the package's CLI
    assert (args.which, args.profile) == ("all", "full") and args.out == "/tmp/fresh"
    compare = next(line for line in commands.splitlines() if "-m nelu.experiments.drift" in line)
    assert "$RUNNER_TEMP/fresh" in compare and "--tol-db 0.01" in compare


@pytest.mark.skipif(os.name != "posix", reason="executable bit")
def test_ci_installs_chromium():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "command -v chromium" in ci and "apt-get install" in ci and "chromium" in ci


# ------------------------------------------------------------------------- tables


def clipped_tables(probe: dict) -> list[dict]:
    """The tables of a page that neither fit in the text column nor scroll sideways to every column.

    A table fits when its right edge is inside the column (and the column inside the window);
    otherwise the nearest box around it must scroll sideways (``overflow-x: auto``), lie inside
    the column, and be as wide, scrolled, as the table. Tables of closed dropdowns (width 0) are
    not laid out and not counted.
    """
    bad = []
    for t in probe["tables"]:
        if t["width"] == 0:
            continue
        inside = t["column_right"] <= t["window_width"] + 1
        if t["scroller_right"] is None:
            ok = inside and t["right"] <= t["column_right"] + 1
        else:
            ok = inside and t["scroller_right"] <= t["column_right"] + 1 and t["scroll_width"] >= t["width"] - 1
        if not ok:
            bad.append(t)
    return bad


@pytest.mark.slow
@pytest.mark.parametrize("width", [1280, 412])
def test_every_table_fits_or_scrolls(site: Site, width: int):
    """Every page of the book, offline, in a desktop and a phone window: no table has a clipped
    column (each fits in the text column or scrolls sideways to all its columns)."""
    problems, laid_out = [], 0
    for page in toc_files():
        url = "index.html" if page == toc_files()[0] else f"{page}.html"
        dom = site._run(url, f"--window-size={width},1600", "--dump-dom")
        probe = soup(dom).find("script", id="nelu-test-probe")
        assert probe is not None, f"{url}: the page never finished loading"
        tables = json.loads(probe.get_text())["tables"]
        laid_out += sum(t["width"] > 0 for t in tables)
        problems += [f"{url}: {t}" for t in clipped_tables({"tables": tables})]
    assert laid_out >= 10, f"only {laid_out} tables laid out in the whole book at width {width}"
    assert not problems, f"tables clipped at width {width}:\n" + "\n".join(problems)


def test_clipped_tables_finds_a_clipped_column():
    """The rule itself: a wide table that does not scroll is clipped; inside a scrolling box it is not."""
    wide = {"caption": "t", "width": 900, "right": 1000, "column_right": 800, "window_width": 1280,
            "scroller_right": None, "scroll_width": None}
    assert clipped_tables({"tables": [wide]}) == [wide]
    scrolling = {**wide, "scroller_right": 800, "scroll_width": 900}
    assert clipped_tables({"tables": [scrolling]}) == []
    cut = {**wide, "scroller_right": 800, "scroll_width": 700}           # the box scrolls, but not far enough
    assert clipped_tables({"tables": [cut, {**wide, "width": 0}]}) == [cut]


# ------------------------------------------------------------------------- the front page


@pytest.mark.slow
def test_landing_page_shows_the_findings(site: Site):
    """The front page, offline: the five findings with their numbers pasted (myst-nb ``glue``)
    from the committed results, the same numbers the results files give; the key figure,
    fetched, decoded, shown wide and not blank; the table of contents below them."""
    from nelu.results import load_bsd68, load_universal

    page = f"{toc_files()[0]}.html"
    dom, probe = site.dom("index.html")
    doc = soup(dom)
    box = doc.select_one("article div.findings")
    assert box is not None, f"{page}: no findings box (an admonition with class 'findings')"
    items = box.select("ol > li")
    assert len(items) == 5, f"{page}: {len(items)} findings, expected five sentences"
    pasted = [p.get_text(strip=True) for p in box.select("span.pasted-text")]
    assert len(pasted) >= 10 and all(re.fullmatch(r"-?\d+(\.\d+)?", p) for p in pasted), pasted
    text = " ".join(visible_text(box).split())
    assert not RAW_TEX.search(text), f"{page}: raw TeX in the findings: {text[:200]}"
    uni, bsd = load_universal(), load_bsd68()
    rec, same = uni.names(role="recommended")[0], uni.names(role="same-recipe")[0]
    grid = uni.sigmas(rec)
    gaps = [uni.reported(rec, s) - uni.oracle(s) for s in grid]
    margins = [uni.reported(rec, s) - uni.reported(same, s) for s in grid]
    expected = [f"{-min(gaps):.2f}", f"{min(margins):.2f}", f"{max(margins):.2f}",
                f"{bsd.models['nelu_sigma15']['learned_lam']:.3f}", f"{bsd.models['nelu_sigma50']['learned_lam']:.3f}"]
    missing = [e for e in expected if e not in pasted]
    assert not missing, f"{page}: the findings do not show the committed numbers {missing}; shown: {pasted}"
    figures = [f for f in probe["figures"] if "/_images/" in local_path(page, f["src"])]
    check_figures(page, site, probe)
    assert any(f["shown"] >= 600 for f in figures), f"{page}: the key figure is shown too small: {figures}"
    caption = doc.select_one("article figure figcaption")
    assert caption is not None and "committed results" in caption.get_text(), f"{page}: no caption on the figure"
    linked = {local_path(page, a["href"]) for a in doc.select("article a[href]")}
    chapters = {f"/{f}.html" for f in toc_files()[1:]}
    assert chapters <= linked, f"{page}: the table of contents lacks {sorted(chapters - linked)}"
