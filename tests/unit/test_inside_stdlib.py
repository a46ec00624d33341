"""containai.inside runs in images that hold python3 and nothing else of ours: standard library only."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import containai.inside

PACKAGE = Path(containai.inside.__file__).parent
MODULES = sorted(PACKAGE.glob("*.py"))
OWN = {f"containai.inside.{path.stem}" for path in MODULES} | {"containai.inside"}


def imported(tree: ast.Module, module: str) -> list[tuple[int, str]]:
    """Every module a file imports, absolute (relative imports resolved against ``module``'s package)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = module.rsplit(".", node.level)[0]
                base = f"{package}.{node.module}" if node.module else package
            else:
                base = node.module or ""
            found.append((node.lineno, base))
            # ``from containai.inside import protocol`` imports a module of the package too.
            found += [
                (node.lineno, f"{base}.{alias.name}") for alias in node.names if base == "containai.inside"
            ]
    return found


def allowed(name: str) -> bool:
    return name == "__future__" or name.split(".")[0] in sys.stdlib_module_names or name in OWN


def test_the_package_has_the_modules_the_images_run() -> None:
    assert {path.stem for path in MODULES} >= {
        "__init__",
        "protocol",
        "stub",
        "gateway",
        "logfwd",
        "entrypoint",
    }


@pytest.mark.parametrize("path", MODULES, ids=lambda path: path.name)
def test_every_module_imports_only_the_standard_library_and_its_own_package(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    outside = [
        f"line {line}: {name}"
        for line, name in imported(tree, f"containai.inside.{path.stem}")
        if not allowed(name)
    ]
    assert not outside, f"{path.name} imports from outside the standard library: {outside}"


def test_the_check_catches_what_it_should() -> None:
    tree = ast.parse(
        "import json\nimport docker\nfrom containai.errors import X\nfrom . import protocol\n"
        "from containai.inside import stub, nothing\nfrom .. import config\n"
    )
    names = [name for _, name in imported(tree, "containai.inside.gateway")]
    assert [name for name in names if not allowed(name)] == [
        "docker",
        "containai.errors",
        "containai.inside.nothing",
        "containai",
    ]
