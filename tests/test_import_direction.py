"""The import direction between the project's packages (docs/interfaces.md, "Packages and import direction").

Every ``import`` statement of every project module counts, also those inside functions: a lazy
import is still a dependency. The test fails on any import against the table below and on any
import cycle between modules.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("client", "serving", "export", "zoo", "planner", "orchestrator", "deploy", "benchmarks", "model_repository")
# Which project packages (or single modules, by dotted prefix) each package may import, besides itself.
ALLOWED: dict[str, tuple[str, ...]] = {
    "planner": (),
    "client": (),
    "serving": ("client",),
    "export": ("serving", "client"),
    "zoo": ("export", "serving", "client"),
    "orchestrator": ("planner", "client", "serving.control", "serving.config", "serving.model_config"),
    "deploy": ("orchestrator", "serving", "client"),
    "model_repository": ("serving",),
    "benchmarks": ("client", "serving", "export", "zoo", "planner", "orchestrator", "deploy"),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}


def imports_of(name: str, path: Path) -> set[str]:
    """Project modules imported anywhere in ``path`` (absolute and relative imports, resolved)."""
    out: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)  # `from pkg import module`
    return {m for m in out if m.split(".")[0] in PACKAGES}


def allowed(importer: str, imported: str) -> bool:
    top = importer.split(".")[0]
    if imported.split(".")[0] == top:
        return True
    return any(imported == a or imported.startswith(a + ".") for a in ALLOWED[top])


def resolve(modules: dict[str, Path], name: str) -> str | None:
    """The project module an imported name refers to (``pkg.mod.attr`` -> ``pkg.mod``)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {m: {r for i in imports_of(m, p) if (r := resolve(modules, i)) and r != m} for m, p in modules.items()}


def test_every_import_follows_the_package_direction():
    modules = project_modules()
    bad = sorted(f"{m} imports {i}" for m, p in modules.items() for i in imports_of(m, p)
                 if resolve(modules, i) and not allowed(m, i))
    assert not bad, "imports against docs/interfaces.md's direction:\n" + "\n".join(bad)


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (as a path that returns to its start), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(edges.get(m, ())):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state and (c := visit(n)):
                return c
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(edges):
        if m not in state and (c := visit(m)):
            return c
    return None


def test_no_import_cycle_between_project_modules():
    edges = graph()
    # a package's __init__ re-exporting its own submodules is not a cycle of the code's design
    for m in edges:
        edges[m] = {n for n in edges[m] if not (m.startswith(n + ".") and n in edges)}
    cycle = find_cycle(edges)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize("importer,imported,ok", [
    ("serving.pipeline", "client.errors", True), ("serving.pipeline", "export.build", False),
    ("orchestrator.loop", "serving.control", True), ("orchestrator.loop", "serving.pipeline", False),
    ("planner.milp", "serving.control", False), ("export.build", "zoo.domain", False),
    ("zoo.build", "export.discriminators", True), ("orchestrator.loop", "benchmarks.sim", False),
])
def test_the_rule_itself_tells_allowed_from_forbidden(importer, imported, ok):
    assert allowed(importer, imported) is ok


def test_the_cycle_finder_finds_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
