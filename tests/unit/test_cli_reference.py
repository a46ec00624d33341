"""docs/cli-reference.md is generated from the commands; this keeps it from drifting."""

from __future__ import annotations

from pathlib import Path

from containai.cli.programs import launchers
from containai.cli.reference import render_reference
from containai.errors import EXIT_CODES

DOC = Path(__file__).resolve().parents[2] / "docs" / "cli-reference.md"


def test_cli_reference_is_current() -> None:
    assert DOC.read_text(encoding="utf-8") == render_reference(), (
        "docs/cli-reference.md is stale: run `python -m containai.cli.reference > docs/cli-reference.md`"
    )


def test_reference_covers_every_launcher_and_command() -> None:
    text = render_reference()
    for name in (
        "containai doctor",
        "containai images build",
        "containai run",
        "containai launch",
        "containai connect",
        "containai list",
        "containai remove",
        "containai gc",
        *(program.name for program in launchers()),  # the one table of programs
    ):
        assert f"## `{name}`" in text
    for program in launchers():
        assert f"| `{program.name}` | `containai {' '.join(program.alias)}` |" in text


def test_reference_documents_every_exit_code() -> None:
    text = render_reference()
    assert "## Exit codes" in text
    for code, meaning in EXIT_CODES:
        assert f"| {code} | {meaning} |" in text
