"""docs/reliability.md backs each row with a test: every test it names must exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "reliability.md"


def _defined_tests() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in (ROOT / "tests").rglob("test_*.py"):
        names = set(re.findall(r"^(?:async )?def (test_\w+)", path.read_text(encoding="utf-8"), re.M))
        found[path.relative_to(ROOT).as_posix()] = names
    return found


def test_every_test_the_reliability_page_names_exists() -> None:
    text = DOC.read_text(encoding="utf-8")
    defined = _defined_tests()
    every = set().union(*defined.values())
    files = set(re.findall(r"tests/[\w/]+\.py", text))
    assert files, "the page names no test file"
    missing_files = sorted(f for f in files if not (ROOT / f).is_file())
    assert not missing_files, f"docs/reliability.md names test files that do not exist: {missing_files}"
    # `path.py::test_name` must be in that file; a bare `test_name` (or `::test_name`) anywhere.
    for path, name, star in re.findall(r"(tests/[\w/]+\.py)::(test_\w+)(\*?)", text):
        here = defined.get(path, set())
        assert any(n.startswith(name) for n in here) if star else name in here, f"{path} has no {name}{star}"
    names = set(re.findall(r"\b(test_\w+)\b", text)) - {Path(f).stem for f in files}
    prefixes = {n for n in names if n.endswith("_")}  # `test_current_branch_*`
    missing = sorted(n for n in names - prefixes if n not in every)
    missing += sorted(p for p in prefixes if not any(n.startswith(p) for n in every))
    assert not missing, f"docs/reliability.md names tests that do not exist: {missing}"
