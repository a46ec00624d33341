"""No import cycle anywhere in the package: every module's top-level imports form a DAG.

A cycle works only as long as the import order happens to suit it, and it says that two modules are
really one. Imports under ``if TYPE_CHECKING:`` never run, so they are left out; imports inside
functions run late on purpose (the CLI keeps ``--version`` light that way), so they are left out too.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

import containai

PACKAGE = Path(containai.__file__).parent


def module_name(root: Path, path: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _top_level_imports(body: list[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
    """Imports that run when the module does: module level, in try/if/with blocks, not TYPE_CHECKING."""
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                yield from _top_level_imports(node.body)
            yield from _top_level_imports(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, *(h.body for h in node.handlers), node.orelse, node.finalbody):
                yield from _top_level_imports(block)
        elif isinstance(node, ast.With):
            yield from _top_level_imports(node.body)


def _with_parents(name: str, modules: set[str]) -> Iterator[str]:
    # Importing a.b.c runs a/__init__.py and a/b/__init__.py first.
    pieces = name.split(".")
    for end in range(1, len(pieces) + 1):
        candidate = ".".join(pieces[:end])
        if candidate in modules:
            yield candidate


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the package's modules its top-level imports load."""
    files = {module_name(root, path): path for path in sorted(root.rglob("*.py"))}
    modules = set(files)
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        targets: set[str] = set()
        for node in _top_level_imports(ast.parse(path.read_text(encoding="utf-8"), str(path)).body):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    targets.update(_with_parents(alias.name, modules))
                continue
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            targets.update(_with_parents(base, modules))
            for alias in node.names:
                # `from package import module` loads the submodule.
                if f"{base}.{alias.name}" in modules:
                    targets.add(f"{base}.{alias.name}")
        graph[name] = targets - {name}
    return graph


def find_cycle(graph: Mapping[str, set[str]]) -> list[str] | None:
    """One cycle as a path that starts and ends at the same module, or None when there is none."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)) is not None:
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)) is not None:
            return found
    return None


def test_the_package_has_no_import_cycle() -> None:
    graph = import_graph(PACKAGE)
    assert "containai.trust" in graph and "containai.session.manager" in graph
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_egress_and_mcp_share_repository_trust_instead_of_importing_each_other() -> None:
    graph = import_graph(PACKAGE)
    assert "containai.trust" in graph["containai.mcp.config"]
    assert not any(m.startswith(("containai.mcp", "containai.session")) for m in graph["containai.trust"])
    assert not any(target.startswith("containai.mcp") for target in graph["containai.egress.policy"])


def test_a_cycle_is_found_and_named(tmp_path: Path) -> None:
    root = tmp_path / "pkg"
    (root / "sub").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "sub" / "__init__.py").write_text("")
    (root / "a.py").write_text("from pkg.sub import b\n")
    (root / "sub" / "b.py").write_text("from typing import TYPE_CHECKING\nfrom .. import c\n")
    (root / "c.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.a\n"
        "def late():\n    import pkg.a\n"
    )
    graph = import_graph(root)
    assert graph["pkg.a"] == {"pkg", "pkg.sub", "pkg.sub.b"}
    assert graph["pkg.sub.b"] == {"pkg", "pkg.c"}
    assert find_cycle(graph) is None  # TYPE_CHECKING and function-level imports do not count

    (root / "c.py").write_text("try:\n    import pkg.a as a\nexcept ImportError:\n    pass\n")
    assert find_cycle(import_graph(root)) == ["pkg.a", "pkg.sub.b", "pkg.c", "pkg.a"]
