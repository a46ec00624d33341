"""containai.inside runs in images that hold python3 and nothing else of ours: standard library only,
and the few Debian packages an image installs for one module (the gateway's python3-h11)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import containai.inside

PACKAGE = Path(containai.inside.__file__).parent
MODULES = sorted(PACKAGE.glob("*.py"))
OWN = {f"containai.inside.{path.stem}" for path in MODULES} | {"containai.inside"}
# A module's Debian packages, as its image's Dockerfile installs them.
IMAGE_PACKAGES = {"gateway": {"h11"}}


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


def allowed(name: str, module: str = "") -> bool:
    top = name.split(".")[0]
    return (
        name == "__future__"
        or top in sys.stdlib_module_names
        or name in OWN
        or top in IMAGE_PACKAGES.get(module, set())
    )


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
        if not allowed(name, path.stem)
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
    assert not allowed("h11") and allowed("h11", "gateway") and not allowed("h11", "stub")


def test_the_gateway_image_installs_the_parser_the_gateway_imports() -> None:
    dockerfile = PACKAGE.parent / "images" / "context" / "gateway" / "Dockerfile"
    assert "python3-h11" in dockerfile.read_text(encoding="utf-8").split()
