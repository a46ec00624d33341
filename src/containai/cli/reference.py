"""docs/cli-reference.md, generated from the commands themselves (a test keeps the file in step).

python -m containai.cli.reference > docs/cli-reference.md
"""

from __future__ import annotations

import click

from containai.cli.launchers import (
    connect_agent_command,
    launch_agent_command,
    list_agents_command,
    remove_agent_command,
    run_agent_command,
)
from containai.cli.main import cli


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
    commands = _walk(cli, "containai")
    commands += [(f"run-{agent}", run_agent_command(agent)) for agent in ("claude", "codex", "copilot")]
    commands += [
        ("launch-agent", launch_agent_command),
        ("connect-agent", connect_agent_command),
        ("list-agents", list_agents_command),
        ("remove-agent", remove_agent_command),
    ]
    parts = [
        "# CLI reference",
        "",
        "Generated from the commands by `python -m containai.cli.reference`; do not edit by hand.",
        "Every launcher also exists as `<name>-dev` (images built locally) and `<name>-nightly`;",
        "the plain name is the release channel.",
        "",
    ]
    for path, command in commands:
        parts += [f"## `{path}`", "", "```text", _help(command, path).rstrip(), "```", ""]
    return "\n".join(parts)


if __name__ == "__main__":
    print(render_reference(), end="")
