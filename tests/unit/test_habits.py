"""Habits that keep the layout readable, checked on the source: the runtime package imports nothing from the
research side, no module imports another's private names, nothing edits sys.path, and nothing loads a file as a
module by path."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SOURCES = ("gradshield_lint", "gradshield_research", "hooks", "tests")


def _files(*roots: str) -> Iterator[Path]:
    for root in roots:
        yield from sorted((REPO / root).rglob("*.py"))


def _module(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> Iterator[tuple[int, str, list[str]]]:
    """(line, module, names) of every import in `path`, relative imports resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    here = _module(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, []
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            yield node.lineno, module, [a.name for a in node.names]


def test_the_runtime_package_imports_nothing_from_the_research_side():
    bad = [
        f"{p.relative_to(REPO)}:{line}: {mod}"
        for p in _files("gradshield_lint")
        for line, mod, _ in _imports(p)
        if mod.split(".")[0] in ("gradshield_research", "hooks", "tests")
    ]
    assert not bad, bad


def test_no_private_name_is_imported_from_another_module():
    """`from a.b import _x` and `import a._b` only within a's own package (its private helpers); never across."""
    bad = []
    for p in _files(*SOURCES):
        mine = _module(p).split(".")
        for line, mod, names in _imports(p):
            parts = mod.split(".")
            private_module = next((i for i, s in enumerate(parts) if s.startswith("_") and s != "__future__"), None)
            if private_module is not None and parts[:private_module] != mine[:private_module]:
                bad.append(f"{p.relative_to(REPO)}:{line}: {mod}")
            bad += [
                f"{p.relative_to(REPO)}:{line}: {mod}.{n}" for n in names if n.startswith("_") and n != "__version__"
            ]
    assert not bad, bad


def test_nothing_edits_sys_path_or_loads_a_module_by_path():
    bad = []
    for p in _files(*SOURCES):
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr in ("path",) and isinstance(node.value, ast.Name):
                parent_is_sys = node.value.id == "sys"
                if parent_is_sys and p.name != "test_habits.py":
                    bad.append(f"{p.relative_to(REPO)}:{node.lineno}: sys.path")
            if isinstance(node, ast.Attribute) and node.attr == "spec_from_file_location":
                bad.append(f"{p.relative_to(REPO)}:{node.lineno}: spec_from_file_location")
    assert not bad, bad
