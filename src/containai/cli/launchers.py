"""The launcher names users know: run-claude, launch-agent, ... and their -dev / -nightly copies.

The channel comes from the name the launcher was started under (``run-claude-dev`` is the dev
channel); ``--channel`` overrides it. Each launcher already takes its full set of options, so its
``--help`` is the real one; the session machinery behind them arrives with the sessions work.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from containai.cli.app import AppContext, run_cli
from containai.errors import NotAvailableError
from containai.images.catalog import CHANNELS, channel_from_program

_SESSIONS = "agent sessions arrive with the sessions work"
_CONTEXT = {"help_option_names": ["-h", "--help"]}


def _session_options(func: click.decorators.FC) -> click.decorators.FC:
    for option in reversed(
        [
            click.option(
                "-b", "--branch", metavar="B", help="Work on branch B (default: <agent>/session-N)."
            ),
            click.option("--use-current-branch", is_flag=True, help="Work on the repo's current branch."),
            click.option("--no-push", is_flag=True, help="Do not bring the session's work back to the host."),
            click.option(
                "-y", "--force", is_flag=True, help="Proceed on a dirty repo; archive an existing branch."
            ),
            click.option("--name", metavar="N", help="Name the session container."),
            click.option(
                "--network-proxy",
                type=click.Choice(["squid", "restricted"]),
                default="squid",
                show_default=True,
                help="squid: egress through the audited proxy; restricted: no network at all.",
            ),
            click.option("--cpu", metavar="N", help="CPUs for the session container."),
            click.option("--memory", metavar="SIZE", help="Memory (swap included) for the session, e.g. 8g."),
            click.option(
                "--channel", type=click.Choice(CHANNELS), help="Image channel (default: from the name)."
            ),
        ]
    ):
        func = option(func)
    return func


def _run_agent_command(agent: str) -> click.Command:
    @click.command(context_settings=_CONTEXT, help=f"Run {agent} in an ephemeral, hardened session on REPO.")
    @click.argument("repo", required=False, type=click.Path(path_type=Path))
    @_session_options
    @click.option("--prompt", metavar="TEXT", help=f"Run {agent} once, non-interactively, on TEXT.")
    @click.option("--json", "as_json", is_flag=True, help="With --prompt: print a JSON result at the end.")
    def command(**_: object) -> None:
        raise NotAvailableError(f"run-{agent}", planned=_SESSIONS)

    return command


@click.command(context_settings=_CONTEXT)
@click.argument("agent")
@click.argument("repo", required=False, type=click.Path(path_type=Path))
@_session_options
def launch_agent_command(**_: object) -> None:
    """Start AGENT in a persistent session (tmux inside the container) on REPO."""
    raise NotAvailableError("launch-agent", planned=_SESSIONS)


@click.command(context_settings=_CONTEXT)
@click.option("-n", "--name", metavar="NAME", help="Session to attach to (optional with one running).")
def connect_agent_command(name: str | None) -> None:
    """Attach to a persistent session; Ctrl-B D detaches and the agent keeps working."""
    raise NotAvailableError("connect-agent", planned=_SESSIONS)


@click.command(context_settings=_CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def list_agents_command(as_json: bool) -> None:
    """List sessions: name, agent, repo, branch, status and age."""
    raise NotAvailableError("list-agents", planned=_SESSIONS)


@click.command(context_settings=_CONTEXT)
@click.argument("name", required=False)
@click.option("--all", "remove_all", is_flag=True, help="Remove every session.")
@click.option("--no-push", is_flag=True, help="Do not bring the session's work back first.")
@click.option("--keep-branch", is_flag=True, help="Keep the session's branch on the host.")
def remove_agent_command(name: str | None, remove_all: bool, no_push: bool, keep_branch: bool) -> None:
    """Bring a session's work back to the host, then remove it and everything it created."""
    raise NotAvailableError("remove-agent", planned=_SESSIONS)


def _launch(command: click.Command) -> None:
    program = Path(sys.argv[0]).name
    channel = channel_from_program(program)

    def set_channel(app: AppContext) -> None:
        app.channel = channel

    sys.exit(run_cli(command, prog_name=program, extra=set_channel))


def run_claude() -> None:
    _launch(_run_agent_command("claude"))


def run_codex() -> None:
    _launch(_run_agent_command("codex"))


def run_copilot() -> None:
    _launch(_run_agent_command("copilot"))


def launch_agent() -> None:
    _launch(launch_agent_command)


def connect_agent() -> None:
    _launch(connect_agent_command)


def list_agents() -> None:
    _launch(list_agents_command)


def remove_agent() -> None:
    _launch(remove_agent_command)
