"""docs/reliability.md and docs/security.md back each claim with a test: every test they name must exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = ("docs/reliability.md", "docs/security.md")


def _defined_tests() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in (ROOT / "tests").rglob("test_*.py"):
        names = set(re.findall(r"^(?:async )?def (test_\w+)", path.read_text(encoding="utf-8"), re.M))
        found[path.relative_to(ROOT).as_posix()] = names
    return found


@pytest.mark.parametrize("page", PAGES)
def test_every_test_the_page_names_exists(page: str) -> None:
    text = (ROOT / page).read_text(encoding="utf-8")
    defined = _defined_tests()
    every = set().union(*defined.values())
    files = set(re.findall(r"tests/[\w/]+\.py", text))
    assert files, f"{page} names no test file"
    missing_files = sorted(f for f in files if not (ROOT / f).is_file())
    assert not missing_files, f"{page} names test files that do not exist: {missing_files}"
    # `path.py::test_name` must be in that file; a bare `test_name` (or `::test_name`) anywhere.
    for path, name, star in re.findall(r"(tests/[\w/]+\.py)::(test_\w+)(\*?)", text):
        here = defined.get(path, set())
        assert any(n.startswith(name) for n in here) if star else name in here, f"{path} has no {name}{star}"
    names = set(re.findall(r"\b(test_\w+)\b", text)) - {Path(f).stem for f in files}
    prefixes = {n for n in names if n.endswith("_")}  # `test_current_branch_*`
    missing = sorted(n for n in names - prefixes if n not in every)
    missing += sorted(p for p in prefixes if not any(n.startswith(p) for n in every))
    assert not missing, f"{page} names tests that do not exist: {missing}"


def test_every_row_of_the_security_claims_table_names_a_test() -> None:
    text = (ROOT / "docs/security.md").read_text(encoding="utf-8")
    table = text.split("## Claims and their tests", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| claim")]
    assert len(rows) >= 20, "the claims table is missing or short"
    bare = [row for row in rows if "::test_" not in row and not set("-|: ") >= set(row)]
    assert not bare, f"claims with no test: {bare}"
