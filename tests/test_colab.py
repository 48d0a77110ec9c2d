"""Launching a chapter on Colab or Binder needs nothing but the chapter and the repository.

* Colab opens one notebook, with no checkout of the repository. The first code cell of every
  chapter (hidden in the book: ``remove-input``) installs the package with its ``reference``
  extra from the repository named in ``_config.yml``, and only when ``google.colab`` is
  imported. The cell is executed here with a stand-in for IPython, with and without a fake
  ``google.colab`` module, and the ``%pip`` command it issues is parsed as a requirement.
* Binder (repo2docker) reads only ``binder/`` when that folder exists: ``binder/runtime.txt``
  (the Python version), ``binder/requirements.txt`` (the pinned ``requirements.txt``, with the
  CPU-only build of the same torch: Binder has no GPU) and ``binder/postBuild``
  (``pip install -e .``). The tests check that the two requirement files agree and that no
  Binder file is left at the top level, where Binder would ignore it.
* Neither has the images: chapters must get them through :mod:`nelu.data` (``fetch`` /
  ``load_dataset``), which downloads them and checks their SHA-256 when ``NELU_DATA`` is
  unset and ``data/`` is empty. ``test_fresh_clone_fetches_the_data`` checks exactly that on a
  fresh ``git clone``, with the registry's URLs pointed at a local server on 127.0.0.1 that
  serves the verified images (no internet needed). Static checks make sure no chapter
  hard-codes a machine's paths, sets ``NELU_DATA``, or reads files behind the package's back.
"""

from __future__ import annotations

import ast
import http.server
import json
import os
import re
import shlex
import subprocess
import sys
import threading
import tomllib
import types
from functools import partial
from pathlib import Path

import nbformat
import pytest
import yaml
from IPython.core.inputtransformer2 import TransformerManager
from packaging.requirements import Requirement
from packaging.version import Version

from test_book import resolve, toc_files

ROOT = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
REPO_URL = CONFIG["repository"]["url"].rstrip("/")
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"  # PyTorch's CPU-only wheels
CHAPTERS = sorted(p for p in (resolve(f) for f in toc_files()) if p is not None and p.suffix == ".ipynb")


def chapter_id(path: Path) -> str:
    return path.name


def code_cells(path: Path) -> list[nbformat.NotebookNode]:
    return [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]


def python_source(cell) -> str:
    """The cell as plain Python (IPython magics become ``get_ipython()`` calls)."""
    return TransformerManager().transform_cell(cell.source)


class FakeIPython:
    """Records the magics a cell runs instead of running them."""

    def __init__(self):
        self.magics: list[tuple[str, str]] = []

    def run_line_magic(self, name: str, line: str):
        self.magics.append((name, line))

    def system(self, cmd: str):
        self.magics.append(("!", cmd))

    def run_cell_magic(self, name: str, line: str, cell: str):
        self.magics.append((name, line))


def run_setup_cell(cell, on_colab: bool, monkeypatch) -> list[tuple[str, str]]:
    """Execute the setup cell and return the magics it ran, on Colab or elsewhere."""
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    if on_colab:
        monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    ipython = FakeIPython()
    exec(compile(python_source(cell), "<setup cell>", "exec"), {"get_ipython": lambda: ipython})
    return ipython.magics


# ----------------------------------------------------------------------------- Colab


def test_there_are_chapters():
    assert len(CHAPTERS) >= 2, CHAPTERS


@pytest.mark.parametrize("path", CHAPTERS, ids=chapter_id)
def test_setup_cell_installs_the_package_only_on_colab(path: Path, monkeypatch):
    first = code_cells(path)[0]
    assert "remove-input" in first.metadata.get("tags", []), f"{path.name}: tag the setup cell remove-input"

    elsewhere = run_setup_cell(first, on_colab=False, monkeypatch=monkeypatch)
    installs = [m for m in elsewhere if m[0] in ("pip", "conda", "!")]
    assert not installs, f"{path.name}: the setup cell installs something outside Colab: {installs}"

    on_colab = run_setup_cell(first, on_colab=True, monkeypatch=monkeypatch)
    for name, line in on_colab:  # besides %pip: only a clone of the book's repository (for results/)
        if name == "!":
            assert re.fullmatch(rf"git clone( --?[\w-]+( \d+)?)* {re.escape(REPO_URL)}(\.git)? \S+", line), (
                f"{path.name}: on Colab the setup cell may only clone {REPO_URL}, not run {line!r}"
            )
    pips = [line for name, line in on_colab if name == "pip"]
    assert len(pips) == 1, f"{path.name}: expected exactly one %pip on Colab, got {on_colab}"
    args = shlex.split(pips[0])
    assert args[0] == "install", pips[0]
    specs = [a for a in args[1:] if not a.startswith("-")]
    assert len(specs) == 1, f"{path.name}: install exactly one requirement, got {specs}"
    req = Requirement(specs[0])
    assert req.name == PYPROJECT["project"]["name"], req
    extras = set(PYPROJECT["project"]["optional-dependencies"])
    assert "reference" in req.extras and req.extras <= extras, (
        f"{path.name}: install the reference extra (cvxpy) and only declared extras, got {req.extras}"
    )
    assert "reference" in PYPROJECT["project"]["optional-dependencies"]
    assert req.url is not None and re.fullmatch(rf"git\+{re.escape(REPO_URL)}(\.git)?(@[\w./-]+)?", req.url), (
        f"{path.name}: install from the book's repository git+{REPO_URL} (_config.yml), got {req.url}"
    )


@pytest.mark.parametrize("path", CHAPTERS, ids=chapter_id)
def test_only_the_setup_cell_installs(path: Path):
    pattern = re.compile(r"(^|\s)(%|!)\s*(pip|conda|mamba|apt|apt-get)\b|pip install", re.M)
    offending = [i for i, c in enumerate(code_cells(path)[1:], 1) if pattern.search(c.source)]
    assert not offending, f"{path.name}: code cells {offending} install packages; only the setup cell may"


# ---------------------------------------------------------------------- paths and data

# String literals that only work on one machine, or from one working directory.
MACHINE_PATH = re.compile(
    r"^(/(work|home|tmp|root|Users|content|mnt|data|shared)(/|$)|~[/\\]|[A-Za-z]:\\)"
    r"|(^|/)shared/"
    r"|^\.\.?/"
    r"|^(data|results)/[\w./-]*$"  # relative to the working directory (book/ in Jupyter, / on Colab)
)
IMAGE_FILE = re.compile(r"^[^./\s][^\s]*\.(png|jpe?g|tiff?|bmp)$", re.I)  # must be registry keys
# Calls that read files behind nelu's back: use nelu.data (images) or nelu.models (checkpoints).
FORBIDDEN_CALLS = {"imread", "imageio", "torch.load", "np.load", "numpy.load", "Image.open", "PIL.Image.open"}


def dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{dotted(node.value)}.{node.attr}"
    return ""


def path_problems(path: Path) -> list[str]:
    """Hard-coded paths, NELU_DATA settings and direct file reads in a chapter's code."""
    from nelu.data import registry

    problems = []
    for i, cell in enumerate(code_cells(path)):
        src = python_source(cell)
        if "NELU_DATA" in src:
            problems.append(f"cell {i}: mentions NELU_DATA (chapters must not set where the data is)")
        try:
            tree = ast.parse(src)
        except SyntaxError as exc:
            problems.append(f"cell {i}: not Python: {exc}")
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                s = node.value.strip()
                if "\n" in s or not s or len(s) > 300:
                    continue
                if MACHINE_PATH.search(s):
                    problems.append(f"cell {i}: hard-coded path {s!r}")
                elif IMAGE_FILE.search(s) and s not in registry():
                    problems.append(f"cell {i}: file {s!r} is not a nelu.data registry key")
            elif isinstance(node, ast.Call):
                name = dotted(node.func)
                if name in FORBIDDEN_CALLS or name.endswith(".imread") or name.startswith("cv2."):
                    problems.append(f"cell {i}: reads a file with {name}(); use nelu.data / nelu.models")
    return problems


@pytest.mark.parametrize("path", CHAPTERS, ids=chapter_id)
def test_chapter_has_no_machine_paths_and_reads_data_through_nelu(path: Path):
    problems = path_problems(path)
    assert not problems, f"{path.name}:\n  " + "\n  ".join(problems)


def test_path_check_catches_what_it_should(tmp_path: Path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in (
        'x = load_image("/work/shared/data/BSD68/test001.png")',
        'import os\nos.environ["NELU_DATA"] = "data"',
        'df = open("results/bsd68.csv")',
        "from PIL import Image\nim = Image.open(p)",
        'w = torch.load(p)',
        'ok = load_image(fetch("BSD68/test001.png"))',
        'print("results/bsd68.json:", provenance(meta))',  # a label, not a path
    )]
    path = tmp_path / "bad.ipynb"
    nbformat.write(nb, path)
    problems = "\n".join(path_problems(path))
    for expected in ("cell 0: hard-coded path", "cell 1: mentions NELU_DATA", "'results/bsd68.csv'",
                     "Image.open()", "torch.load()"):
        assert expected in problems, problems
    assert "cell 5" not in problems and "cell 6" not in problems, problems


def chapter_imports(path: Path) -> dict[str, list[str]]:
    """``{module: [names]}`` imported from the nelu package by a chapter's code."""
    found: dict[str, list[str]] = {}
    for cell in code_cells(path):
        try:
            tree = ast.parse(python_source(cell))
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "nelu":
                found.setdefault(node.module, []).extend(a.name for a in node.names if a.name != "*")
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.split(".")[0] == "nelu":
                        found.setdefault(a.name, [])
    return found


FRESH_CLONE_SCRIPT = r"""
import importlib, json, sys
from pathlib import Path

clone, base, wanted = Path(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
import nelu.data as nd

assert Path(nd.__file__).resolve().is_relative_to(clone), f"nelu imported from {nd.__file__}, not the clone"
missing = []
for module, names in wanted.items():
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        missing.append(f"{module}: {exc}")
        continue
    for name in names:
        if not hasattr(mod, name):
            try:  # `from nelu import reference` names a submodule
                importlib.import_module(f"{module}.{name}")
            except ImportError:
                missing.append(f"{module}.{name}")

for rel, (sha, url) in list(nd.registry().items()):  # the registry's URLs -> the local server
    nd.registry()[rel] = (sha, base + rel)
images = nd.load_dataset("Set12", limit=2)
path = nd.fetch("BSD68/test001.png")
print(json.dumps({"data_dir": str(nd.data_dir().resolve()), "shapes": [list(im.shape) for im in images],
                  "fetched": str(path.resolve()), "missing": missing}))
"""


class CountingHandler(http.server.SimpleHTTPRequestHandler):
    requests: list[str]

    def log_message(self, *args):  # keep pytest's output clean
        pass

    def do_GET(self):
        type(self).requests.append(self.path)
        super().do_GET()


def test_fresh_clone_fetches_the_data(tmp_path: Path):
    """A fresh clone, NELU_DATA unset: nelu.data downloads and verifies the images into data/."""
    from nelu.data import data_dir, registry

    source = data_dir()
    needed = ["Set12/01.png", "Set12/02.png", "BSD68/test001.png"]
    if not all((source / rel).is_file() for rel in needed):
        pytest.skip(f"the verified images are not in {source} (set NELU_DATA); nothing to serve")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True, timeout=120)
    assert sorted(p.name for p in (clone / "data").iterdir()) == ["README.md", "registry.txt"], (
        "a fresh clone must not contain images"
    )
    wanted: dict[str, list[str]] = {}
    for f in toc_files():
        chapter = clone / f"{f}.ipynb"
        if chapter.is_file():
            for module, names in chapter_imports(chapter).items():
                wanted.setdefault(module, []).extend(names)

    handler = type("Handler", (CountingHandler,), {"requests": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(source)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}/"
        env = {k: v for k, v in os.environ.items() if k not in ("NELU_DATA", "PYTHONPATH")}
        env["PYTHONPATH"] = str(clone)
        cmd = [sys.executable, "-c", FRESH_CLONE_SCRIPT, str(clone), base, json.dumps(wanted)]
        runs = []
        for _ in range(2):  # the second run must reuse the verified files
            before = len(handler.requests)
            proc = subprocess.run(cmd, cwd=clone / "book", env=env, capture_output=True, text=True, timeout=300)
            assert proc.returncode == 0, proc.stdout + proc.stderr
            runs.append((json.loads(proc.stdout.strip().splitlines()[-1]), handler.requests[before:]))
    finally:
        server.shutdown()
        server.server_close()

    (first, first_requests), (second, second_requests) = runs
    assert first["missing"] == [], f"chapters import names the committed package lacks: {first['missing']}"
    assert Path(first["data_dir"]) == (clone / "data").resolve()
    assert first["shapes"] == [[256, 256], [256, 256]]
    assert sorted(r.lstrip("/") for r in first_requests) == sorted(needed)
    assert second_requests == [], f"verified files were downloaded again: {second_requests}"
    for rel in needed:
        assert (clone / "data" / rel).read_bytes() == (source / rel).read_bytes()
    assert len(registry()) > len(needed)


# ----------------------------------------------------------------------------- Binder


BINDER = ROOT / "binder"
# Files repo2docker reads at the top level only when there is no binder/ folder: with one,
# they would be silently ignored (requirements.txt stays: make, CI and Colab install from it).
BINDER_FILES = ("postBuild", "runtime.txt", "apt.txt", "environment.yml", "start", "install.R",
                "Project.toml", "REQUIRE", "DESCRIPTION", "Pipfile", "Pipfile.lock", "default.nix")


def read_requirements(path: Path) -> tuple[list[Requirement], list[str]]:
    """The requirements of a pip requirements file, following ``-r`` (relative to the file,
    as pip does), and its other option lines (``--extra-index-url ...``)."""
    reqs, options = [], []
    for raw in path.read_text().splitlines():
        line = raw.split(" #")[0].strip() if not raw.lstrip().startswith("#") else ""
        if not line:
            continue
        if line.startswith(("-r ", "--requirement ")):
            more, more_options = read_requirements(path.parent / line.split(None, 1)[1])
            reqs += more
            options += more_options
        elif line.startswith("-"):
            options.append(line)
        else:
            reqs.append(Requirement(line))
    return reqs, options


def pins(reqs: list[Requirement]) -> dict[str, set[str]]:
    """``{name: {pinned versions}}``: several when a file pins a package twice."""
    found: dict[str, set[str]] = {}
    for r in reqs:
        found.setdefault(r.name.lower(), set()).update(s.version for s in r.specifier if s.operator == "==")
    return found


def test_binder_installs_pinned_requirements_and_the_package():
    reqs, _ = read_requirements(ROOT / "requirements.txt")
    unpinned = [str(r) for r in reqs if not any(s.operator == "==" for s in r.specifier)]
    assert not unpinned, f"requirements.txt must pin every package (Binder builds from it): {unpinned}"
    names = {r.name.lower() for r in reqs}
    deps = {Requirement(d).name.lower() for d in PYPROJECT["project"]["dependencies"]}
    extra = {Requirement(d).name.lower() for d in PYPROJECT["project"]["optional-dependencies"]["reference"]}
    assert deps | extra <= names, f"requirements.txt lacks {sorted((deps | extra) - names)}"
    post = BINDER / "postBuild"
    assert os.access(post, os.X_OK), "binder/postBuild must be executable"
    assert re.search(r"^pip install (--no-deps )?-e \.\s*$", post.read_text(), re.M), post.read_text()
    runtime = (BINDER / "runtime.txt").read_text().strip()
    python = re.search(r"^PYTHON \?= python(3\.\d+)$", (ROOT / "Makefile").read_text(), re.M)
    assert python and runtime == f"python-{python.group(1)}", (
        f"binder/runtime.txt says {runtime!r}; the Makefile (and so requirements.txt's pins) says "
        f"{python and python.group(0)}"
    )
    stray = [name for name in BINDER_FILES if (ROOT / name).exists()]
    assert not stray, f"Binder ignores these top-level files when binder/ exists; move them there: {stray}"
    assert not (ROOT / ".binder").exists(), "binder/ and .binder/ are exclusive for repo2docker"


def test_binder_installs_cpu_only_torch_and_the_same_pins():
    ours = pins(read_requirements(ROOT / "requirements.txt")[0])
    binder_reqs, options = read_requirements(BINDER / "requirements.txt")
    binder = pins(binder_reqs)
    assert f"--extra-index-url {TORCH_CPU_INDEX}" in options or f"--index-url {TORCH_CPU_INDEX}" in options, (
        f"binder/requirements.txt must look in PyTorch's CPU-only index {TORCH_CPU_INDEX}: {options}"
    )
    (torch,) = ours["torch"]
    assert "+" not in torch, f"requirements.txt pins torch=={torch}; pin the public version there"
    cpu = {v for v in binder.get("torch", set()) if Version(v).local == "cpu"}
    assert cpu == {f"{torch}+cpu"}, (
        f"binder/requirements.txt must pin torch=={torch}+cpu (requirements.txt: torch=={torch}), "
        f"not {sorted(binder.get('torch', []))}"
    )
    assert all(Version(v).public == torch for v in binder["torch"]), f"two torch versions: {binder['torch']}"
    missing = sorted(set(ours) - set(binder))
    assert not missing, f"binder/requirements.txt does not install {missing} (requirements.txt does)"
    differ = {name: (sorted(binder[name]), sorted(ours.get(name, []))) for name in binder
              if name != "torch" and binder[name] != ours.get(name)}
    assert not differ, f"binder/requirements.txt and requirements.txt pin differently (binder, ours): {differ}"


def test_launch_buttons_are_configured():
    launch = CONFIG["launch_buttons"]
    assert launch["binderhub_url"].rstrip("/") == "https://mybinder.org"
    assert launch["colab_url"].rstrip("/") == "https://colab.research.google.com"
    assert re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", REPO_URL), REPO_URL
    assert CONFIG["repository"].get("branch") == "main"
    assert CONFIG["html"]["use_repository_button"] and CONFIG["html"]["use_issues_button"]
