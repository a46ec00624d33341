"""The launcher names users know: run-claude, launch-agent, ... and their -dev / -nightly copies.

The channel comes from the name the launcher was started under (``run-claude-dev`` is the dev
channel, ``run-claude`` the release); ``--channel`` overrides it. Flags are parsed here and handed to
``containai.session.commands``; nothing else happens here.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.table import Table
from rich.text import Text

from containai.agents.definition import AgentDef, get_agent
from containai.cli.app import AppContext, run_cli
from containai.cli.building import build_images
from containai.config import Paths, load_user_config
from containai.egress.policy import parse_network_config
from containai.egress.sidecar import parse_lab
from containai.errors import UsageError
from containai.gateway.login import ClaudeLogin
from containai.images.catalog import CHANNELS, channel_from_program, image_tag
from containai.secrets.store import default_sources, resolve_secret
from containai.secrets.value import Secret
from containai.session import commands, manager
from containai.session.extra_args import parse_extra_args
from containai.session.manager import NetworkSettings, SessionRequest
from containai.session.naming import parse_scope
from containai.session.plan import Resources, parse_cpus, parse_memory
from containai.workspace.gate import GatePolicy

_CONTEXT = {"help_option_names": ["-h", "--help"]}
FC = TypeVar("FC", bound=Callable[..., Any])
pass_app = click.make_pass_decorator(AppContext)


class ConsoleReporter:
    def __init__(self, app: AppContext) -> None:
        self.app = app

    def note(self, text: str) -> None:
        self.app.err.print(Text(f"• {text}", style="dim"))

    def warn(self, text: str) -> None:
        self.app.err.print(Text(f"! {text}", style="yellow"))


def label_option(help_text: str) -> Callable[[FC], FC]:
    return click.option("--label", "labels", multiple=True, metavar="KEY=VALUE", help=help_text)


def scope_labels(app: AppContext, flags: Sequence[str]) -> dict[str, str]:
    """The user's labels: CONTAINAI_LABELS (space-separated KEY=VALUE), then each --label."""
    return parse_scope([*app.environ.get("CONTAINAI_LABELS", "").split(), *flags])


SCOPE_HELP = "Only sessions with label KEY=VALUE (repeatable; also: CONTAINAI_LABELS)."


def session_options(func: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("-b", "--branch", metavar="B", help="Work on branch B (default: <agent>/session-N)."),
        click.option(
            "--use-current-branch",
            is_flag=True,
            help="Work on the repo's current branch; the work lands on it when safe.",
        ),
        click.option("--no-push", is_flag=True, help="Do not bring the session's work back to the host."),
        click.option(
            "-y", "--force", is_flag=True, help="Launch on a dirty repo; archive an existing --branch."
        ),
        click.option("--name", metavar="N", help="Name the session container <agent>-N."),
        click.option(
            "--network-proxy",
            type=click.Choice(["squid", "restricted"]),
            default="squid",
            show_default=True,
            help="squid: egress only through the audited proxy; restricted: no network at all.",
        ),
        click.option("--cpu", metavar="N", help="CPUs for the session (default: up to 4)."),
        click.option(
            "--memory", metavar="SIZE", default="8g", show_default=True, help="Memory, swap included."
        ),
        click.option(
            "--allow-domain",
            "allow_domains",
            multiple=True,
            metavar="DOMAIN",
            help="Also allow DOMAIN through the proxy (.example.com: with subdomains). Repeatable.",
        ),
        click.option(
            "--channel",
            type=click.Choice(CHANNELS),
            help="Image channel (default: from the launcher's name).",
        ),
        label_option("Add label KEY=VALUE to everything the session creates (also: CONTAINAI_LABELS)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def build_request(
    app: AppContext, agent_name: str, repo: Path | None, mode: str, opts: dict[str, Any]
) -> SessionRequest:
    credential = model_credential(app, get_agent(agent_name, app.paths.agents_dir), opts["network_proxy"])
    agent = credential.agent
    extra = parse_extra_args(app.environ.get("CONTAINAI_EXTRA_DOCKER_ARGS", ""))
    memory = parse_memory(extra.memory or opts["memory"])
    cpus = parse_cpus(extra.cpus or opts["cpu"], os.cpu_count() or 1)
    return SessionRequest(
        agent=agent,
        repo_path=repo,
        cwd=Path.cwd(),
        channel=opts["channel"] or app.channel or app.environ.get("CONTAINAI_CHANNEL") or "dev",
        mode=mode,
        network_proxy=opts["network_proxy"],
        branch=opts["branch"],
        use_current_branch=opts["use_current_branch"],
        push=not opts["no_push"],
        force=opts["force"],
        name=opts["name"],
        resources=Resources(memory, cpus, extra.pids_limit or 1024),
        workspace_mode=app.environ.get("CONTAINAI_WORKSPACE"),
        allow_domains=tuple(opts["allow_domains"]),
        network=load_network_settings(app.paths),
        lab=parse_lab(app.environ.get("CONTAINAI_EGRESS_LAB", "")),
        approvals_file=app.paths.approvals_file,
        credential=credential.secret,
        login=credential.login,
        gateway_upstream=app.environ.get("CONTAINAI_GATEWAY_UPSTREAM") or None,
        gate=GatePolicy.from_env(app.environ),
        scope=scope_labels(app, opts["labels"]),
    )


def ensure_proxy_image(app: AppContext, request: SessionRequest) -> None:
    """The proxy image is built on first use, with progress, rather than asked for as a manual step."""
    if request.network_proxy != "squid" or app.runtime().image(image_tag("proxy", request.channel)):
        return
    ConsoleReporter(app).note(f"building the egress proxy image for the {request.channel} channel (once)")
    build_images(app, ["proxy"], channel=request.channel)


@dataclass(frozen=True)
class ModelCredential:
    """What the agent's gateway gets: a stored secret, or the host's own login of the CLI."""

    agent: AgentDef  # with the gateway set up for the kind found
    secret: Secret | None = None
    login: ClaudeLogin | None = None


def model_credential(app: AppContext, agent: AgentDef, network_proxy: str) -> ModelCredential:
    """The agent's model credential from the host, in order: an API key, a subscription token, the
    CLI's own login on the host; a warning, saying what to store, when there is none."""
    if agent.gateway is None or network_proxy != "squid":
        return ModelCredential(agent)
    sources = default_sources(app.paths, app.environ)
    for choice in agent.gateway.choices():
        found = resolve_secret(choice.secret, sources)
        if found is not None:
            return ModelCredential(replace(agent, gateway=choice), secret=found[0])
    for choice in agent.gateway.choices():
        if choice.login == "claude" and (login := ClaudeLogin.from_env(app.environ)) is not None:
            ConsoleReporter(app).note(f"using the host's Claude login ({login.path}), refreshed on the host")
            return ModelCredential(replace(agent, gateway=choice), login=login)
    names = " or ".join(choice.secret for choice in agent.gateway.choices())
    ConsoleReporter(app).warn(
        f"no {names} on the host: {agent.name} runs without a model credential "
        f"(store one with `containai secrets set {agent.gateway.secret}`)"
    )
    return ModelCredential(agent)


def load_network_settings(paths: Paths) -> NetworkSettings:
    """``[network]`` from the user's config.toml (allow, deny, presets); nothing when there is none."""
    data = load_user_config(paths)
    allow, deny, presets = parse_network_config(data.get("network", {}), f"{paths.config_file} [network]")
    return NetworkSettings(allow=allow, deny=deny, presets=presets)


def _write_output(stream: str, data: bytes) -> None:
    target = sys.stdout.buffer if stream == "stdout" else sys.stderr.buffer
    target.write(data)
    target.flush()


def run_agent(
    app: AppContext,
    agent_name: str,
    repo: Path | None,
    prompt: str | None,
    as_json: bool,
    command: tuple[str, ...],
    opts: dict[str, Any],
) -> int:
    if as_json and prompt is None and not command:
        raise UsageError("--json goes with --prompt", hint='add --prompt "..."')
    request = build_request(app, agent_name, repo, "ephemeral", opts)
    ensure_proxy_image(app, request)
    interactive = prompt is None and sys.stdin.isatty() and sys.stdout.isatty()
    code, result = commands.run_ephemeral(
        app.runtime(),
        request,
        paths=app.paths,
        reporter=ConsoleReporter(app),
        prompt=prompt,
        command=command,
        interactive=interactive,
        write=_write_output,
    )
    if as_json:
        commands.print_json({"schema": 1, **result.__dict__})
    return code


def run_agent_command(agent: str) -> click.Command:
    @click.command(context_settings=_CONTEXT, help=f"Run {agent} in an ephemeral, hardened session on REPO.")
    @click.argument("repo", required=False, type=click.Path(path_type=Path))
    @session_options
    @click.option("--prompt", metavar="TEXT", help=f"Run {agent} once, non-interactively, on TEXT.")
    @click.option("--json", "as_json", is_flag=True, help="With --prompt: print a JSON result at the end.")
    @pass_app
    def command(app: AppContext, /, repo: Path | None, prompt: str | None, as_json: bool, **opts: Any) -> int:
        return run_agent(app, agent, repo, prompt, as_json, (), opts)

    return command


@click.command(context_settings=_CONTEXT)
@click.argument("agent")
@click.argument("repo", required=False, type=click.Path(path_type=Path))
@session_options
@pass_app
def launch_agent_command(app: AppContext, /, agent: str, repo: Path | None, **opts: Any) -> None:
    """Start AGENT in a persistent session (tmux inside the container) on REPO."""
    request = build_request(app, agent, repo, "persistent", opts)
    ensure_proxy_image(app, request)
    plan = commands.launch_persistent(
        app.runtime(), request, paths=app.paths, reporter=ConsoleReporter(app), command=()
    )
    app.out.print(plan.name, highlight=False)
    app.err.print(
        f"{agent} is running in {plan.name}. Attach with `connect-agent -n {plan.name}` (Ctrl-B D detaches), "
        f'or VS Code\'s "Attach to Running Container"; `remove-agent {plan.name}` brings the work home.',
        highlight=False,
    )


@click.command(context_settings=_CONTEXT)
@click.option("-n", "--name", metavar="NAME", help="Session to attach to (optional with one running).")
@pass_app
def connect_agent_command(app: AppContext, name: str | None) -> int:
    """Attach to a persistent session; Ctrl-B D detaches and the agent keeps working."""
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise UsageError("connect-agent needs a terminal", hint="run it from a terminal")
    runtime = app.runtime()
    return commands.connect(runtime, commands.pick_session(runtime, name, scope_labels(app, ())))


@click.command(context_settings=_CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@label_option(SCOPE_HELP)
@pass_app
def list_agents_command(app: AppContext, as_json: bool, labels: tuple[str, ...]) -> None:
    """List sessions: name, agent, repo, branch, status and age."""
    rows = manager.list_sessions(app.runtime(), scope_labels(app, labels))
    now = commands.now_utc()
    if as_json:
        commands.print_json({"schema": 1, "sessions": commands.rows_as_json(rows, now)})
        return
    if not rows:
        app.err.print("no sessions", highlight=False)
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("NAME", "AGENT", "REPO", "BRANCH", "STATUS", "AGE"):
        table.add_column(column)
    for row in rows:
        table.add_row(row.name, row.agent, row.repo or "-", row.branch or "-", row.status, row.age(now))
    app.out.print(table)


@click.command(context_settings=_CONTEXT)
@click.argument("name", required=False)
@click.option(
    "--all", "remove_all", is_flag=True, help="Remove every session (with --label: every one with it)."
)
@click.option("--no-push", is_flag=True, help="Discard the session's work instead of bringing it back.")
@click.option(
    "--keep-branch", is_flag=True, help="Keep the session's branch on the host even if it is empty."
)
@label_option(SCOPE_HELP)
@pass_app
def remove_agent_command(
    app: AppContext,
    name: str | None,
    remove_all: bool,
    no_push: bool,
    keep_branch: bool,
    labels: tuple[str, ...],
) -> int:
    """Bring a session's work back to the host, then remove it and everything it created."""
    runtime = app.runtime()
    if remove_all == bool(name):
        raise UsageError("name one session, or pass --all", hint="see `list-agents`")
    scope = scope_labels(app, labels)
    names = [row.name for row in manager.list_sessions(runtime, scope)] if remove_all else [name or ""]
    status = 0
    reporter = ConsoleReporter(app)
    for each in names:
        result = manager.finish(
            runtime,
            each,
            push=not no_push,
            keep_branch=keep_branch,
            state_root=app.paths.sessions_dir,
            policy=GatePolicy.from_env(app.environ),
        )
        commands.report_finish(result, reporter, prefix=f"{each}: ")
        if result.kept:
            status = 125
    return status


def _launch(command: click.Command) -> None:
    program = Path(sys.argv[0]).name
    channel = channel_from_program(program)

    def set_channel(app: AppContext) -> None:
        app.channel = channel

    sys.exit(run_cli(command, prog_name=program, extra=set_channel))


def run_claude() -> None:
    _launch(run_agent_command("claude"))


def run_codex() -> None:
    _launch(run_agent_command("codex"))


def run_copilot() -> None:
    _launch(run_agent_command("copilot"))


def launch_agent() -> None:
    _launch(launch_agent_command)


def connect_agent() -> None:
    _launch(connect_agent_command)


def list_agents() -> None:
    _launch(list_agents_command)


def remove_agent() -> None:
    _launch(remove_agent_command)
