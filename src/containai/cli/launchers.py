"""The launcher names users know (run-claude, launch-agent, ...), as aliases of `containai` subcommands.

Every launcher is this module's ``main``: it looks the name it was started under up in the programs
table (programs.toml), takes its channel from that name (``run-claude-dev`` is the dev channel,
``run-claude`` the release; ``--channel`` overrides it), and runs the subcommand it stands for
behind the same error boundary as `containai`.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from containai.cli.app import AppContext, guarded, run_cli
from containai.cli.programs import Program, launcher_for, launchers
from containai.errors import UsageError


def _subcommand(group: click.Group, words: Sequence[str]) -> tuple[click.Command, tuple[str, ...]]:
    """The command that ``words`` name under ``group``, and the words left (fixed arguments)."""
    command: click.Command = group
    rest = list(words)
    while rest and isinstance(command, click.Group) and rest[0] in command.commands:
        command = command.commands[rest.pop(0)]
    return command, tuple(rest)


def bind(command: click.Command, fixed: Sequence[str], help_text: str | None) -> click.Command:
    """``command`` with its first arguments fixed to ``fixed`` (`run claude`: AGENT is claude)."""
    if not fixed and help_text is None:
        return command
    arguments = [p for p in command.params if isinstance(p, click.Argument)]
    if len(fixed) > len(arguments):
        raise ValueError(f"{command.name} takes {len(arguments)} arguments, not {len(fixed)}")
    values: Mapping[str, str] = {
        str(param.name): value for param, value in zip(arguments, fixed, strict=False)
    }
    bound = copy.copy(command)
    bound.params = [p for p in command.params if p.name not in values]
    target = command.callback
    assert target is not None  # noqa: S101  # every subcommand of ours has a callback

    def callback(*args: Any, **kwargs: Any) -> Any:
        return target(*args, **values, **kwargs)

    bound.callback = callback
    if help_text is not None:
        bound.help = help_text
        bound.short_help = None
    return bound


def launcher_command(program: Program) -> click.Command:
    """The click command a launcher runs: its `containai` subcommand, with the fixed words bound."""
    from containai.cli.main import cli

    command, fixed = _subcommand(cli, program.alias)
    return bind(command, fixed, program.help)


def launcher_commands() -> list[tuple[Program, click.Command]]:
    return [(program, launcher_command(program)) for program in launchers()]


def run_launcher(
    invoked_as: str,
    args: Sequence[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    extra: Callable[[AppContext], None] | None = None,
) -> int:
    """Run the launcher named ``invoked_as`` (e.g. run-claude-nightly) with ``args``."""
    try:
        program, channel = launcher_for(invoked_as)
    except LookupError as exc:
        reason = str(exc)

        def refuse() -> int:
            raise UsageError(reason, hint="`containai --help` lists the commands")

        return guarded(refuse, debug=False)

    def set_program(app: AppContext) -> None:
        app.flags = replace(app.flags, program=invoked_as, program_channel=channel)
        if extra is not None:
            extra(app)

    return run_cli(
        launcher_command(program), args=args, prog_name=invoked_as, environ=environ, extra=set_program
    )


def main() -> None:
    sys.exit(run_launcher(Path(sys.argv[0]).name))
