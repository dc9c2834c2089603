"""The rooms of the package and the one direction of their imports (README, "Development").

    model <- parse <- host <- audit <- output <- service <- cli

A module may import from its own room and the rooms to its left, never to its right; the floor
(``vtdlud``, ``vtdlud.errors``, ``vtdlud.frozen``) imports no room, and ``vtdlud.__main__`` and
the build helpers (``vtdlud._build``) stand above ``cli``.  Every import counts: at module level,
inside a function (deferred for start-up time) and under ``TYPE_CHECKING``.  No module imports
the test tree (the kernel model lives in ``tests/kernelmodel``), and no two modules import each
other, directly or round a longer circle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "vtdlud"
ROOMS = ("model", "parse", "host", "audit", "output", "service", "cli")
FLOOR = frozenset({"vtdlud", "vtdlud.errors", "vtdlud.frozen"})
ABOVE = ("vtdlud.__main__", "vtdlud._build")  # above cli: they may import anything
RANK = {room: n for n, room in enumerate(ROOMS, 1)}
Graph = dict[str, dict[str, int]]  # module -> {imported module: first line}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def rank(module: str) -> int:
    """0 for the floor, 1.. for the rooms in order, above every room for the top."""
    if module in FLOOR:
        return 0
    if module.startswith(ABOVE):
        return len(ROOMS) + 1
    room = module.split(".")[1]
    if room not in RANK:
        raise AssertionError(f"{module}: in no room (add it to ROOMS, FLOOR or ABOVE)")
    return RANK[room]


def _imports(path: Path) -> Iterator[tuple[str, int]]:
    """Every module named by an import in ``path`` (``from a import b``: ``a.b`` when that is
    a module, else ``a``), with its line."""
    this = module_name(path)
    package = this if path.name == "__init__.py" else this.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([base] if base else [])])
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                yield (sub if sub in modules() else base), node.lineno


@cache
def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


@cache
def graph() -> Graph:
    """module -> {imported vtdlud module: first line}."""
    out: dict[str, dict[str, int]] = {}
    for name, path in modules().items():
        deps: dict[str, int] = {}
        for target, line in _imports(path):
            if (
                target == "vtdlud"
                or target.startswith("vtdlud.")
                or target.split(".")[0] == "tests"
            ):
                deps.setdefault(target, line)
        out[name] = deps
    return out


def upward_imports(g: Graph) -> list[str]:
    bad = []
    for name, deps in g.items():
        for target, line in deps.items():
            if target.split(".")[0] == "tests":
                bad.append(f"{modules()[name]}:{line}: {name} imports the test tree ({target})")
            elif rank(target) > rank(name):
                bad.append(f"{modules()[name]}:{line}: {name} imports {target}, a higher room")
    return sorted(bad)


def circles(graph: Graph) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    g = {m: [t for t in deps if t in graph] for m, deps in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in g[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in g:
        if v not in index:
            visit(v)
    return sorted(out)


def test_every_module_is_in_a_room() -> None:
    for name in modules():
        rank(name)
    assert {n.split(".")[1] for n in modules() if rank(n) in RANK.values()} == set(ROOMS)


def test_imports_run_one_way() -> None:
    assert upward_imports(graph()) == []


def test_no_import_circles() -> None:
    assert circles(graph()) == []


def test_the_checker_sees_an_upward_import_a_circle_and_the_test_tree() -> None:
    """Control: the rules above catch what they are about."""
    fake = {k: dict(v) for k, v in graph().items()}
    fake["vtdlud.model.tables"]["vtdlud.audit.report"] = 1
    fake["vtdlud.model.tables"]["tests.kernelmodel.kernel"] = 2
    fake["vtdlud.model.registers"]["vtdlud.model.bitfield"] = 1
    fake["vtdlud.model.bitfield"]["vtdlud.model.registers"] = 1
    bad = upward_imports(fake)
    assert any("vtdlud.model.tables imports vtdlud.audit.report, a higher room" in b for b in bad)
    assert any("imports the test tree (tests.kernelmodel.kernel)" in b for b in bad)
    assert ["vtdlud.model.bitfield", "vtdlud.model.registers"] in circles(fake)
