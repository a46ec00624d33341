"""docs/cli-reference.md, generated from the commands and the programs table (a test keeps it in step).

python -m containai.cli.reference > docs/cli-reference.md
"""

from __future__ import annotations

import click

from containai.cli.launchers import launcher_commands
from containai.cli.main import cli
from containai.errors import EXIT_CODES


def _help(command: click.Command, path: str) -> str:
    # The same help options as the real commands, or click would document only --help.
    with click.Context(
        command, info_name=path, terminal_width=100, max_content_width=100, help_option_names=["-h", "--help"]
    ) as ctx:
        return command.get_help(ctx)


def _walk(command: click.Command, path: str) -> list[tuple[str, click.Command]]:
    found = [(path, command)]
    if isinstance(command, click.Group):
        for name in sorted(command.commands):
            found += _walk(command.commands[name], f"{path} {name}")
    return found


def render_reference() -> str:
    launchers = launcher_commands()
    parts = [
        "# CLI reference",
        "",
        "Generated from the commands by `python -m containai.cli.reference`; do not edit by hand.",
        "",
        "## Launchers",
        "",
        "Each launcher is another name for a `containai` subcommand. Every launcher also exists as",
        "`<name>-dev` (images built locally) and `<name>-nightly`; the plain name is the release",
        "channel, and the name chooses the image channel (`--channel` overrides it).",
        "",
        "| Launcher | Same as |",
        "| --- | --- |",
        *(f"| `{p.name}` | `containai {' '.join(p.alias)}` |" for p, _ in launchers),
        "",
        "## Exit codes",
        "",
        "The same for `containai`, every launcher and the brokers (defined in `containai/errors.py`).",
        "",
        "| Code | Meaning |",
        "| --- | --- |",
        *(f"| {code} | {meaning} |" for code, meaning in EXIT_CODES),
        "",
        "Why these: an agent's own code must pass through, so ContainAI's codes keep clear of the codes",
        "programs commonly use (1, 2) and of the shell's (126 cannot execute, 127 not found, 128+N a",
        "signal). 125 is docker's; 75 is from sysexits.h, which ordinary programs rarely return.",
        "",
    ]
    commands = _walk(cli, "containai") + [(p.name, command) for p, command in launchers]
    for path, command in commands:
        parts += [f"## `{path}`", "", "```text", _help(command, path).rstrip(), "```", ""]
    return "\n".join(parts)


if __name__ == "__main__":
    print(render_reference(), end="")
