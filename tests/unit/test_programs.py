"""The one table of programs (cli/programs.toml), and everything that must agree with it."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from containai.cli.launchers import launcher_command
from containai.cli.main import cli
from containai.cli.programs import console_scripts, launcher_for, launchers, programs

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("docker", "rich", "cryptography")


def test_pyproject_scripts_are_the_table() -> None:
    # pyproject.toml cannot read the table, so this keeps the two in step.
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    assert scripts == console_scripts()


def test_the_table_is_shipped_with_the_package() -> None:
    data = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert "cli/programs.toml" in data["tool"]["setuptools"]["package-data"]["containai"]


def test_the_setup_script_reads_the_table() -> None:
    text = (REPO / "scripts" / "setup-local-dev.sh").read_text(encoding="utf-8")
    assert "src/containai/cli/programs.toml" in text
    code = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    for program in launchers():
        # no second list of names to keep in step (the comments may give an example)
        assert not any(program.name in line for line in code), program.name


def test_every_launcher_is_a_containai_subcommand() -> None:
    names = {program.name for program in programs()}
    assert {"containai", "run-claude", "launch-agent", "remove-agent", "secret-broker"} <= names
    for program in launchers():
        assert program.alias[0] in cli.commands, program
        command = launcher_command(program)
        assert command.callback is not None


@pytest.mark.parametrize(
    ("invoked_as", "name", "channel"),
    [
        ("run-claude", "run-claude", "prod"),
        ("run-claude-dev", "run-claude", "dev"),
        ("run-codex-nightly", "run-codex", "nightly"),
        ("list-agents-dev", "list-agents", "dev"),
    ],
)
def test_a_launcher_name_gives_its_program_and_channel(invoked_as: str, name: str, channel: str) -> None:
    program, found = launcher_for(invoked_as)
    assert (program.name, found) == (name, channel)


def test_unknown_names_are_not_launchers() -> None:
    for name in ("containai", "secret-broker", "run-claude-beta", "run"):
        with pytest.raises(LookupError):
            launcher_for(name)


@pytest.mark.parametrize("args", [["--version"], ["--help"], ["run", "--help"], ["doctor", "--help"]])
def test_version_and_help_import_nothing_heavy(args: list[str], tmp_path: Path) -> None:
    probe = (
        "import runpy, sys\n"
        f"sys.argv = ['containai', *{args!r}]\n"
        "try:\n"
        "    runpy.run_module('containai', run_name='__main__')\n"
        "except SystemExit as exc:\n"
        "    assert exc.code == 0, exc.code\n"
        f"heavy = [m for m in sys.modules if m.split('.')[0] in {HEAVY!r}]\n"
        "print('HEAVY', heavy)\n"
    )
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        env={"CONTAINAI_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert "HEAVY []" in result.stdout, result.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if "|" in line}
    assert not imported & set(HEAVY), sorted(imported & set(HEAVY))
