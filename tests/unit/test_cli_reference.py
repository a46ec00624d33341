"""docs/cli-reference.md is generated from the commands; this keeps it from drifting."""

from __future__ import annotations

from pathlib import Path

from containai.cli.reference import render_reference

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
        "containai gc",
        "run-claude",
        "run-codex",
        "run-copilot",
        "launch-agent",
        "connect-agent",
        "list-agents",
        "remove-agent",
    ):
        assert f"## `{name}`" in text
