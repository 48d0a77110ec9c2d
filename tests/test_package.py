"""The package's layout: data flows one way (no import cycle), one training loop, a thin CLI."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "nelu"


def _modules() -> dict[str, Path]:
    mods = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        mods[name.removesuffix(".__init__")] = path
    return mods


def _imports(name: str, path: Path, mods: dict[str, Path]) -> set[str]:
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            found |= {c for c in [target, *(f"{target}.{a.name}" for a in node.names)] if c in mods}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in mods}
    return found - {name, "nelu"}  # the package's __init__ imports only nelu.functional


def test_no_import_cycle():
    mods = _modules()
    graph = {m: _imports(m, p, mods) for m, p in mods.items()}
    state: dict[str, str] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = "open"
        for n in graph[m]:
            assert state.get(n) != "open", f"import cycle: {' -> '.join(path + [n])}"
            if n not in state:
                visit(n, path + [n])
        state[m] = "done"

    for m in graph:
        if m not in state:
            visit(m, [m])
    importers = {m for m in graph if "nelu.cli" in graph[m]}
    assert all(m.endswith("__main__") for m in importers), importers  # only entry points import the CLI


def test_one_training_loop():
    loops = sorted(p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py") if ".backward()" in p.read_text())
    assert loops == ["bench.py", "training.py"]  # bench times a step; training.fit trains every model


def test_the_cli_is_thin():
    assert len((PACKAGE / "cli.py").read_text().splitlines()) <= 300
